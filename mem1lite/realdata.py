"""Readers for real QA data in the Search-R1 / FlashRAG jsonl format, from a local path.

No download happens here (the machines that run this repo have no hub access): users who have the
files point these functions at them. Questions files hold one JSON object per line,
`{"id": ..., "question": ..., "golden_answers": [...]}`; corpus files (wiki-18 style) hold
`{"id": ..., "contents": "\"Title\"\ntext"}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .store import DataError
from .world import Document


@dataclass(frozen=True)
class RealQuestion:
    id: str
    question: str
    golden_answers: tuple[str, ...]


def _jsonl_rows(path: Path):
    if not path.is_file():
        raise DataError(f"{path} is missing; put Search-R1 jsonl files there (no download happens here)")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno} is not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno} is not a JSON object")
            yield lineno, row


def load_search_r1_questions(path: str | Path) -> list[RealQuestion]:
    """Questions with their golden answers (a string answer is taken as a one-element list)."""
    path = Path(path)
    out = []
    for lineno, row in _jsonl_rows(path):
        golds = row.get("golden_answers", row.get("answer"))
        if isinstance(golds, str):
            golds = [golds]
        if not isinstance(row.get("question"), str) or not isinstance(golds, list) or not golds:
            raise DataError(
                f"{path}:{lineno} needs a string 'question' and a non-empty 'golden_answers' list"
            )
        out.append(
            RealQuestion(
                id=str(row.get("id", lineno)),
                question=row["question"].strip(),
                golden_answers=tuple(str(g) for g in golds),
            )
        )
    return out


def load_search_r1_corpus(path: str | Path, pool: str = "real") -> list[Document]:
    """Corpus passages; the title is the first line of `contents`, without its quotes."""
    path = Path(path)
    docs = []
    for lineno, row in _jsonl_rows(path):
        contents = row.get("contents")
        if not isinstance(contents, str):
            raise DataError(f"{path}:{lineno} needs a string 'contents'")
        title, _, text = contents.partition("\n")
        docs.append(
            Document(id=len(docs), title=title.strip().strip('"'), text=text.strip(), entity=-1, pool=pool)
        )
    return docs
