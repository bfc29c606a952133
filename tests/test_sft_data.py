"""The streamed SFT data builder (sft_data.py): the in-memory builder's rows, whatever the number of
worker processes; labels; the cache; bad input."""

import time

import pytest

import mem1lite.sft_data as sft_data
from mem1lite.sft import SFTArgs
from mem1lite.sft_data import (
    Shard,
    labels_per_row,
    row_lengths,
    rows_digest,
    rows_in_memory,
    shard_plan,
    teacher_sft_data,
    to_dataset,
)


def _quiet(*a, **k):
    pass


def _after_a_helper_shard(real, mine: list):
    """`write_shard` for this process that waits, before playing its first shard, for a shard file
    of the spawned helper's, so both processes play some shards; its own shards go to `mine`."""

    def write_shard(domain, tokenizer, split, agent, seed, shard, folder, rows):
        deadline = time.monotonic() + 120
        while not mine and not list(folder.glob("shard-*.arrow")) and time.monotonic() < deadline:
            time.sleep(0.05)
        mine.append(sft_data.shard_path(folder, shard.index))
        return real(domain, tokenizer, split, agent, seed, shard, folder, rows)

    return write_shard


def test_shards_follow_the_sizes_then_the_tasks():
    plan = shard_plan({2: 5, 1: 2}, shard_questions=4)  # size 2: two tasks a shard; size 1: four
    assert plan == [Shard(0, 2, 5, 0, 2), Shard(1, 2, 5, 2, 4), Shard(2, 2, 5, 4, 5), Shard(3, 1, 2, 0, 2)]


@pytest.mark.slow
def test_the_same_rows_on_one_and_two_workers_as_the_in_memory_builder(qa, tokenizer, tmp_path, monkeypatch):
    """Small shards (three tasks at N = 1, one at N = 3), played by this process alone and by it and
    a spawned helper: the reference's rows, types and order, one cache key for all, and a digest
    that does not depend on how the columns are chunked."""
    monkeypatch.setattr(sft_data, "SHARD_QUESTIONS", 3)
    args = SFTArgs(tasks=14, objectives=(1, 3), seed=4)
    reference = rows_in_memory(qa, tokenizer, args)
    built, real, mine = {}, sft_data.write_shard, []

    after_a_helper_shard = _after_a_helper_shard(real, mine)

    for workers in (1, 2):
        monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path / f"w{workers}")
        if workers == 2:
            monkeypatch.setattr(sft_data, "write_shard", after_a_helper_shard)
        args.data_workers = workers
        built[workers] = teacher_sft_data(qa, tokenizer, args, progress=False, log=_quiet)
        assert [p.name for p in (tmp_path / f"w{workers}").iterdir()] == [
            f"sft-{sft_data.cache_key(qa, tokenizer, args)}"  # one folder, no temporary left
        ]
    plan = sft_data.shard_plan(sft_data.tasks_per_size(args.objectives, args.tasks))
    assert 0 < len(mine) < len(plan)  # each process played some shards
    for rows in built.values():
        assert rows.features == reference.features
        assert rows["input_ids"] == reference["input_ids"]
        assert rows["response_mask"] == reference["response_mask"]
        assert rows_digest(rows) == rows_digest(reference)
    assert list(row_lengths(built[2])) == [len(r) for r in reference["input_ids"]]
    rechunked = reference.select(range(len(reference))).flatten_indices(writer_batch_size=5)
    assert rechunked.data.column("input_ids").num_chunks > 1
    assert rows_digest(rechunked) == rows_digest(reference)


def test_labels_are_the_response_or_every_token_and_the_old_map_s(qa, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path)
    args = SFTArgs(tasks=3, objectives=(2,), seed=1, data_workers=1)
    rows = teacher_sft_data(qa, tokenizer, args, progress=False, log=_quiet)
    from datasets import Dataset

    in_memory = Dataset.from_dict(rows.to_dict(), features=rows.features)
    for loss_on in ("response", "all"):
        stage = to_dataset(rows, loss_on, seed=7)  # read from the cache's file, written beside it
        labels_file = tmp_path / f"sft-{sft_data.cache_key(qa, tokenizer, args)}" / f"labels-{loss_on}.arrow"
        assert stage.cache_files[0]["filename"] == str(labels_file)
        old = labels_per_row(rows, loss_on, seed=7)
        assert stage.column_names == ["input_ids", "labels"] and stage.features == old.features
        assert stage.format == old.format and stage[:] == old[:]  # the same shuffle as well
        mapped = to_dataset(in_memory, loss_on, seed=7)  # Dataset.map: no file to read
        assert not mapped.cache_files and mapped.features == old.features and mapped[:] == old[:]
        written = labels_file.stat().st_mtime_ns
        assert to_dataset(rows, loss_on, seed=7)[:] == old[:] and labels_file.stat().st_mtime_ns == written
    by_ids = {tuple(r["input_ids"]): r["response_mask"] for r in rows}
    for r in to_dataset(rows, "response", seed=0):
        mask = by_ids[tuple(r["input_ids"])]
        assert r["labels"] == [t if m else -100 for t, m in zip(r["input_ids"], mask)]
        assert 0 < mask.count(1) < len(mask)
    with pytest.raises(ValueError, match="loss_on"):
        to_dataset(rows, "prompt", seed=0)


