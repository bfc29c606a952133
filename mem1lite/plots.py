"""Figures shared by the notebooks, the CLI and the demo report. Each returns a matplotlib Figure."""

from __future__ import annotations

from collections import Counter

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import to_rgb
from matplotlib.patches import Patch

from .masks import build_layout
from .terms import KIND_COLORS, KIND_LABELS
from .trajectory import Trajectory
from .world import SPLITS, World


def world_overview(world: World, recall_by_rank: dict[str, list[float]] | None = None):
    """Four panels: entity types, questions per pool and hops, look-alike density, gold-doc rank."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    types = Counter(e.type for e in world.entities)
    axes[0].bar(list(types), list(types.values()), color="#4c72b0")
    axes[0].set_title("entities by type")

    one = [sum(q.hops == 1 for q in world.questions[s]) for s in SPLITS]
    two = [sum(q.hops == 2 for q in world.questions[s]) for s in SPLITS]
    axes[1].bar(SPLITS, one, label="1 hop", color="#55a868")
    axes[1].bar(SPLITS, two, bottom=one, label="2 hops", color="#c44e52")
    axes[1].set_title("questions per pool")
    axes[1].legend(fontsize=8)

    # How many entities of the same pool share a name part with each entity: the look-alikes.
    for pool in SPLITS:
        parts = Counter(p for e in world.entities if e.pool == pool for p in e.name.split())
        shared = [min(parts[e.name.split()[0]] - 1, 30) for e in world.entities if e.pool == pool]
        axes[2].hist(shared, bins=range(0, 32), histtype="step", density=True, label=pool)
    axes[2].set_title("look-alikes per entity (same first part)")
    axes[2].legend(fontsize=8)

    if recall_by_rank:
        for split, curve in recall_by_rank.items():
            axes[3].plot(range(1, len(curve) + 1), curve, marker="o", label=split)
        axes[3].set_ylim(0.9, 1.005)
        axes[3].set_xlabel("k")
        axes[3].legend(fontsize=8)
    axes[3].set_title("recall@k of the gold document")
    fig.tight_layout()
    return fig


def probe_curves(
    records: list[dict], title: str = "reading probe", score: str = "greedy dev EM per objective"
):
    """Reading-probe curves against wall-clock minutes: name-token accuracy (where the domain has
    names to read: QA), greedy score (`score` names it: EM, or WebShop's reward) and the losses."""
    name_keys = ("name_acc_copy_part1", "name_acc_copy_part2", "name_acc_fact_part1", "name_acc_fact_part2")
    has_names = any(k in r for r in records for k in name_keys)
    fig, axes = plt.subplots(1, 3 if has_names else 2, figsize=(15 if has_names else 10, 3.6))
    minutes = [r["minutes"] for r in records]
    if has_names:
        for key, style in zip(name_keys, ("-", "--", "-", "--")):
            xs = [m for m, r in zip(minutes, records) if key in r]
            axes[0].plot(xs, [r[key] for r in records if key in r], style, marker=".", label=key[9:])
        axes[0].set_ylim(-0.02, 1.02)
        axes[0].set_title("teacher-forced name-token accuracy (dev)")
        axes[0].legend(fontsize=7)
    em_ax, loss_ax = axes[-2], axes[-1]
    for key in sorted({k for r in records for k in r if k.startswith("em_per_objective_n")}):
        xs = [m for m, r in zip(minutes, records) if key in r]
        em_ax.plot(
            xs, [r[key] for r in records if key in r], marker="o", label=f"N = {key.rsplit('n', 1)[1]}"
        )
    em_ax.set_ylim(-0.02, 1.02)
    em_ax.set_title(score)
    em_ax.legend(fontsize=7)
    for key in ("train_loss", "response_nll"):
        xs = [m for m, r in zip(minutes, records) if key in r]
        loss_ax.plot(xs, [r[key] for r in records if key in r], marker=".", label=key)
    loss_ax.set_yscale("log")
    loss_ax.set_title("loss")
    loss_ax.legend(fontsize=7)
    stages = []
    for m, r in zip(minutes, records):
        if not stages or stages[-1][0] != r.get("stage"):
            stages.append((r.get("stage"), m))
    for ax in axes:
        ax.set_xlabel("minutes")
        for name, m in stages[1:]:  # where each later stage begins, labelled
            ax.axvline(m, color="grey", lw=0.6, ls=":")
            ax.text(m, 1.0, f" {name}", transform=ax.get_xaxis_transform(), fontsize=6, va="top")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def ppo_curves(history: list[dict], title: str = "PPO"):
    """Per-step PPO logs: reward and dev EM, KL, clipping, entropy, value fit, throughput."""
    panels = [
        ("reward", ["reward", "dev_em_per_objective"]),
        ("KL to the reference", ["kl", "approx_kl"]),
        ("clip fraction", ["clipfrac"]),
        ("entropy", ["entropy"]),
        ("value", ["value_loss", "explained_variance"]),
        ("tokens / s", ["rollout_tokens_per_s", "train_tokens_per_s"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    for ax, (name, keys) in zip(axes, panels):
        for key in keys:
            pts = [(h["step"], h[key]) for h in history if h.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=key)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


AGENT_COLORS = {"mem1": "#c44e52", "full": "#4c72b0", "truncate": "#55a868"}


def context_per_turn(trajectories: dict, title: str = "context fed to the model at each turn"):
    """One line per agent: tokens the model was fed at each turn of one episode (prompt included).

    `trajectories` maps an agent name to a `trajectory.Trajectory` of the same task.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for agent, traj in trajectories.items():
        lengths = traj.context_lengths()
        ax.plot(range(1, len(lengths) + 1), lengths, marker="o", label=agent, color=AGENT_COLORS.get(agent))
    first = next(iter(trajectories.values()))
    ax.axhline(len(first.prompt_ids), color="grey", linestyle=":", linewidth=1)
    ax.text(1, len(first.prompt_ids), " prompt", va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("turn")
    ax.set_ylabel("tokens in context")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def peak_tokens_vs_n(records: list[dict], title: str = "peak tokens vs number of objectives"):
    """Mean peak tokens per task against N, one line per agent (records: `summarize` + agent, N)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for agent in sorted({r["agent"] for r in records}, key=list(AGENT_COLORS).index):
        pts = sorted((r["objectives"], r["peak_tokens"]) for r in records if r["agent"] == agent)
        ax.plot(*zip(*pts), marker="o", label=agent, color=AGENT_COLORS.get(agent))
    ns = sorted({r["objectives"] for r in records})
    ax.set_xticks(ns, [str(n) for n in ns])  # a linear axis: linear growth shows as a straight line
    ax.set_xlabel("objectives N")
    ax.set_ylabel("peak tokens (mean per task)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Evaluation sweeps (evaluate.py): records are flat dicts with policy, agent, objectives, metrics.

_POLICY_STYLES = ("-", "--", ":", "-.")
_POLICY_MARKERS = ("o", "s", "^", "D", "v", "x")


def _series(records: list[dict], key: str, agents=None):
    """(policy, agent) -> sorted [(N, value)], in the records' policy order."""
    out: dict[tuple[str, str], list] = {}
    for r in records:
        if agents is None or r["agent"] in agents:
            if r.get(key) is not None:
                out.setdefault((r["policy"], r["agent"]), []).append((r["objectives"], r[key]))
    return {k: sorted(v) for k, v in out.items()}


def _plot_series(ax, series: dict, policies: list[str]):
    for (policy, agent), pts in series.items():
        i = policies.index(policy)
        ax.plot(
            *zip(*pts),
            linestyle=_POLICY_STYLES[i % len(_POLICY_STYLES)],
            marker=_POLICY_MARKERS[i % len(_POLICY_MARKERS)],
            color=AGENT_COLORS.get(agent),
            label=f"{policy} / {agent}",
        )


def _n_axis(ax, ns):
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("objectives N")


def _paper_panel(ax, paper: dict, ylabel: str, title: str):
    for (label, pts), color in zip(paper.items(), ("#4c72b0", "#c44e52", "#55a868", "#8172b2")):
        ax.plot(*zip(*pts), marker="o", linestyle="--", color=color, label=label)
    _n_axis(ax, sorted({n for pts in paper.values() for n, _ in pts}))
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def eval_peak_tokens_vs_n(records: list[dict], paper: dict):
    """Peak tokens against N: ours per policy and agent (left), the paper's models (right).

    `paper`: label -> [(N, peak tokens)]. Colour is the agent, line style the policy.
    """
    policies = list(dict.fromkeys(r["policy"] for r in records))
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    _plot_series(axes[0], _series(records, "peak_tokens"), policies)
    _n_axis(axes[0], sorted({r["objectives"] for r in records}))
    axes[0].set_ylabel("peak tokens (mean per task)")
    axes[0].set_ylim(bottom=0)
    axes[0].set_title("ours: peak context vs N", fontsize=10)
    axes[0].legend(fontsize=7)
    _paper_panel(axes[1], paper, "peak tokens", "paper (their prompts and passages are longer)")
    fig.tight_layout()
    return fig


def eval_em_vs_n(records: list[dict], paper: dict):
    """EM against N: ours summed over objectives, ours per objective, the paper's per objective."""
    policies = list(dict.fromkeys(r["policy"] for r in records))
    ns = sorted({r["objectives"] for r in records})
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
    for ax, key, title in (
        (axes[0], "em", "ours: EM summed over objectives (0..N)"),
        (axes[1], "em_per_objective", "ours: EM per objective"),
    ):
        _plot_series(ax, _series(records, key), policies)
        _n_axis(ax, ns)
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(key)
    axes[1].set_ylim(0, 1.05)
    axes[0].legend(fontsize=7)
    _paper_panel(axes[2], paper, "em_per_objective", "paper: EM per objective")
    axes[2].set_ylim(0, 1.05)  # the same scale as ours: per-objective EM is what compares
    fig.tight_layout()
    return fig


def eval_rl_vs_sft(records: list[dict], rl: str | None, sft: str | None, paper: dict):
    """EM per objective against N under the mem1 agent: our RL and SFT policies, and the paper's."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    ns = sorted({r["objectives"] for r in records})
    mine = {
        k: v for k, v in _series(records, "em_per_objective", agents=("mem1",)).items() if k[0] in (rl, sft)
    }
    for (policy, _), pts in mine.items():
        axes[0].plot(*zip(*pts), marker="o", label=f"{'RL' if policy == rl else 'SFT'}: {policy}")
    if not mine:
        axes[0].text(
            0.5, 0.5, "no RL / SFT pair evaluated", ha="center", va="center", transform=axes[0].transAxes
        )
    _n_axis(axes[0], ns)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_ylabel("em_per_objective")
    axes[0].set_title("ours: RL vs SFT (mem1 agent)", fontsize=10)
    if mine:
        axes[0].legend(fontsize=7)
    _paper_panel(axes[1], paper, "em_per_objective", "paper: RL vs SFT")
    axes[1].set_ylim(0, 1.05)
    fig.tight_layout()
    return fig


def eval_state_behaviour(records: list[dict]):
    """What the internal states hold against N: questions tracked / N, and early switches per task."""
    policies = list(dict.fromkeys(r["policy"] for r in records))
    ns = sorted({r["objectives"] for r in records})
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    for ax, key, title in (
        (axes[0], "state_coverage", "questions tracked by the state / N (max over turns)"),
        (axes[1], "early_switches", "moves to another question before answering, per task"),
    ):
        _plot_series(ax, _series(records, key), policies)
        _n_axis(ax, ns)
        ax.set_ylim(bottom=0)
        ax.set_ylabel(key)
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


PPO_LAYOUT_PANELS = (
    ("first-minibatch ratio", "first_ratio", "mean exp(new - old) on the first minibatch of a step"),
    ("first-minibatch max |log ratio|", "max_abs_log_ratio_first", "its worst token"),
    ("clip fraction", "clipfrac", "share of tokens whose ratio left [1 - clip, 1 + clip]"),
    ("KL to the reference", "kl", "summed over an episode's tokens, mean over episodes"),
    ("reward", "reward", "EM per task, training rollouts"),
)
"""(title, log.jsonl key, what it shows) of `ppo_layout_comparison`"""


def ppo_layout_comparison(histories: dict[str, list[dict]], title: str = "PPO: one layout against another"):
    """PPO runs side by side, one line per run (e.g. {"packed": ..., "stitched": ...}), from the
    per-step records of their log.jsonl (`ppo.py`). Before the first update of a step the policy
    is the sampler, so an exact layout's first-minibatch ratio is 1 and any departure is the
    layout's own error; steps without a key (step 0: evaluation only) are skipped."""
    fig, axes = plt.subplots(1, len(PPO_LAYOUT_PANELS), figsize=(3.3 * len(PPO_LAYOUT_PANELS), 3.2))
    for ax, (name, key, what) in zip(axes, PPO_LAYOUT_PANELS):
        for run, history in histories.items():
            pts = [(h["step"], h[key]) for h in history if h.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=run)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"step\n({what})", fontsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Masks


def plot_mask(
    batch_or_traj, layout: str = "packed_dense", row: int = 0, stage: int = -1, ax=None, title=None
):
    """Draw one row's attention visibility (queries down, keys across), banded by token kind.

    Accepts a LayoutBatch or a Trajectory (built with `layout`). For the `packed` layout's block
    stage the key axis is the prompt (prefix) then the row's own block; draw `packed_dense` to
    see a whole trajectory. Returns the Figure.
    """

    batch = batch_or_traj
    if isinstance(batch_or_traj, Trajectory):
        batch = build_layout([batch_or_traj], layout)
    st = batch.stages[stage]
    vis = st.visible_matrix()[row]
    n = st.lengths[row]
    P = st.prefix_length
    q_kinds = st.kinds[row][:n]
    if st.prefix_rows is not None:
        prow = int(st.prefix_rows[row])
        k_kinds = batch.stages[0].kinds[prow] + st.kinds[row]
        keep = list(range(st.prefix_lengths[row])) + [P + i for i in range(n)]
        vis = vis[:n][:, keep]
        k_kinds = "".join(k_kinds[i] for i in keep)
    else:
        vis = vis[:n, :n]
        k_kinds = q_kinds
    img = torch.ones(*vis.shape, 3)
    for j, letter in enumerate(k_kinds):  # visible cells take the key's kind colour
        img[:, j][vis[:, j]] = torch.tensor(to_rgb(KIND_COLORS.get(letter, "#000000"))) * 0.85
    if ax is None:
        fig = plt.figure(figsize=(6.4, 6.4))
        grid = fig.add_gridspec(2, 2, width_ratios=(1, 30), height_ratios=(1, 30), wspace=0.12, hspace=0.02)
        ax = fig.add_subplot(grid[1, 1])
        top = fig.add_subplot(grid[0, 1], sharex=ax)
        left = fig.add_subplot(grid[1, 0], sharey=ax)
        band = lambda s: torch.tensor([to_rgb(KIND_COLORS.get(c, "#000000")) for c in s]).numpy()  # noqa: E731
        top.imshow(band(k_kinds)[None], aspect="auto", interpolation="nearest")
        left.imshow(band(q_kinds)[:, None], aspect="auto", interpolation="nearest")
        top.tick_params(bottom=False, labelbottom=False, left=False, labelleft=False)
        left.tick_params(bottom=False, labelbottom=False, left=False, labelleft=False)
        left.set_ylabel("query (token whose hidden state is computed)")
        top.set_title(
            title or f"{batch.layout}: who sees whom (row {row}, {n} queries x {vis.shape[1]} keys)"
        )
    else:
        fig = ax.figure
        ax.set_ylabel("query")
        if title:
            ax.set_title(title)
    ax.imshow(img.numpy(), aspect="auto", interpolation="nearest")
    ax.set_xlabel("key (attended token)")
    ax.tick_params(labelsize=7)
    present = sorted(set(k_kinds) | set(q_kinds), key="psaAieo.".index)
    ax.legend(
        handles=[Patch(color=KIND_COLORS[c], label=KIND_LABELS.get(c, c)) for c in present],
        loc="upper right",
        fontsize=7,
        framealpha=0.9,
    )
    return fig
