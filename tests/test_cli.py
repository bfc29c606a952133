"""The command line: bad numbers are one-line errors before any work."""

import os

import pytest


@pytest.mark.parametrize(
    "argv",
    [
        ["rollout", "--temperature", "nan"],
        ["rollout", "--temperature", "-1"],
        ["eval", "--temperature", "inf"],
        ["rollout", "--top-p", "0"],
        ["rollout", "--top-p", "1.5"],
        ["ppo", "--out", "o", "--minutes", "-1"],
        ["sft", "--out", "o", "--minutes-scale", "-1"],
        ["sft", "--out", "o", "--minutes-scale", "nan"],
    ],
)
def test_numeric_options_out_of_range_are_one_line_errors(argv, capsys):
    from mem1lite.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "expected" in err and "Traceback" not in err


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import mem1lite.evaluate as evaluate
    from mem1lite.cli import main

    def no_sweep(*a, **k):
        raise AssertionError("the sweep must not start")

    monkeypatch.setattr(evaluate, "evaluate", no_sweep)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for flag, path in (("--json", blocker / "e.json"), ("--figures", blocker / "figs"), ("--json", tmp_path)):
        assert main(["eval", "--episodes", "1", flag, str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mem1: error:") and str(path) in err and len(err.strip().splitlines()) == 1
    assert main(["rollout", "--out", str(blocker / "t.jsonl")]) == 2
    assert main(["diagnose", "--policy", "sft", "--figure", str(blocker / "a.png")]) == 2
    assert not list(tmp_path.glob("**/.mem1-write-check-*"))


def test_cli_imports_no_torch_and_its_layouts_reach_the_ppo_card():
    import subprocess
    import sys

    from mem1lite.ppo import card_command, make_args

    # `mem1 --help` stays fast: the command line imports torch only inside a command
    probe = "import sys, mem1lite.cli; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
        == "False"
    )
    args = make_args("quick", out="runs/x", init="data/checkpoints/sft-mem1", layout="stitched")
    assert "--layout stitched" in card_command(args)
    assert "--layout" not in card_command(make_args("quick", out="runs/x", init="data/checkpoints/sft-mem1"))


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--episodes", "1000000000"],
        ["eval", "--objectives", "1,2,1000"],
        ["rollout", "--out", "o.jsonl", "--objectives", "1000"],
        ["rollout", "--out", "o.jsonl", "--episodes", "100001"],
        ["diagnose", "--policy", "sft", "--objectives", "65"],
        ["diagnose", "--policy", "sft", "--episodes", "1000000000"],
        ["sft", "--out", "o", "--objectives", "2,1000"],
        ["sft", "--out", "o", "--tasks", "1000000000"],
        ["ppo", "--out", "o", "--objectives", "1000"],
        ["ppo", "--out", "o", "--episodes-per-step", "1000000000"],
        ["demo", "--episodes", "1000000000"],
        ["webshop", "--eval", "teacher", "--episodes", "1000000000"],
    ],
)
def test_sizes_past_the_caps_are_one_line_errors_saying_why(argv, capsys):
    from mem1lite.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "expected at most" in err and any(f"{cap} in mem1lite/cli.py" in err for cap in CAPS)


CAPS = ("MAX_OBJECTIVES", "MAX_EPISODES", "MAX_BATCH")
"""the named bounds a size past its cap is refused by"""


def test_sizes_at_the_caps_are_taken():
    from mem1lite.cli import MAX_EPISODES, MAX_OBJECTIVES, build_parser

    args = build_parser().parse_args(
        ["eval", "--objectives", f"1,{MAX_OBJECTIVES}", "--episodes", str(MAX_EPISODES)]
    )
    assert args.objectives == (1, MAX_OBJECTIVES) and args.episodes == MAX_EPISODES
    args = build_parser().parse_args(["rollout", "--out", "o", "--objectives", str(MAX_OBJECTIVES)])
    assert args.objectives == MAX_OBJECTIVES


@pytest.mark.parametrize("flag", ["--data", "--world", "--path"])
@pytest.mark.parametrize(
    "argv",
    [["world", "--check"], ["webshop", "--check"], ["rollout", "--out", "o"], ["sft", "--out", "o"], ["eval"]]
    + [["ppo", "--out", "o"], ["diagnose"], ["demo"], ["bench", "rollout"]],
)
def test_every_data_folder_flag_is_args_data(argv, flag):
    """One word for the domain's data folder: --data, with --world and --path still accepted."""
    from mem1lite.cli import build_parser

    assert build_parser().parse_args([*argv, flag, "F"]).data == "F"


def test_a_second_world_build_into_the_same_folder_is_refused_while_the_first_runs(
    tmp_path, capsys, monkeypatch, small_world
):
    """The second `mem1 world --out D` starts while the first is generating: without the lock both
    would pass the 'already holds a world' check and one would silently replace the other."""
    import mem1lite.world as world
    from mem1lite.cli import main

    out = tmp_path / "w"
    second = {}

    def generate_while_another_starts(config):
        if not second:  # the first build's generation: the second build starts now
            second["rc"] = None
            second["rc"] = main(["world", "--out", str(out)])
            second["err"] = capsys.readouterr().err
        return small_world

    monkeypatch.setattr(world, "generate_world", generate_while_another_starts)
    assert main(["world", "--out", str(out)]) == 0
    lock = tmp_path / "w.lock"
    assert second["rc"] == 2 and len(second["err"].strip().splitlines()) == 1
    assert second["err"].startswith("mem1: error:") and str(lock) in second["err"]
    assert f"pid {os.getpid()}, started " in second["err"]  # the first run named: its pid and start
    assert (out / "manifest.json").is_file() and not lock.exists()  # the first finished, lock gone
    # a lock a killed build left (no live holder): taken over with a note, the build goes on
    lock.write_text("pid 99999999\n")
    assert main(["world", "--out", str(tmp_path / "w"), "--force"]) == 0
    err = capsys.readouterr().err
    assert f"mem1: note: took over the lock {lock}" in err and "pid 99999999" in err
    assert not lock.exists()


