"""The README and docs say what the records say, name no machine's folders, and their commands parse."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from mem1lite import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
sys.path.insert(0, str(ROOT / "scripts"))
import sync_docs  # noqa: E402


def test_generated_blocks_and_pages_match_their_records():
    """README's tables and docs/checkpoints.md are regenerated from the records and cards and
    compared: a number typed by hand, or a record changed without the page, fails here."""
    stale = [p.name for p, text in sync_docs.expected().items() if p.read_text() != text]
    assert not stale, f"out of date (run python scripts/sync_docs.py): {stale}"


def test_fill_replaces_a_block_and_refuses_a_missing_one():
    text = "a\n<!-- t: note -->\nold\n<!-- /t -->\nb\n"
    assert sync_docs.fill(text, "t", "new") == "a\n<!-- t: note -->\nnew\n<!-- /t -->\nb\n"
    with pytest.raises(SystemExit, match="no block 'u'"):
        sync_docs.fill(text, "u", "x")


def test_readme_is_a_guide():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 350


ABSOLUTE = re.compile(r"(?<![\w.])/(?:work|root|home|tmp|Users)/")


def test_nothing_committed_names_a_machines_folders():
    files = DOCS + sorted((ROOT / "docs" / "results").rglob("*.json"))
    files += sorted((ROOT / "data" / "checkpoints").glob("*/card.json"))
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files for m in ABSOLUTE.finditer(p.read_text())]
    assert not hits, hits


def _commands(text: str) -> list[str]:
    """Every `mem1 ...` command in the bash (or unlabelled) fenced blocks of a markdown text,
    continuation lines joined; lines with placeholders (`...`, `[--flag]`) are left out."""
    out, fence, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if fence is None:
                fence, lines = line[3:].strip(), []
            else:
                if fence in ("", "bash"):
                    joined = "\n".join(lines).replace("\\\n", "")  # as bash joins them
                    for cmd in joined.splitlines():
                        cmd = cmd.split("#")[0].strip()
                        m = re.match(r"(?:\.venv/bin/)?mem1 (.*)", cmd)
                        if m and "..." not in cmd and "[" not in cmd:
                            out.append(m.group(1))
                fence = None
        elif fence is not None:
            lines.append(line)
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_parse_and_train_under_runs(doc):
    """Each command parses with the real parser; those that train or build write under runs/
    (the shipped folders are taken: a copied command must not fail on them)."""
    parser = cli.build_parser()
    commands = _commands(doc.read_text())
    for command in commands:
        argv = [w for w in shlex.split(command) if w not in ("DIR", "OUT")]
        args = parser.parse_args(argv)
        if argv[0] in ("sft", "ppo"):
            assert args.out.startswith("runs/"), command
    if doc.name == "README.md":
        assert len(commands) >= 8
