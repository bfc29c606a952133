"""Generation: the engines that turn a batch of contexts into responses, one per context.

A rollout (rollout.py) needs one thing from a model: a batch of responses, each sampled from its
episode's own generator (`Engine`), so that an episode's tokens never depend on which other
episodes share the batch. Here:

- `TeacherPolicy`: a scripted teacher (a domain's `teacher()`) behind the same interface;
- `ModelPolicy` (engine `kv`, the default): our decoding loop. Its KV cache is preallocated and
  written in place, finished rows leave the batch, and each episode's prompt (and last turn) keys
  and values are reused at its next turn;
- `HFGeneratePolicy` (engines `hf`, `hf-static`): transformers' `generate` with its dynamic KV cache,
  or with a static, fixed-shape cache (`StaticCache`, its length rounded up to a multiple of
  `STATIC_BUCKET` so that shapes repeat) and the decoding step compiled by `torch.compile`. Our
  sampler runs as a logits processor, whose one-hot output greedy decoding then picks, and our stop
  check as a stopping criterion;
- `PacedTeacher`: the teacher's responses at a model's cost (`mem1 eval --policy paced`);
- `load_engine`: 'teacher', 'tiny', 'paced' or a checkpoint folder -> (engine, tokenizer).

All model engines share the sampler (`sample`) and the stop check (`stop_checker`), so on the same
model and generators they write the same tokens, up to the float rounding of different attention
paths (for float32 and half-precision models: `generate` hands processors float32 logits, and the
sampler draws its uniforms in the logits' dtype, so a float64 model samples other tokens under
`hf`). `mem1 bench generate` (bench.py) compares them. A faster engine (an inference server, a
paged-attention library) plugs in by implementing `respond(contexts, generators) -> list[Response]`
and a line in `make_engine`.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch

from .codec import codec
from .decode import PlainStep
from .model import TINY_DIR, load_policy, load_tokenizer
from .protocol import STOP_STRINGS
from .teacher import teacher_response

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
        self.respond_text = respond_text or teacher_response
        self._encode, self._decode = codec(tokenizer)

    def respond(self, contexts: list[list[int]], generators: list[torch.Generator]) -> list[Response]:
        out = []
        for ids in contexts:
            text = self.respond_text(self._decode(ids))
            resp = self._encode(text)
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
    prefill_mb: float = 1024.0
    """memory bound of one prefill's attention (`ModelPolicy.prefill_bytes`): a prefill runs all of
    its rows' new ids in one forward, whose attention holds rows x heads x S x (P + S) scores (S new
    ids, P reused ones), many GB for 64 contexts of thousands of tokens (`--agent full` at N = 16),
    so the prefill of a batch of `batch_size` runs in parts of fewer rows under this bound (never below
    one row; `ModelPolicy` [7]). Decoding still runs the whole batch, and results do not change"""
    plain_step: bool = True
    """`kv` engine: decode with the plain-torch Qwen2 step (decode.py) where it applies (a Qwen2 on
    the CPU in float32/64), transformers' forward otherwise; False (engine `kv-hf`): always
    transformers' forward. The prefill is transformers' either way"""


PREFILL_COPIES = 3
"""attention tensors of a prefill's size alive at once (scores, softmax, mask), for `prefill_mb`"""


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


def sample(logits: torch.Tensor, cfg: GenerationConfig, generators: Sequence[torch.Generator]):
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

        def start_rows(self, rows: list, width: int, like=None) -> None:
            """Begin with `width` columns of already computed states: row b's (keys, values) of shape
            (H, T_b, D), T_b <= width, right-aligned, zeros before them (masked pads must be finite),
            or all zeros for a row that is None. Written straight into the buffer: no (B, H, T, D) copy.
            `like`: a (keys, values) giving shapes and dtype when every row is None."""
            k0, v0 = next((r for r in rows if r is not None), like)
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


