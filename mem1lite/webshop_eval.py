"""The WebShop-lite table: policies x agents on the same goals, in the paper's WebShop columns.

    mem1 webshop --eval teacher,runs/ws-sft,runs/ws-ppo --agents mem1,full --episodes 100 --split test

The paper (Table 2) reports, per model on WebShop: the average final reward (0-100), the peak
number of tokens in context (x 10^3), the dependency (x 10^6) and the inference time per task (s).
We report the same for each (policy, agent), measured by evaluate.py's sweep (`mem1 eval --env
webshop` runs the same): the same goals for every row (task i is `domain.tasks(split, 1, episodes,
seed)[i]`), greedy decoding, batched rollouts. `reward` is `em` x 100 (for webshop, em is the
reward, webshop_env.py [4]); `success` is the share of purchases with reward 1, WebShop's success
rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .evaluate import EvalConfig, evaluate
from .paper import WEBSHOP


@dataclass
class WebShopEvalConfig:
    """One WebShop-lite evaluation."""

    policies: tuple[str, ...] = ("teacher",)
    """teacher, tiny (untrained) or checkpoint directories"""
    agents: tuple[str, ...] = ("mem1", "full")
    """memory policies"""
    episodes: int = 100
    """goals, the same for every row"""
    split: str = "test"
    """goal split"""
    seed: int = 0
    """draws the goals (and seeds sampling, if any)"""
    data: str | None = None
    """catalogue folder (default data/webshop)"""
    max_new_tokens: int = 192
    """longest response of a model"""
    batch_size: int = 64
    """episodes generated together"""
    truncate_tokens: int = 512
    """history kept by the truncate agent"""
    threads: int | None = None
    """torch CPU threads"""
    progress: bool = False
    """tqdm bars"""


def webshop_record(record: dict, trajs) -> dict:
    """An `evaluate.py` record plus reward x 100, success rate, purchases and invalid actions."""
    n = max(1, len(trajs))
    turns = max(1, sum(len(t.turns) for t in trajs))
    invalid = sum(x.error.startswith("Invalid action") for t in trajs for x in t.turns)
    return record | {
        "env": "webshop",
        "reward": 100 * sum(t.em for t in trajs) / n,
        "success": sum(t.em >= 1 - 1e-9 for t in trajs) / n,
        "bought": sum(t.answer is not None for t in trajs) / n,
        "invalid_action_rate": invalid / turns,
    }


def evaluate_webshop(cfg: WebShopEvalConfig, keep: dict | None = None) -> list[dict]:
    """One record per (policy, agent), from evaluate.py's sweep at N = 1 on the webshop domain;
    `keep`, if given, receives the trajectories by (policy, agent)."""
    run = evaluate(
        EvalConfig(
            policies=cfg.policies,
            agents=cfg.agents,
            objectives=(1,),
            episodes=cfg.episodes,
            split=cfg.split,
            seed=cfg.seed,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
            truncate_tokens=cfg.truncate_tokens,
            threads=cfg.threads,
            data=cfg.data,
            env="webshop",
            keep_trajectories=True,
            progress=cfg.progress,
        ),
        log=None,
    )
    records = []
    for rec in run.records:
        trajs = run.trajectories[rec["policy"], rec["agent"], 1]
        records.append(webshop_record(rec, trajs))
        if keep is not None:
            keep[rec["policy"], rec["agent"]] = trajs
    return records


def webshop_table(records: list[dict], paper: bool = True) -> str:
    """Markdown: our rows, then the paper's, in the paper's WebShop columns; the full/mem1 peak ratio."""
    lines = [
        "| model | agent | reward | success | peak tokens (x10^3) | dependency (x10^6) | time (s) | turns |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {Path(r['policy']).name or r['policy']} | {r['agent']} | "
            f"{r['reward']:.2f} | {r['success']:.2f} | "
            f"{r['peak_tokens'] / 1e3:.3f} | {r['dependency'] / 1e6:.3f} | {r['seconds']:.3f} | "
            f"{r['turns']:.2f} |"
        )
    if paper:
        for model, reward, peak, seconds in WEBSHOP:  # paper.py: (model, reward, peak tokens, seconds)
            lines.append(f"| {model} (paper) | | {reward:.2f} | | {peak / 1e3:.2f} | | {seconds:.2f} | |")
    ratios = peak_ratios(records)
    if ratios:
        lines.append("")
        lines.append(
            "peak tokens full / mem1: "
            + ", ".join(f"{Path(p).name or p} {r:.2f}x" for p, r in ratios.items())
            + f" (paper: AgentLM-7B / MEM1 {WEBSHOP[1][2] / WEBSHOP[0][2]:.2f}x)"
        )
    return "\n".join(lines)


def peak_ratios(records: list[dict]) -> dict[str, float]:
    """Per policy with both agents: peak tokens of full over mem1."""
    out = {}
    for r in records:
        if r["agent"] != "mem1":
            continue
        full = next((x for x in records if x["policy"] == r["policy"] and x["agent"] == "full"), None)
        if full and r["peak_tokens"]:
            out[r["policy"]] = full["peak_tokens"] / r["peak_tokens"]
    return out
