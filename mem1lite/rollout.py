"""Agents (memory policies), batched generation, and token-in/token-out trajectory records.

An episode is a list of *pieces*: response 0, observation 0, response 1, observation 1, ... and the
prompt before them. An agent decides which of them the model sees at turn j:

- `mem1`: the prompt, the previous response (its internal state and action) and the previous
  observation. Everything older is gone: memory stays constant however long the task.
- `full`: the prompt and every piece so far (ReAct-style).
- `truncate`: the prompt and the last `K` tokens of the history (the oldest piece may be cut).

A turn records the *spans* it saw (`[piece, start, end]`, piece -1 is the prompt), the exact output
ids, their sampling log-probs and the kind of each output token. Context ids are rebuilt from the
spans (`context_ids`), never by decoding and re-tokenising, and the rollout checks that what it
rebuilds is what it fed. Masked-trajectory layouts (masks.py) read the same spans.

Schema of a jsonl line (`SCHEMA` = "mem1lite.trajectory/1"): the fields of `Trajectory` and `Turn`
below, JSON-encoded; `output_kinds` is a string with one letter per output token (`KIND_LETTERS`).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from .files import atomic_open
from .metrics import dependency, peak_tokens
from .protocol import STOP_STRINGS

SCHEMA = "mem1lite.trajectory/1"
PROMPT = -1
KIND_LETTERS = {
    "prompt": "p",
    "state": "s",
    "action": "a",
    "info": "i",
    "answer": "A",
    "error": "e",
    "other": "o",
}
LETTER_KINDS = {v: k for k, v in KIND_LETTERS.items()}


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
        return [t for p, a, b in spans for t in self.piece(p)[a:b]]

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
        """Per turn: one log-prob and one kind per output id; spans inside pieces that exist."""
        for j, t in enumerate(self.turns):
            if not len(t.output_ids) == len(t.logprobs) == len(t.output_kinds):
                raise ValueError(f"turn {j}: output_ids, logprobs and output_kinds differ in length")
            for p, a, b in t.spans:
                if not (PROMPT <= p < 2 * j and 0 <= a <= b <= len(self.piece(p))):
                    raise ValueError(f"turn {j}: span {[p, a, b]} is outside the trajectory")


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
    texts = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    full = "".join(texts)
    region = ["o"] * len(full)
    for pattern, letter in _KIND_REGIONS:
        for m in pattern.finditer(full):
            region[m.start() : m.end()] = letter * (m.end() - m.start())
    out, pos = [], 0
    for t in texts:
        seg = [c for c in region[pos : pos + len(t)] if c != "o"]
        out.append(seg[0] if seg else "o")
        pos += len(t)
    return "".join(out)


_KIND_REGIONS = [
    (re.compile(r"<think>.*?</think>", re.S), "s"),
    (re.compile(r"<search>.*?</search>", re.S), "a"),
    (re.compile(r"<answer>.*?</answer>", re.S), "A"),
]


# ---------------------------------------------------------------------------------------------
# Agents


class Agent:
    name = "agent"

    def spans(self, traj: Trajectory) -> list[list[int]]:
        """Visible spans for the next turn of `traj`."""
        raise NotImplementedError


class Mem1Agent(Agent):
    """Prompt + last response + last observation."""

    name = "mem1"

    def spans(self, traj):
        out = [[PROMPT, 0, len(traj.prompt_ids)]]
        if traj.turns:
            j = len(traj.turns) - 1
            out += [
                [2 * j, 0, len(traj.turns[j].output_ids)],
                [2 * j + 1, 0, len(traj.turns[j].observation_ids)],
            ]
        return out


class FullAgent(Agent):
    """Prompt + the whole history."""

    name = "full"

    def spans(self, traj):
        out = [[PROMPT, 0, len(traj.prompt_ids)]]
        for j, t in enumerate(traj.turns):
            out += [[2 * j, 0, len(t.output_ids)], [2 * j + 1, 0, len(t.observation_ids)]]
        return out


class TruncateAgent(Agent):
    """Prompt + the last `keep_tokens` tokens of the history."""

    name = "truncate"

    def __init__(self, keep_tokens: int = 512):
        if keep_tokens < 1:
            raise ValueError(f"keep_tokens must be >= 1, got {keep_tokens}")
        self.keep_tokens = keep_tokens

    def spans(self, traj):
        history = FullAgent().spans(traj)[1:]
        kept, budget = [], self.keep_tokens
        for p, a, b in reversed(history):
            if budget <= 0:
                break
            take = min(b - a, budget)
            kept.append([p, b - take, b])
            budget -= take
        return [[PROMPT, 0, len(traj.prompt_ids)]] + kept[::-1]


AGENTS = ("mem1", "full", "truncate")


def make_agent(name: str, truncate_tokens: int = 512) -> Agent:
    if name == "mem1":
        return Mem1Agent()
    if name == "full":
        return FullAgent()
    if name == "truncate":
        return TruncateAgent(truncate_tokens)
    raise ValueError(f"unknown agent {name!r}: expected one of {', '.join(AGENTS)}")


# ---------------------------------------------------------------------------------------------
# Policies


@dataclass
class Response:
    ids: list[int]
    logprobs: list[float]
    hit_limit: bool


class Engine(Protocol):
    """What `run_episodes` needs from a policy: one response per context, for a batch of contexts.

    `TeacherPolicy` and `ModelPolicy` implement it (structurally, no base class), and so can a faster
    generation engine (a static-cache or compiled decoder, an inference server, ...): nothing else
    in the rollout changes. Context i samples from `generators[i]` only, so an episode's tokens do not
    depend on which other episodes share the batch (`run_episodes` seeds one generator per episode).
    Optional: `accepts_prefix_lengths = True`, with `respond(..., prefix_lengths=)` and
    `clear_prefix_cache()`, for an engine that reuses an episode's keys/values across turns; `config`
    (a `GenerationConfig`), whose temperature and top-p the trajectories record.
    """

    name: str

    def respond(self, contexts: list[list[int]], generators: list[torch.Generator]) -> list[Response]: ...


class TeacherPolicy:
    """A scripted teacher behind the same interface as a model: `respond_text` maps a turn's
    context text to the response text (default: the QA teacher, teacher.py)."""

    name = "teacher"

    def __init__(self, tokenizer, respond_text: Callable[[str], str] | None = None):
        self.tokenizer = tokenizer
        if respond_text is None:
            from .teacher import teacher_response as respond_text
        self.respond_text = respond_text

    def respond(self, contexts: list[list[int]], generators: list[torch.Generator]) -> list[Response]:
        out = []
        for ids in contexts:
            text = self.respond_text(self.tokenizer.decode(ids, skip_special_tokens=False))
            resp = self.tokenizer.encode(text, add_special_tokens=False)
            out.append(Response(resp, [0.0] * len(resp), False))
        return out


@dataclass
class GenerationConfig:
    """How a model policy samples its responses."""

    max_new_tokens: int = 192
    """longest response; longer ones become format errors"""
    temperature: float = 1.0
    """0 decodes greedily"""
    top_p: float = 1.0
    """nucleus sampling threshold"""
    batch_size: int = 64
    """episodes generated together"""
    reuse_prompt_cache: bool = True
    """within one rollout, compute each episode's prompt keys/values once and reuse them every turn"""
    reuse_turn_cache: bool = True
    """and more: keep the keys/values of each episode's last turn (context + response) and reuse the
    longest prefix the next context shares with it (full: the whole last turn; truncate: until it
    starts cutting; mem1: the prompt). Needs `reuse_prompt_cache`"""
    cache_mb: float = 1024.0
    """memory bound of the stored keys/values (least recently used episodes go first and are
    recomputed from scratch at their next turn)"""


