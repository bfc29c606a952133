"""BM25 retrieval over one pool's documents (bm25s), formatted as Search-R1 passages.

Each pool gets its own index, so a question can only ever retrieve documents of its own pool
(world.py, design choice 2). The passage format is the one the MEM1 / Search-R1 code feeds its
models: `Doc 1(Title: t) text`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from .world import Document, World

# No stemming, lower-casing only: name parts are invented words and must match exactly.
_STOPWORDS = "english"


@dataclass
class Hit:
    doc: Document
    score: float


_WORDS = re.compile(r"(?u)\b\w\w+\b").findall
"""bm25s.tokenize's default word pattern (scikit-learn's CountVectorizer's)"""
_STOPWORD_SET = frozenset(STOPWORDS_EN)
"""bm25s's English stopwords, which `_STOPWORDS` = "english" selects for the corpus"""


def _query_words(query: str) -> list[str]:
    """`bm25s.tokenize([query], stopwords="english", return_ids=False)[0]` without its per-call
    set-up (a progress bar and a stopword set made for each call: half of a search's time in
    playing the teacher, #22). tests/test_retrieval.py checks both give the same words."""
    return [w for w in _WORDS(query.lower()) if w not in _STOPWORD_SET]


class Retriever:
    """A bm25s index over a list of documents (title and text both indexed)."""

    def __init__(self, documents: Sequence[Document]):
        if not documents:
            raise ValueError("cannot index an empty list of documents")
        self.documents = list(documents)
        corpus = [f"{d.title} {d.text}" for d in self.documents]
        tokens = bm25s.tokenize(corpus, stopwords=_STOPWORDS, show_progress=False)
        self.vocab = tokens.vocab
        self.bm25 = bm25s.BM25()
        self.bm25.index(tokens, show_progress=False)

    def _query_ids(self, query: str) -> list[int]:
        # Tokenise the query as bm25s.tokenize did the corpus (lower case, its word pattern, its
        # stopwords; `_query_words`), with the corpus vocabulary: words it never had cannot match.
        return [self.vocab[w] for w in _query_words(query) if w in self.vocab]

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """The top-`k` documents for `query`; an empty list when no query word is in the corpus."""
        ids = self._query_ids(query)
        if not ids or k <= 0:
            return []
        scores = self.bm25.get_scores(ids)
        k = min(k, len(self.documents))
        top = np.argpartition(-scores, k - 1)[:k]
        # Ties broken by document order, so results never depend on the partition algorithm.
        top = sorted(top.tolist(), key=lambda i: (-float(scores[i]), i))
        return [Hit(self.documents[i], float(scores[i])) for i in top if scores[i] > 0]


def format_passages(hits: Sequence[Hit]) -> str:
    """Search-R1's passage format; `No results.` when nothing matched."""
    if not hits:
        return "No results."
    return " ".join(f"Doc {i + 1}(Title: {h.doc.title}) {h.doc.text}" for i, h in enumerate(hits))


class PoolRetrievers:
    """One lazily built index per pool of a world."""

    def __init__(self, world: World):
        self.world = world
        self._indexes: dict[str, Retriever] = {}

    def __getitem__(self, pool: str) -> Retriever:
        if pool not in self._indexes:
            docs = self.world.documents_of(pool)
            if not docs:
                raise ValueError(f"pool {pool!r} has no documents")
            self._indexes[pool] = Retriever(docs)
        return self._indexes[pool]


def retrieval_recall(
    world: World,
    split: str,
    k_values: Sequence[int] = (1, 3),
    limit: int | None = None,
    retriever: Retriever | None = None,
) -> dict[str, float]:
    """Recall@k of each hop's gold document for its canonical query (the hop's entity name).

    Also returns the index build time and the mean query time, in seconds.
    """
    t0 = time.perf_counter()
    retriever = retriever or Retriever(world.documents_of(split))
    build = time.perf_counter() - t0
    questions = world.questions[split][:limit]
    hits = {k: 0 for k in k_values}
    n = 0
    query_time = 0.0
    for q in questions:
        for query, gold in zip(q.queries, q.gold_docs):
            t = time.perf_counter()
            found = [h.doc.id for h in retriever.search(query, k=max(k_values))]
            query_time += time.perf_counter() - t
            n += 1
            for k in k_values:
                hits[k] += gold in found[:k]
    out = {f"recall@{k}": hits[k] / max(1, n) for k in k_values}
    out.update(hops=n, index_seconds=build, query_ms=1000 * query_time / max(1, n))
    return out
