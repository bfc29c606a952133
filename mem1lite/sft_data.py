"""Teacher data for SFT: the scripted teacher's turns as rows, played on worker processes and
streamed to disk.

    rows = teacher_sft_data(domain, tokenizer, args)     # cached under runs/cache/sft-KEY
    stage = to_dataset(rows, "response", seed=0)         # + labels (-100 where no loss), shuffled
    packs = episode_packs(episodes, budget, seed=0)      # mem1 --rows episode: steps of turn ranges
    mem1 bench data                                      # this builder beside the in-memory one

One row per teacher turn, in the agent's view: `input_ids` (context + response) and
`response_mask` (1 on the response tokens); or one per episode [6] [7]. How the rows are made, and
why:

1. Shards. The tasks (`tasks_per_size`: the sizes in order, each size's tasks in the domain's order)
   are cut into shards of about `SHARD_QUESTIONS` questions, and the rows are the shards' rows in
   shard order.
   So neither the rows nor their order depend on how many workers played them, and they are the
   rows of the in-memory builder this module replaced (`rows_in_memory`, kept as the reference
   that the tests and the bench compare against).
2. Workers. `data_workers` processes play the shards, each taking the next unclaimed one: the
   caller's own, which starts at once, and `data_workers - 1` spawned helpers (spawn, not fork:
   safe with torch's and the tokenizer's threads; one torch thread each) that get the domain and
   the tokenizer once and join when they have started (a few seconds: imports, the world). The
   teacher is plain Python, so two free cores play about twice the turns.
3. Streamed. Each shard's rows become one Arrow file as soon as it is played: a process holds one
   shard's episodes, never the whole data (at N = 1..16, ~500 k rows of ~500 tokens: several GB
   as Python lists). This process appends the shards, in order, to one file (`ROWS_FILE`) as they
   come in, between its own shards and while the helpers play: a shard is read whole and
   written, never memory-mapped, so the process holds one shard at a time. (Joining the shards
   memory-mapped and copying them with `save_to_disk` at the end, as before, kept every page of the
   data mapped in this process: its RSS grew by the size of the data, ~3 GB at N = 1..16.) The
   cache folder is written whole in a temporary folder and renamed into place: a kill or a second
   writer never leaves half the rows under the key, and a damaged cache is said so and built again.
   The cache is read memory-mapped (`Dataset.from_file`).
4. Labels are computed on Arrow batches (`to_dataset`: numpy over whole columns), not by a Python
   loop over every token of every row.
5. A progress bar (tasks, rate, ETA) while building; the cache key is printed, and a rerun that
   finds the cache says so and returns at once.
6. Episode rows (`rows="episode"`, the full agent only). In the full view turn j's context is turn
   j-1's context, response and observation, so the last turn's row holds every earlier row as a
   prefix: one row per episode, loss on every response, scores the same tokens with the same
   logits (causal attention) as one row per turn, in ~1/3 of the tokens at WebShop's ~6 turns
   (the prompt and early pages are not fed again each turn). `tests/test_sft_data.py` checks the
   loss is equal in float64. The mem1 view prunes, so its turns are not prefixes of one row: its
   episodes are kept whole instead [7].
7. Episodes (`rows="episode"` with the mem1 agent). The cache holds the teacher's episodes, not
   rows: one record per episode (`Trajectory.to_json`, its clocks zeroed so that the bytes do not
   depend on the run), its response tokens (`scored`), and turn by turn its responses' lengths
   (`turn_scored`) and the lengths its turn rows would have (`turn_rows`: context + response).
   Shards, workers, the key (which includes the rows mode) and the cache work as for rows: the
   same episodes whatever the number of workers. sft.py scores them with the exact `packed`
   layout of masks.py (the prompt encoded once per episode, not once per turn).
8. Packs (`episode_packs`): the episodes in a seeded order, laid end to end and cut into steps of
   `budget` response tokens (one optimizer step each). An episode that does not fit the rest of a
   step is cut at a turn boundary and goes on in the next step: a step's last turn is taken when
   that leaves the step nearer its budget than stopping would, so steps hold `budget` response
   tokens up to half a turn, and no turn is scored twice or left out.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm

from .files import writing
from .probe import play_teacher, teacher_trajectories
from .trajectory import Trajectory

CACHE_DIR = Path(
    os.environ.get("MEM1_CACHE_DIR") or Path(__file__).resolve().parent.parent / "runs" / "cache"
)
"""where the teacher data are cached: runs/cache, or $MEM1_CACHE_DIR (a test or the fault table
keeps its builds out of a running job's cache)"""
SHARD_QUESTIONS = 128
"""questions a shard (a size-N shard holds max(1, 128 // N) tasks, so shards of every size cost
about the same, ~250-400 turns): small enough for a progress line every second or two and an
even share between the workers, large enough that a shard's file is not mostly header"""
COLUMNS = ("input_ids", "response_mask")
EPISODE_COLUMNS = ("trajectory", "scored", "turn_scored", "turn_rows")
"""[7] the columns of the mem1 view's episodes"""
ROWS = ("turn", "episode")
"""a row per teacher turn, or per episode: one causal row in the full view [6], the episode's
record in the mem1 view [7]"""
ROWS_FILE = "rows.arrow"
"""[3] the cache folder's one file: the rows (or the episodes), an Arrow stream as `datasets` writes"""
CACHE_VERSION = 1
"""bumped only when the rows change (the streamed builder writes the rows version 1 had)"""


class DataBuildError(RuntimeError):
    """Building the teacher data failed (a worker died or raised): one line; nothing is cached."""


def keeps_episodes(rows: str, agent: str) -> bool:
    """[7] Whether the data are episodes (records), not rows: episode rows of a pruning view."""
    return rows == "episode" and agent != "full"


def default_workers() -> int:
    """Two processes, or one on a one-core machine."""
    return min(2, os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    """`workers`, or the default for None; a one-line ValueError below 1."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"data_workers must be a whole number >= 1, got {workers!r}")
    most = 4 * (os.cpu_count() or 1)
    if workers > most:  # each a process holding the world and torch: ~400 MB
        raise ValueError(f"data_workers must be at most {most} (4x the cores), got {workers}")
    return workers


def tasks_per_size(objectives, tasks: int, long_share: float = 0.0) -> dict[int, int]:
    """How many tasks of each size the data get: `long_share` of them at the largest size, the rest
    in equal shares over every size (rounded up, so no size gets none)."""
    if not 0.0 <= long_share < 1.0:
        raise ValueError(f"long_share must be in [0, 1), got {long_share}")
    sizes = sorted(set(objectives))
    equal = math.ceil(tasks * (1 - long_share) / len(sizes))
    counts = {n: equal for n in sizes}
    counts[sizes[-1]] += math.ceil(tasks * long_share)
    return counts


def cache_key(domain, tokenizer, args, split: str = "sft") -> str:
    """Everything that changes the rows (and nothing that does not, e.g. the number of workers)."""
    rows = getattr(args, "rows", "turn")
    return hashlib.sha256(
        json.dumps(
            {
                **({"rows": rows} if rows != "turn" else {}),  # the turn rows keep their older keys
                "env": domain.name,
                "data": domain.fingerprint(),
                "vocab": len(tokenizer),
                "tokenizer": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
                "tasks": args.tasks,
                "objectives": list(args.objectives),
                "seed": args.seed,
                "agent": args.agent,
                "split": split,
                "long_share": args.long_share,
                "version": CACHE_VERSION,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# [1] Shards and their rows


@dataclass(frozen=True)
class Shard:
    """Tasks start..stop of the `count` tasks of size `objectives` drawn with `seed`."""

    index: int
    objectives: int
    count: int
    start: int
    stop: int


@dataclass(frozen=True)
class ShardDone:
    """What a played shard reports back (its rows are in its file)."""

    index: int
    tasks: int
    rows: int
    tokens: int


def shard_plan(counts: dict[int, int], shard_questions: int | None = None) -> list[Shard]:
    """The shards in row order: sizes as `counts` lists them, each size's tasks in order, a size-N
    shard max(1, shard_questions // N) tasks (default SHARD_QUESTIONS)."""
    per_shard = shard_questions or SHARD_QUESTIONS
    plan = []
    for n, count in counts.items():
        step = max(1, per_shard // n)
        for start in range(0, count, step):
            plan.append(Shard(len(plan), n, count, start, min(count, start + step)))
    return plan


_TASKS: dict = {}
"""the last task list drawn, by (domain, split, size, count, seed), with the domain itself (kept
alive, so that its id is not reused by another domain while the list is cached)"""


def _tasks(domain, split: str, shard: Shard, seed: int) -> list:
    key = (id(domain), split, shard.objectives, shard.count, seed)
    if key not in _TASKS:
        _TASKS.clear()
        _TASKS[key] = (domain, domain.tasks(split, shard.objectives, shard.count, seed=seed))
    return _TASKS[key][1][shard.start : shard.stop]


def play_shard(domain, tokenizer, split: str, agent: str, seed: int, shard: Shard):
    """The teacher's episodes of one shard (probe.teacher_trajectories on a slice of its tasks)."""
    tasks = _tasks(domain, split, shard, seed)
    return play_teacher(domain, tokenizer, tasks, agent, first_episode=shard.start)


def rows_table(trajectories, rows: str = "turn") -> pa.Table:
    """The rows as Arrow list columns: the ids flat, the mask 1 on response tokens. `rows`: "turn",
    one row per turn (its context, then its response); "episode", one row per episode [6]."""
    if rows not in ROWS:
        raise ValueError(f"rows must be one of {', '.join(ROWS)}, got {rows!r}")
    flat: list[int] = []
    mask: list[int] = []
    lengths = []
    for t in trajectories:
        if rows == "episode":
            row, scored = episode_row(t)
            flat += row
            mask += scored
            lengths.append(len(row))
            continue
        for j, turn in enumerate(t.turns):
            context = t.context_ids(j)
            flat += context
            flat += turn.output_ids
            mask += [0] * len(context) + [1] * len(turn.output_ids)
            lengths.append(len(context) + len(turn.output_ids))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=offsets[1:])
    mask = np.asarray(mask, dtype=np.int64)
    offsets32 = pa.array(offsets.astype(np.int32))  # a shard holds far fewer than 2**31 tokens
    ids = pa.ListArray.from_arrays(offsets32, pa.array(np.asarray(flat, dtype=np.int32)))
    return pa.Table.from_arrays([ids, pa.ListArray.from_arrays(offsets32, pa.array(mask))], schema=_schema())


def episode_row(t) -> tuple[list[int], list[int]]:
    """[6] One episode as one row: the last turn's context and response, the mask 1 on every turn's
    response. Exact only where each turn's context is the one before it, its response and the
    observation (the full view): then turn j's row is a prefix of this one, and a causal model gives
    its response tokens the same logits in both. Anything else (the mem1 view prunes) is refused."""
    last = len(t.turns) - 1
    row = t.context_ids(last) + t.turns[last].output_ids
    scored = [0] * len(row)
    for j, turn in enumerate(t.turns):
        context = t.context_ids(j)
        start, stop = len(context), len(context) + len(turn.output_ids)
        if row[:stop] != context + turn.output_ids:
            raise ValueError(
                f"episode rows need contexts that only grow (the full agent's view): turn {j} of "
                f"{t.task_id} ({t.agent} agent) is not a prefix of its last turn"
            )
        scored[start:stop] = [1] * (stop - start)
    return row, scored


def _schema() -> pa.Schema:
    """The columns as `Dataset.from_dict` typed the in-memory builder's lists of ints (`input_ids`
    as int32, which `datasets` chooses for a column of that name), its metadata included."""
    return _features().arrow_schema


def _features(labels: bool = False):
    from datasets import Features, List, Value

    second = ("labels", "int64") if labels else ("response_mask", "int64")
    return Features({"input_ids": List(Value("int32")), second[0]: List(Value(second[1]))})


def episode_table(trajectories) -> pa.Table:
    """[7] The episodes as Arrow columns: each one's record (clocks zeroed), its response tokens,
    and turn by turn its responses' lengths and its turn rows' lengths."""
    records, scored, turn_scored, turn_rows = [], [], [], []
    for t in trajectories:
        outputs = [len(turn.output_ids) for turn in t.turns]
        steady = replace(t, seconds=0.0, turns=[replace(turn, seconds=0.0) for turn in t.turns])
        records.append(steady.to_json())
        scored.append(sum(outputs))
        turn_scored.append(outputs)
        turn_rows.append([c + o for c, o in zip(t.context_lengths(), outputs)])
    columns = [records, scored, turn_scored, turn_rows]
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, _episode_schema())], schema=_episode_schema()
    )


