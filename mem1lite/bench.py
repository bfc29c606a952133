"""Every `mem1 bench`: retrieval, rollout memory and batching, generation engines, layout speed,
the SFT data build.

    mem1 bench retrieval --json runs/bench-retrieval.json     # index and query time, recall@k per pool
    mem1 bench rollout --json runs/bench-rollout.json         # ~3 minutes on 2 cores
    mem1 bench generate --json runs/bench-generate.json       # ~2 minutes on 2 cores
    mem1 bench masks --json runs/bench_masks.json             # layouts' speed and memory, side by side
    mem1 bench data --json runs/bench-data.json               # ~1 minute: SFT teacher data, old vs streamed
    mem1 bench ppo --json runs/bench-ppo.json                 # one PPO step per N, split into its parts
    mem1 bench sft --json runs/bench-sft.json                 # ~25 s: SFT steps, turn rows vs episodes

(`mem1 bench masks --deviation` is layout_check.py: an accuracy study, not a timing.)

Each benchmark plays the QA domain with the modules it measures, so this module sits above all of
them and nothing below imports it.

## Rollout
1. Memory (teacher on dev, N = 2 and N = 16, agents mem1 / full / truncate): peak tokens, the
   largest context fed in any turn, prompt included. Targets: at N = 16, `full` peaks at >= 5x
   `mem1`; `mem1` at N = 16 peaks at <= 2x its N = 2 peak (the paper: 6.4 -> 10.4 hundred, 1.6x).
2. Throughput (one tiny model, default the untrained one, mem1 agent, N = 2, sampling at T = 1):
   64 episodes generated as one batch vs the same kind of episodes one at a time (batch size 1),
   in generated tokens per second of the whole rollout (environment steps included). Target >= 5x.
   The two are interleaved `repeats` times so that background load hits both alike; the median
   ratio is reported, with the best and the CPU-time ratio beside it (CPU time does not count the
   time other processes hold the cores, so it is the steadier figure on a shared machine). The
   episodes played both ways must produce the same tokens: that is checked and reported.

## Generation engines

Every engine (generate.py) rolls out the same episodes with the same per-episode generators,
interleaved, so they write the same tokens up to float rounding; tokens/s side by side.

## Data

The SFT teacher data of `tasks` tasks (default 200, N = 1..16) built three ways, each in a fresh
process one after the other: the in-memory reference (`sft_data.rows_in_memory` and
`labels_per_row`), then sft_data.py's streamed builder on one and on two worker processes
(`teacher_sft_data` + `to_dataset`). Seconds, the ratio to the reference, peak RSS (the process's, its
growth during the build, a worker's), whether the rows are the reference's (sha256), and how long a
rerun that finds the cache takes. Spawning the workers costs a few seconds, so at this size two
workers gain less than on a full build.

## SFT steps

SFT on mem1-view teacher data, the two ways sft.py can train (sft.py [8]): turn rows (TRL's
best-fit-decreasing packs, `max_length` x `grad_accum` a step, FastSFTTrainer's loss) and episodes
(steps of `step_budget` response tokens under the packed layout, the episode trainer's loss). The
data are `episodes` teacher tasks of the long preset's size mix (N = 1..16, half of them at N = 16)
on the `sft` pool; each way trains its own copy of the untrained tiny model with the stage's own
Trainer (`sft.stage_trainer`: its data loader, its count of the step's response tokens, its
`compute_loss`), a step being the accumulated forward and backward passes, gradient clipping and
AdamW. The two are interleaved, `steps` each per round, after one untimed step each; the figure is
response (scored) tokens per second, its median over rounds, and the ratio of the two in each
round (median, best, and in CPU time, which other processes' load does not count).

## PPO step

One PPO step per N from a checkpoint (default `sft-mem1-n16`, the `standard` preset's settings with
`episodes` per step), split as ppo.py runs it: the rollout (generation and the environment), the
scoring (policy, reference and value forward passes under the layout, rewards, advantages) and the
update (`ppo_epochs` passes of forward + backward), with the cost of each per token it handles
(generated tokens for the rollout, policy tokens for the rest), so that a run can be planned: at
N = 16 a step costs what its tokens cost, not what N = 2's do.

`--compare`: the step before ppo.py [11] (`stage_tokens=0`: one padded stage, one LM head pass)
and the step now, side by side on the same rolled-out episodes from the same parameters and
optimiser state, interleaved over `repeats` rounds (the order alternating). Both steps share the
one rollout (the same code either way: it is timed once and counted in both). Reported: the
medians of each way's scoring and update, the median per-round ratio of the whole steps and of
scoring + update, the CPU-time ratio (user + system; other processes' load does not count), and
whether the two updates agree (largest difference of the losses logged and of the parameters).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import sft_data
from .domains import QADomain, load_domain
from .generate import DEFAULT_ENGINE, ENGINES, GenerationConfig, ModelPolicy, TeacherPolicy, make_engine
from .masks import LayoutBatch, ValueHead, build_layout, causal_lm, run_layout
from .model import TINY_DIR, build_tiny_model, load_policy, load_tokenizer
from .probe import teacher_trajectories
from .protocol import QAEnvironment
from .retrieval import PoolRetrievers, retrieval_recall
from .rollout import RolloutConfig, run_episodes
from .sft import SFTArgs
from .terms import AGENTS, DEFAULT_LAYOUT, EXACT_LAYOUTS, LAYOUTS
from .threads import use_threads
from .trajectory import summarize
from .world import SPLITS, load_world, make_tasks

# ---------------------------------------------------------------------------------------------
# mem1 bench retrieval


def bench_retrieval(data: str | Path | None = None, limit: int | None = None, log=print) -> list[dict]:
    """Index time, query time and recall@k of canonical queries, per pool."""
    world = load_world(data)
    records = []
    for split in SPLITS:
        r = retrieval_recall(world, split, limit=limit)
        records.append({"bench": "retrieval", "split": split} | r)
        log(
            f"{split:5s} index {r['index_seconds']:.2f} s  query {r['query_ms']:.3f} ms  "
            f"recall@1 {r['recall@1']:.3f}  recall@3 {r['recall@3']:.3f}"
        )
    return records


# ---------------------------------------------------------------------------------------------
# mem1 bench rollout

TARGETS = {
    "full_vs_mem1_peak": (">=", 5.0),
    "mem1_peak_growth": ("<=", 2.0),
    "batched_vs_single_tokens_per_s": (">=", 5.0),
}


@dataclass
class RolloutBenchConfig:
    """What `bench_rollout` measures."""

    split: str = "dev"
    """pool the tasks come from"""
    teacher_episodes: int = 100
    """teacher tasks per (agent, N)"""
    objectives: tuple[int, int] = (2, 16)
    """the two task sizes compared for memory"""
    policy: str = "tiny"
    """model for the throughput part: `tiny` (untrained) or a checkpoint directory"""
    throughput_objectives: int = 2
    """task size of the throughput episodes (the paper trains at N = 2)"""
    batch_episodes: int = 64
    """episodes generated together"""
    single_episodes: int = 8
    """episodes generated one at a time (the first ones of the batched run's tasks)"""
    max_new_tokens: int = 192
    """response limit, as in GenerationConfig (an untrained model always reaches it)"""
    repeats: int = 3
    """interleaved timing rounds (batched, then single)"""
    seed: int = 0
    """tasks, model initialisation and sampling"""
    threads: int | None = None
    """torch CPU threads (None: the thread policy, threads.py)"""
    data: str | Path | None = None
    """the world folder (default data/qa)"""


def _check(name: str, value: float) -> bool:
    op, target = TARGETS[name]
    return value >= target if op == ">=" else value <= target


def _ratio_record(name: str, value: float, **extra) -> dict:
    op, target = TARGETS[name]
    return (
        {"bench": "rollout", "kind": "ratio", "name": name, "value": value, "target": f"{op} {target:g}"}
        | {"met": _check(name, value)}
        | extra
    )


def bench_rollout(
    cfg: RolloutBenchConfig | None = None, log: Callable[[str], None] | None = print
) -> list[dict]:
    """Run both parts and return flat records (teacher runs, throughput runs, then the ratios)."""

    cfg = cfg or RolloutBenchConfig()
    log = log or (lambda s: None)
    use_threads(cfg.threads)
    world = load_world(cfg.data)
    retriever = PoolRetrievers(world)[cfg.split]
    tokenizer = load_tokenizer(TINY_DIR)
    records: list[dict] = []

    def envs_for(tasks):
        return [QAEnvironment.from_task(t, retriever) for t in tasks]

    # -- 1. memory: the teacher under each agent -----------------------------------------------
    log(f"teacher on {cfg.split}, {cfg.teacher_episodes} tasks per row")
    peaks = {}
    for n in cfg.objectives:
        tasks = make_tasks(world, cfg.split, n, cfg.teacher_episodes, seed=cfg.seed)
        for agent in AGENTS:
            t0 = time.perf_counter()
            trajs = run_episodes(
                TeacherPolicy(tokenizer),
                tokenizer,
                envs_for(tasks),
                RolloutConfig(agent, seed=cfg.seed, progress=False),
                tasks,
            )
            s = summarize(trajs)
            peaks[agent, n] = s["peak_tokens"]
            records.append(
                {"bench": "rollout", "kind": "teacher", "agent": agent, "policy": "teacher", "objectives": n}
                | s
                | {
                    "max_peak_tokens": max(t.peak_tokens for t in trajs),
                    "wall_seconds": time.perf_counter() - t0,
                }
            )
            log(
                f"  N={n:<2d} {agent:8s} EM/objective {s['em_per_objective']:.3f}  peak tokens "
                f"{s['peak_tokens']:7.1f} (max {records[-1]['max_peak_tokens']})  turns {s['turns']:.1f}"
            )
    small, large = cfg.objectives

    # -- 2. throughput: one model, batched vs one at a time -------------------------------------
    if cfg.policy == "tiny":
        model = build_tiny_model(seed=cfg.seed)
    else:
        model, tokenizer = load_policy(cfg.policy)
    tasks = make_tasks(world, cfg.split, cfg.throughput_objectives, cfg.batch_episodes, seed=cfg.seed)
    runs = {"batched": [], "single": []}
    outputs = {}
    log(
        f"throughput: {cfg.policy} model, mem1, N={cfg.throughput_objectives}, {cfg.batch_episodes} episodes "
        f"batched vs {cfg.single_episodes} one at a time, {torch.get_num_threads()} threads"
    )
    for r in range(cfg.repeats):
        for mode in ("batched", "single"):
            batch_size, chosen = (
                (cfg.batch_episodes, tasks) if mode == "batched" else (1, tasks[: cfg.single_episodes])
            )
            gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=1.0, batch_size=batch_size)
            pol = ModelPolicy(model, tokenizer, gen, name=cfg.policy)
            wall, cpu = time.perf_counter(), time.process_time()
            trajs = run_episodes(
                pol, tokenizer, envs_for(chosen), RolloutConfig("mem1", seed=cfg.seed, progress=False), chosen
            )
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            tokens = sum(len(t.output_ids) for tr in trajs for t in tr.turns)
            runs[mode].append({"tokens": tokens, "wall": wall, "cpu": cpu, "summary": summarize(trajs)})
            outputs[mode] = [[t.output_ids for t in tr.turns] for tr in trajs[: cfg.single_episodes]]
            log(
                f"  round {r + 1} {mode:7s} {tokens:6d} tokens in {wall:6.1f} s: "
                f"{tokens / wall:7.0f} tokens/s"
            )
    same = outputs["batched"] == outputs["single"]
    speed = {m: [x["tokens"] / x["wall"] for x in runs[m]] for m in runs}
    cpu_speed = {m: [x["tokens"] / x["cpu"] for x in runs[m]] for m in runs}
    for mode, episodes in (("batched", cfg.batch_episodes), ("single", cfg.single_episodes)):
        s = runs[mode][-1]["summary"]
        records.append(
            {"bench": "rollout", "kind": "throughput", "mode": mode, "agent": "mem1", "policy": cfg.policy}
            | {"objectives": cfg.throughput_objectives, "batch_size": episodes if mode == "batched" else 1}
            | s
            | {
                "episodes": episodes,
                "tokens": runs[mode][-1]["tokens"],
                "tokens_per_s": statistics.median(speed[mode]),
                "tokens_per_s_all": speed[mode],
                "tokens_per_cpu_s": statistics.median(cpu_speed[mode]),
                "max_new_tokens": cfg.max_new_tokens,
                "threads": torch.get_num_threads(),
                "same_tokens_as_other_mode": same,
            }
        )

    # -- ratios -----------------------------------------------------------------------------------
    per_round = [b / s for b, s in zip(speed["batched"], speed["single"])]
    per_round_cpu = [b / s for b, s in zip(cpu_speed["batched"], cpu_speed["single"])]
    ratios = [
        _ratio_record("full_vs_mem1_peak", peaks["full", large] / peaks["mem1", large], objectives=large),
        _ratio_record(
            "mem1_peak_growth", peaks["mem1", large] / peaks["mem1", small], objectives=[small, large]
        ),
        _ratio_record(
            "batched_vs_single_tokens_per_s",
            statistics.median(per_round),
            best=max(per_round),
            per_round=per_round,
            cpu_time_ratio=statistics.median(per_round_cpu),
            same_tokens=same,
            threads=torch.get_num_threads(),
        ),
    ]
    records += ratios
    log("ratios (measured in this run):")
    labels = {
        "full_vs_mem1_peak": f"full / mem1 peak tokens at N={large}",
        "mem1_peak_growth": f"mem1 peak tokens N={large} / N={small}",
        "batched_vs_single_tokens_per_s": f"batched ({cfg.batch_episodes}) / one at a time, tokens/s",
    }
    for r in ratios:
        extra = ""
        if "best" in r:
            extra = (
                f"  (best round {r['best']:.2f}x, CPU-time {r['cpu_time_ratio']:.2f}x, same tokens: {same})"
            )
        log(
            f"  {labels[r['name']]:44s} {r['value']:6.2f}x  target {r['target']}x  "
            f"{'met' if r['met'] else 'MISSED'}{extra}"
        )
    return records


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
    """torch CPU threads (None: the thread policy, threads.py)"""
    data: str | None = None
    """the world folder (default data/qa)"""