def test_a_rerun_finds_the_cache_and_says_so(qa, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path)
    args = SFTArgs(tasks=2, objectives=(1,), seed=2, data_workers=1)
    said = []
    first = teacher_sft_data(qa, tokenizer, args, progress=False, log=said.append)
    key = sft_data.cache_key(qa, tokenizer, args)
    assert len(said) == 1 and f"building cache {key}" in said[0]

    def no_play(*a, **k):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(sft_data, "write_shards", no_play)
    args.data_workers = 2  # not part of the key: the same rows
    again = teacher_sft_data(qa, tokenizer, args, progress=False, log=said.append)
    assert len(said) == 2 and f"cache {key} found" in said[1] and str(tmp_path / f"sft-{key}") in said[1]
    assert rows_digest(again) == rows_digest(first)


def test_a_failure_mid_build_leaves_no_cache_and_no_temporary(qa, tokenizer, tmp_path, monkeypatch):
    """A shard that fails after others were joined: the error comes through, and neither a cache
    under the key nor the half-joined rows are left; the next build makes the whole rows."""
    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(sft_data, "SHARD_QUESTIONS", 2)
    args = SFTArgs(tasks=6, objectives=(1,), seed=3, data_workers=1)
    real = sft_data.play_shard

    def fails_on_the_third(domain, tokenizer, split, agent, seed, shard):
        if shard.index == 2:
            raise OSError("No space left on device")
        return real(domain, tokenizer, split, agent, seed, shard)

    monkeypatch.setattr(sft_data, "play_shard", fails_on_the_third)
    with pytest.raises(OSError, match="No space left"):
        teacher_sft_data(qa, tokenizer, args, progress=False, log=_quiet)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(sft_data, "play_shard", real)
    rows = teacher_sft_data(qa, tokenizer, args, progress=False, log=_quiet)
    assert rows_digest(rows) == rows_digest(rows_in_memory(qa, tokenizer, args))


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_fewer_than_one_worker_is_refused_in_one_line(qa, tokenizer, tmp_path, monkeypatch, workers):
    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path)
    args = SFTArgs(tasks=2, objectives=(1,), data_workers=workers)
    with pytest.raises(ValueError, match=r"^data_workers must be a whole number >= 1, got") as err:
        teacher_sft_data(qa, tokenizer, args, progress=False, log=_quiet)
    assert "\n" not in str(err.value)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # refused before anything is written


def test_cli_refuses_zero_data_workers(tmp_path, capsys):
    from mem1lite.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["sft", "--data-workers", "0", "--out", str(tmp_path / "a")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--data-workers: expected a number >= 1, got 0" in err[-1]
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_bench_data_cli_smoke(tmp_path, capsys):
    """`mem1 bench data` with tiny flags: three builds in fresh processes, the same rows."""
    import json

    from mem1lite.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "data", "--tasks", "2", "--objectives", "1,2", "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [(r["path"], r["workers"]) for r in records] == [("memory", 1), ("streamed", 1), ("streamed", 2)]
    assert all(r["same_rows_as_memory"] and r["rows"] > 0 for r in records)
    assert records[1]["cache_hit_seconds"] < 5
    assert "a rerun that finds the cache" in capsys.readouterr().out


@pytest.mark.slow
def test_data_build_script_times_the_builder_and_digests_its_rows(qa, tokenizer, tmp_path):
    """scripts/data_build.py (which times any commit's builder, issue #22): the rows it builds are the
    reference's, and its digest is `rows_digest`'s (it keeps a copy, for commits that lack it)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "data_build.py"), "--tasks", "4", "--objectives", "1-2"],
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    reference = rows_in_memory(qa, tokenizer, SFTArgs(tasks=4, objectives=(1, 2), seed=0))
    assert record["builder"] == "streamed" and record["workers"] == 2 and record["rows"] == len(reference)
    assert record["digest"] == rows_digest(reference)[:16]
    assert record["seconds"] >= record["rows_seconds"] > 0
    assert record["peak_rss_mb"] >= record["peak_anon_mb"] > 0


# ---------------------------------------------------------------------------------------------
# [6] Episode rows (the full view)


def _response_nll(model, data) -> tuple[float, int]:
    """Summed float64 NLL of the labelled tokens over every row, one row per forward, and their count."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    for row in data:
        ids = torch.tensor([row["input_ids"]])
        labels = torch.tensor(row["labels"][1:])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].double()
        scored = labels != -100
        total += float(F.cross_entropy(logits[scored], labels[scored], reduction="sum"))
        count += int(scored.sum())
    return total, count


