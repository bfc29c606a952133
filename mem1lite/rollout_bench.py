"""`mem1 bench rollout`: the rollout targets of issue 4, measured side by side in one run.

    mem1 bench rollout --json runs/bench-rollout.json          # ~3 minutes on 2 cores
    mem1 bench rollout --repeats 1 --teacher-episodes 20       # a quick look

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
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

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
    """torch CPU threads (None: torch's default)"""
    world: str | Path | None = None
    """world folder (default data/qa)"""


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
    from .model import TINY_DIR, build_tiny_model, load_policy, load_tokenizer
    from .protocol import QAEnvironment
    from .retrieval import PoolRetrievers
    from .rollout import GenerationConfig, ModelPolicy, RolloutConfig, TeacherPolicy, run_episodes, summarize
    from .world import load_world, make_tasks

    cfg = cfg or RolloutBenchConfig()
    log = log or (lambda s: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = load_world(cfg.world)
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
        for agent in ("mem1", "full", "truncate"):
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
