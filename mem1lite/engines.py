"""Generation engines behind `rollout.Engine`, and `mem1 bench generate`, which compares them.

    mem1 bench generate --json runs/bench-generate.json      # ~2 minutes on 2 cores
    mem1 bench generate --engines kv,hf --episodes 8          # a quick look

A rollout needs one thing from a model: a batch of responses, one per context, each sampled from its
episode's own generator (rollout.Engine). Three engines do that here, all with the same sampler
(`rollout._sample`) and the same stop check (`rollout.stop_checker`), so on the same model and
generators they write the same tokens, up to the float rounding of different attention paths (for
float32 and half-precision models: `generate` hands processors float32 logits, and the sampler draws
its uniforms in the logits' dtype, so a float64 model samples other tokens under `hf`):

- `kv` (the default, `rollout.ModelPolicy`): our decoding loop. Its KV cache is preallocated and
  written in place, finished rows leave the batch, and each episode's prompt (and last turn) keys
  and values are reused at its next turn.
- `hf`: transformers' `generate` with its dynamic KV cache (`DynamicCache`, grown by concatenation
  each step): the stock Hugging Face path. Our sampler runs as a logits processor, whose one-hot
  output greedy decoding then picks, and our stop check as a stopping criterion.
- `hf-static`: the same `generate` with a static, fixed-shape cache (`StaticCache`, its length
  rounded up to a multiple of `STATIC_BUCKET` so that shapes repeat) and the decoding step compiled
  by `torch.compile` (transformers' `CompileConfig`, on CPU too).

`DEFAULT_ENGINE` is the one `mem1 bench generate` measured fastest (the numbers are beside it). A
faster engine (an inference server, a paged-attention library) plugs in by implementing
`respond(contexts, generators) -> list[Response]` and a line in `make_engine`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .rollout import GenerationConfig, ModelPolicy, Response, _sample, stop_checker, stop_sequences

ENGINES = ("kv", "hf", "hf-static")
DEFAULT_ENGINE = "kv"
"""the fastest measured by `mem1 bench generate` on the 2-core dev machine (1 thread, untrained tiny
model, 16 mem1 episodes at N = 2, 64 new tokens, median of 3 interleaved rounds): kv 2,120 tokens/s,
hf 0.65x, hf-static 0.53x after a 37 s compilation; all three wrote the same responses"""
STATIC_BUCKET = 256
"""the static cache's length is rounded up to a multiple of this, so compiled shapes repeat"""


def make_engine(kind: str, model, tokenizer, config: GenerationConfig | None = None, name: str = "model"):
    """An engine of `kind` (ENGINES) around `model`."""
    if kind == "kv":
        return ModelPolicy(model, tokenizer, config, name=name)
    if kind in ("hf", "hf-static"):
        return HFGeneratePolicy(model, tokenizer, config, name=name, static=kind == "hf-static")
    raise ValueError(f"unknown engine {kind!r}: expected one of {', '.join(ENGINES)}")


class _Sampler:
    """A logits processor that samples each row with its own generator (rollout._sample), records
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
            tokens, lp = _sample(scores[rows], self.cfg, [self.generators[b] for b in rows])
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
    """transformers' `generate` behind rollout.Engine: dynamic cache, or static cache + compiled step."""

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
# mem1 bench generate


@dataclass
class GenerateBenchConfig:
    """What `bench_generate` measures."""

    engines: tuple[str, ...] = ENGINES
    """engines compared, the first one being the reference of the ratios"""
    episodes: int = 16
    """mem1 episodes rolled out together (one batch)"""
    objectives: int = 2
    """task size (the paper trains at N = 2)"""
    max_new_tokens: int = 64
    """response limit (the untrained model always reaches it)"""
    repeats: int = 2
    """timed rounds after one warm-up round (which holds any compilation), engines interleaved"""
    policy: str = "tiny"
    """model: `tiny` (untrained) or a checkpoint directory"""
    seed: int = 0
    """tasks, initialisation and sampling"""
    threads: int | None = None
    """torch CPU threads (None: torch's default)"""
    world: str | None = None
    """world folder (default data/qa)"""