def test_episode_rows_score_the_same_tokens_with_the_same_loss_as_turn_rows(tokenizer, small_qwen, tmp_path):
    """Full-view WebShop teacher episodes as one row each: the same response tokens, the same summed
    loss in float64 as a row per turn, in a third of the tokens or fewer."""
    from mem1lite.domains import load_domain
    from mem1lite.model import load_policy
    from mem1lite.probe import teacher_trajectories
    from mem1lite.sft_data import rows_table

    shop = load_domain("webshop", None)
    trajectories = teacher_trajectories(shop, tokenizer, "sft", 1, 3, seed=0, agent="full")
    assert all(len(t.turns) >= 4 for t in trajectories)
    model, _ = load_policy(small_qwen(tmp_path / "m"))
    model = model.double().eval()
    from datasets import Dataset

    per = {}
    for rows in ("turn", "episode"):
        data = Dataset(rows_table(trajectories, rows))
        per[rows] = (_response_nll(model, to_dataset(data, "response", seed=0)), int(row_lengths(data).sum()))
    (turn_loss, turn_count), turn_tokens = per["turn"]
    (episode_loss, episode_count), episode_tokens = per["episode"]
    assert episode_count == turn_count == sum(len(x.output_ids) for t in trajectories for x in t.turns)
    assert episode_loss == pytest.approx(turn_loss, rel=1e-12)
    assert episode_tokens * 3 <= turn_tokens


def test_episode_rows_of_the_mem1_view_are_refused(qa, tokenizer):
    from mem1lite.probe import teacher_trajectories
    from mem1lite.sft_data import rows_table

    trajectories = teacher_trajectories(qa, tokenizer, "sft", 2, 1, seed=0, agent="mem1")
    with pytest.raises(ValueError, match="episode rows need contexts that only grow"):
        rows_table(trajectories, "episode")
    with pytest.raises(ValueError, match="rows must be one of turn, episode"):
        rows_table(trajectories, "turns")


@pytest.mark.slow
def test_mem1_episodes_are_cached_as_records_the_same_on_one_and_two_workers(
    qa, tokenizer, tmp_path, monkeypatch
):
    """[7] mem1 `--rows episode`: the cache holds the teacher's episodes (records with their clocks
    zeroed, response and turn-row token counts), under a key of their own, the same whatever the
    number of workers; a rerun finds them."""
    from dataclasses import replace

    from mem1lite.probe import teacher_trajectories
    from mem1lite.sft_data import EPISODE_COLUMNS, cache_key, episode, episode_totals

    monkeypatch.setattr(sft_data, "SHARD_QUESTIONS", 2)  # several shards
    args = SFTArgs(tasks=5, objectives=(1, 2), seed=3, rows="episode", data_workers=1)
    built, real, mine = {}, sft_data.write_shard, []

    after_a_helper_shard = _after_a_helper_shard(real, mine)

    for workers in (1, 2):
        monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path / f"w{workers}")
        if workers == 2:
            monkeypatch.setattr(sft_data, "write_shard", after_a_helper_shard)
        built[workers] = teacher_sft_data(
            qa, tokenizer, replace(args, data_workers=workers), progress=False, log=_quiet
        )
    monkeypatch.setattr(sft_data, "write_shard", real)
    assert 0 < len(mine) < len(sft_data.shard_plan(sft_data.tasks_per_size(args.objectives, args.tasks)))
    data = built[1]
    assert tuple(data.column_names) == EPISODE_COLUMNS and rows_digest(built[2]) == rows_digest(data)
    expected = [
        t
        for n, count in ((1, 3), (2, 3))
        for t in teacher_trajectories(qa, tokenizer, "sft", n, count, seed=3)
    ]
    assert len(data) == len(expected)
    for i, t in enumerate(expected):
        mine = episode(data, i)
        assert mine.prompt_ids == t.prompt_ids and mine.task_id == t.task_id and mine.seconds == 0
        assert [(x.spans, x.output_ids, x.observation_ids) for x in mine.turns] == [
            (x.spans, x.output_ids, x.observation_ids) for x in t.turns
        ]
        assert data[i]["turn_scored"] == [len(x.output_ids) for x in t.turns]
        assert data[i]["turn_rows"] == [c + len(x.output_ids) for c, x in zip(t.context_lengths(), t.turns)]
    totals = episode_totals(data)
    assert (
        totals["turns"] == sum(len(t.turns) for t in expected)
        and 0 < totals["scored"] < totals["turn_tokens"]
    )
    turn_rows = replace(args, rows="turn")
    assert cache_key(qa, tokenizer, args) != cache_key(qa, tokenizer, turn_rows)
    said = []
    again = teacher_sft_data(qa, tokenizer, args, progress=False, log=said.append)
    assert "found (6 episodes" in said[0] and rows_digest(again) == rows_digest(data)


