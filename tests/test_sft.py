"""SFT data and a miniature end-to-end run of the staged recipe."""

import hashlib
import json
from dataclasses import replace

import pytest
import torch

from mem1lite.sft import (
    PRESETS,
    SFTArgs,
    Stage,
    fit_pack_length,
    make_args,
    train_sft,
)
from mem1lite.sft_data import tasks_per_size, teacher_sft_data, to_dataset


def test_rows_are_the_mem1_view_with_loss_on_the_response_only(qa, tokenizer, tmp_path, monkeypatch):
    import mem1lite.sft_data as sft_data
    from mem1lite.probe import teacher_trajectories

    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path)
    args = SFTArgs(tasks=4, objectives=(2,), seed=3)
    data = teacher_sft_data(qa, tokenizer, args)
    trajs = teacher_trajectories(qa, tokenizer, "sft", 2, 4, seed=3)
    expected = [(t.context_ids(j), turn.output_ids) for t in trajs for j, turn in enumerate(t.turns)]
    assert len(data) == len(expected)
    for row, (context, output) in zip(data, expected):
        assert row["input_ids"] == context + output
        assert row["response_mask"] == [0] * len(context) + [1] * len(output)
    # mem1 view: a context holds the prompt (whose instruction names the tags) and at most one
    # earlier state
    think = tokenizer.convert_tokens_to_ids("<think>")
    in_prompt = trajs[0].prompt_ids.count(think)
    assert all(
        row["input_ids"][: row["response_mask"].index(1)].count(think) <= in_prompt + 1 for row in data
    )
    response = to_dataset(data, "response", seed=0)
    everything = to_dataset(data, "all", seed=0)
    for r in response:
        n_loss = sum(label != -100 for label in r["labels"])
        assert 0 < n_loss < len(r["input_ids"])
    assert all(r["labels"] == r["input_ids"] for r in everything)
    # the cache returns the same rows
    again = teacher_sft_data(qa, tokenizer, args)
    assert again["input_ids"] == data["input_ids"]
    with pytest.raises(ValueError):
        to_dataset(data, "prompt", seed=0)


def test_packs_grow_so_no_sample_is_cut_and_tokens_per_step_stay():
    args = make_args("standard")
    assert fit_pack_length(args, args.max_length) == args  # fits already: unchanged
    full = fit_pack_length(args, 1631)  # the full-context teacher's longest sample at N = 4
    assert (full.max_length, full.grad_accum) == (2048, 4)
    assert full.max_length * full.grad_accum == args.max_length * args.grad_accum
    assert full.max_length >= 1631 > full.max_length // 2


def test_presets_and_bad_names():
    assert make_args("quick").stages and make_args("standard").stages
    assert set(PRESETS) == {"quick", "standard", "long"}
    long = make_args("long")
    assert long.objectives == tuple(range(1, 17)) and long.long_share == 0.5
    assert all(stage.loss_on == "response" for stage in long.stages)
    with pytest.raises(ValueError, match="unknown preset"):
        make_args("huge")


@pytest.fixture(scope="module")
def small_init(tmp_path_factory, small_qwen):
    return small_qwen(tmp_path_factory.mktemp("init"))


