"""The generalisation study: how far past the largest N of its training data a model keeps its
accuracy, for SFT data up to N = 4, 8 and 16, with and without PPO, beside the full-context
baseline; and the paired intervals behind each claim.

    mem1 eval --policy sft,ppo,sft-n8,sft-n16,ppo-n16-n2,sft-full,sft-full-n16 --agents mem1,full \\
        --objectives 1,2,4,8,16 --episodes 32 --json runs/study.json --markdown runs/study.md

Reads eval records (`evaluate.RECORD_FIELDS`) and nothing else. Two things make it honest:

1. Paired intervals: for one (split, seed, N) every policy plays the same tasks, so a record's
   `em_by_task` (EM per objective of each task, in task order, with its `task_ids`) pairs with
   another's; the difference of two policies is bootstrapped over tasks (metrics.paired_bootstrap),
   not read off two means. Records saved before `em_by_task` existed get no interval ("–").
2. The arms are named here (`ARMS`), with the largest N of their data and their recipe, so the
   table says what each model was trained on instead of leaving it to a policy's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .metrics import paired_bootstrap, ratio_bootstrap

Table = tuple[list[str], list[list[str]]]


@dataclass(frozen=True)
class Arm:
    """One trained model in the study."""

    policy: str
    """its name in the records (evaluate.SHIPPED)"""
    agent: str
    """the agent it was trained for and is played under"""
    data_n: int
    """the largest N in its SFT data"""
    recipe: str
    """how it was trained, in a few words"""


ARMS = (
    Arm("sft", "mem1", 4, "SFT"),
    Arm("ppo", "mem1", 4, "SFT + PPO at N = 2"),
    Arm("sft-n8", "mem1", 8, "SFT"),
    Arm("sft-text-n16", "mem1", 16, "sft-n8 + SFT on N = 1..16 (text pointer)"),
    Arm("sft-n16", "mem1", 16, "sft-n8 + SFT on N = 1..16 (numbered pointer)"),
    Arm("ppo-n16", "mem1", 16, "sft-n16 + PPO on N = 2..16 (group baseline, 5 steps)"),
    Arm("ppo-n16-n2", "mem1", 16, "sft-n16 + PPO at N = 2 (51 steps, 30 min)"),
    Arm("ppo-n16-mix", "mem1", 16, "sft-n16 + PPO, N = 2, 4, 8 cycled (26 steps, 45 min)"),
    Arm("sft-n16-more", "mem1", 16, "sft-n16 + the long SFT again (seed 1)"),
    Arm("sft-n16-hop", "mem1", 16, "sft-n16 + the long SFT again, hop marked in the state"),
    Arm("sft-n16-hop2", "mem1", 16, "sft-n16-hop + the long SFT a third time (seed 2)"),
    Arm("ppo-n16-hop-mix", "mem1", 16, "sft-n16-hop + PPO, N = 2, 4, 8 cycled (40 min)"),
    Arm("ppo-n16-hop2-mix", "mem1", 16, "sft-n16-hop2 + PPO, N = 2, 4, 8 cycled (15 min)"),
    Arm("sft-full", "full", 4, "full-context SFT"),
    Arm("ppo-full", "full", 4, "full-context SFT + PPO at N = 2"),
    Arm("sft-full-n16", "full", 16, "sft-full + SFT on N = 1..16, sft-n16's minutes"),
)
"""the study's rows, in the order of the table (an arm without records is left out)"""

COMPARISONS = (
    ("RL across sizes above SFT, data N <= 16", ("sft-n16", "mem1"), ("ppo-n16-mix", "mem1")),
    ("RL at N = 2 above SFT, data N <= 16", ("sft-n16", "mem1"), ("ppo-n16-n2", "mem1")),
    ("RL across sizes above RL at N = 2", ("ppo-n16-n2", "mem1"), ("ppo-n16-mix", "mem1")),
    ("RL above SFT, data N <= 4", ("sft", "mem1"), ("ppo", "mem1")),
    ("mem1 above full context, same budget", ("sft-full-n16", "full"), ("sft-n16", "mem1")),
    ("mem1 RL above full context, same budget", ("sft-full-n16", "full"), ("ppo-n16-mix", "mem1")),
    ("mem1 above the N <= 4 full-context RL baseline", ("ppo-full", "full"), ("sft-n16", "mem1")),
    ("long data beats short data (mem1)", ("sft-n8", "mem1"), ("sft-n16", "mem1")),
    ("numbered pointer above text pointer", ("sft-text-n16", "mem1"), ("sft-n16", "mem1")),
    ("more long SFT above sft-n16", ("sft-n16", "mem1"), ("sft-n16-more", "mem1")),
    ("hop marked above the same SFT without it", ("sft-n16-more", "mem1"), ("sft-n16-hop", "mem1")),
    ("hop marked + more SFT above sft-n16", ("sft-n16", "mem1"), ("sft-n16-hop", "mem1")),
    ("a third long SFT above the second (hop)", ("sft-n16-hop", "mem1"), ("sft-n16-hop2", "mem1")),
    ("RL across sizes above SFT, hop state", ("sft-n16-hop", "mem1"), ("ppo-n16-hop-mix", "mem1")),
    ("RL across sizes above SFT, third SFT", ("sft-n16-hop2", "mem1"), ("ppo-n16-hop2-mix", "mem1")),
    ("mem1 (third hop SFT) above full context at N <= 4 RL", ("ppo-full", "full"), ("sft-n16-hop2", "mem1")),
)
"""(claim, A, B): the claim holds at an N where B - A has an interval above 0"""