def bench_generate(
    cfg: GenerateBenchConfig | None = None, log: Callable[[str], None] | None = print
) -> list[dict]:
    """Roll out the same episodes with each engine, interleaved, and report tokens/s side by side.

    Every round plays the same tasks with the same per-episode generators, so every engine writes
    the same tokens up to float rounding; the share of identical responses is reported. The
    warm-up round is timed too (`warmup_seconds`: compilation for `hf-static`).
    """

    cfg = cfg or GenerateBenchConfig()
    log = log or (lambda s: None)
    for e in cfg.engines:
        if e not in ENGINES:
            raise ValueError(f"unknown engine {e!r}: expected some of {', '.join(ENGINES)}")
    use_threads(cfg.threads)
    world = load_world(cfg.data)
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


# ---------------------------------------------------------------------------------------------
# mem1 bench masks


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim_heap() -> None:
    """Return freed heap pages to the OS so the RSS baseline is honest (glibc only)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Peak resident set size above the starting RSS, sampled by a thread every `interval` s.

    torch's CPU allocator is plain malloc, invisible to tracemalloc; RSS sampling sees it. The
    heap is trimmed first so freed memory of an earlier measurement does not hide this one's.
    """

    def __init__(self, interval: float = 0.0005):
        self.interval = interval
        self.peak = 0

    def __enter__(self):
        _trim_heap()
        self.base = _rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def train_step_time(model, batch: LayoutBatch, value_head=None) -> float:
    """Seconds for one forward + backward of a surrogate PPO-like loss through the layout."""
    t0 = time.perf_counter()
    out = run_layout(model, batch, value_head=value_head)
    loss = -(out.logprobs * out.mask).sum() - 0.01 * (out.entropy * out.mask).sum()
    if out.values is not None:
        loss = loss + ((out.values * out.mask) ** 2).sum()
    loss.backward()
    return time.perf_counter() - t0