def stop_sequences(tokenizer) -> list[list[int]]:
    seqs = [tokenizer.encode(s, add_special_tokens=False) for s in STOP_STRINGS]
    for special in ("<|im_end|>", tokenizer.eos_token):
        if special and special in tokenizer.get_vocab():
            seqs.append([tokenizer.convert_tokens_to_ids(special)])
    return seqs


def stop_checker(tokenizer, stops: list[list[int]]) -> Callable[[list[int]], bool]:
    """Whether a response (its ids so far) has just written a stop: `</search>`, `</answer>` or an
    end-of-turn token (`stops`, from `stop_sequences`).

    With our tokenizer every stop is one special token and the check compares the last id. A real
    Qwen tokenizer has no tag tokens: `</answer>` is several ordinary tokens, and which ones depends
    on the text around it (`2010.</answer>` ends in `.</`, `answer`, `>`; `</search>` then a newline
    in `>\\n`), so comparing ids would miss stops. Then the last few tokens are decoded and searched
    for the stop strings: they hold every stop that ends in the newest token, and a stop that ended
    earlier would have ended the response then.
    """
    single = {s[0] for s in stops if len(s) == 1}
    if all(len(s) == 1 for s in stops):
        return lambda out: out[-1] in single
    window = max(len(s) for s in STOP_STRINGS) + 1  # tokens: each decodes to at least one character

    def stopped(out: list[int]) -> bool:
        if out[-1] in single:
            return True
        text = tokenizer.decode(out[-window:], skip_special_tokens=False)
        return any(s in text for s in STOP_STRINGS)

    return stopped


