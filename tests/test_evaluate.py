"""mem1 eval and the demo's pieces: records, same tasks everywhere, teacher numbers, emergent
measures, tables and target lines computed from numbers, one-line errors that write nothing."""

import ast
import json

import pytest

from mem1lite import demo, report
from mem1lite import evaluate as ev
from mem1lite.cli import main
from mem1lite.evaluate import RECORD_FIELDS, EvalConfig, EvalError, read_state, state_behaviour
from mem1lite.report import Check, check_targets, per_objective_table, results_table, to_markdown

CONTRACT = (
    "agent",
    "policy",
    "objectives",
    "episodes",
    "em",
    "f1",
    "peak_tokens",
    "dependency",
    "turns",
    "seconds",
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """An untrained tiny model saved as `sft-tiny`, and a LoRA adapter over it saved as `ppo-tiny`."""
    from peft import LoraConfig, get_peft_model

    from mem1lite.model import TINY_DIR, build_tiny_model, load_tokenizer

    root = tmp_path_factory.mktemp("ckpt")
    sft = root / "sft-tiny"
    build_tiny_model(seed=3).save_pretrained(sft)
    load_tokenizer(TINY_DIR).save_pretrained(sft)
    base = build_tiny_model(seed=3)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(root / "ppo-tiny")
    cfg_path = root / "ppo-tiny" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text()) | {"base_model_name_or_path": str(sft)}
    cfg_path.write_text(json.dumps(cfg))
    return str(sft), str(root / "ppo-tiny")


@pytest.fixture(scope="module")
def cli_sweep(checkpoints, tmp_path_factory):
    """`mem1 eval` over teacher + two tiny checkpoints, 3 agents, N = 1, 2, 3 episodes each."""
    out = tmp_path_factory.mktemp("eval")
    sft, ppo = checkpoints
    argv = ["eval", "--policy", f"teacher,{sft},{ppo}", "--agents", "mem1,full,truncate"]
    argv += ["--objectives", "2,1", "--episodes", "3", "--max-new-tokens", "12", "--threads", "1"]
    argv += ["--json", str(out / "e.json"), "--markdown", str(out / "e.md"), "--html", str(out / "e.html")]
    argv += ["--figures", str(out / "figs"), "--trajectories", str(out / "traj")]
    assert main(argv) == 0
    return out, json.loads((out / "e.json").read_text())


@pytest.fixture(scope="module")
def teacher_run():
    cfg = EvalConfig(policies=("teacher",), objectives=(2, 16), episodes=4, progress=False)
    return ev.evaluate(cfg, log=None)


def test_records_have_the_contract_fields_and_counts(cli_sweep):
    _, records = cli_sweep
    assert len(records) == 3 * 3 * 2  # policies x agents x N
    for r in records:
        assert set(CONTRACT) <= set(r) and set(RECORD_FIELDS) <= set(r)
        assert r["episodes"] == 3 and r["split"] == "test" and r["temperature"] == 0.0
        assert 0 <= r["em"] <= r["objectives"] and r["peak_tokens"] > 0 and r["turns"] >= 1
    combos = {(r["policy"], r["agent"], r["objectives"]) for r in records}
    assert len(combos) == len(records)
    roles = {r["role"] for r in records}
    assert roles == {"teacher", "sft", "rl"}


def test_the_same_tasks_for_every_policy_and_agent(cli_sweep):
    from mem1lite.trajectory import read_jsonl

    out, _ = cli_sweep
    files = sorted((out / "traj").glob("*.jsonl"))
    assert len(files) == 18
    by_n: dict[int, set] = {}
    for f in files:
        trajs = read_jsonl(f, strict=True).trajectories
        assert len(trajs) == 3
        key = tuple((t.task_id, tuple(t.questions)) for t in trajs)
        by_n.setdefault(trajs[0].objectives, set()).add(key)
    assert set(by_n) == {1, 2} and all(len(v) == 1 for v in by_n.values())