def bench_masks(
    objectives: Sequence[int] = (2, 8),
    episodes: int = 4,
    repeats: int = 3,
    layouts: Sequence[str] = LAYOUTS,
    agent: str = "mem1",
    lora: bool = True,
    seed: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """Forward + backward time, policy tokens/s and peak memory of each layout, measured side by side.

    The tiny model (float32, shipped config, LoRA r=8 on every projection as PPO uses it, plus a
    value head) is trained on `episodes` teacher trajectories with N = `objectives`. One round
    measures memory (and warms up): peak RSS above the pre-step RSS (`PeakRSS`). Then `repeats`
    timed rounds, interleaving the layouts so that background load hits them alike; the median is
    reported (and the fastest round beside it: on a shared machine the minimum is the steadier
    estimate of cost), and ratios are against `per_turn` from the same rounds. `threads` sets
    torch's CPU threads (default: the thread policy, threads.py).
    """

    log = log or (lambda s: None)
    use_threads(threads)
    records = []
    qa, tokenizer = QADomain(), load_tokenizer(TINY_DIR)
    for n in objectives:
        trajs = teacher_trajectories(qa, tokenizer, "dev", n, episodes, seed=seed, agent=agent)
        model = build_tiny_model(seed=seed)
        if lora:
            from peft import LoraConfig, get_peft_model

            targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
        head = ValueHead(causal_lm(model).config.hidden_size)
        batches = {name: build_layout(trajs, name) for name in layouts}
        for name in layouts:  # first calls of each code path, on one short trajectory
            train_step_time(model, build_layout(trajs[:1], name), head)
        memory = {}
        for name in layouts:
            model.zero_grad(set_to_none=True)
            head.zero_grad(set_to_none=True)
            with PeakRSS() as m:
                train_step_time(model, batches[name], head)
            memory[name] = m.delta_mb
        times = {name: [] for name in layouts}
        for _ in range(repeats):
            for name in layouts:
                model.zero_grad(set_to_none=True)
                head.zero_grad(set_to_none=True)
                times[name].append(train_step_time(model, batches[name], head))
        base = statistics.median(times["per_turn"]) if "per_turn" in times else None
        base_min = min(times["per_turn"]) if "per_turn" in times else None
        base_mem = memory.get("per_turn")
        for name in layouts:
            b = batches[name]
            sec = statistics.median(times[name])
            rec = {
                "bench": "masks",
                "layout": name,
                "exact": name in EXACT_LAYOUTS,
                "default": name == DEFAULT_LAYOUT,
                "agent": agent,
                "policy": "teacher",
                "objectives": n,
                "episodes": episodes,
                "turns": sum(len(t.turns) for t in trajs),
                "policy_tokens": b.policy_tokens,
                "layout_tokens": b.layout_tokens,
                "padded_tokens": b.padded_tokens,
                "seconds": sec,
                "seconds_min": min(times[name]),
                "seconds_max": max(times[name]),
                "repeats": repeats,
                "tokens_per_s": b.policy_tokens / sec,
                "speedup_vs_per_turn": base / sec if base else None,
                "speedup_min_vs_per_turn": base_min / min(times[name]) if base_min else None,
                "peak_rss_mb": memory[name],
                "memory_vs_per_turn": memory[name] / base_mem if base_mem else None,
                "memory_method": "peak RSS above pre-step RSS (heap trimmed), /proc/self/statm every 0.5 ms",
                "threads": torch.get_num_threads(),
                "lora": lora,
            }
            records.append(rec)
            speed = (
                f"x{rec['speedup_vs_per_turn']:.2f} (min x{rec['speedup_min_vs_per_turn']:.2f})"
                if base
                else "-"
            )
            log(
                f"N={n:<2d} {name:12s} {sec:7.3f} s (min {min(times[name]):6.3f})  "
                f"{rec['tokens_per_s']:6.0f} policy tok/s  {speed} vs per_turn  "
                f"fed {b.layout_tokens:6d} tok (padded {b.padded_tokens:6d})  peak +{memory[name]:7.1f} MB"
            )
    return records


# ---------------------------------------------------------------------------------------------
# mem1 bench data


DATA_PATHS = (("memory", 1), ("streamed", 1), ("streamed", 2))
"""the builds compared: the in-memory reference, then sft_data.py's builder on one and two workers"""


def data_build(
    path: str, workers: int, tasks: int, objectives: Sequence[int], seed: int, data, cache: str
) -> dict:
    """One build of SFT teacher data and its `response` labels, timed in this process (the bench runs
    each in a fresh one, so that its peak RSS is its own). The domain, its `sft` index and the
    tokenizer are loaded before the clock starts: both paths need them."""
    import datasets

    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    domain, tokenizer = load_domain("qa", data), load_tokenizer(TINY_DIR)
    domain.environment(domain.tasks("sft", 1, 1, seed=seed)[0])  # the pool's retrieval index
    args = SFTArgs(tasks=tasks, objectives=tuple(objectives), seed=seed, data_workers=workers)
    _trim_heap()
    base = _rss_bytes()
    t0 = time.perf_counter()
    if path == "memory":
        rows = sft_data.rows_in_memory(domain, tokenizer, args)
        t1 = time.perf_counter()
        sft_data.labels_per_row(rows, "response", seed)
        hit = None
    else:
        sft_data.CACHE_DIR = Path(cache)
        rows = sft_data.teacher_sft_data(domain, tokenizer, args, progress=False, log=lambda *a, **k: None)
        t1 = time.perf_counter()
        sft_data.to_dataset(rows, "response", seed)
    t2 = time.perf_counter()
    if path != "memory":
        sft_data.teacher_sft_data(domain, tokenizer, args, progress=False, log=lambda *a, **k: None)
        hit = time.perf_counter() - t2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {
        "path": path,
        "workers": workers,
        "rows": len(rows),
        "tokens": int(sft_data.row_lengths(rows).sum()),
        "build_seconds": t1 - t0,
        "labels_seconds": t2 - t1,
        "seconds": t2 - t0,
        "cache_hit_seconds": hit,
        "peak_rss_mb": peak / 2**20,
        "build_rss_mb": max(0, peak - base) / 2**20,
        "worker_peak_rss_mb": worker_peak / 2**20 if workers > 1 else None,
        "rows_sha256": sft_data.rows_digest(rows),
    }


def bench_data(
    tasks: int = 200,
    objectives: Sequence[int] = tuple(range(1, 17)),
    seed: int = 0,
    data: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """The SFT data built the old way (rows_in_memory + labels_per_row) and by sft_data.py's
    streamed builder on 1 and 2 workers, each in a fresh process one after the other, from the same
    tasks: seconds (build, labels), ratio to the old way, peak RSS, and whether the rows are the same
    (sha256). The peak RSS of a process counts torch, the world and its index (`build_rss_mb` is the
    growth during the build); a worker's is its own process's."""
    log = log or (lambda s: None)
    records = []
    code = (
        "import json, sys; from mem1lite.bench import data_build; "
        "print(json.dumps(data_build(**json.loads(sys.argv[1]))))"
    )
    for path, workers in DATA_PATHS:
        cache = tempfile.mkdtemp(prefix="mem1-bench-data-")
        try:
            options = dict(
                path=path,
                workers=workers,
                tasks=tasks,
                objectives=list(objectives),
                seed=seed,
                data=str(data) if data else None,
                cache=cache,
            )
            env = os.environ | {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
            done = subprocess.run(
                [sys.executable, "-c", code, json.dumps(options)], capture_output=True, text=True, env=env
            )
            if done.returncode != 0:
                raise RuntimeError(f"bench data: the {path} build failed:\n{done.stderr[-2000:]}")
            records.append({"bench": "data"} | json.loads(done.stdout.strip().splitlines()[-1]))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    old = records[0]
    sizes = sorted(set(objectives))
    log(
        f"teacher data: {tasks} tasks, N = {sizes[0]}..{sizes[-1]}, {old['rows']} rows, "
        f"{old['tokens'] / 1e6:.2f} M tokens, seed {seed}; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    log(
        f"  {'path':9s} {'workers':>7s} {'build s':>8s} {'labels s':>8s} {'total s':>8s} {'x old':>6s} "
        f"{'peak RSS MB':>11s} {'(+build)':>8s} {'worker MB':>9s}  same rows"
    )
    for r in records:
        r["speedup_vs_memory"] = old["seconds"] / r["seconds"]
        r["peak_rss_vs_memory"] = r["peak_rss_mb"] / old["peak_rss_mb"]
        r["same_rows_as_memory"] = r["rows_sha256"] == old["rows_sha256"]
        worker = f"{r['worker_peak_rss_mb']:9.0f}" if r["worker_peak_rss_mb"] else f"{'-':>9s}"
        log(
            f"  {r['path']:9s} {r['workers']:7d} {r['build_seconds']:8.2f} {r['labels_seconds']:8.2f} "
            f"{r['seconds']:8.2f} {r['speedup_vs_memory']:6.2f} {r['peak_rss_mb']:11.0f} "
            f"{r['build_rss_mb']:+8.0f} {worker}  {r['same_rows_as_memory']}"
        )
    hits = [r["cache_hit_seconds"] for r in records if r["cache_hit_seconds"] is not None]
    log(f"  a rerun that finds the cache: {max(hits):.2f} s at most")
    return records


# ---------------------------------------------------------------------------------------------
# mem1 bench sft


def _sft_steps(trainer, batches, steps: int) -> dict:
    """`steps` optimizer steps as the Trainer takes them: its accumulated batches with its count of
    their scored tokens, forward and backward of its loss each, clipping, AdamW. Wall and CPU
    seconds, scored tokens, and tokens fed (real and padded)."""
    model, optimizer = trainer.model, trainer.optimizer
    accumulate = trainer.args.gradient_accumulation_steps
    wall, cpu = time.perf_counter(), time.process_time()
    scored = fed = padded = 0
    for _ in range(steps):
        inputs, n = trainer.get_batch_samples(batches, accumulate, torch.device("cpu"))
        for batch in inputs:
            trainer.compute_loss(model, batch, num_items_in_batch=n).backward()
            if "layout" in batch:
                fed += batch["layout"].layout_tokens
                padded += batch["layout"].padded_tokens
            else:  # padding-free packs: every position a real token
                fed += batch["input_ids"].numel()
                padded += batch["input_ids"].numel()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scored += int(n)
    return {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "scored": scored,
        "fed": fed,
        "padded": padded,
    }


def _endless(trainer):
    """The Trainer's training batches, epoch after epoch."""
    while True:
        yield from trainer.get_train_dataloader()


def bench_sft(
    objectives: Sequence[int] = tuple(range(1, 17)),
    episodes: int = 64,
    steps: int = 4,
    repeats: int = 3,
    seed: int = 0,
    threads: int | None = None,
    data: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """Training steps of the tiny model on the same mem1-view teacher data as turn rows and as
    episodes, interleaved: response tokens per second of each and their ratio (see the module's
    "SFT steps"). One record per way, then the ratio."""
    import datasets
    from datasets import Dataset

    from .sft import Stage, fit_pack_length, make_args, stage_trainer, step_budget

    log = log or (lambda s: None)
    use_threads(threads)
    datasets.disable_progress_bars()
    domain, tokenizer = load_domain("qa", data), load_tokenizer(TINY_DIR)
    preset = make_args("long", objectives=tuple(objectives), seed=seed)
    counts = sft_data.tasks_per_size(preset.objectives, episodes, preset.long_share)
    t0 = time.perf_counter()
    trajs = [
        t
        for n, count in counts.items()
        for t in teacher_trajectories(domain, tokenizer, "sft", n, count, seed=seed)
    ]
    rows = Dataset(sft_data.rows_table(trajs))
    table = Dataset(sft_data.episode_table(trajs))
    totals = sft_data.episode_totals(table)
    args = fit_pack_length(preset, int(sft_data.row_lengths(rows).max()))
    budget = step_budget(args, table)
    log(
        f"teacher data: {len(trajs)} episodes (N = {min(counts)}..{max(counts)}, "
        f"{counts[max(counts)]} at N = {max(counts)}), {totals['turns']} turns, {totals['scored']} response "
        f"tokens, {totals['turn_tokens']} as turn rows, in {time.perf_counter() - t0:.1f} s; "
        f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
        "cores"
    )
    stage = Stage("bench", "response", max_steps=10**6, lr=5e-4, warmup_steps=0)
    trainers = {}
    with tempfile.TemporaryDirectory(prefix="mem1-bench-sft-") as tmp:
        for way, per_step in (("rows", None), ("episodes", budget)):
            trainer = stage_trainer(
                args,
                stage,
                table if per_step else rows,
                build_tiny_model(seed=seed),
                tokenizer,
                Path(tmp) / way,
                seed=seed,
                budget=per_step,
            )
            trainer.create_optimizer()
            trainer.model.train()
            trainers[way] = (trainer, _endless(trainer))
        share = totals["scored"] / totals["turn_tokens"]
        log(
            f"  turn rows: packs of {args.max_length} x {args.grad_accum} tokens a step; episodes: steps of "
            f"{budget} response tokens (the rows' response share {share:.3f})"
        )
        runs = {way: [] for way in trainers}
        for trainer, batches in trainers.values():  # first calls of every code path
            _sft_steps(trainer, batches, 1)
        for r in range(repeats):
            for way, (trainer, batches) in trainers.items():
                run = _sft_steps(trainer, batches, steps)
                runs[way].append(run)
                log(
                    f"  round {r + 1} {way:8s} {steps} steps in {run['wall']:6.1f} s: "
                    f"{run['scored'] / steps:6.0f} response tokens a step, "
                    f"{run['scored'] / run['wall']:6.0f} a second"
                )
    speed = {w: [x["scored"] / x["wall"] for x in runs[w]] for w in runs}
    cpu_speed = {w: [x["scored"] / x["cpu"] for x in runs[w]] for w in runs}
    records = []
    for way in runs:
        done = runs[way]
        n_steps = steps * len(done)
        records.append(
            {
                "bench": "sft",
                "way": way,
                "objectives": sorted(counts),
                "episodes": len(trajs),
                "steps_timed": n_steps,
                "response_tokens_per_step": sum(x["scored"] for x in done) / n_steps,
                "fed_tokens_per_step": sum(x["fed"] for x in done) / n_steps,
                "padded_tokens_per_step": sum(x["padded"] for x in done) / n_steps,
                "seconds_per_step": statistics.median(x["wall"] for x in done) / steps,
                "response_tokens_per_s": statistics.median(speed[way]),
                "response_tokens_per_s_all": speed[way],
                "response_tokens_per_cpu_s": statistics.median(cpu_speed[way]),
                "max_length": args.max_length,
                "grad_accum": args.grad_accum,
                "step_budget": budget if way == "episodes" else None,
                "threads": torch.get_num_threads(),
                "load_average": os.getloadavg()[0],
            }
        )
    per_round = [e / r for e, r in zip(speed["episodes"], speed["rows"])]
    per_round_cpu = [e / r for e, r in zip(cpu_speed["episodes"], cpu_speed["rows"])]
    ratio = {
        "bench": "sft",
        "kind": "ratio",
        "name": "episodes_vs_rows_response_tokens_per_s",
        "value": statistics.median(per_round),
        "best": max(per_round),
        "per_round": per_round,
        "cpu_time_ratio": statistics.median(per_round_cpu),
        "target": ">= 1.5",
        "met": statistics.median(per_round) >= 1.5,
    }
    records.append(ratio)
    for rec in records[:-1]:
        log(
            f"  {rec['way']:8s} {rec['response_tokens_per_step']:6.0f} response tokens a step, fed "
            f"{rec['fed_tokens_per_step']:6.0f} (padded {rec['padded_tokens_per_step']:6.0f}), "
            f"{rec['seconds_per_step']:5.2f} s a step, {rec['response_tokens_per_s']:6.0f} response tokens/s"
        )
    log(
        f"episodes / turn rows, response tokens/s: {ratio['value']:.2f}x (best round {ratio['best']:.2f}x, "
        f"CPU-time {ratio['cpu_time_ratio']:.2f}x)  target >= 1.5x {'met' if ratio['met'] else 'MISSED'}"
    )
    return records


# ---------------------------------------------------------------------------------------------
# PPO step


def bench_ppo(
    init: str = "data/checkpoints/sft-mem1-n16",
    objectives: Sequence[int] = (2, 8),
    episodes: int = 8,
    threads: int | None = None,
    data: str | None = None,
    log: Callable[[str], None] | None = print,
    compare: bool = False,
    repeats: int = 3,
) -> list[dict]:
    """One PPO step at each N of `objectives` (the `standard` preset, `episodes` per step), timed in
    its three parts; one record per N. `compare`: the old step and the new one side by side."""
    from dataclasses import replace

    from .ppo import build_policy, collect, make_args, make_optimizers, update

    log = log or (lambda s: None)
    args = make_args("standard", init=init, episodes_per_step=episodes, minibatch_episodes=min(8, episodes))
    if args.advantage == "group" and episodes % args.group:
        raise ValueError(f"episodes ({episodes}) must be a multiple of the group size ({args.group})")
    use_threads(threads, init)
    domain = load_domain(args.env, data)
    model, head, tokenizer = build_policy(init, args)
    optimizers = list(make_optimizers(model, head, args))
    if compare:
        return _ppo_side_by_side(model, head, tokenizer, domain, optimizers, args, objectives, repeats, log)
    records = []
    log(
        f"PPO step anatomy: {Path(init).name}, {episodes} episodes a step, "
        f"{torch.get_num_threads()} thread(s)"
    )
    log(
        f"{'N':>3s} {'rollout s':>10s} {'score s':>8s} {'update s':>9s} {'step s':>7s}  shares (r/s/u)"
        f"  {'gen tok':>8s} {'pol tok':>8s}  ms/gen tok  ms/pol tok score, update"
    )
    for i, n in enumerate(objectives):
        step_args = replace(args, objectives=(n,))
        batch = collect(model, head, tokenizer, domain, step_args, i)
        upd = update(model, head, batch, optimizers, step_args, i)
        s = batch.stats
        rollout, score, train = s["rollout_seconds"], s["score_seconds"], upd["train_seconds"]
        total = rollout + score + train
        gen, pol = s["generated_tokens"], s["policy_tokens"]
        record = {
            "init": init,
            "objectives": n,
            "episodes": episodes,
            "threads": torch.get_num_threads(),
            "rollout_seconds": rollout,
            "score_seconds": score,
            "update_seconds": train,
            "step_seconds": total,
            "generated_tokens": gen,
            "policy_tokens": pol,
            "ms_per_generated_token": 1e3 * rollout / max(gen, 1),
            "ms_per_policy_token_score": 1e3 * score / max(pol, 1),
            "ms_per_policy_token_update": 1e3 * train / max(pol, 1),
            "ppo_epochs": args.ppo_epochs,
        }
        records.append(record)
        log(
            f"{n:3d} {rollout:10.1f} {score:8.1f} {train:9.1f} {total:7.1f}  "
            f"{rollout / total:.2f}/{score / total:.2f}/{train / total:.2f}  {gen:8d} {pol:8d}  "
            f"{record['ms_per_generated_token']:10.2f}  {record['ms_per_policy_token_score']:.3f}, "
            f"{record['ms_per_policy_token_update']:.3f}"
        )
    return records


def _ppo_side_by_side(model, head, tokenizer, domain, optimizers, args, objectives, repeats, log):
    """[--compare] Per N: one rollout, then `repeats` rounds of the old and the new scoring + update
    on it, each from the same saved parameters and optimiser state."""
    import copy
    from dataclasses import replace

    from .ppo import play, score, trainable_parameters, update

    params = trainable_parameters(model) + list(head.parameters())
    saved = [p.detach().clone() for p in params], [copy.deepcopy(o.state_dict()) for o in optimizers]
    ways = {"old": replace(args, stage_tokens=0), "new": args}

    def run(way, trajs, n, i):
        with torch.no_grad():
            for p, q in zip(params, saved[0], strict=True):
                p.copy_(q)
        for o, state in zip(optimizers, saved[1], strict=True):
            o.load_state_dict(copy.deepcopy(state))
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        batch = score(model, head, trajs, n, 0.0, ways[way])
        upd = update(model, head, batch, optimizers, ways[way], i)
        logged = {k: upd[k] for k in ("policy_loss", "value_loss", "entropy", "grad_norm")}
        logged["kl"] = batch.stats["kl"]
        return {
            "score_seconds": batch.stats["score_seconds"],
            "update_seconds": upd["train_seconds"],
            "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu,
            "logged": logged,
            "params": [p.detach().clone() for p in params],
        }

    log(
        f"PPO step, old (one padded stage) vs new (stages of {args.stage_tokens} tokens): "
        f"{Path(args.init).name}, {args.episodes_per_step} episodes, {torch.get_num_threads()} thread(s), "
        f"{repeats} interleaved rounds, medians"
    )
    log(
        f"{'N':>3s} {'rollout s':>9s} {'score s old/new':>16s} {'update s old/new':>17s} "
        f"{'step s old/new':>15s}  step ratio (score+update, CPU)  same update"
    )
    records = []
    for i, n in enumerate(objectives):
        step_args = replace(args, objectives=(n,))
        trajs, _, rollout = play(model, tokenizer, domain, step_args, i)
        rounds = []
        for r in range(repeats):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            rounds.append({way: run(way, trajs, n, i) for way in order})
        parts = ("score_seconds", "update_seconds")
        med = {way: {k: statistics.median(x[way][k] for x in rounds) for k in parts} for way in ways}
        step_ratio = statistics.median(
            (rollout + x["old"]["wall"]) / (rollout + x["new"]["wall"]) for x in rounds
        )
        work_ratio = statistics.median(x["old"]["wall"] / x["new"]["wall"] for x in rounds)
        cpu_ratio = statistics.median(x["old"]["cpu"] / x["new"]["cpu"] for x in rounds)
        old, new = rounds[0]["old"], rounds[0]["new"]
        loss_diff = max(abs(old["logged"][k] - new["logged"][k]) for k in old["logged"])
        param_diff = max(
            float((p - q).abs().max()) for p, q in zip(old["params"], new["params"], strict=True)
        )
        steps = {way: rollout + med[way]["score_seconds"] + med[way]["update_seconds"] for way in ways}
        records.append(
            {
                "init": args.init,
                "objectives": n,
                "episodes": args.episodes_per_step,
                "threads": torch.get_num_threads(),
                "stage_tokens": args.stage_tokens,
                "rounds": repeats,
                "rollout_seconds": rollout,
                "policy_tokens": sum(len(t.output_ids) for traj in trajs for t in traj.turns),
                "old": med["old"] | {"step_seconds": steps["old"]},
                "new": med["new"] | {"step_seconds": steps["new"]},
                "step_ratio": step_ratio,
                "score_update_ratio": work_ratio,
                "cpu_time_ratio": cpu_ratio,
                "per_round_seconds": [{w: x[w]["wall"] for w in ways} for x in rounds],
                "max_abs_logged_difference": loss_diff,
                "max_abs_parameter_difference": param_diff,
                "logged_old": old["logged"],
                "logged_new": new["logged"],
            }
        )
        log(
            f"{n:3d} {rollout:9.1f} {med['old']['score_seconds']:8.1f}/{med['new']['score_seconds']:<7.1f} "
            f"{med['old']['update_seconds']:8.1f}/{med['new']['update_seconds']:<8.1f} "
            f"{steps['old']:7.1f}/{steps['new']:<7.1f}  "
            f"{step_ratio:.2f}x ({work_ratio:.2f}x, {cpu_ratio:.2f}x)"
            f"  losses {loss_diff:.1e}, parameters {param_diff:.1e}"
        )
    return records