# ---------------------------------------------------------------------------------------------
# Issue #32: every size bounded before work starts, and flags that do nothing refused


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--threads", "100000"], "argument --threads: expected at most"),
        (["eval", "--max-new-tokens", "1000000000"], "argument --max-new-tokens: expected at most 8,192"),
        (["rollout", "--out", "o.jsonl", "--truncate-tokens", "99999"], "expected at most 8,192"),
        (["rollout", "--out", "o.jsonl", "--seed", "-1"], "expected a seed in 0..4,294,967,295"),
        (["eval", "--batch-size", "1000000"], "argument --batch-size: expected at most 4,096"),
        (["ppo", "--out", "o", "--steps", "1000000000"], "argument --steps: expected at most 100,000"),
        (["ppo", "--out", "o", "--minutes", "1e12"], "argument --minutes: expected at most 10,080"),
        (["sft", "--out", "o", "--minutes-scale", "1e9"], "argument --minutes-scale: expected at most 100"),
        (["bench", "data", "--tasks", "1000000000"], "argument --tasks: expected at most 40,000"),
        (["bench", "sft", "--episodes", "1000000"], "argument --episodes: expected at most 4,096"),
        (["bench", "sft", "--steps", "100000"], "argument --steps: expected at most 100"),
        (["bench", "generate", "--engines", ","], "argument --engines: expected comma-separated names"),
        (["eval", "--policy", " , "], "argument --policy/--policies: expected comma-separated names"),
    ],
)
def test_sizes_past_their_bound_are_refused_by_the_parser(argv, message, capsys):
    from mem1lite.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--records", "r.json", "--policy", "sft"], "--policy does nothing with --records"),
        (["eval", "--records", "r.json", "--episodes", "4", "--seed", "3"], "--episodes, --seed do nothing"),
        (["diagnose", "--records", "a.json", "--episodes", "4"], "--episodes does nothing with --records"),
        (["webshop", "--records", "r.json", "--agents", "mem1"], "--agents does nothing with --records"),
        (["webshop", "--episodes", "5"], "--episodes does nothing without --eval"),
        (["world", "--check", "--seed", "3"], "--seed does nothing with --check"),
        (["bench", "data", "--limit", "5"], "--limit does nothing in `mem1 bench data`"),
        (["bench", "retrieval", "--engines", "kv"], "--engines does nothing in `mem1 bench retrieval`"),
        (
            ["ppo", "--init", "tiny", "--out", "OUT", "--group", "4"],
            "--group does nothing under the gae advantage",
        ),
    ],
)
def test_flags_that_do_nothing_in_the_chosen_mode_are_refused(argv, message, capsys, tmp_path):
    from mem1lite.cli import main

    argv = [a.replace("OUT", str(tmp_path / "o")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mem1: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_an_unknown_engine_is_one_line(capsys):
    from mem1lite.cli import main

    assert main(["bench", "generate", "--engines", "kv,warp"]) == 2
    assert "--engines: unknown warp; expected some of kv" in capsys.readouterr().err


def test_a_second_eval_writing_the_same_figures_folder_is_refused(tmp_path, capsys):
    """One run per output folder: the lock names the first run (here this process)."""
    from mem1lite.cli import main
    from mem1lite.files import lock, lock_path

    figures = tmp_path / "figs"
    with lock(lock_path(figures), "writing figs"):
        assert main(["eval", "--records", "docs/results/eval-qa.json", "--figures", str(figures)]) == 2
    err = capsys.readouterr().err
    assert f"another run (pid {os.getpid()}, started " in err and f"is writing {figures}" in err
    assert not list(figures.glob("*.png"))  # nothing written beside the first run's figures


def test_python_m_says_a_user_error_as_one_line_not_as_a_bug():
    """Under `python -m mem1lite.cli` the module is __main__: its UserError is still the user's."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "mem1lite.cli", "bench", "data", "--limit", "5"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr == "mem1: error: --limit does nothing in `mem1 bench data`: drop it\n"


def test_rollout_takes_a_shipped_name_as_eval_does(tmp_path):
    """`mem1 rollout --policy sft-n16-hop2` plays the shipped checkpoint (it once said the folder
    sft-n16-hop2 did not exist, where `mem1 eval` took the same name)."""
    import json

    from mem1lite.cli import main

    out = tmp_path / "r.jsonl"
    argv = ["rollout", "--policy", "sft-n16-hop2", "--objectives", "1", "--episodes", "2"]
    argv += ["--temperature", "0"]
    assert main([*argv, "--out", str(out)]) == 0
    episodes = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(episodes) == 2 and all(e["format_errors"] == 0 for e in episodes)