def test_miniature_run_writes_a_complete_checkpoint_with_its_card(small_init, tmp_path, monkeypatch):
    import mem1lite.sft_data as sft_data

    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path / "cache")
    out = tmp_path / "run"
    args = SFTArgs(
        out=str(out),
        preset="test",
        init=small_init,
        tasks=6,
        objectives=(1, 2),
        max_length=1024,
        grad_accum=1,
        stages=(
            Stage("read", "all", minutes=1, max_steps=3, warmup_steps=1),
            Stage("respond", "response", minutes=1, max_steps=2, warmup_steps=0, schedule="linear"),
        ),
        probe_minutes=100,
        em_minutes=100,
        probe_tasks=2,
        em_tasks=2,
        final_eval_tasks=2,
        final_eval_objectives=(1,),
        sft_pool_eval_tasks=2,
        probe_max_new_tokens=24,
        threads=1,
    )
    before = {
        n: p.clone()
        for n, p in __import__("mem1lite.model", fromlist=["x"]).load_policy(small_init)[0].named_parameters()
    }
    card = train_sft(args)
    assert not (tmp_path / "run.partial").exists()
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "card.json",
        "probe.jsonl",
        "probe.png",
    ):
        assert (out / name).is_file(), name
    assert (
        card["sha256"]["model.safetensors"]
        == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    )
    assert json.loads((out / "card.json").read_text())["command"].startswith("mem1 sft --preset test")
    records = [json.loads(x) for x in (out / "probe.jsonl").read_text().splitlines()]
    # a probe at the first step (the baseline), then one at each stage's end
    assert [(r["stage"], r["step"]) for r in records] == [("read", 1), ("read", 3), ("respond", 2)]
    metrics = card["dev_metrics"]
    assert {"em_per_objective_n1", "sft_pool_em_per_objective_n2", "response_token_acc"} <= set(metrics)
    from mem1lite.model import load_policy

    model, _ = load_policy(out)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed  # full-parameter training moved the weights
    with pytest.raises(FileExistsError):
        train_sft(replace(args))


def test_long_share_puts_the_long_answer_lists_in_the_data():
    assert tasks_per_size((1, 2, 3, 4), 400) == {1: 100, 2: 100, 3: 100, 4: 100}
    counts = tasks_per_size(range(1, 17), 2400, 0.5)
    assert counts[16] == 75 + 1200 and all(counts[n] == 75 for n in range(1, 16))
    # turns holding an answers list of length k come from tasks with N > k (2 or 3 turns each):
    # the longest list (k = 15) gets at least half the share of the empty one
    with_list = {k: sum(c for n, c in counts.items() if n > k) for k in range(16)}
    assert with_list[15] >= 0.5 * with_list[0]
    assert min(tasks_per_size((2, 8), 1, 0.5).values()) >= 1
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="long_share"):
            tasks_per_size((1, 2), 10, bad)


def test_numbered_pointer_data_are_cached_apart(tokenizer, tmp_path, monkeypatch):
    import mem1lite.sft_data as sft_data
    from mem1lite.domains import QADomain

    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path)
    args = SFTArgs(tasks=2, objectives=(3,), seed=1)
    text = teacher_sft_data(QADomain(), tokenizer, args)
    number = teacher_sft_data(QADomain(pointer="number"), tokenizer, replace(args, pointer="number"))
    assert len(text) == len(number) and len(list(tmp_path.iterdir())) == 2
    two = tokenizer.decode(number[2]["input_ids"])
    assert "question: 2. " in two.rsplit("<think>", 1)[1]


def test_cli_long_preset_needs_a_trained_start_and_webshop_has_no_pointer(tmp_path, capsys):
    from mem1lite.cli import main

    assert main(["sft", "--preset", "long", "--out", str(tmp_path / "a")]) == 2
    assert "--init" in capsys.readouterr().err
    code = main(["sft", "--env", "webshop", "--pointer", "number", "--out", str(tmp_path / "b")])
    assert code == 2 and "QA teacher option" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("damage", ["truncate the arrow file", "break state.json", "empty folder"])
def test_a_damaged_data_cache_is_said_and_built_again(qa, tokenizer, tmp_path, monkeypatch, capsys, damage):
    import datasets

    import mem1lite.sft_data as sft_data

    datasets.disable_progress_bars()  # as train_sft does, with no bar of the build (progress=False):
    # stderr holds the warning alone
    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path)
    args = SFTArgs(tasks=2, objectives=(1,), seed=5)
    rows = teacher_sft_data(qa, tokenizer, args, progress=False)["input_ids"]
    (cached,) = tmp_path.glob("sft-*")
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]  # no temporary left
    if damage == "empty folder":
        for f in cached.iterdir():
            f.unlink()
    else:
        (f,) = cached.glob("*.arrow") if "arrow" in damage else [cached / "state.json"]
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    capsys.readouterr()
    assert teacher_sft_data(qa, tokenizer, args, progress=False)["input_ids"] == rows
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cached) in err[0] and "building it again" in err[0]
    again = teacher_sft_data(qa, tokenizer, args, progress=False)  # rebuilt whole: read silently
    assert again["input_ids"] == rows
    assert capsys.readouterr().err == ""


