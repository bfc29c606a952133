"""The shipped checkpoints: which one plays which part, and their index, made from their cards.

    mem1 checkpoints                              # the index, printed
    mem1 checkpoints --out docs/checkpoints.md    # written (a test checks the shipped page is current)

One place names the models the README, `make demo` and the notebooks show: the headline mem1
model, the full-context baseline it is compared with, and the N <= 4 model that shows why the data
go to N = 16. Every other checkpoint is a study arm: kept, with its card, for the experiment log
(docs/log.md). The index's minutes and commands come from each `card.json`, its test figures from
the evaluation records (docs/results/eval-qa.json), so it cannot drift from either.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .evaluate import CHECKPOINT_DIR, SHIPPED, load_records
from .model import DATA_DIR

HEADLINE = "sft-n16-hop2"
"""the mem1 model the README, `make demo` and the notebooks show (a policy name of evaluate.SHIPPED)"""
BASELINE = "ppo-full"
"""the full-context baseline: the strongest full-context model on dev and test (SFT on N = 1..4,
then PPO). Continued on the headline's N = 1..16 data it only lost accuracy, from the first steps
(docs/log.md, "The full-context baseline on long tasks"), so its best point is its start."""
CONTRAST = "sft"
"""the N <= 4 model: the same recipe's data stopped at N = 4, the wall past it (why the data go to 16)"""
RECIPE = "sft-n16-recipe"
"""the headline recipe's one-command run (`mem1 sft --preset n16`), beside the chain it replaces"""
CHAIN = ("sft-n8", "sft-n16", "sft-n16-hop", "sft-n16-hop2")
"""the four runs, each continuing the last on a new state format, that first made the headline model"""
RECORDS = DATA_DIR.parent / "docs" / "results" / "eval-qa.json"
"""the test-split evaluation records the index's figures come from"""

ROLES = {
    HEADLINE: "headline",
    BASELINE: "baseline",
    CONTRAST: "contrast",
}
"""policy name -> its part; every other shipped checkpoint is a `study` arm (or `webshop`)"""


def role(name: str) -> str:
    """headline, baseline, contrast, webshop or study."""
    if name in ROLES:
        return ROLES[name]
    return "webshop" if "webshop" in name else "study"


def baseline_of(records: list[dict]) -> str | None:
    """The full-context baseline the records hold: BASELINE once it is evaluated, else the stand-in
    the demo takes (demo.FALLBACK_BASELINES, in order), so that a table or a notebook picks up the
    new baseline as soon as its records land. None when the records hold none of them."""
    from .demo import FALLBACK_BASELINES  # demo imports this module

    held = {r["policy"] for r in records if r["agent"] == "full"}
    return next((b for b in (BASELINE, *FALLBACK_BASELINES) if b in held), None)


def policy_names() -> dict[str, str]:
    """checkpoint folder -> the policy name `mem1 eval --policy` takes (the folder's own name when
    SHIPPED has none for it)."""
    return {folder: name for name, (folder, _) in SHIPPED.items()}


def rerun_command(command: str, folder: str) -> str:
    """A card's command as a user reruns it: its output under runs/ (the shipped folder is taken),
    its `--threads` (a machine setting, not part of the recipe) dropped."""
    command = re.sub(r"--out \S+", f"--out runs/{folder}", command)
    return re.sub(r" --threads \d+", "", command)


def read_card(folder: Path) -> dict:
    """A checkpoint's card.json, or {} when it has none."""
    file = folder / "card.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def test_figures(records: list[dict], name: str) -> dict[int, dict]:
    """N -> the record of `name` under its own agent (full for a *-full policy, else mem1)."""
    agent = "full" if "full" in name else "mem1"
    return {r["objectives"]: r for r in records if r["policy"] == name and r["agent"] == agent}


ORDER = {"headline": 0, "baseline": 1, "contrast": 2, "study": 3, "webshop": 4}


def index_rows(checkpoints: Path = CHECKPOINT_DIR, records_file: Path = RECORDS) -> list[dict]:
    """One row per shipped checkpoint folder: name, folder, role, kind, minutes, command, and the
    test EM per objective at N = 2 / 16 with the peak tokens at N = 16 (None where not evaluated)."""
    records = load_records([records_file]) if records_file.is_file() else []
    names = policy_names()
    rows = []
    for folder in sorted(p for p in checkpoints.iterdir() if (p / "card.json").is_file()):
        card, name = read_card(folder), names.get(folder.name, folder.name)
        figures = test_figures(records, name)
        rows.append(
            {
                "name": name,
                "folder": folder.name,
                "role": role(name),
                "kind": card.get("kind", "?"),
                "minutes": card.get("minutes"),
                "command": rerun_command(card.get("command", ""), folder.name),
                "em_n2": figures[2]["em_per_objective"] if 2 in figures else None,
                "em_n16": figures[16]["em_per_objective"] if 16 in figures else None,
                "peak_n16": figures[16]["peak_tokens"] if 16 in figures else None,
                "episodes": figures[2]["episodes"] if 2 in figures else None,
            }
        )
    return sorted(rows, key=lambda r: (ORDER[r["role"]], r["name"]))


def _cell(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def index_markdown(rows: list[dict]) -> str:
    """The index page: a table of every checkpoint, then each one's command."""
    lines = [
        "# Checkpoints",
        "",
        "Generated by `mem1 checkpoints --out docs/checkpoints.md` from each checkpoint's `card.json`",
        "and the test-split records in `docs/results/eval-qa.json` (EM per objective, greedy, the same",
        "tasks for every policy); `tests/test_docs.py` checks this page is current. A policy's",
        "name is what `mem1 eval --policy` takes. Roles: the **headline** mem1 model, the full-context",
        "**baseline**, the N <= 4 **contrast**, and **study** arms kept for the log (docs/log.md).",
        "",
        "| name | role | kind | minutes | test EM/N at N=2 | at N=16 | peak tokens N=16 |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['name']}` | {r['role']} | {r['kind']} | {_cell(r['minutes'], '.1f')} | "
            f"{_cell(r['em_n2'], '.3f')} | {_cell(r['em_n16'], '.3f')} | {_cell(r['peak_n16'], '.0f')} |"
        )
    lines += [
        "",
        "## Commands",
        "",
        "Each writes under runs/; the shipped folder is `data/checkpoints/FOLDER`.",
        "",
    ]
    for r in rows:
        lines += [f"- `{r['name']}` (data/checkpoints/{r['folder']}):", f"  `{r['command']}`"]
    return "\n".join(lines) + "\n"