def _sample(logits: torch.Tensor, cfg: GenerationConfig, generators: Sequence[torch.Generator]):
    """One token per row and its log-prob under softmax(logits / T). logits: (B, V), float.

    Inverse-CDF sampling with one uniform per row drawn from that episode's own generator, so a
    sample never depends on which other episodes share the batch. Without top-p the CDF runs in
    vocabulary order (a (B, V) sort costs more than the tiny model's whole decoding step); with
    top-p it runs over the probabilities sorted high to low, cut at the nucleus.
    """
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if cfg.temperature <= 0:
        tokens = logits.argmax(-1)
        logp = torch.log_softmax(logits, -1)
        return tokens, logp.gather(-1, tokens[:, None])[:, 0]
    logp = torch.log_softmax(logits / cfg.temperature, -1)  # (B, V)
    probs = logp.exp()
    order = None
    if cfg.top_p < 1.0:
        probs, order = probs.sort(-1, descending=True)
        keep = (probs.cumsum(-1) - probs) < cfg.top_p  # always keeps the first
        probs = probs * keep
    cdf = probs.cumsum(-1)  # (B, V)
    u = torch.stack([torch.rand((), generator=g, dtype=cdf.dtype) for g in generators])  # on the CPU
    u = u.to(cdf.device) * cdf[:, -1]  # a GPU model: the per-episode generators stay CPU generators
    pick = torch.searchsorted(cdf, u[:, None]).clamp(max=cdf.shape[-1] - 1)  # (B, 1)
    tokens = (order.gather(-1, pick) if order is not None else pick)[:, 0]
    return tokens, logp.gather(-1, tokens[:, None])[:, 0]


@functools.cache
def _kv_layer_class():
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A DynamicLayer that writes into a preallocated buffer and hands attention a view of it.

        transformers' DynamicLayer concatenates each new token onto its whole cache, which copies the
        cache at every step: at 64 rows and a few hundred tokens that copy costs as much as the model.
        """

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity, self.length = capacity, 0

        def start_rows(self, rows: list, width: int) -> None:
            """Begin with `width` columns of already computed states: row b's (keys, values) of shape
            (H, T_b, D), T_b <= width, right-aligned, zeros before them (masked pads must be finite),
            or all zeros for a row that is None. Written straight into the buffer: no (B, H, T, D) copy."""
            k0, v0 = next(r for r in rows if r is not None)
            self._alloc(k0[None], v0[None], max(self.capacity, width), batch=len(rows))
            for b, row in enumerate(rows):
                n = 0 if row is None else row[0].shape[-2]
                self._k[b, :, : width - n] = 0
                self._v[b, :, : width - n] = 0
                if n:
                    self._k[b, :, width - n : width] = row[0]
                    self._v[b, :, width - n : width] = row[1]
            self.length = width
            self._views()

        def _alloc(self, keys, values, size, batch=None):
            self.device = keys.device
            batch = keys.shape[0] if batch is None else batch
            self._k = keys.new_empty((batch, keys.shape[1], size, keys.shape[-1]))
            self._v = values.new_empty((batch, values.shape[1], size, values.shape[-1]))
            self.is_initialized = True

        def _views(self):
            self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            n = key_states.shape[-2]
            if not self.is_initialized:
                self._alloc(key_states, value_states, max(self.capacity, n))
            if self.length + n > self._k.shape[-2]:  # past the planned size: grow, never cut
                old_k, old_v = self._k, self._v
                self._alloc(old_k, old_v, self.length + n + self.capacity)
                self._k[:, :, : self.length] = old_k[:, :, : self.length]
                self._v[:, :, : self.length] = old_v[:, :, : self.length]
            self._k[:, :, self.length : self.length + n] = key_states
            self._v[:, :, self.length : self.length + n] = value_states
            self.length += n
            self._views()
            return self.keys, self.values

        def batch_select_indices(self, indices):
            if self.is_initialized:
                self._k, self._v = self._k[indices], self._v[indices]
                self._views()

    return PreallocatedLayer


def _has_layers(model) -> int:
    """The number of decoder layers of a transformers model (0 when it does not say)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "get_text_config"):
        return 0
    return getattr(config.get_text_config(decoder=True), "num_hidden_layers", 0) or 0