def test_episode_packs_hold_every_turn_once_in_steps_of_the_budget():
    """[8] Seeded; each turn in exactly one step; a step ends within half a turn of its budget (the
    last one excepted, and a lone turn longer than the budget)."""
    from datasets import Dataset

    from mem1lite.sft_data import episode_packs

    turns = [[30, 40, 25], [200], [10] * 12, [50, 60], [35, 45, 55, 20]]
    data = Dataset.from_dict({"turn_scored": turns})
    packs = episode_packs(data, budget=100, seed=1)
    assert packs == episode_packs(data, budget=100, seed=1) != episode_packs(data, budget=100, seed=2)
    seen = sorted((e, j) for pack in packs for e, a, b in pack for j in range(a, b))
    assert seen == sorted((e, j) for e, t in enumerate(turns) for j in range(len(t)))
    sizes = [[turns[e][j] for e, a, b in pack for j in range(a, b)] for pack in packs]
    for pack, after in zip(sizes, sizes[1:]):  # over by less than half its last turn, or short by
        over = sum(pack) - 100  # at most half the turn that comes next
        assert (0 <= over < pack[-1] / 2) or (0 <= -over <= after[0] / 2) or pack == [200], (pack, after)
    with pytest.raises(ValueError, match="budget"):
        episode_packs(data, budget=0, seed=0)


def test_episode_rows_get_their_own_cache_key(qa, tokenizer):
    """Turn rows keep the key they had before episode rows existed (args without `rows`); episode
    rows get another."""
    from types import SimpleNamespace

    from mem1lite.sft_data import cache_key

    turn = SFTArgs(tasks=2, objectives=(1,), agent="full")
    older = SimpleNamespace(**{k: v for k, v in vars(turn).items() if k != "rows"})
    assert cache_key(qa, tokenizer, turn) == cache_key(qa, tokenizer, older)
    episode = SFTArgs(tasks=2, objectives=(1,), agent="full", rows="episode")
    assert cache_key(qa, tokenizer, episode) != cache_key(qa, tokenizer, turn)


def test_a_killed_builds_temporary_folder_is_removed_at_the_next_start_and_a_live_ones_kept(
    qa, tokenizer, tmp_path, monkeypatch
):
    import os
    import subprocess
    import sys

    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    left = tmp_path / f".sft-abc.pid{int(dead.stdout)}.x1.tmp"  # its builder has exited: a kill's leftover
    live = tmp_path / f".sft-abc.pid{os.getppid()}.x2.tmp"  # a running process's: another build's
    older = tmp_path / ".sft-abc.x3.tmp"  # a name without a pid (an older builder's): cannot be told
    for folder in (left, live, older):
        (folder / "shards").mkdir(parents=True)
    said = []
    teacher_sft_data(
        qa, tokenizer, SFTArgs(tasks=2, objectives=(1,), data_workers=1), progress=False, log=said.append
    )
    assert not left.exists() and live.exists() and older.exists()
    assert any("removed 1 temporary build folder(s) a killed build left" in s for s in said)


def test_a_cache_path_that_is_a_file_is_one_line(qa, tokenizer, tmp_path, monkeypatch):
    from mem1lite.files import OutputError

    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path / "cache")
    with pytest.raises(OutputError, match=r"cannot write .*cache: a part of the path is a file"):
        teacher_sft_data(
            qa, tokenizer, SFTArgs(tasks=2, objectives=(1,), data_workers=1), progress=False, log=_quiet
        )
