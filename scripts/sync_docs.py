"""Regenerate the numbers the README and docs show, from the records and cards they come from.

    python scripts/sync_docs.py                  # README blocks, docs/checkpoints.md, the headline figure
    python scripts/sync_docs.py --demo runs/demo # first take a fresh `make demo`'s records and summary
    python scripts/sync_docs.py --check          # exit 1 (and say which) when something is out of date

The README holds generated blocks between `<!-- NAME: ... -->` and `<!-- /NAME -->` markers:
`headline-table` (headline.headline_table over docs/results/eval-qa.json), `demo-output`
(demo.demo_summary over docs/results/demo/eval.json, the records of a real `make demo`) and
`recipe-result` (the one-command recipe beside the four-run chain, from the same records and the
cards). tests/test_docs.py runs `--check`, so a number typed by hand cannot drift from its record.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from mem1lite.checkpoints import BASELINE, HEADLINE, RECIPE, index_markdown, index_rows, read_card
from mem1lite.demo import demo_summary
from mem1lite.evaluate import CHECKPOINT_DIR, SHIPPED, load_records
from mem1lite.files import write_text
from mem1lite.headline import headline_figure, headline_table, recipe_table
from mem1lite.report import to_markdown

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RECORDS = ROOT / "docs" / "results" / "eval-qa.json"
DEMO = ROOT / "docs" / "results" / "demo"
CHECKPOINTS_PAGE = ROOT / "docs" / "checkpoints.md"
FIGURE = ROOT / "docs" / "results" / "figures" / "headline.png"


def blocks() -> dict[str, str]:
    """README block name -> its generated text."""
    records = load_records([RECORDS])
    out = {"headline-table": to_markdown(headline_table(records, HEADLINE, BASELINE))}
    demo_records = DEMO / "eval.json"
    if demo_records.is_file():
        out["demo-output"] = "```text\n" + demo_summary(load_records([demo_records])) + "\n```"
    cards = {name: read_card(CHECKPOINT_DIR / folder) for name, (folder, _) in SHIPPED.items()}
    if RECIPE in SHIPPED and any(r["policy"] == RECIPE for r in records):
        out["recipe-result"] = to_markdown(recipe_table(records, cards, RECIPE, HEADLINE))
    return out


def fill(text: str, name: str, body: str) -> str:
    """`text` with the block `name` holding `body` (the markers stay)."""
    pattern = re.compile(
        rf"(<!-- {re.escape(name)}(?::[^>]*)? -->\n)(.*?)(<!-- /{re.escape(name)} -->)", re.S
    )
    if not pattern.search(text):
        raise SystemExit(f"README.md has no block {name!r} (<!-- {name} --> ... <!-- /{name} -->)")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(3), text)


def expected() -> dict[Path, str]:
    """Each generated file -> the text it should hold now."""
    readme = README.read_text()
    for name, body in blocks().items():
        readme = fill(readme, name, body)
    return {README: readme, CHECKPOINTS_PAGE: index_markdown(index_rows())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--demo", help="a `make demo` output folder whose eval.json the README's demo block shows"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a file is out of date"
    )
    args = parser.parse_args(argv)
    if args.demo:
        DEMO.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(args.demo) / "eval.json", DEMO / "eval.json")
    stale = [path for path, text in expected().items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(
                f"{path.relative_to(ROOT)} is out of date: run python scripts/sync_docs.py", file=sys.stderr
            )
        return 1 if stale else 0
    for path, text in expected().items():
        write_text(path, text)
    fig = headline_figure(load_records([RECORDS]), HEADLINE, BASELINE)
    fig.savefig(FIGURE, dpi=110)
    print(f"wrote {README.name}, {CHECKPOINTS_PAGE.relative_to(ROOT)} and {FIGURE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
