"""Trajectory records: token-in/token-out turns, their visible context as spans, jsonl, token kinds.

An episode is a list of *pieces*: response 0, observation 0, response 1, observation 1, ... and the
prompt before them. A turn records the *spans* it saw (`[piece, start, end]`, piece -1 is the
prompt), the exact output ids, their sampling log-probs and the kind of each output token. Context
ids are rebuilt from the spans (`context_ids`), never by decoding and re-tokenising, and the rollout
(rollout.py) checks that what it rebuilds is what it fed. Masked-trajectory layouts (masks.py) read
the same spans.

Schema of a jsonl line (`SCHEMA` = "mem1lite.trajectory/1"): the fields of `Trajectory` and `Turn`
below, JSON-encoded; `output_kinds` is a string with one letter per output token
(`terms.KIND_LETTERS`).
"""

from __future__ import annotations

import json
import math
import re
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .files import atomic_open
from .metrics import dependency, peak_tokens
from .terms import KIND_LETTERS

SCHEMA = "mem1lite.trajectory/1"
PROMPT = -1


# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class Turn:
    spans: list[list[int]]
    """visible context: [piece, start, end]; piece -1 is the prompt, 2j response j, 2j+1 observation j"""
    output_ids: list[int]
    """the exact ids the policy produced"""
    logprobs: list[float]
    """sampling log-prob of each output id (log-softmax of logits / temperature; 0 for the teacher)"""
    output_kinds: str
    """one letter per output id: s state, a action, A answer, e format error, o other"""
    observation_ids: list[int]
    """the environment's reply (empty when the episode ended at this turn)"""
    action: str
    """'search', 'answer' or 'error'"""
    argument: str = ""
    error: str = ""
    hit_limit: bool = False
    """the response reached the token limit without a stop tag"""
    seconds: float = 0.0


