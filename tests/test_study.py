"""The generalisation study: per-task EM in the records, paired intervals only over the same tasks,
the kept ratio's interval, tables that mark sizes beyond a model's data, and the figure."""

import math

import matplotlib
import pytest

from mem1lite import evaluate as ev
from mem1lite import report, study
from mem1lite.metrics import ratio_bootstrap

matplotlib.use("Agg")


def _rec(policy, agent, n, ems, ids=None):
    ids = ids or [f"t{n}-{i}" for i in range(len(ems))]
    return {
        "policy": policy,
        "agent": agent,
        "objectives": n,
        "em_per_objective": sum(ems) / len(ems),
        "em_by_task": list(ems),
        "task_ids": ids,
    }


def test_teacher_records_hold_per_task_em_matching_the_mean():
    cfg = ev.EvalConfig(
        policies=("teacher",), agents=("mem1",), objectives=(1, 2), episodes=3, progress=False
    )
    run = ev.evaluate(cfg, log=None)
    for r in run.records:
        assert len(r["em_by_task"]) == len(r["task_ids"]) == 3
        assert sum(r["em_by_task"]) / 3 == pytest.approx(r["em_per_objective"])
    # the same tasks for every policy: a second draw gives the same ids
    again = ev.evaluate(cfg, log=None)
    assert [r["task_ids"] for r in run.records] == [r["task_ids"] for r in again.records]


def test_ratio_bootstrap():
    out = ratio_bootstrap([1.0, 0.5, 0.5, 0.0], [0.5, 0.0, 0.25, 0.25])
    assert out["ratio"] == pytest.approx(0.25 / 0.5)
    assert out["low"] <= out["ratio"] <= out["high"]
    assert math.isnan(ratio_bootstrap([0.0, 0.0], [1.0])["ratio"])  # nothing at N = 2 to keep
    with pytest.raises(ValueError):
        ratio_bootstrap([], [1.0])


def test_paired_needs_the_same_tasks_and_per_task_values():
    a = _rec("sft-n16", "mem1", 16, [0.0, 0.5, 0.25, 0.0])
    b = _rec("ppo-n16-n2", "mem1", 16, [0.5, 0.5, 0.5, 0.25])
    ci = study.paired([a, b], ("sft-n16", "mem1"), ("ppo-n16-n2", "mem1"), 16)
    assert ci["diff"] == pytest.approx(0.25) and ci["low"] > 0  # B above A on every task
    other = _rec("ppo-n16-n2", "mem1", 16, [0.5] * 4, ids=["x0", "x1", "x2", "x3"])
    assert study.paired([a, other], ("sft-n16", "mem1"), ("ppo-n16-n2", "mem1"), 16) is None
    old = {k: v for k, v in b.items() if k != "em_by_task"}  # saved before per-task values existed
    assert study.paired([a, old], ("sft-n16", "mem1"), ("ppo-n16-n2", "mem1"), 16) is None
    assert study.paired([a, b], ("sft-n16", "mem1"), ("ppo-n16-n2", "mem1"), 2) is None


def test_tables_mark_sizes_beyond_the_data_and_skip_absent_arms():
    records = [
        _rec("sft", "mem1", 2, [1.0, 0.5]),
        _rec("sft", "mem1", 16, [0.0, 0.25]),
        _rec("sft-n16", "mem1", 2, [1.0, 0.0]),
        _rec("sft-n16", "mem1", 16, [0.5, 0.5]),
        _rec("sft-full-n16", "full", 16, [0.0, 0.25]),
        _rec("someone-else", "mem1", 2, [1.0, 1.0]),  # not an arm of the study
    ]
    header, rows = study.study_table(records)
    assert header == ["data up to N", "recipe", "policy", "agent", "N=2", "N=16", "kept 16 / 2"]
    by_policy = {row[2]: row for row in rows}
    assert set(by_policy) == {"sft", "sft-n16", "sft-full-n16"}
    assert by_policy["sft"][4:6] == ["0.750", "0.125*"]  # N = 16 lies beyond N <= 4 data
    assert by_policy["sft-n16"][4:6] == ["0.500", "0.500"]
    assert by_policy["sft-n16"][6].startswith("100% [")
    assert by_policy["sft-full-n16"][4] == "–"
    _, claims = study.comparison_table(records)
    claim = next(row for row in claims if row[0] == "mem1 above full context, same budget")
    assert claim[3] == "–" and claim[4].startswith("+0.375 [")
    assert "Generalisation study" in "".join(report._study_sections(records))
    assert report._study_sections([_rec("someone-else", "mem1", 2, [1.0])]) == []


def test_figure_draws_one_line_per_arm():
    records = [_rec(p, "mem1", n, [0.5]) for p in ("sft", "sft-n16") for n in (2, 4, 16)]
    fig = study.figure(records)
    labels = [line.get_label() for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert labels == ["sft / mem1 (data N <= 4)", "sft-n16 / mem1 (data N <= 16)"]