def find_record(records: Sequence[dict], policy: str, agent: str, n: int) -> dict | None:
    """The record of (policy, agent, N), or None."""
    return next(
        (r for r in records if r["policy"] == policy and r["agent"] == agent and r["objectives"] == n), None
    )


def _ns(records: Sequence[dict]) -> list[int]:
    return sorted({r["objectives"] for r in records})


def present(records: Sequence[dict]) -> list[Arm]:
    """The arms that have at least one record."""
    return [a for a in ARMS if any(r["policy"] == a.policy and r["agent"] == a.agent for r in records)]


def paired(records: Sequence[dict], a: tuple[str, str], b: tuple[str, str], n: int) -> dict | None:
    """B - A in EM per objective at N over the same tasks, with its bootstrap interval; None when a
    record is missing, lacks per-task values, or the two played different tasks."""
    ra, rb = find_record(records, *a, n), find_record(records, *b, n)
    if not (ra and rb and ra.get("em_by_task") and rb.get("em_by_task")):
        return None
    if ra.get("task_ids") != rb.get("task_ids"):
        return None
    return paired_bootstrap(ra["em_by_task"], rb["em_by_task"])


def kept(records: Sequence[dict], arm: Arm, small: int = 2, large: int = 16) -> dict | None:
    """EM per objective at `large` over that at `small` (the paper's "keeps 35%"), with a bootstrap
    interval (the two sizes' tasks are different tasks, so they are resampled independently)."""
    rs = find_record(records, arm.policy, arm.agent, small)
    rl = find_record(records, arm.policy, arm.agent, large)
    if not (rs and rl):
        return None
    if rs.get("em_by_task") and rl.get("em_by_task"):
        return ratio_bootstrap(rs["em_by_task"], rl["em_by_task"])
    a, b = rs["em_per_objective"], rl["em_per_objective"]
    return {"ratio": b / a if a > 0 else float("nan"), "low": None, "high": None}


def _interval(ci: dict | None, key: str = "diff") -> str:
    if ci is None:
        return "–"
    if ci.get("low") is None:
        return f"{ci[key]:.0%}" if key == "ratio" else f"{ci[key]:+.3f}"
    if key == "ratio":
        return f"{ci['ratio']:.0%} [{ci['low']:.0%}, {ci['high']:.0%}]"
    return f"{ci['diff']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]"


def study_table(records: Sequence[dict]) -> Table:
    """EM per objective by N for every arm, the largest N of its data, and what it keeps at N = 16
    of its N = 2 value (95% bootstrap interval)."""
    ns = _ns(records)
    header = ["data up to N", "recipe", "policy", "agent"] + [f"N={n}" for n in ns] + ["kept 16 / 2"]
    rows = []
    for arm in present(records):
        cells = []
        for n in ns:
            r = find_record(records, arm.policy, arm.agent, n)
            mark = "" if n <= arm.data_n else "*"  # * : beyond the largest N it was trained on
            cells.append(f"{r['em_per_objective']:.3f}{mark}" if r else "–")
        ratio = _interval(kept(records, arm), "ratio")
        rows.append([str(arm.data_n), arm.recipe, arm.policy, arm.agent] + cells + [ratio])
    return header, rows


def comparison_table(records: Sequence[dict]) -> Table:
    """Each claim's B - A in EM per objective at every N, with its paired 95% interval."""
    ns = _ns(records)
    header = ["claim", "B", "A"] + [f"N={n}" for n in ns]
    rows = []
    for claim, a, b in COMPARISONS:
        cells = [_interval(paired(records, a, b, n)) for n in ns]
        if any(c != "–" for c in cells):
            rows.append([claim, "/".join(b), "/".join(a)] + cells)
    return header, rows


def figure(records: Sequence[dict]):
    """EM per objective against N, one line per arm, each marked where its data ends."""
    import matplotlib.pyplot as plt

    arms = present(records)
    fig, ax = plt.subplots(figsize=(10, 4.6))
    colours = plt.get_cmap("tab20").colors  # 20 distinct colours: one an arm, none repeated
    for i, arm in enumerate(arms):
        pts = sorted(
            (r["objectives"], r["em_per_objective"])
            for r in records
            if r["policy"] == arm.policy and r["agent"] == arm.agent
        )
        (line,) = ax.plot(
            *zip(*pts),
            marker="o" if arm.agent == "mem1" else "s",
            linestyle="-" if arm.agent == "mem1" else "--",
            label=f"{arm.policy} / {arm.agent} (data N <= {arm.data_n})",
            color=colours[i % len(colours)],
        )
        edge = [v for n, v in pts if n == arm.data_n]
        if edge:  # the last trained size, ringed: the line to its right is generalisation
            ax.plot([arm.data_n], edge, marker="o", markersize=12, fillstyle="none", color=line.get_color())
    ns = _ns(records)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("objectives N (ringed: the largest N in the model's data)")
    ax.set_ylabel("EM per objective")
    ax.set_ylim(0, 1.05)
    ax.set_title("generalisation: EM per objective against N, by the largest N trained on", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the lines, not on them
    fig.tight_layout()
    return fig