def _episode_schema() -> pa.Schema:
    from datasets import Features, List, Value

    return Features(
        {
            "trajectory": Value("string"),
            "scored": Value("int64"),
            "turn_scored": List(Value("int32")),
            "turn_rows": List(Value("int32")),
        }
    ).arrow_schema


def write_shard(
    domain, tokenizer, split: str, agent: str, seed: int, shard: Shard, folder: Path, rows: str = "turn"
) -> ShardDone:
    """[3] Play one shard and write its rows (or [7] its episodes) to folder/shard-INDEX.arrow (Arrow
    stream, as `datasets` writes them)."""
    trajectories = play_shard(domain, tokenizer, split, agent, seed, shard)
    episodes = keeps_episodes(rows, agent)
    table = episode_table(trajectories) if episodes else rows_table(trajectories, rows)
    with pa.OSFile(str(shard_path(folder, shard.index)), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    if episodes:
        tokens = int(pc.sum(pc.list_flatten(table.column("turn_rows"))).as_py() or 0)
    else:
        tokens = int(pc.sum(pc.list_value_length(table.column("input_ids"))).as_py() or 0)
    return ShardDone(shard.index, shard.stop - shard.start, table.num_rows, tokens)


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:06d}.arrow"


# ---------------------------------------------------------------------------------------------
# [2] Worker processes