class CacheTooLarge(ValueError):
    """The KV cache a batch asks for does not fit in the memory there is (message is one line)."""


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on `device` (CPU: the kernel's MemAvailable); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_cache_fits(model, rows: int, capacity: int, device: torch.device) -> None:
    """Before allocating: `rows` episodes' KV caches of `capacity` positions fit in the free memory,
    or one line says how much they need (a --max-new-tokens of 1e9 asked for 256 GB before this)."""
    n_layers = _has_layers(model)
    if not n_layers:
        return
    text = model.config.get_text_config(decoder=True)
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    itemsize = next(model.parameters()).dtype.itemsize
    need = rows * capacity * n_layers * 2 * heads * head_dim * itemsize
    free = available_memory(device)
    if free is not None and need > free:
        raise CacheTooLarge(
            f"the KV cache of {rows:,} episodes x {capacity:,} positions needs {need / 2**30:.1f} GiB, "
            f"{free / 2**30:.1f} GiB is free: lower --batch-size or --max-new-tokens"
        )


def _preallocated_cache(model, capacity: int, rows: list | None = None, width: int = 0, like=None):
    """A DynamicCache of `PreallocatedLayer`s (None when the model has no usable config).

    `rows`: per batch row, None or per layer (keys, values) of shape (H, T, D) the row begins with,
    right-aligned in the first `width` columns (`PreallocatedLayer.start_rows`); `like`: such a row,
    for shapes when every row is None (a part of a batch whose other rows reuse states).
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
            layer.start_rows([None if r is None else r[i] for r in rows], width, like and like[i])
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
    7. A bounded prefill. The prefill runs a batch's new ids in one forward, whose attention holds
       rows x heads x S x (P + S) scores; over `prefill_mb` (`prefill_bytes`) it runs the rows in
       parts of the same layout (at least one row each) and stacks their caches, so decoding still
       runs the whole batch together.
    8. The decoding steps run in plain torch (decode.py: one product for q, k and v, no repeated
       keys/values, no 4D mask rebuilt per step) where the model allows (`GenerationConfig.plain_step`;
       engine `kv-hf` keeps transformers' forward). The prefill stays transformers': it is
       compute-bound (the plain version measured the same time, 1.12 vs 1.17 s for 64 rows x 229 ids).
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
        self.prefill_forwards = 0
        """[7] prefill forwards run (a running count): more than the batches when `prefill_mb` splits them"""

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

    def prefill_bytes(self, rows: int, new: int, reused: int) -> float:
        """Estimated memory of a prefill forward's attention: `rows` rows of `new` ids (padded) run
        against `reused` stored columns, in a cache with room for `max_new_tokens`: rows x heads x
        new x width scores in the model's dtype, `PREFILL_COPIES` times (`GenerationConfig.prefill_mb`)."""
        config = getattr(self.model, "config", None)
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        heads = getattr(text, "num_attention_heads", None) or 1
        itemsize = next(self.model.parameters()).dtype.itemsize
        width = reused + new + self.config.max_new_tokens
        return float(rows) * heads * new * width * itemsize * PREFILL_COPIES

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
        check_cache_fits(model, B, P + S + cfg.max_new_tokens, device)
        mask = torch.zeros((B, P + S + cfg.max_new_tokens), dtype=torch.long)
        for b, k in enumerate(cut):
            mask[b, P - k : P] = 1
        mask[:, P : P + S] = rest_mask
        positions = (mask[:, : P + S].cumsum(-1) - 1).clamp(min=0)[:, P:]  # [1] pads skipped
        mask = mask.to(device)
        # [7] rows per forward under `prefill_mb`; all share the batch's layout (P, S), so the parts'
        # caches stack into the batch's cache and each row computes what it would in one forward
        per = B if not _has_layers(model) else int(cfg.prefill_mb * 2**20 // self.prefill_bytes(1, S, P))
        per = max(1, min(B, per))
        like = next((r for r in rows if r is not None), None)
        caches, logits = [], []
        for lo in range(0, B, per):
            result = model(
                input_ids=rest[lo : lo + per].to(device),
                attention_mask=mask[lo : lo + per, : P + S],
                position_ids=positions[lo : lo + per].to(device),
                cache=_preallocated_cache(
                    model, P + S + cfg.max_new_tokens, rows[lo : lo + per], P, like
                ),  # [5]
                use_cache=True,
                logits_to_keep=1,  # [2]
            )
            caches.append(result.cache)
            logits.append(result.logits[:, -1, :])
            self.prefill_forwards += 1
        cache = caches[0]
        if len(caches) > 1:  # [7] one batch again: decoding runs all B rows together
            for i, layer in enumerate(cache.layers):
                parts = [c.layers[i] for c in caches]
                layer._k = torch.cat([part._k for part in parts])
                layer._v = torch.cat([part._v for part in parts])
                for part in parts[1:]:
                    part._k = part._v = part.keys = part.values = None
                layer._views()
        logits = logits[0] if len(logits) == 1 else torch.cat(logits)
        return cache, logits, mask, positions[:, -1].to(device) + 1, P + S

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
            plain = PlainStep.of(model) if cfg.plain_step and cache is not None else None  # [8]
            rows = list(range(B))  # batch row r generates for context rows[r]
            gens = list(generators)
            for step in range(cfg.max_new_tokens):
                tokens, lp = sample(logits, cfg, gens)
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
                if plain is not None:  # [8]
                    logits = plain(tokens, next_pos, cache, mask[:, : width + step + 1])
                else:
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
# Engines

ENGINES = ("kv", "kv-hf", "hf", "hf-static")
DEFAULT_ENGINE = "kv"
"""the fastest measured by `mem1 bench generate` on the 2-core dev machine (1 thread, untrained tiny
model, 16 mem1 episodes at N = 2, 64 new tokens, median of 3 interleaved rounds): kv 2,120 tokens/s,
hf 0.65x, hf-static 0.53x after a 37 s compilation; all three wrote the same responses"""
STATIC_BUCKET = 256
"""the static cache's length is rounded up to a multiple of this, so compiled shapes repeat"""


def make_engine(kind: str, model, tokenizer, config: GenerationConfig | None = None, name: str = "model"):
    """An engine of `kind` (ENGINES) around `model`."""
    if kind in ("kv", "kv-hf"):
        config = replace(config or GenerationConfig(), plain_step=kind == "kv")
        return ModelPolicy(model, tokenizer, config, name=name)
    if kind in ("hf", "hf-static"):
        return HFGeneratePolicy(model, tokenizer, config, name=name, static=kind == "hf-static")
    raise ValueError(f"unknown engine {kind!r}: expected one of {', '.join(ENGINES)}")


class _Sampler:
    """A logits processor that samples each row with its own generator (sample), records
    the token and its log-prob, checks the stop, and hands `generate` a one-hot row to pick."""

    def __init__(self, cfg: GenerationConfig, generators, stopped: Callable[[list[int]], bool], pad_id: int):
        self.cfg, self.generators, self.stopped, self.pad_id = cfg, list(generators), stopped, pad_id
        B = len(self.generators)
        self.outputs: list[list[int]] = [[] for _ in range(B)]
        self.logps: list[list[float]] = [[] for _ in range(B)]
        self.done = [False] * B
        self.hit = [False] * B

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows = [b for b, d in enumerate(self.done) if not d]
        picked = torch.full((scores.shape[0],), self.pad_id, dtype=torch.long)
        if rows:
            tokens, lp = sample(scores[rows], self.cfg, [self.generators[b] for b in rows])
            for b, tok, logp in zip(rows, tokens.tolist(), lp.tolist()):
                out = self.outputs[b]
                out.append(tok)
                self.logps[b].append(logp)
                picked[b] = tok
                if self.stopped(out):
                    self.done[b] = True
                elif len(out) >= self.cfg.max_new_tokens:
                    self.done[b] = self.hit[b] = True
        one_hot = torch.full_like(scores, float("-inf"))
        one_hot.scatter_(1, picked.to(scores.device)[:, None], 0.0)
        return one_hot


class HFGeneratePolicy:
    """transformers' `generate` behind generate.Engine: dynamic cache, or static cache + compiled step."""

    def __init__(
        self,
        model,
        tokenizer,
        config: GenerationConfig | None = None,
        name="model",
        static=False,
        compile=True,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.config = config or GenerationConfig()
        self.name, self.static, self.compile = name, static, compile
        """static: a fixed-shape cache; compile (with static): torch.compile the decoding step"""
        self.stops = stop_sequences(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @torch.no_grad()
    def respond(self, contexts: list[list[int]], generators: list[torch.Generator]) -> list[Response]:
        out: list[Response | None] = [None] * len(contexts)
        order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
        bs = self.config.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            for i, r in zip(idx, self._generate([contexts[i] for i in idx], [generators[i] for i in idx])):
                out[i] = r
        return out

    def _generate(self, contexts, generators) -> list[Response]:
        from transformers import CompileConfig, StaticCache
        from transformers import GenerationConfig as HFGenerationConfig
        from transformers.generation import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        model, cfg = self.model, self.config
        device = next(model.parameters()).device
        B, L = len(contexts), max(len(c) for c in contexts)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, L), dtype=torch.long)
        for b, c in enumerate(contexts):  # left padding; generate counts positions from the mask
            ids[b, L - len(c) :] = torch.tensor(c, dtype=torch.long)
            mask[b, L - len(c) :] = 1
        sampler = _Sampler(cfg, generators, stop_checker(self.tokenizer, self.stops), self.pad_id)

        class Done(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return torch.tensor(sampler.done, dtype=torch.bool, device=input_ids.device)

        # A fresh generation config: a checkpoint's own (Qwen's samples with penalties) must not apply.
        gen = HFGenerationConfig(
            max_new_tokens=cfg.max_new_tokens, do_sample=False, pad_token_id=self.pad_id, eos_token_id=None
        )
        kwargs = {}
        if self.static:
            length = -(-(L + cfg.max_new_tokens) // STATIC_BUCKET) * STATIC_BUCKET
            kwargs["cache"] = StaticCache(config=model.config, max_cache_len=length)
        if self.static and self.compile:
            compile_config = CompileConfig(
                dynamic=False, mode="reduce-overhead" if device.type == "cuda" else "default"
            )
            compile_config._compile_all_devices = True  # transformers compiles on GPUs only otherwise
            gen.compile_config = compile_config
        else:
            gen.disable_compile = True  # transformers would compile a static cache's step on a GPU
        was_training = model.training
        model.eval()
        try:
            model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=gen,
                logits_processor=LogitsProcessorList([sampler]),
                stopping_criteria=StoppingCriteriaList([Done()]),
                **kwargs,
            )
        finally:
            model.train(was_training)
        return [Response(sampler.outputs[b], sampler.logps[b], sampler.hit[b]) for b in range(B)]


# ---------------------------------------------------------------------------------------------
# Engines by name


class PacedTeacher:
    """The teacher's responses at a model's cost: a stand-in for a well-trained tiny model.

    Each turn the model reads the same contexts as one batch and generates as many tokens as the
    longest of the teacher's responses in it (a real batch runs until its longest response ends;
    here shorter rows keep generating too, a slight overestimate), then each episode gets the
    teacher's response. A sweep with it takes about the time a trained tiny model that plays like
    the teacher would take, before such a model exists (`mem1 eval --policy paced`).
    """

    accepts_prefix_lengths = True

    def __init__(self, model_policy, respond_text=None):
        self.model_policy = model_policy
        self.teacher = TeacherPolicy(model_policy.tokenizer, respond_text)
        self.name, self.config = "paced", model_policy.config

    def clear_prefix_cache(self) -> None:
        self.model_policy.clear_prefix_cache()

    def respond(self, contexts, generators, prefix_lengths=None):
        responses = self.teacher.respond(contexts, generators)
        self.model_policy.config = replace(self.config, max_new_tokens=max(len(r.ids) for r in responses))
        try:
            self.model_policy.respond(contexts, generators, prefix_lengths)
        finally:
            self.model_policy.config = self.config
        return responses


def load_engine(
    name: str,
    generation: GenerationConfig | None = None,
    respond_text=None,
    label: str | None = None,
    dtype=None,
):
    """(engine, tokenizer) for a policy name: 'teacher' (`respond_text`, a domain's `teacher()`;
    default the QA teacher), 'tiny' (the untrained tiny model), 'paced' (`PacedTeacher` on it) or a
    checkpoint folder. `label` names the engine in the records (default: the folder's name)."""
    if name == "teacher":
        tokenizer = load_tokenizer(TINY_DIR)
        return TeacherPolicy(tokenizer, respond_text), tokenizer
    model, tokenizer = load_policy("tiny" if name == "paced" else name, dtype=dtype)
    engine = ModelPolicy(model, tokenizer, generation, name=label or Path(name).name or name)
    if name == "paced":
        return PacedTeacher(engine, respond_text=respond_text), tokenizer
    return engine, tokenizer
