"""The headline comparison: the one table and the one figure the README and notebook 04 open with.

    mem1 eval --records docs/results/eval-qa.json --headline     # the table, printed
    python scripts/sync_docs.py                                   # README's table from the records

The headline mem1 model under the mem1 agent against the full-context baseline under the full
agent, on the same test tasks, with the scripted teacher as the ceiling and the paper's MEM1-QA
and full-context Qwen2.5-14B rows beside them. EM per objective (EM / N) is the number that
compares across task sizes; each of ours carries a 95% bootstrap interval over its tasks, the
mem1 - baseline difference a paired one (the same tasks), and "kept" is N = 16 over N = 2
(metrics.ratio_bootstrap). Everything is computed from the records: nothing here is typed in.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import paper
from .metrics import mean_interval, ratio_bootstrap
from .study import find_record, paired

Table = tuple[list[str], list[list[str]]]


def _em(record: dict | None) -> str:
    if record is None:
        return "–"
    if not record.get("em_by_task"):
        return f"{record['em_per_objective']:.3f}"
    mean, lo, hi = mean_interval(record["em_by_task"])
    return f"{mean:.3f} [{lo:.2f}, {hi:.2f}]"


def _paper(agent: str, n: int) -> str:
    row = paper.qa_row(agent, n)
    return f"{row.em_per_objective:.3f}" if row else "–"


def _peak(record: dict | None) -> str:
    return f"{record['peak_tokens']:.0f}" if record else "–"


def headline_table(records: Sequence[dict], headline: str, baseline: str) -> Table:
    """EM per objective by N: teacher, the headline (mem1 agent), the baseline (full agent), their
    paired difference, the paper's two rows; then peak tokens of both; last, the share kept at 16."""
    ns = sorted({r["objectives"] for r in records if r["policy"] == headline and r["agent"] == "mem1"})
    header = [
        "N",
        "teacher",
        f"{headline} (mem1)",
        f"{baseline} (full)",
        "mem1 − full, paired",
        "paper MEM1-QA",
        "paper Qwen2.5-14B full",
        "peak tokens mem1 / full",
    ]
    rows = []
    for n in ns:
        m, f = find_record(records, headline, "mem1", n), find_record(records, baseline, "full", n)
        t = find_record(records, "teacher", "mem1", n)
        diff = paired(records, (baseline, "full"), (headline, "mem1"), n)
        rows.append(
            [
                str(n),
                f"{t['em_per_objective']:.3f}" if t else "–",
                _em(m),
                _em(f),
                f"{diff['diff']:+.3f} [{diff['low']:+.2f}, {diff['high']:+.2f}]" if diff else "–",
                _paper("mem1", n),
                _paper("full", n),
                f"{_peak(m)} / {_peak(f)}",
            ]
        )
    rows.append(["kept 16 / 2", "", _kept(records, headline, "mem1"), _kept(records, baseline, "full"), ""])
    rows[-1] += [f"{paper.paper_ratios()['em_per_objective_kept']:.0%}", _paper_kept_full(), ""]
    return header, rows


def _kept(records: Sequence[dict], policy: str, agent: str) -> str:
    a, b = find_record(records, policy, agent, 2), find_record(records, policy, agent, 16)
    if not (a and b and a.get("em_by_task") and b.get("em_by_task")):
        return "–"
    ci = ratio_bootstrap(a["em_by_task"], b["em_by_task"])
    return f"{ci['ratio']:.0%} [{ci['low']:.0%}, {ci['high']:.0%}]"


def _paper_kept_full() -> str:
    a, b = paper.qa_row("full", 2), paper.qa_row("full", 16)
    return f"{b.em_per_objective / a.em_per_objective:.0%}"


def headline_figure(records: Sequence[dict], headline: str, baseline: str):
    """Two panels against N: EM per objective (ours with 95% intervals, the paper's dashed) and
    peak tokens (the memory each agent needs)."""
    import matplotlib.pyplot as plt

    fig, (em_ax, peak_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    lines = [
        ("teacher", "mem1", "scripted teacher (ceiling)", "#999999"),
        (headline, "mem1", f"{headline} (mem1)", "#c44e52"),
        (baseline, "full", f"{baseline} (full context)", "#4c72b0"),
    ]
    for policy, agent, label, colour in lines:
        rs = sorted(
            (r for r in records if r["policy"] == policy and r["agent"] == agent),
            key=lambda r: r["objectives"],
        )
        if not rs:
            continue
        ns = [r["objectives"] for r in rs]
        spans = [
            mean_interval(r["em_by_task"]) if r.get("em_by_task") else (r["em_per_objective"],) * 3
            for r in rs
        ]
        em_ax.plot(ns, [s[0] for s in spans], "o-", color=colour, label=label)
        em_ax.fill_between(ns, [s[1] for s in spans], [s[2] for s in spans], color=colour, alpha=0.15)
        peak_ax.plot(ns, [r["peak_tokens"] for r in rs], "o-", color=colour, label=label)
    for agent, colour, name in (
        ("mem1", "#c44e52", "paper MEM1-QA 7B"),
        ("full", "#4c72b0", "paper Qwen2.5-14B"),
    ):
        pts = sorted((r.objectives, r.em_per_objective) for r in paper.QA_ROWS if r.agent == agent)
        em_ax.plot(*zip(*pts), "s--", color=colour, alpha=0.5, label=name)
    for ax, title, ylabel in (
        (em_ax, "accuracy as tasks grow (test, 95% intervals)", "EM per objective"),
        (peak_ax, "memory as tasks grow", "peak tokens in context"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16], ["1", "2", "4", "8", "16"])
        ax.set_xlabel("objectives per task (N)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
    em_ax.set_ylim(-0.02, 1.05)
    em_ax.legend(fontsize=7, loc="lower left")
    peak_ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def recipe_table(records: Sequence[dict], cards: dict[str, dict], recipe: str, chain: Sequence[str]) -> Table:
    """The one-command recipe beside the chain of runs it replaces: CPU minutes (the cards'; the
    chain's summed over its runs), EM per objective at each N with its interval, and the paired
    difference recipe - chain on the same tasks."""
    last = chain[-1]
    ns = sorted({r["objectives"] for r in records if r["policy"] == recipe and r["agent"] == "mem1"})
    header = ["model", "commands", "minutes (one thread)"] + [f"N={n}" for n in ns]
    minutes = {
        recipe: cards.get(recipe, {}).get("minutes"),
        last: sum(cards.get(c, {}).get("minutes") or 0 for c in chain),
    }
    rows = []
    for name, commands in ((recipe, "1"), (last, str(len(chain)))):
        m = minutes[name]
        rows.append(
            [name, commands, f"{m:.1f}" if m else "–"]
            + [_em(find_record(records, name, "mem1", n)) for n in ns]
        )
    diffs = [paired(records, (last, "mem1"), (recipe, "mem1"), n) for n in ns]
    rows.append(
        ["recipe − chain, paired", "", ""]
        + [f"{d['diff']:+.3f} [{d['low']:+.2f}, {d['high']:+.2f}]" if d else "–" for d in diffs]
    )
    return header, rows