def _preallocated_cache(model, capacity: int, rows: list | None = None, width: int = 0):
    """A DynamicCache of `PreallocatedLayer`s (None when the model has no usable config).

    `rows`: per batch row, None or per layer (keys, values) of shape (H, T, D) the row begins with,
    right-aligned in the first `width` columns (`PreallocatedLayer.start_rows`).
    """
    from transformers import DynamicCache

    n_layers = _has_layers(model)
    if not n_layers:
        return None
    layer_class = _kv_layer_class()
    cache = DynamicCache()
    cache.layers = [layer_class(capacity) for _ in range(n_layers)]
    cache.layer_class_to_replicate = None
    if rows is not None and width > 0:
        for i, layer in enumerate(cache.layers):
            layer.start_rows([None if r is None else r[i] for r in rows], width)
    return cache


@dataclass
class _StoredSequence:
    """[6] The keys/values of one episode's last sequence, kept for its next turn."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    """per layer (keys, values) of shape (H, len(ids), D)"""
    nbytes: int


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix (slice comparisons run in C; a bisection when they differ)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class ModelPolicy:
    """A causal LM generating a batch of responses with a KV cache.

    Implementation details (each keeps a row's result what it would be alone, to float rounding):

    1. Left padding, with position ids counted from each row's first real token, so a row's
       positions are the ones it would have alone.
    2. The prefill computes logits for the last position only (`logits_to_keep=1`).
    3. A row that has finished (stop sequence or token limit) leaves the batch: its rows of the KV
       cache, mask and positions are dropped, so long batches do not keep paying for short answers.
    4. Per step, the Python work is one `tolist()` of the sampled tokens and their log-probs.
    5. The KV cache is preallocated and written in place (`_preallocated_cache`), not concatenated.
    6. KV reuse across turns. Within one rollout (`run_episodes` passes `prefix_lengths`, the
       episode's prompt, and clears the store at the start and the end: PPO changes the weights
       between rollouts), when a row finishes, the keys/values of its whole sequence (context +
       response, less the last token, which was never fed) are kept, keyed by the episode's prompt.
       At the episode's next turn the longest prefix that the new context shares with that sequence
       is taken from the store and only the rest is prefilled: for `full` the whole previous turn,
       for `truncate` the previous turn until the cut starts moving, for `mem1` the prompt. Same
       ids at the same positions after the same ids give the same keys/values, so reuse is exact
       (to float rounding: decoding computed them one token at a time); it is decided by comparing
       ids, so a stale or shared entry can only be used as far as it matches. Row layout:
       [pad | reused prefix | pad | rest of context | generated], with position ids that skip the
       pads. `reuse_turn_cache=False` keeps only the prompt. The store is bounded by `cache_mb`:
       least recently used episodes are evicted and recomputed from scratch at their next turn.
    """

    accepts_prefix_lengths = True

    def __init__(self, model, tokenizer, config: GenerationConfig | None = None, name: str = "model"):
        self.model, self.tokenizer = model, tokenizer
        self.config = config or GenerationConfig()
        self.name = name
        self.stops = stop_sequences(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # [6] episode (its prompt ids) -> its last sequence's keys/values; least recently used first
        self._prefix_store: OrderedDict[tuple[int, ...], _StoredSequence] = OrderedDict()
        self._prefix_bytes = 0
        self.reused_tokens = 0
        """[6] context ids taken from the store instead of prefilled (a running count)"""
        self.prefilled_tokens = 0
        """context ids prefilled (a running count)"""

    def clear_prefix_cache(self) -> None:
        self._prefix_store.clear()
        self._prefix_bytes = 0

    @torch.no_grad()
    def respond(
        self,
        contexts: list[list[int]],
        generators: list[torch.Generator],
        prefix_lengths: list[int] | None = None,
    ) -> list[Response]:
        """One response per context. `prefix_lengths[i]`: how many leading ids of context i are the
        episode's prompt, which names the episode whose keys/values are kept for later calls (0: none)."""
        if prefix_lengths is None or not self.config.reuse_prompt_cache or not _has_layers(self.model):
            prefix_lengths = [0] * len(contexts)
        out: list[Response | None] = [None] * len(contexts)
        order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))  # similar lengths batch together
        bs = self.config.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            batch = self._generate(
                [contexts[i] for i in idx], [generators[i] for i in idx], [prefix_lengths[i] for i in idx]
            )
            for i, r in zip(idx, batch):
                out[i] = r
        return out

    def _take_stored(self, keys: list[tuple[int, ...] | None]) -> list[_StoredSequence | None]:
        """[6] Take the rows' stored sequences out of the store (each row stores a fresher one when it
        finishes); a key seen twice in one batch is served once."""
        out = []
        for k in keys:
            entry = self._prefix_store.pop(k, None) if k else None
            if entry is not None:
                self._prefix_bytes -= entry.nbytes
            out.append(entry)
        return out

    def _keep(self, key: tuple[int, ...], ids: list[int], cache, row: int, mask_row: torch.Tensor) -> None:
        """[6] Store row `row`'s keys/values for `ids` (its valid cache columns, in order; with
        `reuse_turn_cache` off, the prompt's only), then evict down to `cache_mb`."""
        cfg = self.config
        length = len(ids) if cfg.reuse_turn_cache else len(key)
        cols = mask_row[: cache.layers[0].length].nonzero()[:, 0]
        if len(cols) != len(ids):  # the cache layout and the ids disagree: a bug, never store it
            raise RuntimeError(f"KV cache holds {len(cols)} columns for a {len(ids)}-id sequence")
        cols = cols[:length]
        layers = [
            (layer.keys[row].index_select(1, cols), layer.values[row].index_select(1, cols))
            for layer in cache.layers
        ]
        entry = _StoredSequence(list(ids[:length]), layers, sum(k.nbytes + v.nbytes for k, v in layers))
        old = self._prefix_store.pop(key, None)
        if old is not None:
            self._prefix_bytes -= old.nbytes
        self._prefix_store[key] = entry
        self._prefix_bytes += entry.nbytes
        while self._prefix_bytes > cfg.cache_mb * 2**20 and self._prefix_store:
            _, evicted = self._prefix_store.popitem(last=False)  # recomputed at its next turn
            self._prefix_bytes -= evicted.nbytes

    def _prefill(self, contexts, keys):
        """Run the contexts through the model. Returns (cache, last logits, mask, next positions, width)."""
        model, cfg = self.model, self.config
        device = next(model.parameters()).device
        stored = self._take_stored(keys)
        # Keep at least one id out of the reused prefix, so the prefill always yields the last logits.
        cut = [
            0 if s is None else min(_common_prefix(s.ids, c), len(c) - 1) for s, c in zip(stored, contexts)
        ]
        B, P = len(contexts), max(cut)
        rows = [[(k[:, :n], v[:, :n]) for k, v in s.layers] if n > 0 else None for s, n in zip(stored, cut)]
        self.reused_tokens += sum(cut)
        self.prefilled_tokens += sum(len(c) for c in contexts) - sum(cut)
        rest, rest_mask, _ = _left_pad([c[k:] for c, k in zip(contexts, cut)], self.pad_id, 0)
        S = rest.shape[1]
        mask = torch.zeros((B, P + S + cfg.max_new_tokens), dtype=torch.long)
        for b, k in enumerate(cut):
            mask[b, P - k : P] = 1
        mask[:, P : P + S] = rest_mask
        positions = (mask[:, : P + S].cumsum(-1) - 1).clamp(min=0)[:, P:]  # [1] pads skipped
        mask = mask.to(device)
        result = model(
            input_ids=rest.to(device),
            attention_mask=mask[:, : P + S],
            position_ids=positions.to(device),
            cache=_preallocated_cache(model, P + S + cfg.max_new_tokens, rows, P),  # [5]
            use_cache=True,
            logits_to_keep=1,  # [2]
        )
        return result.cache, result.logits[:, -1, :], mask, positions[:, -1].to(device) + 1, P + S

    def _generate(self, contexts, generators, prefix_lengths=None) -> list[Response]:
        model, cfg = self.model, self.config
        device = next(model.parameters()).device
        B = len(contexts)
        keys = [tuple(c[:p]) if p > 0 else None for c, p in zip(contexts, prefix_lengths or [0] * B)]
        outputs: list[list[int]] = [[] for _ in range(B)]
        logps: list[list[float]] = [[] for _ in range(B)]
        hit = [False] * B
        stopped = stop_checker(self.tokenizer, self.stops)
        was_training = model.training
        model.eval()
        try:
            cache, logits, mask, next_pos, width = self._prefill(contexts, keys)
            rows = list(range(B))  # batch row r generates for context rows[r]
            gens = list(generators)
            for step in range(cfg.max_new_tokens):
                tokens, lp = _sample(logits, cfg, gens)
                keep = []
                for r, (b, tok, logp) in enumerate(zip(rows, tokens.tolist(), lp.tolist())):  # [4]
                    out = outputs[b]
                    out.append(tok)
                    logps[b].append(logp)
                    done = stopped(out)
                    if not done and len(out) >= cfg.max_new_tokens:
                        hit[b] = done = True
                    if not done:
                        keep.append(r)
                    elif keys[b] is not None and cache is not None:  # [6] keep its sequence's states
                        self._keep(keys[b], contexts[b] + out[:-1], cache, r, mask[r])
                if not keep:
                    break
                if len(keep) < len(rows):  # [3] drop finished rows from the batch and the cache
                    sel = torch.tensor(keep, dtype=torch.long, device=device)
                    for layer in cache.layers if cache is not None else ():
                        layer.batch_select_indices(sel)
                    tokens, next_pos, mask = tokens[sel], next_pos[sel], mask[sel]
                    rows = [rows[r] for r in keep]
                    gens = [gens[r] for r in keep]
                mask[:, width + step] = 1
                result = model(
                    input_ids=tokens[:, None].to(device),
                    attention_mask=mask[:, : width + step + 1],
                    position_ids=next_pos[:, None],
                    cache=cache,
                    use_cache=True,
                )
                cache, logits = result.cache, result.logits[:, -1, :]
                next_pos = next_pos + 1
        finally:
            model.train(was_training)
        return [Response(outputs[b], logps[b], hit[b]) for b in range(B)]


