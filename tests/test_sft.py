"""SFT data and a miniature end-to-end run of the staged recipe."""

import hashlib
import json
import shutil
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
from mem1lite.sft_data import row_lengths as sft_row_lengths
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
    assert set(PRESETS) == {"quick", "standard", "long", "n16", "n16-quick"}
    from mem1lite.cli import SFT_PRESETS  # typed there so that `mem1 --help` needs no torch

    assert SFT_PRESETS == list(PRESETS)
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


@pytest.mark.parametrize("damage", ["cut rows.arrow", "former folder, bad state.json", "empty folder"])
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
    elif damage == "cut rows.arrow":
        f = cached / sft_data.ROWS_FILE
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    else:  # a cache of the builders before rows.arrow (`save_to_disk`), damaged
        legacy = datasets.Dataset.from_dict(teacher_sft_data(qa, tokenizer, args, progress=False).to_dict())
        shutil.rmtree(cached)
        legacy.save_to_disk(str(cached))
        f = cached / "state.json"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    capsys.readouterr()
    assert teacher_sft_data(qa, tokenizer, args, progress=False)["input_ids"] == rows
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cached) in err[0] and "building it again" in err[0]
    again = teacher_sft_data(qa, tokenizer, args, progress=False)  # rebuilt whole: read silently
    assert again["input_ids"] == rows
    assert capsys.readouterr().err == ""


def test_a_cache_of_the_former_format_is_read_as_it_is(qa, tokenizer, tmp_path, monkeypatch):
    """Caches written before rows.arrow (a `save_to_disk` folder under the same key) are read, and
    labelled from their one file as the new ones are."""
    import datasets

    import mem1lite.sft_data as sft_data

    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path)
    args = SFTArgs(tasks=2, objectives=(2,), seed=6)
    rows = teacher_sft_data(qa, tokenizer, args, progress=False)
    expected, labels = rows[:], to_dataset(rows, "response", seed=1)[:]
    (cached,) = tmp_path.glob("sft-*")
    legacy = datasets.Dataset.from_dict(expected, features=rows.features)
    shutil.rmtree(cached)
    legacy.save_to_disk(str(cached))

    def no_play(*a, **k):
        raise AssertionError("the former cache was not used")

    monkeypatch.setattr(sft_data, "write_shards", no_play)
    again = teacher_sft_data(qa, tokenizer, args, progress=False)
    assert again[:] == expected and again.features == rows.features
    assert to_dataset(again, "response", seed=1)[:] == labels
    assert (cached / "labels-response.arrow").exists()


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


# ---------------------------------------------------------------------------------------------
# [8] Episodes of the mem1 view under the packed layout


def _turn_row_loss(model, trajectories):
    """The row path: rows_table + to_dataset's response labels, one plain causal forward per row;
    the summed float64 cross-entropy of the labelled tokens (differentiable) and their count."""
    import torch.nn.functional as F
    from datasets import Dataset

    from mem1lite.sft_data import rows_table

    total, count = 0.0, 0
    for row in to_dataset(Dataset(rows_table(trajectories)), "response", seed=0):
        labels = torch.tensor(row["labels"][1:])
        logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
        scored = labels != -100
        total = total + F.cross_entropy(logits[scored], labels[scored], reduction="sum")
        count += int(scored.sum())
    return total, count