def write_shards(domain, tokenizer, args, split: str, folder: Path, workers: int, bar=None) -> Path:
    """Every shard's rows, played by `workers` processes (this one and workers - 1 spawned helpers,
    each taking the next unclaimed shard until none is left: this process starts at once, a helper
    joins when it has started, a few seconds later), joined in row order into folder/rows.arrow,
    whichever order the shards finished in. Returns that file."""
    plan = shard_plan(tasks_per_size(args.objectives, args.tasks, args.long_share))
    rows = getattr(args, "rows", "turn")
    job = (domain, tokenizer, split, args.agent, args.seed, folder, plan, rows)
    report = _Report(bar, _Join(folder))
    helpers, done = [], None
    context = multiprocessing.get_context("spawn")
    claim = context.Value("i", 0)  # the next unclaimed shard, shared (with its lock)
    if min(workers, len(plan)) > 1:
        done, jobs = context.Queue(), context.Queue()
        jobs.cancel_join_thread()  # a helper stopped before reading its job must not hold up exit
        helpers = [
            context.Process(target=_helper, args=(jobs, claim, done), daemon=True)
            for _ in range(min(workers, len(plan)) - 1)
        ]
        for p in helpers:
            p.start()
            # The job (the domain, with its world and index: ~17 MB pickled) goes by a queue, whose
            # thread writes it while this process plays. As an argument of the process it was written
            # by start(), which waited for the helper to import everything and read it: this
            # process then started its first shard as late as the helper (~4 s).
            jobs.put(job)
    try:
        for shard in _claimed(plan, claim):
            report(write_shard(domain, tokenizer, split, args.agent, args.seed, shard, folder, rows))
            while done is not None and not done.empty():
                report(done.get())
        while report.shards < len(plan):  # the helpers' last shards
            try:
                report(done.get(timeout=1.0))
            except queue.Empty:
                dead = [p.exitcode for p in helpers if p.exitcode not in (None, 0)]
                if dead:
                    how = f"killed by signal {-dead[0]}" if dead[0] < 0 else f"exit code {dead[0]}"
                    raise DataBuildError(
                        f"a teacher data worker died ({how}); nothing was cached: run the command again "
                        "(--data-workers 1 plays in this process only)"
                    ) from None
        # Every shard is written and reported: a helper's exit (tearing down torch, ~1 s) is not
        # waited for; `finally` stops whichever has not exited yet.
        dead = [p.exitcode for p in helpers if p.exitcode not in (None, 0)]
        if dead:  # it died before claiming a shard: this process played them, the same rows
            print(
                f"mem1: note: a teacher data worker died (exit code {dead[0]}) before taking a shard; "
                "the others played its share (the same rows)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        for p in helpers:
            if p.is_alive():
                p.terminate()
                p.join()
        report.join.close()
    return report.join.path


def _claimed(plan: list[Shard], claim):
    """The shards this process claims, one at a time, until every shard is claimed."""
    while True:
        with claim.get_lock():
            i = claim.value
            claim.value += 1
        if i >= len(plan):
            return
        yield plan[i]


def _helper(jobs, claim, done) -> None:
    """[2] A spawned worker: one torch thread (the teacher is Python; more would only compete)."""
    torch.set_num_threads(1)
    try:
        domain, tokenizer, split, agent, seed, folder, plan, rows = jobs.get()
        for shard in _claimed(plan, claim):
            done.put(write_shard(domain, tokenizer, split, agent, seed, shard, folder, rows))
    except BaseException as exc:  # said in the parent, which raises it
        done.put(f"{type(exc).__name__}: {exc}")


class _Report:
    """Counts the finished shards, joins them, moves the progress bar; raises a helper's error."""

    def __init__(self, bar, join):
        self.bar, self.join, self.shards, self.rows, self.tokens = bar, join, 0, 0, 0

    def __call__(self, d) -> None:
        if isinstance(d, str):
            raise DataBuildError(f"a teacher data worker failed: {d}")
        self.join(d.index)
        self.shards, self.rows, self.tokens = self.shards + 1, self.rows + d.rows, self.tokens + d.tokens
        if self.bar is not None:
            self.bar.set_postfix(rows=self.rows, tokens=f"{self.tokens / 1e6:.1f}M", refresh=False)
            self.bar.update(d.tasks)


class _Join:
    """[3] Appends the shards' rows to one Arrow file in shard order, as soon as every shard before
    them is done, and deletes each shard's file: this process does it between its own shards, while
    the helpers play, and holds one shard's rows at a time (read, not memory-mapped: the kernel
    keeps no mapped pages of them in this process)."""

    def __init__(self, folder: Path):
        self.folder, self.path = folder, folder / ROWS_FILE
        self.done: set[int] = set()
        self.next = 0
        self.sink, self.writer = None, None

    def __call__(self, index: int) -> None:
        self.done.add(index)
        while self.next in self.done:
            shard = shard_path(self.folder, self.next)
            with pa.OSFile(str(shard), "rb") as source:
                table = pa.ipc.open_stream(source).read_all()
            if self.writer is None:
                self.sink = pa.OSFile(str(self.path), "wb")
                self.writer = pa.ipc.new_stream(self.sink, table.schema)
            self.writer.write_table(table)
            shard.unlink()
            self.done.discard(self.next)
            self.next += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.sink.close()
            self.writer = None


# ---------------------------------------------------------------------------------------------
# The cached rows


def teacher_sft_data(domain, tokenizer, args, split: str = "sft", progress: bool = True, log=print):
    """Play the teacher on `args.tasks` tasks of `args.objectives` (`tasks_per_size`); one row per
    turn: `input_ids` (context + response) and `response_mask` (or [6] [7] per episode, as
    `args.rows` and `args.agent` say). Cached under CACHE_DIR/sft-KEY,
    keyed by everything that changes the rows; built by `args.data_workers` processes (None: two,
    one on a one-core machine), the same rows whatever their number. `progress`: a progress bar
    on stderr; `log`: where the cache key and a cache hit are said."""
    workers = check_workers(getattr(args, "data_workers", None))
    key = cache_key(domain, tokenizer, args, split)
    cached = CACHE_DIR / f"sft-{key}"
    columns = EPISODE_COLUMNS if keeps_episodes(getattr(args, "rows", "turn"), args.agent) else COLUMNS
    t0 = time.perf_counter()
    data = _read_cache(cached, columns)
    if data is not None:
        what = "episodes" if columns == EPISODE_COLUMNS else "rows"
        log(
            f"teacher data: cache {key} found ({len(data)} {what}, {cached}), "
            f"read in {time.perf_counter() - t0:.1f} s"
        )
        return data
    log(f"teacher data: building cache {key} with {workers} worker{'s' * (workers > 1)} ({cached})")
    with writing(CACHE_DIR):  # a cache path that is a file, a read-only or full disk: one line
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        remove_stale_builds(CACHE_DIR, log)
        tmp = Path(tempfile.mkdtemp(dir=CACHE_DIR, prefix=f".{cached.name}.pid{os.getpid()}.", suffix=".tmp"))
    try:
        shards = tmp / "shards"
        shards.mkdir()
        with tqdm(
            total=sum(tasks_per_size(args.objectives, args.tasks, args.long_share).values()),
            desc="teacher data",
            unit="task",
            disable=not progress,
            file=sys.stderr,
            mininterval=1.0,  # a line a second at most in a log file
        ) as bar:
            with writing(cached):
                joined = write_shards(domain, tokenizer, args, split, shards, workers, bar)
        # a folder of this writer's own, renamed into place whole: a kill or a second writer never
        # leaves a half-written cache under the key
        (tmp / "rows").mkdir()
        joined.rename(tmp / "rows" / ROWS_FILE)
        shutil.rmtree(cached, ignore_errors=True)
        try:
            (tmp / "rows").rename(cached)
        except OSError:  # another writer renamed the same rows into place first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    data = _read_cache(cached, columns)
    if data is None:
        raise DataBuildError(f"the SFT data just written to {cached} cannot be read")
    return data


def remove_stale_builds(folder: Path, log=print) -> list[Path]:
    """Delete the temporary build folders (`.sft-KEY.pidPID.*.tmp`) whose builder is no longer
    running (a kill leaves them); a live builder's, and any whose owner cannot be told, are kept."""
    removed = []
    for tmp in sorted(folder.glob(".sft-*.pid*.tmp")):
        try:
            pid = int(tmp.name.rsplit(".pid", 1)[1].split(".", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    if removed:
        log(f"teacher data: removed {len(removed)} temporary build folder(s) a killed build left in {folder}")
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only asked whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _read_cache(cached: Path, columns=COLUMNS):
    """The cached rows, or None when there are none or they cannot be read: a damaged cache is
    said so on stderr and removed, and the caller builds the rows again (they are derived data)."""
    from datasets import Dataset, load_from_disk

    if not cached.exists():
        return None
    try:
        # [3] one Arrow file, memory-mapped; a folder of `save_to_disk`, as builders before the
        # joined file wrote them (the same rows under the same key)
        rows = cached / ROWS_FILE
        data = Dataset.from_file(str(rows)) if rows.exists() else load_from_disk(str(cached))
        if set(data.column_names) != set(columns) or len(data) == 0:
            raise ValueError(f"columns {data.column_names}, {len(data)} rows")
        return data
    except Exception as exc:  # datasets / pyarrow / json raise many types for a damaged folder
        print(
            f"mem1: warning: the SFT data cache {cached} cannot be read ({type(exc).__name__}); "
            "building it again",
            file=sys.stderr,
            flush=True,
        )
        shutil.rmtree(cached, ignore_errors=True)
        return None


def row_lengths(data) -> np.ndarray:
    """Tokens of each row, read from the Arrow offsets (no row becomes a Python list)."""
    return pc.list_value_length(data.data.column("input_ids")).to_numpy(zero_copy_only=False)


def rows_digest(data) -> str:
    """sha256 of the rows: each column's row lengths, then its values, as int64 (however the
    columns are cut into chunks), read chunk by chunk. [7] Episodes: each record's length and
    bytes, in order."""
    digest = hashlib.sha256()
    if "trajectory" in data.column_names:
        for chunk in data.data.column("trajectory").chunks:
            for record in chunk.to_pylist():
                raw = record.encode()
                digest.update(len(raw).to_bytes(8, "little") + raw)
        return digest.hexdigest()
    for column in COLUMNS:
        chunks = data.data.column(column).chunks
        lengths, values = hashlib.sha256(), hashlib.sha256()
        for chunk in chunks:
            lengths.update(
                pc.list_value_length(chunk).to_numpy(zero_copy_only=False).astype(np.int64).tobytes()
            )
            values.update(pc.list_flatten(chunk).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
        digest.update(lengths.digest() + values.digest())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# [7] [8] Episodes and their packs


def episode(data, index: int) -> Trajectory:
    """[7] Episode `index` of the cached episodes, as its trajectory."""
    return Trajectory.from_dict(json.loads(data.data.column("trajectory")[index].as_py()))


def episode_totals(data) -> dict:
    """[7] Episodes, turns, response tokens, and the tokens of their turn rows (all, the longest)."""
    rows = turn_row_lengths(data)
    return {
        "episodes": len(data),
        "turns": len(rows),
        "scored": int(pc.sum(data.data.column("scored")).as_py() or 0),
        "turn_tokens": int(rows.sum()),
        "longest_turn_row": int(rows.max(initial=0)),
    }


def turn_row_lengths(data) -> np.ndarray:
    """[7] The lengths of the episodes' turn rows (what a row per turn would hold), flat."""
    return pc.list_flatten(data.data.column("turn_rows")).to_numpy(zero_copy_only=False).astype(np.int64)


Pack = list[tuple[int, int, int]]
"""[8] one optimizer step: (episode, first turn, turn after the last) of each piece"""


def episode_packs(data, budget: int, seed: int) -> list[Pack]:
    """[8] The episodes in a seeded order, laid end to end and cut into steps of about `budget`
    response tokens, each a list of (episode, start, stop) turn ranges; every turn once."""
    if budget < 1:
        raise ValueError(f"a step needs a budget of at least one response token, got {budget}")
    per_turn = data.data.column("turn_scored").to_pylist()
    packs: list[Pack] = []
    pack: Pack = []
    room = budget
    for e in np.random.default_rng(seed).permutation(len(per_turn)).tolist():
        turns, start = per_turn[e], 0
        while start < len(turns):
            stop, taken = start, 0
            # a turn is taken while it fits, or when the step ends nearer its budget with it
            while stop < len(turns) and turns[stop] < 2 * (room - taken):
                taken += turns[stop]
                stop += 1
            if stop == start and not pack:  # a turn alone over the budget: a step of its own
                stop, taken = start + 1, turns[start]
            if stop > start:
                pack.append((e, start, stop))
                room -= taken
                start = stop
            if stop < len(turns) or room <= 0:
                packs.append(pack)
                pack, room = [], budget
    if pack:
        packs.append(pack)
    return packs


# ---------------------------------------------------------------------------------------------
# [4] Labels of a stage


def to_dataset(data, loss_on: str, seed: int):
    """Add `labels` (-100 where no loss) for a stage, and shuffle: columns `input_ids`, `labels`.
    Rows cached in one file (`teacher_sft_data`) are labelled by reading that file a batch at a
    time into labels-LOSS_ON.arrow beside it (made once, then reused), not memory-mapped: labelling
    N = 1..16 data through `Dataset.map` left every page of the rows mapped in this process (its
    RSS grew by the size of the data, ~3 GB). Other datasets (in memory, or several files) go
    through `Dataset.map`; both give the same rows, types and order (tests/test_sft_data.py)."""
    from datasets import Dataset

    if loss_on not in ("all", "response"):
        raise ValueError(f"loss_on must be 'all' or 'response', got {loss_on!r}")
    features = _features(labels=True)
    source = _one_file(data)
    target = None if source is None else source.with_name(f"labels-{loss_on}.arrow")
    if target is None:
        with_labels = data.with_format("arrow").map(
            lambda batch: _labels(batch, loss_on),
            batched=True,
            remove_columns=["response_mask"],
            features=features,
        )
        return with_labels.with_format(None).shuffle(seed=seed)
    if not target.exists():
        # written beside the rows under a name of this writer's own, then renamed into place whole
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            with pa.OSFile(str(source), "rb") as rows, pa.OSFile(tmp, "wb") as sink:
                reader = pa.ipc.open_stream(rows)
                with pa.ipc.new_stream(sink, features.arrow_schema) as writer:
                    for batch in reader:
                        writer.write_table(_labels(pa.Table.from_batches([batch]), loss_on))
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return Dataset.from_file(str(target)).shuffle(seed=seed)


def _labels(batch: pa.Table, loss_on: str) -> pa.Table:
    """[4] `input_ids` and their labels: the ids, -100 where the mask is 0 when `loss_on` is
    "response"; numpy over whole columns."""
    ids = batch.column("input_ids").combine_chunks()
    offsets = ids.offsets.to_numpy()
    values = pc.list_flatten(ids).to_numpy().astype(np.int64)
    if loss_on == "response":
        mask = pc.list_flatten(batch.column("response_mask").combine_chunks()).to_numpy()
        values = np.where(mask != 0, values, -100)
    labels = pa.ListArray.from_arrays(pa.array(offsets - offsets[0]), pa.array(values))
    return pa.Table.from_arrays([ids, labels], schema=_features(labels=True).arrow_schema)


def _one_file(data) -> Path | None:
    """The Arrow file that holds all of `data`'s rows as they are (no selection, no reordering,
    turn rows), or None."""
    files = getattr(data, "cache_files", None) or []
    if (
        len(files) != 1
        or getattr(data, "_indices", None) is not None
        or set(data.column_names) != set(COLUMNS)
    ):
        return None
    path = Path(files[0]["filename"])
    return path if path.name in (ROWS_FILE, "data-00000-of-00001.arrow") else None


# ---------------------------------------------------------------------------------------------
# Reference: the in-memory builder this module replaced (the tests and `mem1 bench data` compare
# the streamed rows with its rows). It keeps every row as Python lists, then labels row by row.


def rows_in_memory(domain, tokenizer, args, split: str = "sft"):
    """Today's rows the old way: every episode played in this process, every row a Python list."""
    from datasets import Dataset

    ids, masks = [], []
    for n, count in tasks_per_size(args.objectives, args.tasks, args.long_share).items():
        trajs = teacher_trajectories(domain, tokenizer, split, n, count, seed=args.seed, agent=args.agent)
        for t in trajs:
            for j, turn in enumerate(t.turns):
                context = t.context_ids(j)
                ids.append(context + turn.output_ids)
                masks.append([0] * len(context) + [1] * len(turn.output_ids))
    return Dataset.from_dict({"input_ids": ids, "response_mask": masks})


def labels_per_row(data, loss_on: str, seed: int):
    """`to_dataset` the old way: a Python function over every row."""

    def labels(row):
        if loss_on == "all":
            return {"labels": list(row["input_ids"])}
        return {"labels": [t if m else -100 for t, m in zip(row["input_ids"], row["response_mask"])]}

    return data.map(labels, remove_columns=["response_mask"]).shuffle(seed=seed)