def test_written_reports(cli_sweep):
    out, records = cli_sweep
    md = (out / "e.md").read_text()
    assert "| policy | agent | N | EM |" in md and "## Targets" in md and "MEM1-QA (7B)" in md
    page = (out / "e.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<table>" in page
    assert sorted(p.name for p in (out / "figs").iterdir()) == [
        "em_vs_n.png",
        "peak_tokens_vs_n.png",
        "rl_vs_sft.png",
        "state_behaviour.png",
    ]
    # the target lines name the RL and SFT checkpoints by their roles
    lines = [c.line for c in check_targets(records)]
    assert any(line.startswith(("PASS  RL above SFT", "FAIL  RL above SFT", "SKIP  RL")) for line in lines)


def test_teacher_numbers(teacher_run):
    recs = {(r["agent"], r["objectives"]): r for r in teacher_run.records}
    assert len(recs) == 6
    for r in recs.values():
        assert r["em_per_objective"] == 1.0 and r["f1_per_objective"] == 1.0 and r["format_errors"] == 0
        assert r["state_readable"] == 1.0 and r["state_coverage"] == 1.0  # its last state lists all N
        assert r["early_switches"] == 0  # it never leaves a question unanswered
    assert recs["mem1", 16]["peak_tokens"] <= 2 * recs["mem1", 2]["peak_tokens"]  # flat
    assert recs["full", 16]["peak_tokens"] >= 5 * recs["mem1", 16]["peak_tokens"]  # growing
    assert recs["truncate", 16]["peak_tokens"] < recs["full", 16]["peak_tokens"]
    # memory targets hold for the teacher; EM targets are about trained policies, so they skip
    statuses = [c.status for c in check_targets(teacher_run.records)]
    assert statuses == ["PASS", "PASS", "SKIP", "SKIP", "SKIP"]


# ---------------------------------------------------------------------------------------------
# Emergent behaviour on hand-made states


QS = [
    "Who is the founder of Kel Works?",
    "Who is the mentor of Ara Vell?",
    "What is the birthplace of Ori Tam?",
]


def _state(answers, question, now="the founder of Kel Works"):
    a = "; ".join(answers) if answers else "none"
    return f"answers: {a}. question: {question or 'none.'} now: {now}."


def test_read_state_strict_and_loose():
    assert read_state(_state(["A B"], QS[1])) == (["A B"], QS[1])
    assert read_state(_state([], None, "none")) == ([], None)
    # malformed `now`, missing final period: still read field by field
    assert read_state(f"answers: A B; C D. question: {QS[2]} now the what") == (
        ["A B", "C D"],
        QS[2] + " now the what",
    )
    assert read_state(f"answers: A B; C D. question: {QS[2]} now: ???") == (["A B", "C D"], QS[2])
    assert read_state("question: " + QS[0]) == ([], QS[0])
    for junk in (None, "", "garbage tokens", "<search> x"):
        assert read_state(junk) is None


def test_state_behaviour_counts_tracking_and_early_switches():
    finished = [
        _state([], QS[0]),
        _state(["A"], QS[1]),
        _state(["A", "B"], QS[2]),
        _state(["A", "B", "C"], None),
    ]
    hops = [_state([], QS[0]), _state([], QS[1]), _state([], QS[0]), None, "garbage"]
    m = state_behaviour([finished, hops], [QS, QS])
    # finished: tracks 3 (1+... max at the last turn, 3 answers); hops tracks 1 at most
    assert m["state_questions"] == pytest.approx((3 + 1) / 2)
    assert m["state_coverage"] == pytest.approx(2 / 3)
    assert m["question_moves"] == pytest.approx((2 + 2) / 2)  # 0->1->2 ; 0->1->0
    assert m["early_switches"] == pytest.approx((0 + 2) / 2)
    assert m["early_switch_rate"] == pytest.approx(2 / 4)
    assert m["state_readable"] == pytest.approx(7 / 9)
    # a question whose text differs (a copy error) still counts as a different question
    assert state_behaviour([[_state([], QS[0]), _state([], "Who is?")]], [QS])["early_switches"] == 1
    assert state_behaviour([[None, None]], [QS])["early_switch_rate"] is None


# ---------------------------------------------------------------------------------------------
# Tables and target lines from synthetic records


def _rec(policy, agent, n, em_per_obj, peak, role=None):
    return {
        "policy": policy,
        "role": role or ev.policy_role(policy),
        "agent": agent,
        "objectives": n,
        "episodes": 8,
        "split": "test",
        "em": em_per_obj * n,
        "em_per_objective": em_per_obj,
        "f1": em_per_obj * n,
        "f1_per_objective": em_per_obj,
        "peak_tokens": peak,
        "dependency": 1e5,
        "turns": 2 * n,
        "seconds": 0.5,
        "format_errors": 0.0,
        "state_readable": 1.0,
        "state_questions": n,
        "state_coverage": 1.0,
        "question_moves": n - 1,
        "early_switches": 0.0,
        "early_switch_rate": 0.0,
    }


def _records(rl_em16=0.3, sft_em16=0.1, mem1_peak16=500, full_peak16=3000, full_em16=0.05):
    recs = []
    for n, rl, sft in ((2, 0.5, 0.4), (4, 0.45, 0.3), (16, rl_em16, sft_em16)):
        recs.append(_rec("ppo", "mem1", n, rl, 300 if n == 2 else mem1_peak16 if n == 16 else 350))
        recs.append(_rec("sft", "mem1", n, sft, 300))
        recs.append(
            _rec("ppo-full", "full", n, full_em16 if n == 16 else 0.5, full_peak16 if n == 16 else 800)
        )
    return recs


def test_checks_pass_on_good_numbers():
    checks = check_targets(_records())
    assert [c.status for c in checks] == ["PASS"] * 5, [c.line for c in checks]
    line = checks[0].line
    assert "500 vs 300 tokens = 1.67x" in line and "[paper MEM1-QA: 1.62x]" in line
    assert "ppo-full under full: 3000" in checks[1].line
    assert "N=4 1.800 vs 1.200" in checks[4].line


def test_checks_fail_on_bad_numbers_with_measured_values():
    checks = check_targets(
        _records(rl_em16=0.1, sft_em16=0.2, mem1_peak16=700, full_peak16=2000, full_em16=0.2)
    )
    assert [c.status for c in checks] == ["FAIL"] * 5, [c.line for c in checks]
    assert "700 vs 300 tokens = 2.33x" in checks[0].line
    assert "2000 vs" in checks[1].line and "2.86x" in checks[1].line
    assert "kept 20%" in checks[2].line
    # 0 vs 0 is never a win
    zero = check_targets(_records(rl_em16=0.0, sft_em16=0.0, full_em16=0.0))
    assert zero[3].status == "FAIL" and "both 0" in zero[3].line
    assert zero[4].status == "FAIL" and "0 vs 0 is not a win" in zero[4].line


def test_checks_skip_what_was_not_measured():
    recs = [r for r in _records() if r["policy"] == "ppo" and r["objectives"] != 16]
    checks = check_targets(recs)
    assert [c.status for c in checks] == ["SKIP"] * 5
    assert all(isinstance(c, Check) and c.line.startswith("SKIP") for c in checks)


def test_markdown_tables_from_numbers():
    recs = _records()
    md = to_markdown(results_table(recs))
    lines = md.splitlines()
    assert lines[0].startswith("| policy | agent | N | EM | EM/N | F1 |") and len(lines) == 2 + len(recs)
    assert "| ppo | mem1 | 16 | 4.800 | 0.300 |" in md
    pivot = to_markdown(per_objective_table(recs))
    assert "| ppo | mem1 | 0.500 | 0.450 | 0.300 |" in pivot and "N=16" in pivot.splitlines()[0]
    text = report.reproduction_text(recs, check_targets(recs))
    assert text.count("Reproduces:") == 1 and "ours 0.500 -> 0.300" in text
    assert "MEM1-QA 0.354 -> 0.123 (kept 35%)" in text  # the paper's, computed


def test_paper_ratios_are_computed():
    from mem1lite import paper

    r = paper.paper_ratios()
    assert r["mem1_peak_growth"] == pytest.approx(1040 / 640)
    assert r["em_per_objective_kept"] == pytest.approx((1.97 / 16) / (0.709 / 2))
    assert paper.rl_vs_sft_per_objective("rl")[4] == pytest.approx(1.12 / 4)


# ---------------------------------------------------------------------------------------------
# Bad input: one line, non-zero exit, nothing written


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--objectives", "1,x"], "expected comma-separated whole numbers"),
        (["--objectives", "0,2"], "expected numbers >= 1"),
    ],
)
def test_bad_flags_exit_2_before_any_work(flags, message, tmp_path, capsys):
    """Flags argparse checks (cli.py's types): exit status 2, the message on the last line."""
    import re

    out = tmp_path / "out.json"
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--episodes", "1", "--objectives", "1", *flags, "--json", str(out)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and re.search(message, err), err
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--policy", "nosuch"], "unknown policy 'nosuch'"),
        (["--policy", "sft"], "no checkpoint at .*sft-mem1 for policy 'sft': train it with `mem1 sft"),
        (["--agents", "mem1,react"], "unknown agent react"),
        (["--split", "test", "--top-p", "0"], "top-p"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(flags, message, tmp_path, capsys, monkeypatch):
    import re

    monkeypatch.setattr(ev, "CHECKPOINT_DIR", tmp_path / "none")
    out = tmp_path / "out.json"
    code = main(["eval", "--episodes", "1", "--objectives", "1", *flags, "--json", str(out)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and err.startswith("mem1: error:")
    assert re.search(message, err), err
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_validate_and_roles(tmp_path):
    assert ev.policy_role("ppo") == "rl" and ev.policy_role("sft-full") == "sft-full"
    assert ev.policy_role("data/checkpoints/ppo-mem1") == "rl" and ev.policy_role("runs/demo/sft/") == "sft"
    assert ev.policy_role("sft-n2") == "sft-n2" and ev.policy_role("runs/x") == "model"
    assert ev.policy_role("data/checkpoints/sft-mem1-n8") == "sft-n8" and ev.policy_role("sft-n8") == "sft-n8"
    with pytest.raises(EvalError, match="episodes"):
        ev.validate(EvalConfig(episodes=0))


def test_demo_shows_the_headline_against_the_baseline(tmp_path, monkeypatch):
    """The headline (from checkpoints.py) is the model the targets are about; the baseline falls
    back to the shipped full-context models in order; the N <= 4 model comes as a contrast role
    that report.pick_roles never makes primary; without the headline the teacher plays alone."""
    from mem1lite import checkpoints

    monkeypatch.setattr(ev, "CHECKPOINT_DIR", tmp_path)
    said = []
    assert demo.demo_policies(demo.DemoConfig(out=str(tmp_path / "demo")), said.append) == {
        "teacher": "teacher"
    }
    assert len(said) == 1 and "no shipped checkpoint at" in said[0] and "TRAIN=1" in said[0]
    folder = {name: ev.SHIPPED[name][0] for name in ev.SHIPPED}
    for name in (checkpoints.HEADLINE, checkpoints.CONTRAST, "sft-full"):
        (tmp_path / folder[name]).mkdir()
    policies = demo.demo_policies(demo.DemoConfig(), said.append)
    assert policies == {
        "teacher": "teacher",
        checkpoints.HEADLINE: "sft",
        "sft-full": "sft-full",
        "sft": "contrast",
    }
    assert "stands in" in said[-1] and checkpoints.BASELINE in said[-1]
    (tmp_path / "ppo-full").mkdir()  # the baseline (PPO on sft-full) replaces its stand-in
    policies = demo.demo_policies(demo.DemoConfig(), said.append)
    assert policies["ppo-full"] == "rl-full" and "sft-full" not in policies
    records = [
        {"policy": p, "role": r, "agent": "mem1", "objectives": 2, "em_per_objective": 0.5}
        for p, r in policies.items()
    ]
    assert report.pick_roles(records)["primary"] == checkpoints.HEADLINE
    # a model the user names must exist: one line, no fallback
    with pytest.raises(EvalError, match="no checkpoint 'runs/missing'"):
        demo.demo_policies(demo.DemoConfig(policy="runs/missing"), said.append)
    with pytest.raises(EvalError, match="--baseline"):
        demo.demo_policies(demo.DemoConfig(baseline="runs/missing"), said.append)
    other = tmp_path / "runs-mine"
    other.mkdir()
    assert str(other) in demo.demo_policies(demo.DemoConfig(policy=str(other)), said.append)


def test_demo_sweeps_plan():
    plan = demo.demo_sweeps(["teacher", "sft", "ppo", "ppo-full"], (2, 16), 4, threads=1)
    assert [(c.policies, c.agents) for c in plan] == [
        (("teacher",), ("mem1", "full", "truncate")),
        (("sft", "ppo"), ("mem1",)),
        (("ppo-full",), ("full",)),
    ]
    assert all(c.objectives == (2, 16) and c.episodes == 4 and c.threads == 1 for c in plan)
    # no full-context checkpoint: the main model stands in; the teacher alone gets one part
    plan = demo.demo_sweeps(["teacher", "runs/demo/sft", "runs/demo/ppo"], (2,), 4)
    assert plan[-1].policies == ("runs/demo/ppo",) and plan[-1].agents == ("full",)
    assert [c.policies for c in demo.demo_sweeps(["teacher"], (2,), 4)] == [("teacher",)]
    # roles given: the sft-role headline is the main model, the contrast plays under mem1 only
    roles = {"teacher": "teacher", "sft-n16-hop2": "sft", "sft-full-n16-slow": "sft-full", "sft": "contrast"}
    plan = demo.demo_sweeps(roles, (2,), 4)
    assert [(c.policies, c.agents) for c in plan][1:] == [
        (("sft-n16-hop2", "sft"), ("mem1",)),
        (("sft-full-n16-slow",), ("full",)),
    ]
    assert all(c.roles == roles for c in plan)


def test_paced_plays_like_the_teacher_at_a_model_cost():
    cfg = EvalConfig(
        policies=("paced",), agents=("mem1",), objectives=(1,), episodes=2, progress=False, threads=1
    )
    (rec,) = ev.evaluate(cfg, log=None).records
    assert rec["role"] == "paced" and rec["em_per_objective"] == 1.0 and rec["state_coverage"] == 1.0
    assert rec["wall_seconds"] > 0.05  # the tiny model really ran (the teacher alone takes ~1 ms)


def test_demo_trains_quick_checkpoints_with_valid_args(tmp_path, monkeypatch):
    """TRAIN=1: quick SFT then quick PPO from it, into out/sft and out/ppo (training itself stubbed)."""
    from mem1lite import ppo, sft

    calls = []
    monkeypatch.setattr(sft, "train_sft", lambda args: calls.append(("sft", args)))
    monkeypatch.setattr(ppo, "train_ppo", lambda args: calls.append(("ppo", args)))
    cfg = demo.DemoConfig(out=str(tmp_path), train=True, threads=1, data="data/qa")
    assert list(demo.demo_policies(cfg, lambda s: None)) == [
        "teacher",
        str(tmp_path / "sft"),
        str(tmp_path / "ppo"),
    ]
    (_, s), (_, p) = calls
    assert s.preset == "quick" and s.out == str(tmp_path / "sft") and s.threads == 1
    assert p.preset == "quick" and p.init == str(tmp_path / "sft") and p.out == str(tmp_path / "ppo")


def test_saved_records_are_joined_and_rebuild_the_same_tables(cli_sweep, tmp_path, capsys):
    out, records = cli_sweep
    # split one run's records in two files (as a baseline evaluated later would be) and join them
    (tmp_path / "a.json").write_text(json.dumps(records[:7]))
    (tmp_path / "b.json").write_text(json.dumps(records[7:]))
    joined = ev.load_records([tmp_path / "a.json", tmp_path / "b.json"])
    assert len(joined) == len(records)
    assert report.to_markdown(report.results_table(joined)) == report.to_markdown(
        report.results_table(records)
    )
    argv = ["eval", "--records", f"{tmp_path / 'a.json'},{tmp_path / 'b.json'}"]
    argv += ["--markdown", str(tmp_path / "joined.md")]
    assert main(argv) == 0
    assert (tmp_path / "joined.md").read_text() == (out / "e.md").read_text()
    assert "total wall time" not in capsys.readouterr().out  # nothing was played


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no records file"),
        ("{not json", "is not a records file"),
        ('{"a": 1}', "expected a list"),
        ('[{"policy": "x"}]', "record 0 lacks agent"),
        ("WRONG_TYPES", "record 0 has wrong types: objectives='2', em=[1]"),
        ("EM_INF", "record 0 has values out of range: em=inf (expected 0..2)"),
        ("EM_NEGATIVE", "record 0 has values out of range: em=-5 (expected 0..2)"),
        ("SHARE_ABOVE_ONE", "em_per_objective=1.5 (expected 0..1)"),
        ("NEGATIVE_TOKENS", "peak_tokens=-3 (expected 0..any finite)"),
        ("TASK_EM", "em_by_task (expected a list of numbers in 0..1)"),
    ],
)
def test_bad_records_files_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "r.json"
    good = {f: 1.0 for f in RECORD_FIELDS} | {"agent": "mem1", "policy": "p", "episodes": 4, "objectives": 2}
    broken = {  # a good record with a size as text and a measure as a list; values no run gives
        "WRONG_TYPES": {"objectives": "2", "em": [1]},
        "EM_INF": {"em": float("inf")},  # json.dumps writes Infinity, which json.loads reads back
        "EM_NEGATIVE": {"em": -5},
        "SHARE_ABOVE_ONE": {"em_per_objective": 1.5},
        "NEGATIVE_TOKENS": {"peak_tokens": -3},
        "TASK_EM": {"em_by_task": [1.0, 7]},
    }
    if content in broken:
        content = json.dumps([good | broken[content]])
    if content is not None:
        path.write_text(content)
    assert main(["eval", "--records", str(path), "--markdown", str(tmp_path / "m.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "m.md").exists()


def test_the_same_row_twice_is_refused(cli_sweep, tmp_path):
    _, records = cli_sweep
    (tmp_path / "a.json").write_text(json.dumps(records[:2]))
    with pytest.raises(ev.EvalError, match="is also in"):
        ev.load_records([tmp_path / "a.json", tmp_path / "a.json"])


# ---------------------------------------------------------------------------------------------
# A world of another seed: its name parts are not single tokens of the shipped models' tokenizer

HEADLINE_DIR = "data/checkpoints/sft-mem1-n16-hop2"


@pytest.fixture(scope="module")
def other_world(small_world, tmp_path_factory):
    """The small world of seed 7 (conftest.SMALL) saved as a folder, as `mem1 world --seed 7` does."""
    from mem1lite.world import save_world

    return save_world(small_world, tmp_path_factory.mktemp("worlds") / "w7")


@pytest.mark.parametrize("command", ["eval", "rollout", "diagnose", "demo", "ppo"])
def test_a_trained_model_is_refused_on_a_world_of_other_names(
    command, other_world, small_world, tmp_path, capsys
):
    """Every command that plays a trained model stops before the first episode, in one line that
    counts the split parts and names the commands that train a tokenizer and a model there."""
    from mem1lite.model import load_tokenizer

    w, out = str(other_world), tmp_path / "out"
    parts = small_world.parts.all_parts()
    tokenizer = load_tokenizer(HEADLINE_DIR)
    split = [p for p in parts if len(tokenizer.encode(" " + p, add_special_tokens=False)) != 1]
    # every pseudo-word part is split; only the 28 type words (Bank, Vale, ...) are in every world
    assert (len(split), len(parts)) == (260, 288)
    argv = {
        "eval": ["eval", "--policy", f"teacher,{HEADLINE_DIR}", "--agents", "mem1", "--episodes", "2"]
        + ["--json", f"{out}/e.json", "--trajectories", f"{out}/traj", "--figures", f"{out}/figs"],
        "rollout": ["rollout", "--policy", HEADLINE_DIR, "--episodes", "2", "--out", f"{out}/r.jsonl"],
        "diagnose": ["diagnose", "--policy", "sft-n16-hop2", "--episodes", "2", "--json", f"{out}/d.json"],
        "demo": ["demo", "--episodes", "2", "--out", str(out)],
        "ppo": ["ppo", "--preset", "quick", "--init", HEADLINE_DIR, "--out", str(out)],
    }[command]
    argv += ["--data", w] + (["--objectives", "2"] if command in ("eval", "diagnose", "demo", "ppo") else [])
    assert main(argv) == 2
    said = capsys.readouterr()
    assert "total wall time" not in said.out  # no sweep played, not even the teacher's (eval, demo)
    errors = [line for line in said.err.splitlines() if line.startswith("mem1: error:")]
    assert len(errors) == 1, errors
    pieces = errors[0].split(f"(e.g. {split[0]!r} -> ", 1)[1].split(")", 1)[0]
    assert "".join(ast.literal_eval(p) for p in pieces.split()) == split[0]  # as the tokenizer cuts it
    assert errors[0].startswith(f"mem1: error: 260 of 288 name parts of {w} are not single tokens of ")
    assert f"`mem1 tokenizer --world {w} --out runs/w7-tokenizer`" in errors[0]
    assert f"`mem1 sft --preset n16 --model runs/w7-tokenizer --data {w} --out runs/w7-sft`" in errors[0]
    assert [p for p in out.rglob("*") if p.is_file()] == []  # nothing written (folders may be made)


def test_the_teacher_still_plays_a_world_of_other_names(other_world, tmp_path):
    out = tmp_path / "t.json"
    argv = ["eval", "--policy", "teacher", "--data", str(other_world), "--agents", "mem1"]
    assert main(argv + ["--objectives", "2", "--episodes", "4", "--json", str(out)]) == 0
    (rec,) = json.loads(out.read_text())
    assert (rec["policy"], rec["objectives"], rec["episodes"]) == ("teacher", 2, 4)
    assert rec["em_per_objective"] == 1.0 and rec["format_errors"] == 0