@pytest.mark.parametrize("objectives", [2, 4])
def test_episode_steps_give_the_turn_rows_loss_and_gradients_in_float64(
    qa, tokenizer, small_qwen, tmp_path, objectives
):
    """mem1-view teacher episodes cut into steps (some episodes split at a turn boundary) and scored
    by the packed layout through the collator and the loss of the episode trainer: the summed
    response loss, its gradients and the scored token count of a row per turn."""
    from datasets import Dataset

    from mem1lite.masks import without_float32_islands
    from mem1lite.model import load_policy
    from mem1lite.probe import teacher_trajectories
    from mem1lite.sft import EpisodeCollator, episode_loss
    from mem1lite.sft_data import episode_packs, episode_table

    trajectories = teacher_trajectories(qa, tokenizer, "sft", objectives, 3, seed=objectives, agent="mem1")
    episodes = Dataset(episode_table(trajectories))
    packs = episode_packs(episodes, budget=100 * objectives, seed=0)
    assert any(a > 0 for pack in packs for _, a, _ in pack)  # some steps start inside an episode
    model, _ = load_policy(small_qwen(tmp_path / "m"))
    model = model.double()
    params = [p for p in model.parameters() if p.requires_grad]
    collate = EpisodeCollator(episodes)
    with without_float32_islands():
        rows_loss, rows_count = _turn_row_loss(model, trajectories)
        rows_grads = torch.autograd.grad(rows_loss, params)
        steps = [collate([{"pieces": pack}]) for pack in packs]
        episode_sum = sum(episode_loss(model, step["layout"]) for step in steps)
        episode_grads = torch.autograd.grad(episode_sum, params)
    assert sum(int(step["shift_labels"].ne(-100).sum()) for step in steps) == rows_count
    assert rows_count == sum(len(x.output_ids) for t in trajectories for x in t.turns)
    assert float(episode_sum.detach()) == pytest.approx(float(rows_loss.detach()), rel=1e-10)
    err = max(float((a - b).abs().max()) for a, b in zip(episode_grads, rows_grads))
    assert err < 1e-10 and max(float(g.abs().max()) for g in rows_grads) > 1e-3
    print(
        f"N = {objectives}: {rows_count} response tokens, loss {float(rows_loss.detach()):.6f}, relative "
        f"difference {abs(float(episode_sum.detach()) / float(rows_loss.detach()) - 1):.1e}, gradients max "
        f"|diff| {err:.1e} (largest gradient {max(float(g.abs().max()) for g in rows_grads):.2f})"
    )


def test_episode_rows_refuse_a_stage_with_loss_on_every_token(tmp_path, capsys):
    from mem1lite.cli import main

    assert main(["sft", "--rows", "episode", "--out", str(tmp_path / "a")]) == 2  # quick: read, all tokens
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "mem1: error: --rows episode (mem1 view) scores response tokens only: stage 'read' has the "
        "loss on all tokens (use --rows turn, or a preset whose stages score responses, e.g. --preset long)"
    ]
    assert not any(tmp_path.iterdir())


