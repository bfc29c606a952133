"""The WebShop-lite table: policies x agents on the same goals, in the paper's WebShop columns.

    mem1 webshop --eval teacher,runs/ws-sft,runs/ws-ppo --agents mem1,full --episodes 100 --split test
    mem1 webshop --eval teacher --agents mem1,full --objectives 1,2,4 --episodes 200   # multi-item goals

The paper (Table 2) reports, per model on WebShop: the average final reward (0-100), the peak
number of tokens in context (x 10^3), the dependency (x 10^6) and the inference time per task (s).
We report the same for each (policy, agent), measured by evaluate.py's sweep (`mem1 eval --env
webshop` runs the same): the same goals for every row (task i is `domain.tasks(split, N, episodes,
seed)[i]`), greedy decoding, batched rollouts. `reward` is 100 x the mean reward per item, em / N
(for webshop, em is the sum of the items' rewards, webshop_env.py [4, 5]); `success` is the share
of items bought with reward 1, WebShop's success rate. At N = 1 (the default) both are WebShop's
numbers; with `--objectives 1,2,4` each N is a row of its own and the table gets an N column.
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
    objectives: tuple[int, ...] = (1,)
    """task sizes N, goals bought per task (webshop.MAX_ITEMS at most)"""
    episodes: int = 100
    """tasks per N, the same for every row"""
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
    """An `evaluate.py` record plus reward x 100, success rate, purchases and invalid actions, all
    per item (at N = 1: per task, WebShop's numbers)."""
    n = max(1, len(trajs))
    turns = max(1, sum(len(t.turns) for t in trajs))
    invalid = sum(x.error.startswith("Invalid action") for t in trajs for x in t.turns)
    items = [max(1, t.objectives) for t in trajs]
    bought = [len(t.answer.split("; ")) if t.answer is not None else 0 for t in trajs]  # webshop_env [5]
    return record | {
        "env": "webshop",
        "reward": 100 * sum(t.em / k for t, k in zip(trajs, items)) / n,
        "success": sum(sum(e >= 1 - 1e-9 for e in t.per_slot_em) / k for t, k in zip(trajs, items)) / n,
        "bought": sum(b / k for b, k in zip(bought, items)) / n,
        "invalid_action_rate": invalid / turns,
    }


def evaluate_webshop(cfg: WebShopEvalConfig, keep: dict | None = None) -> list[dict]:
    """One record per (policy, N, agent), from evaluate.py's sweep on the webshop domain; `keep`, if
    given, receives the trajectories by (policy, agent), or by (policy, agent, N) for several N."""
    run = evaluate(
        EvalConfig(
            policies=cfg.policies,
            agents=cfg.agents,
            objectives=tuple(cfg.objectives),
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
        key = rec["policy"], rec["agent"], rec["objectives"]
        trajs = run.trajectories[key]
        records.append(webshop_record(rec, trajs))
        if keep is not None:
            keep[key if len(cfg.objectives) > 1 else key[:2]] = trajs
    return records


def webshop_table(records: list[dict], paper: bool = True) -> str:
    """Markdown: our rows, then the paper's, in the paper's WebShop columns; the full/mem1 peak ratio.
    Records of several task sizes get an N column and a ratio per N (the paper's rows are N = 1)."""
    sizes = sorted({r.get("objectives", 1) for r in records})
    multi = len(sizes) > 1
    n_head, n_rule = ("N | ", "---:|") if multi else ("", "")
    columns = "reward | success | peak tokens (x10^3) | dependency (x10^6) | time (s) | turns"
    lines = [f"| model | agent | {n_head}{columns} |", f"|---|---|{n_rule}---:|---:|---:|---:|---:|---:|"]
    for r in records:
        n_cell = f"{r.get('objectives', 1)} | " if multi else ""
        lines.append(
            f"| {Path(r['policy']).name or r['policy']} | {r['agent']} | {n_cell}"
            f"{r['reward']:.2f} | {r['success']:.2f} | "
            f"{r['peak_tokens'] / 1e3:.3f} | {r['dependency'] / 1e6:.3f} | {r['seconds']:.3f} | "
            f"{r['turns']:.2f} |"
        )
    if paper:
        n_cell = "1 | " if multi else ""
        for model, reward, peak, seconds in WEBSHOP:  # paper.py: (model, reward, peak tokens, seconds)
            row = f"{n_cell}{reward:.2f} | | {peak / 1e3:.2f} | | {seconds:.2f} | |"
            lines.append(f"| {model} (paper) | | {row}")
    parts = [
        f"{Path(p).name or p}{f' N={n}' if multi else ''} {r:.2f}x"
        for n in sizes
        for p, r in peak_ratios(records, n).items()
    ]
    if parts:
        lines.append("")
        lines.append(
            "peak tokens full / mem1: "
            + ", ".join(parts)
            + f" (paper: AgentLM-7B / MEM1 {WEBSHOP[1][2] / WEBSHOP[0][2]:.2f}x)"
        )
    return "\n".join(lines)


def peak_ratios(records: list[dict], objectives: int | None = None) -> dict[str, float]:
    """Per policy with both agents: peak tokens of full over mem1 (at N = `objectives`, if given;
    full and mem1 are always paired at the same N)."""
    out = {}
    for r in records:
        n = r.get("objectives", 1)
        if r["agent"] != "mem1" or (objectives is not None and n != objectives):
            continue
        full = next(
            (
                x
                for x in records
                if x["policy"] == r["policy"] and x["agent"] == "full" and x.get("objectives", 1) == n
            ),
            None,
        )
        if full and r["peak_tokens"]:
            out[r["policy"]] = full["peak_tokens"] / r["peak_tokens"]
    return out