def _left_pad(seqs: list[list[int]], pad_id: int, extra: int):
    """(ids, mask, positions) of shape (B, L + extra) / (B, L) for left-padded `seqs`."""
    B, L = len(seqs), max(len(s) for s in seqs)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L + extra), dtype=torch.long)
    for b, s in enumerate(seqs):
        if s:
            ids[b, L - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[b, L - len(s) : L] = 1
    positions = (mask[:, :L].cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


# ---------------------------------------------------------------------------------------------
# Rollouts


@dataclass
class RolloutConfig:
    """One batch of episodes."""

    agent: str = "mem1"
    """memory policy: mem1, full or truncate"""
    truncate_tokens: int = 512
    """history kept by the truncate agent (the prompt is always kept)"""
    seed: int = 0
    """sampling seed: episode i samples from its own generator seeded (seed, i)"""
    progress: bool = True
    """show a tqdm bar"""
    first_episode: int = 0
    """episode i of this call is recorded and seeded as episode first_episode + i: a shard of a larger
    batch (one process's share under `accelerate launch`) samples exactly what it would in the whole"""


def episode_generator(seed: int, episode: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + episode) % (2**63 - 1))
    return g


def run_episodes(
    policy,
    tokenizer,
    envs: Sequence,
    config: RolloutConfig | None = None,
    tasks: Sequence | None = None,
    on_turn: Callable[[int], None] | None = None,
) -> list[Trajectory]:
    """Play every environment to the end with `policy` under `config.agent`; batched across episodes.

    `envs` implement `prompt()`, `step(text, hit_limit)`, `done` and `result()` (protocol.QAEnvironment).
    """
    from tqdm.auto import tqdm

    cfg = config or RolloutConfig()
    agent = make_agent(cfg.agent, cfg.truncate_tokens)
    gen = getattr(policy, "config", None)
    trajs = []
    for i, env in enumerate(envs):
        prompt_text = tokenizer.apply_chat_template(
            [{"role": "user", "content": env.prompt()}], tokenize=False, add_generation_prompt=True
        )
        task = tasks[i] if tasks is not None else None
        trajs.append(
            Trajectory(
                task_id=getattr(task, "id", f"episode-{cfg.first_episode + i}"),
                split=getattr(task, "split", ""),
                questions=list(getattr(env, "questions", [])),
                golds=[list(g) if isinstance(g, tuple) else g for g in getattr(env, "golds", [])],
                agent=agent.name,
                policy=getattr(policy, "name", "model"),
                prompt_ids=tokenizer.encode(prompt_text, add_special_tokens=False),
                env=getattr(env, "env_name", "qa"),
                seed=cfg.seed,
                temperature=getattr(gen, "temperature", 0.0) if gen else 0.0,
                top_p=getattr(gen, "top_p", 1.0) if gen else 1.0,
                episode=cfg.first_episode + i,
            )
        )
    generators = [episode_generator(cfg.seed, cfg.first_episode + i) for i in range(len(envs))]
    bar = tqdm(total=len(envs), desc=f"rollout {agent.name}", disable=not cfg.progress, leave=False)
    active = [i for i, e in enumerate(envs) if not e.done]
    reuse_prompt = getattr(policy, "accepts_prefix_lengths", False)
    if reuse_prompt:
        policy.clear_prefix_cache()  # keys/values from before are stale if the weights changed since
    try:
        while active:
            active = _play_turn(policy, tokenizer, envs, trajs, agent, generators, active, reuse_prompt, bar)
            if on_turn:
                on_turn(len(active))
    finally:
        if reuse_prompt:
            policy.clear_prefix_cache()  # the weights may change before the next rollout
        bar.close()
    return trajs


def _play_turn(policy, tokenizer, envs, trajs, agent, generators, active, reuse_prompt, bar) -> list[int]:
    """One turn of every active episode; returns the episodes still running."""
    spans = [agent.spans(trajs[i]) for i in active]
    contexts = [trajs[i].ids_of(sp) for i, sp in zip(active, spans)]
    t0 = time.perf_counter()
    if reuse_prompt:
        prefix = [
            len(trajs[i].prompt_ids) if sp[0] == [PROMPT, 0, len(trajs[i].prompt_ids)] else 0
            for i, sp in zip(active, spans)
        ]
        responses = policy.respond(contexts, [generators[i] for i in active], prefix_lengths=prefix)
    else:
        responses = policy.respond(contexts, [generators[i] for i in active])
    per_episode = (time.perf_counter() - t0) / len(active)
    still = []
    for i, sp, context, resp in zip(active, spans, contexts, responses):
        t1 = time.perf_counter()
        env, traj = envs[i], trajs[i]
        text = tokenizer.decode(resp.ids, skip_special_tokens=False)
        outcome = env.step(text, resp.hit_limit)
        obs_ids = (
            tokenizer.encode(outcome.observation, add_special_tokens=False) if outcome.observation else []
        )
        parsed = outcome.parsed
        traj.turns.append(
            Turn(
                spans=sp,
                output_ids=list(resp.ids),
                logprobs=list(resp.logprobs),
                output_kinds=token_kinds(tokenizer, resp.ids, parsed.kind == "error"),
                observation_ids=obs_ids,
                action=parsed.kind,
                argument=parsed.argument,
                error=parsed.error,
                hit_limit=resp.hit_limit,
                seconds=per_episode + time.perf_counter() - t1,
            )
        )
        # Token-in/token-out: the ids rebuilt from the recorded spans are the ids the policy was fed.
        if traj.context_ids(len(traj.turns) - 1) != context:
            raise RuntimeError(f"episode {i}: context rebuilt from spans differs from the one fed")
        if env.done:
            r = env.result()
            traj.answer, traj.em, traj.f1, traj.per_slot_em = r.answer, r.em, r.f1, list(r.per_slot_em)
            traj.format_errors = r.format_errors
            traj.seconds = sum(x.seconds for x in traj.turns)
            bar.update(1)
        else:
            still.append(i)
    return still


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