def test_episode_run_writes_its_card_and_resumes_to_the_same_weights(small_init, tmp_path, monkeypatch):
    """`--rows episode` end to end on a few steps of two response stages (the quick preset's sizes):
    a card that says so, moved weights, probes; killed mid-stage and resumed, the same weights."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    import mem1lite.sft as sft
    import mem1lite.sft_data as sft_data

    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path / "cache")
    stages = (
        Stage("respond", "response", minutes=100, max_steps=3, warmup_steps=1),
        Stage("anneal", "response", minutes=100, max_steps=2, warmup_steps=0, schedule="linear"),
    )
    args = _resume_args(
        small_init, tmp_path / "whole", rows="episode", objectives=(1, 2), tasks=6, stages=stages
    )
    card = train_sft(args)
    out = tmp_path / "whole"
    assert card["rows"] == "episode" and card["args"]["rows"] == "episode"
    saved = json.loads((out / "card.json").read_text())
    assert saved["rows"] == "episode" and "--rows episode" in saved["command"]
    assert saved["episodes"] == 6 and 0 < saved["step_response_tokens"] < saved["response_tokens"]
    assert saved["samples"] > saved["episodes"] and saved["tokens"] > saved["response_tokens"]
    steps = [(r["stage"], r["step"]) for r in map(json.loads, (out / "probe.jsonl").read_text().splitlines())]
    assert steps == [("respond", 1), ("respond", 3), ("anneal", 2)]
    from mem1lite.model import load_policy

    before, _ = load_policy(small_init)
    after, _ = load_policy(out)
    assert any(not torch.equal(a, b) for a, b in zip(after.parameters(), before.parameters()))

    real = sft._callbacks

    def with_a_kill(args, stage, *a, **kw):
        class Kill(TrainerCallback):
            def on_step_end(self, targs, state, control, **k):
                if (stage.name, state.global_step) == ("respond", 3):
                    raise KeyboardInterrupt

        return real(args, stage, *a, **kw) + [Kill()]

    monkeypatch.setattr(sft, "_callbacks", with_a_kill)
    killed = replace(args, out=str(tmp_path / "killed"))
    with pytest.raises(KeyboardInterrupt):
        train_sft(killed)
    partial = tmp_path / "killed.partial" / "trainer-respond"
    assert [p.name for p in partial.glob("checkpoint-*")] == ["checkpoint-2"]  # resumed mid-stage
    monkeypatch.setattr(sft, "_callbacks", real)
    train_sft(replace(killed, resume=True))
    whole, resumed = (
        load_file(str(out / "model.safetensors")),
        load_file(str(tmp_path / "killed" / "model.safetensors")),
    )
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_episode_steps_hold_the_response_tokens_of_a_step_of_turn_rows(qa, tokenizer):
    """[8] The step budget: the turn rows' response tokens x grad_accum / the packs TRL's
    best-fit-decreasing packing makes of them (counted here as trl counts them)."""
    from datasets import Dataset
    from trl import pack_dataset

    from mem1lite.probe import teacher_trajectories
    from mem1lite.sft import best_fit_packs, step_budget
    from mem1lite.sft_data import episode_table, rows_table, turn_row_lengths

    trajectories = [t for n in (1, 8, 16) for t in teacher_trajectories(qa, tokenizer, "sft", n, 4, seed=n)]
    rows, episodes = Dataset(rows_table(trajectories)), Dataset(episode_table(trajectories))
    lengths = turn_row_lengths(episodes)
    assert list(lengths) == list(sft_row_lengths(rows)) and len(rows) < 1000  # one block of trl's map
    for max_length in (512, 1024, 2048):
        assert best_fit_packs(lengths, max_length) == len(pack_dataset(rows, max_length, "bfd"))
    args = make_args("long")
    fitted = fit_pack_length(args, int(lengths.max()))
    assert (fitted.max_length, fitted.grad_accum) == (1024, 8)
    scored = sum(len(x.output_ids) for t in trajectories for x in t.turns)
    assert step_budget(args, episodes) == round(scored * 8 / len(pack_dataset(rows, 1024, "bfd")))


@pytest.mark.slow
def test_bench_sft_cli_smoke(tmp_path, capsys):
    """`mem1 bench sft` with tiny flags: both ways timed, the same response tokens a step within
    the noise of a few steps, and the ratio."""
    from mem1lite.cli import main

    out = tmp_path / "bench.json"
    flags = ["--objectives", "1,4", "--episodes", "6", "--steps", "1", "--repeats", "2", "--threads", "1"]
    assert main(["bench", "sft", *flags, "--json", str(out)]) == 0
    rows, episodes, ratio = json.loads(out.read_text())
    assert (rows["way"], episodes["way"], ratio["kind"]) == ("rows", "episodes", "ratio")
    assert rows["steps_timed"] == episodes["steps_timed"] == 2 and episodes["step_budget"] > 0
    fed = {r["way"]: r["fed_tokens_per_step"] / r["response_tokens_per_step"] for r in (rows, episodes)}
    assert fed["episodes"] < fed["rows"]  # the prompt once an episode, not once a turn
    assert len(ratio["per_round"]) == 2 and ratio["value"] > 0
    assert "episodes / turn rows, response tokens/s" in capsys.readouterr().out


def test_the_card_command_names_a_minutes_scale():
    from dataclasses import replace

    from mem1lite.sft import _minutes_scale_flag, make_args

    args = make_args("standard")
    assert _minutes_scale_flag(args) == []
    scaled = replace(args, stages=tuple(replace(s, minutes=s.minutes * 0.5) for s in args.stages))
    assert _minutes_scale_flag(scaled) == ["--minutes-scale 0.5"]


# ---------------------------------------------------------------------------------------------
# Issue #32: one run per --out, a damaged Trainer file named, the last good state kept


def test_a_second_run_on_the_same_out_is_refused_naming_the_first(small_init, tmp_path):
    import os

    from mem1lite.files import Busy, lock, lock_path

    out = tmp_path / "run"
    with lock(lock_path(out), f"training into {out}"):  # the first run (here: this process) holds it
        with pytest.raises(
            Busy, match=rf"another run \(pid {os.getpid()}, started .*\) is training into {out}"
        ):
            train_sft(_resume_args(small_init, out))
    assert not out.exists() and not (tmp_path / "run.partial").exists()


def test_a_damaged_trainer_file_is_named_on_resume_and_the_checkpoint_kept(small_init, tmp_path, monkeypatch):
    """The marker of a Trainer checkpoint records every file's sha256; a resume trusts nothing else."""
    from transformers import TrainerCallback

    import mem1lite.sft as sft
    import mem1lite.sft_data as sft_data

    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path / "cache")
    real = sft._callbacks

    def with_a_kill(args, stage, *a, **kw):
        class Kill(TrainerCallback):
            def on_step_end(self, targs, state, control, **k):
                if (stage.name, state.global_step) == ("read", 3):
                    raise KeyboardInterrupt

        return real(args, stage, *a, **kw) + [Kill()]

    monkeypatch.setattr(sft, "_callbacks", with_a_kill)
    args = _resume_args(small_init, tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        train_sft(args)
    checkpoint = tmp_path / "killed.partial" / "trainer-read" / "checkpoint-2"
    marker = json.loads((checkpoint / sft.CHECKPOINT_MARKER).read_text())
    assert "optimizer.pt" in marker["files"] and "model.safetensors" in marker["files"]
    damaged = checkpoint / "optimizer.pt"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte: torch.load may well read it without a word
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(sft, "_callbacks", real)
    with pytest.raises(ValueError) as info:
        train_sft(replace(args, resume=True))
    message = str(info.value)
    assert message == (
        f"{damaged} is damaged (its sha256 differs from the one recorded when it was saved); the start is "
        f"kept: delete {checkpoint} to resume from it"
    )
    assert damaged.is_file() and (checkpoint / sft.CHECKPOINT_MARKER).is_file()  # nothing deleted
    # a marker an older run wrote (no sha256 of its files): each file read through instead
    (checkpoint / sft.CHECKPOINT_MARKER).write_text(
        json.dumps({k: v for k, v in marker.items() if k != "files"})
    )
    damaged.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match=rf"^{damaged} is damaged \(BadZipFile\); the start is kept"):
        train_sft(replace(args, resume=True))