def bench_generate(
    cfg: GenerateBenchConfig | None = None, log: Callable[[str], None] | None = print
) -> list[dict]:
    """Roll out the same episodes with each engine, interleaved, and report tokens/s side by side.

    Every round plays the same tasks with the same per-episode generators, so every engine writes
    the same tokens up to float rounding; the share of identical responses is reported. The
    warm-up round is timed too (`warmup_seconds`: compilation for `hf-static`).
    """
    from .model import TINY_DIR, build_tiny_model, load_policy, load_tokenizer
    from .protocol import QAEnvironment
    from .retrieval import PoolRetrievers
    from .rollout import RolloutConfig, run_episodes
    from .world import load_world, make_tasks

    cfg = cfg or GenerateBenchConfig()
    log = log or (lambda s: None)
    for e in cfg.engines:
        if e not in ENGINES:
            raise ValueError(f"unknown engine {e!r}: expected some of {', '.join(ENGINES)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = load_world(cfg.world)
    retriever = PoolRetrievers(world)["dev"]
    if cfg.policy == "tiny":
        model, tokenizer = build_tiny_model(seed=cfg.seed), load_tokenizer(TINY_DIR)
    else:
        model, tokenizer = load_policy(cfg.policy)
    model.eval()
    tasks = make_tasks(world, "dev", cfg.objectives, cfg.episodes, seed=cfg.seed)
    gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=1.0, batch_size=cfg.episodes)
    log(
        f"generation engines: {cfg.policy} model, mem1, N={cfg.objectives}, {cfg.episodes} episodes in one "
        f"batch, <= {cfg.max_new_tokens} new tokens, {torch.get_num_threads()} threads"
    )

    def play(engine_name):
        engine = make_engine(engine_name, model, tokenizer, gen, name=cfg.policy)
        envs = [QAEnvironment.from_task(t, retriever) for t in tasks]
        wall, cpu = time.perf_counter(), time.process_time()
        trajs = run_episodes(
            engine, tokenizer, envs, RolloutConfig("mem1", seed=cfg.seed, progress=False), tasks
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        tokens = sum(len(t.output_ids) for tr in trajs for t in tr.turns)
        return tokens, wall, cpu, [[t.output_ids for t in tr.turns] for tr in trajs]

    runs: dict[str, list] = {e: [] for e in cfg.engines}
    warmup, outputs = {}, {}
    for r in range(cfg.repeats + 1):
        for e in cfg.engines:
            tokens, wall, cpu, outs = play(e)
            if r == 0:
                warmup[e] = wall
                outputs[e] = outs
            else:
                runs[e].append((tokens, wall, cpu))
            log(
                f"  {'warm-up' if r == 0 else f'round {r}':8s} {e:10s} {tokens:6d} tokens in {wall:6.2f} s: "
                f"{tokens / wall:7.0f} tokens/s"
            )
    ref = cfg.engines[0]
    records = []
    for e in cfg.engines:
        speed = [t / w for t, w, _ in runs[e]]
        cpu_speed = [t / c for t, _, c in runs[e]]
        ratio = [s / r for s, r in zip(speed, [t / w for t, w, _ in runs[ref]])]
        same = sum(a == b for a, b in zip(outputs[e], outputs[ref])) / len(outputs[ref])
        records.append(
            {
                "bench": "generate",
                "engine": e,
                "default": e == DEFAULT_ENGINE,
                "policy": cfg.policy,
                "agent": "mem1",
                "objectives": cfg.objectives,
                "episodes": cfg.episodes,
                "max_new_tokens": cfg.max_new_tokens,
                "tokens": runs[e][-1][0],
                "tokens_per_s": statistics.median(speed),
                "tokens_per_cpu_s": statistics.median(cpu_speed),
                "warmup_seconds": warmup[e],
                "ratio_vs_" + ref: statistics.median(ratio),
                "same_responses_as_" + ref: same,
                "repeats": cfg.repeats,
                "threads": torch.get_num_threads(),
            }
        )
    log(f"ratios (median of {cfg.repeats} interleaved rounds, measured in this run):")
    for rec in records:
        log(
            f"  {rec['engine']:10s} {rec['tokens_per_s']:7.0f} tokens/s  "
            f"x{rec['ratio_vs_' + ref]:.2f} vs {ref}  "
            f"warm-up {rec['warmup_seconds']:6.1f} s  same responses as {ref}: "
            f"{rec['same_responses_as_' + ref]:.0%}"
        )
    fastest = max(records, key=lambda r: r["tokens_per_s"])["engine"]
    log(f"fastest here: {fastest} (default: {DEFAULT_ENGINE})")
    return records