def _resume_args(init, out, **kw) -> SFTArgs:
    """A run of two stages and a few steps, checkpointed after every step."""
    args = SFTArgs(
        out=str(out),
        preset="test",
        init=init,
        tasks=4,
        objectives=(1,),
        max_length=1024,
        grad_accum=1,
        stages=(
            Stage("read", "all", minutes=100, max_steps=4, warmup_steps=1),
            Stage("respond", "response", minutes=100, max_steps=3, warmup_steps=0, schedule="linear"),
        ),
        probe_minutes=1000,
        em_minutes=1000,
        probe_tasks=1,
        em_tasks=1,
        final_eval_tasks=1,
        final_eval_objectives=(1,),
        sft_pool_eval_tasks=0,
        probe_max_new_tokens=8,
        threads=1,
        checkpoint_minutes=1e-9,  # every step
    )
    return replace(args, **kw)


def test_a_killed_run_resumed_ends_with_the_uninterrupted_runs_weights(small_init, tmp_path, monkeypatch):
    """Killed mid-stage (resumed from the Trainer's checkpoint: the step after it is trained again)
    and again at the next stage's first step (resumed from the finished stage's model), the run
    ends bit-equal to one never interrupted: data order, optimizer, schedule and RNG all restored."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    import mem1lite.sft as sft
    import mem1lite.sft_data as sft_data

    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path / "cache")
    train_sft(_resume_args(small_init, tmp_path / "whole"))
    real, kill = sft._callbacks, {}

    def with_a_kill(args, stage, *a, **kw):
        class Kill(TrainerCallback):  # after the checkpoint callback: the step's save never happens
            def on_step_end(self, targs, state, control, **k):
                if (stage.name, state.global_step) == kill.get("at"):
                    raise KeyboardInterrupt

        return real(args, stage, *a, **kw) + [Kill()]

    monkeypatch.setattr(sft, "_callbacks", with_a_kill)
    out = tmp_path / "killed"
    args = _resume_args(small_init, out)
    kill["at"] = ("read", 3)
    with pytest.raises(KeyboardInterrupt):
        train_sft(args)
    work = tmp_path / "killed.partial"
    assert [p.name for p in (work / "trainer-read").glob("checkpoint-*")] == ["checkpoint-2"]
    with pytest.raises(FileExistsError, match="--resume"):  # a fresh start would delete it
        train_sft(args)
    with pytest.raises(ValueError, match="tasks: 4 then, 5 now"):
        train_sft(replace(args, tasks=5, resume=True))
    kill["at"] = ("respond", 1)
    with pytest.raises(KeyboardInterrupt):
        train_sft(replace(args, resume=True))
    assert json.loads((work / "stage" / "stage.json").read_text())["stage"] == 0
    kill.clear()
    train_sft(replace(args, resume=True))
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(out / "model.safetensors"))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert not work.exists() and not (out / "stage").exists() and not (out / "run.json").exists()
    steps = [(r["stage"], r["step"]) for r in map(json.loads, (out / "probe.jsonl").read_text().splitlines())]
    assert steps == [("read", 1), ("read", 4), ("respond", 3)]  # none twice, none lost


def test_cli_sft_resume_without_an_interrupted_run_is_one_line(tmp_path, capsys):
    from mem1lite.cli import main

    assert main(["sft", "--out", str(tmp_path / "r"), "--resume", "--checkpoint-minutes", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mem1: error: --resume: no interrupted run") and "\n" not in err
    assert not (tmp_path / "r.partial").exists() and not (tmp_path / "r").exists()