def test_the_chain_runs_its_four_stages_in_order_and_goes_on_after_a_kill(tmp_path, monkeypatch):
    """`mem1 chain`: each stage starts from the one before, with the cards' presets, pointers and
    seeds; a stage with a card is skipped, one with an interrupted run is resumed."""
    from pathlib import Path

    from mem1lite import chain, cli, sft

    trained = []
    monkeypatch.setattr(sft, "train_sft", lambda args: trained.append(args))
    (tmp_path / "sft-n8").mkdir()
    (tmp_path / "sft-n8" / "card.json").write_text("{}")  # done
    (tmp_path / "sft-n16.partial").mkdir()  # killed mid-run
    assert cli.main(["chain", "--out", str(tmp_path), "--threads", "1"]) == 0
    assert [Path(a.out).name for a in trained] == ["sft-n16", "sft-n16-hop", "sft-n16-hop2"]
    assert [a.resume for a in trained] == [True, False, False]
    assert [(a.preset, a.pointer, a.seed) for a in trained] == [
        ("long", "number", 0),
        ("long", "hop", 1),
        ("long", "hop", 2),
    ]
    assert [a.model for a in trained] == [str(tmp_path / n) for n in ("sft-n8", "sft-n16", "sft-n16-hop")]
    assert all(a.objectives == tuple(range(1, 17)) and a.threads == 1 for a in trained)
    first = chain.chain_args(tmp_path / "fresh")[0]
    assert (first.preset, first.objectives, first.model, first.resume) == (
        "standard",
        tuple(range(1, 9)),
        "tiny",
        False,
    )