@dataclass
class Trajectory:
    task_id: str
    split: str
    questions: list[str]
    golds: list
    agent: str
    policy: str
    prompt_ids: list[int]
    turns: list[Turn] = field(default_factory=list)
    env: str = "qa"
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    episode: int = 0
    answer: str | None = None
    em: float = 0.0
    f1: float = 0.0
    per_slot_em: list[float] = field(default_factory=list)
    format_errors: int = 0
    seconds: float = 0.0
    schema: str = SCHEMA

    @property
    def objectives(self) -> int:
        return len(self.questions)

    @property
    def reward(self) -> float:
        return self.em

    def piece(self, index: int) -> list[int]:
        if index == PROMPT:
            return self.prompt_ids
        turn = self.turns[index // 2]
        return turn.output_ids if index % 2 == 0 else turn.observation_ids

    def context_ids(self, j: int) -> list[int]:
        """The exact ids fed to the model at turn j, rebuilt from its spans."""
        return self.ids_of(self.turns[j].spans)

    def ids_of(self, spans: Sequence[Sequence[int]]) -> list[int]:
        out: list[int] = []
        for p, a, b in spans:
            out += self.piece(p)[a:b]  # slices joined in C, not an id at a time
        return out

    def context_lengths(self) -> list[int]:
        return [sum(b - a for _, a, b in t.spans) for t in self.turns]

    @property
    def peak_tokens(self) -> int:
        return peak_tokens(self.context_lengths())

    @property
    def dependency(self) -> float:
        return dependency(self.context_lengths(), [len(t.output_ids) for t in self.turns])

    def to_json(self) -> str:
        d = asdict(self)
        d.update(
            objectives=self.objectives,
            reward=self.reward,
            peak_tokens=self.peak_tokens,
            dependency=self.dependency,
            n_turns=len(self.turns),
        )
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> Trajectory:
        """Rebuild a trajectory from its JSON form; raises ValueError/TypeError/KeyError if malformed."""
        if not isinstance(d, dict):
            raise TypeError(f"expected a JSON object, got {type(d).__name__}")
        if d.get("schema") != SCHEMA:
            raise ValueError(f"unknown trajectory schema {d.get('schema')!r} (expected {SCHEMA})")
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["turns"] = [Turn(**t) for t in d["turns"]]
        traj = cls(**d)
        traj.check()
        return traj

    def check(self) -> None:
        """Per turn: one log-prob and one kind per output id; spans inside pieces that exist; token
        ids whole numbers >= 0, log-probs numbers <= 0, EM and F1 within 0..N (a record edited by
        hand or by a bug is refused, not drawn)."""
        _check_ids("prompt_ids", self.prompt_ids)
        n = len(self.questions)
        for name in ("em", "f1"):
            v = getattr(self, name)
            if not (_number(v) and 0 <= v <= n):
                raise ValueError(f"{name} {v!r} is outside 0..{n} (N = {n})")
        if not all(_number(v) and 0 <= v <= 1 for v in self.per_slot_em):
            raise ValueError(f"per_slot_em {self.per_slot_em!r} holds a value outside 0..1")
        for j, t in enumerate(self.turns):
            if not len(t.output_ids) == len(t.logprobs) == len(t.output_kinds):
                raise ValueError(f"turn {j}: output_ids, logprobs and output_kinds differ in length")
            _check_ids(f"turn {j}: output_ids", t.output_ids)
            _check_ids(f"turn {j}: observation_ids", t.observation_ids)
            if not all(isinstance(v, int | float) and v <= 1e-4 for v in t.logprobs):  # NaN fails <=
                raise ValueError(f"turn {j}: a log-prob is not a number <= 0")
            for p, a, b in t.spans:
                if not (PROMPT <= p < 2 * j and 0 <= a <= b <= len(self.piece(p))):
                    raise ValueError(f"turn {j}: span {[p, a, b]} is outside the trajectory")


def _number(v) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_ids(name: str, ids) -> None:
    if not (isinstance(ids, list) and all(type(i) is int for i in ids)) or (ids and min(ids) < 0):
        raise ValueError(f"{name} holds something other than token ids (whole numbers >= 0)")


def write_jsonl(trajectories: Iterable[Trajectory], path: str | Path) -> Path:
    """Write atomically (files.py): a temporary file renamed into place once complete."""
    with atomic_open(path) as f:
        for t in trajectories:
            f.write(t.to_json() + "\n")
    return Path(path)


@dataclass
class LoadReport:
    trajectories: list[Trajectory]
    errors: list[str]
    """one message per bad line: 'file:line: why'"""


def read_jsonl(path: str | Path, strict: bool = False) -> LoadReport:
    """Read trajectories; a malformed line is reported with its file and line and skipped."""
    path = Path(path)
    out, errors = [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:  # strict UTF-8: a damaged byte is an error, never a silently replaced character
                out.append(Trajectory.from_dict(json.loads(raw.decode("utf-8"))))
            # JSON and Unicode errors are ValueErrors; a line nested deeper than the parser's
            # recursion limit raises RecursionError
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                msg = f"{path}:{lineno}: {type(exc).__name__}: {str(exc)[:120]}"
                if strict:
                    raise ValueError(msg) from exc
                errors.append(msg)
    return LoadReport(out, errors)


# ---------------------------------------------------------------------------------------------
# Token kinds


def token_kinds(tokenizer, ids: Sequence[int], is_error: bool) -> str:
    """One letter per output token: the tag region its text falls in (the tags themselves included).

    Works whether the tags are single special tokens (our tokenizer) or several ordinary tokens (a
    real Qwen tokenizer): regions are found in the text, then mapped back to tokens by offsets.
    """
    if is_error:
        return KIND_LETTERS["error"] * len(ids)
    texts = _token_texts(tokenizer, ids)
    full = "".join(texts)
    region = bytearray(b"o" * len(full))  # one letter per character, sliced and searched in C
    for pattern, letter in _KIND_REGIONS:
        for m in pattern.finditer(full):
            region[m.start() : m.end()] = letter * (m.end() - m.start())
    out, pos = [], 0
    for t in texts:
        seg = region[pos : pos + len(t)].lstrip(b"o")  # its first letter that is not "o", if any
        out.append(chr(seg[0]) if seg else "o")
        pos += len(t)
    return "".join(out)


_TEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""per tokenizer, the text of each id decoded so far: decoding one id at a time through transformers
was a quarter of the time of playing the teacher for SFT data (#22)"""


def _token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """`tokenizer.decode([i])` for each id, each id decoded once per tokenizer."""
    known = _TEXTS.setdefault(tokenizer, {})
    # not `set(ids) - known.keys()`: that walks every id known so far (thousands) at each call
    for i in {i for i in ids if i not in known}:
        known[i] = tokenizer.decode([i], skip_special_tokens=False)
    return [known[i] for i in ids]


_KIND_REGIONS = [
    (re.compile(r"<think>.*?</think>", re.S), b"s"),
    (re.compile(r"<search>.*?</search>", re.S), b"a"),
    (re.compile(r"<answer>.*?</answer>", re.S), b"A"),
]


def summarize(trajs: Sequence[Trajectory]) -> dict:
    """Mean episode metrics (the CLI contract's record fields)."""
    n = max(1, len(trajs))
    return {
        "episodes": len(trajs),
        "em": sum(t.em for t in trajs) / n,
        "f1": sum(t.f1 for t in trajs) / n,
        "em_per_objective": sum(t.em / max(1, t.objectives) for t in trajs) / n,
        "peak_tokens": sum(t.peak_tokens for t in trajs) / n,
        "dependency": sum(t.dependency for t in trajs) / n,
        "turns": sum(len(t.turns) for t in trajs) / n,
        "format_errors": sum(t.format_errors for t in trajs) / n,
        "seconds": sum(t.seconds for t in trajs) / n,
    }
