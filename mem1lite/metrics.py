"""Every metric of the repo, defined once.

- `normalize_answer`: SQuAD normalisation (lower-case, drop punctuation and articles, fold spaces).
- `exact_match`, `f1`: SQuAD EM and token F1 of one prediction against one or more golds.
- `score_answers`: multi-objective scoring. The answer string is split on ";" and slot i is
  scored against question i only. Missing slots score 0, extra slots are ignored: a wrong number
  of answers never zeroes the whole task (the official MEM1 code does that).
- `peak_tokens`: the largest context the model was fed in any turn, prompt included (counted
  once: the official eval counts `<think>` twice).
- `dependency`: the paper's attention-cost proxy, sum over turns of (context + out/2) * out.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation. Anything that is not a string normalises to the empty string."""
    if not isinstance(text, str):
        return ""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _golds(gold: str | Sequence[str]) -> list[str]:
    return [gold] if isinstance(gold, str) else list(gold)


def exact_match(prediction: str, gold: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold (an empty prediction never does)."""
    pred = normalize_answer(prediction)
    return float(bool(pred) and any(pred == normalize_answer(g) for g in _golds(gold)))


def f1(prediction: str, gold: str | Sequence[str]) -> float:
    """SQuAD token F1, the best over the golds."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for g in _golds(gold):
        ref = normalize_answer(g).split()
        common = Counter(pred) & Counter(ref)
        same = sum(common.values())
        if same:
            precision, recall = same / len(pred), same / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def split_answers(answer: str | None) -> list[str]:
    """The slots of a multi-objective answer, `"a1; a2; a3"` -> ["a1", "a2", "a3"]."""
    if not isinstance(answer, str) or not answer.strip():
        return []
    return [slot.strip() for slot in answer.split(";")]


@dataclass(frozen=True)
class AnswerScore:
    em: float
    """exact matches summed over objectives (0..N): the task reward"""
    f1: float
    """F1 summed over objectives (0..N)"""
    per_slot_em: tuple[float, ...]
    per_slot_f1: tuple[float, ...]


def score_answers(answer: str | None, golds: Sequence[str | Sequence[str]]) -> AnswerScore:
    """Score a `;`-separated answer against one gold (or gold list) per objective. Never raises."""
    slots = split_answers(answer)
    ems, f1s = [], []
    for i, gold in enumerate(golds):
        pred = slots[i] if i < len(slots) else ""
        ems.append(exact_match(pred, gold))
        f1s.append(f1(pred, gold))
    return AnswerScore(em=sum(ems), f1=sum(f1s), per_slot_em=tuple(ems), per_slot_f1=tuple(f1s))


def peak_tokens(context_lengths: Sequence[int]) -> int:
    """Largest context fed to the model in any turn (prompt included); 0 for no turn."""
    return max(context_lengths, default=0)


def dependency(context_lengths: Sequence[int], output_lengths: Sequence[int]) -> float:
    """Sum over turns of (context + out/2) * out: the attention pairs an output attends over."""
    return float(sum((c + o / 2) * o for c, o in zip(context_lengths, output_lengths, strict=True)))


def paired_bootstrap(a, b, samples: int = 10_000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of b - a over paired items (the same tasks, the same seeds) and its bootstrap interval.

    Resamples the items with replacement `samples` times; the interval is the central `level`
    share of the resampled means. `excludes_zero` says whether b is reliably above (or below) a.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired_bootstrap needs two non-empty 1-D sequences of the same length")
    diff = b - a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(samples, len(diff)))
    means = diff[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "diff": float(diff.mean()),
        "low": float(lo),
        "high": float(hi),
        "excludes_zero": bool(lo > 0 or hi < 0),
        "n": int(len(diff)),
    }


def mean_interval(
    values, samples: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """The mean of one sample's items (e.g. a record's EM per task) and its bootstrap interval: the
    items resampled with replacement `samples` times, the central `level` share of the means."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("mean_interval needs a non-empty 1-D sequence")
    means = x[np.random.default_rng(seed).integers(0, len(x), size=(samples, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(x.mean()), float(lo), float(hi)


def ratio_bootstrap(a, b, samples: int = 10_000, seed: int = 0, level: float = 0.95) -> dict:
    """mean(b) / mean(a) of two independent samples (e.g. EM per objective at N = 16 over N = 2:
    different tasks) and its bootstrap interval, each sample resampled on its own."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or b.ndim != 1 or len(a) == 0 or len(b) == 0:
        raise ValueError("ratio_bootstrap needs two non-empty 1-D sequences")
    if a.mean() <= 0:
        return {"ratio": float("nan"), "low": float("nan"), "high": float("nan"), "n": int(len(a))}
    rng = np.random.default_rng(seed)
    ma = a[rng.integers(0, len(a), size=(samples, len(a)))].mean(axis=1)
    mb = b[rng.integers(0, len(b), size=(samples, len(b)))].mean(axis=1)
    ratios = mb / np.where(ma > 0, ma, np.nan)
    lo, hi = np.nanquantile(ratios, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"ratio": float(b.mean() / a.mean()), "low": float(lo), "high": float(hi), "n": int(len(a))}
