"""Supervised warm start: teach a from-scratch tiny Qwen2 to play the MEM1 protocol, and to read.

    mem1 sft --preset quick --out runs/sft-quick          # minutes: mechanics, not skill
    mem1 sft --preset standard --out runs/sft             # the shipped recipe (<= 2 h on 2 cores)
    mem1 sft --preset standard --objectives 2 --out runs/sft-n2   # the paper's N = 2-only data
    mem1 sft --preset quick --model qwen2.5-0.5b --out runs/sft-qwen   # a real Qwen checkpoint (local)
    mem1 sft --preset long --init DIR --rows episode --out runs/sft-ep # whole episodes, packed layout [8]
    mem1 sft --preset n16 --out runs/sft-n16                # the headline recipe, from scratch [9]
    mem1 sft --preset n16 --model runs/w7-tokenizer --data runs/w7 --out runs/w7-sft  # another world:
                                          # from scratch with its tokenizer (mem1 tokenizer --out)
    accelerate launch --multi_gpu --num_processes 4 -m mem1lite.cli sft --model qwen2.5-0.5b --out runs/sft-q4

The data are the scripted teacher's turns on the `sft` pool, in exactly the view the mem1 agent
feeds the model (prompt + previous response + previous observation -> next response). Training is
TRL's `SFTTrainer`, full parameters, with best-fit-decreasing packing (each packed sample keeps its
own position ids and attends only to itself).

The recipe, and why (docs/DESIGN.md has the measurements behind it):

1. Stage `read` puts the language-model loss on *every* token, passages included. Passages repeat
   names ("The birthplace of Talis Morrow is ... The mentor of Talis Morrow is ..."), and predicting
   the repeats is what grows the copying (induction) circuits; with the loss on responses only, a
   prototype sat for 30 minutes at guessing name parts.
2. A constant learning rate after a short warm-up: the switch from guessing to copying comes late
   and a decaying schedule had already shrunk the steps by then.
3. Stage `respond` then puts the loss on response tokens only, to spend the rest of the budget on
   what the agent writes; a short linear decay at the end.
4. Data mixes N = 1..4 questions per task, so the internal state's answer list is seen with 0..3
   entries (the paper uses N = 2 only; `--objectives 2` gives that variant).
5. A reading probe runs every few minutes (probe.py): teacher-forced accuracy of name tokens on
   `dev` (first / second part, copied / extracted), and greedy dev EM at N = 1, 2 now and then.
6. Under `accelerate launch` the Trainer runs data-parallel (DDP: each process takes its share of
   every step's packs, gradients all-reduced). Gradient accumulation is divided by the number of
   processes, so a step sees the same tokens as with one process. The data are built by the main
   process first (the others read its cache); the probe, the snapshots, the final evaluation and
   the card are the main process's; the stage clock is read on the main process and its decision
   broadcast, so that every process stops at the same step.
7. Checkpoints and `--resume`: every `checkpoint_minutes` the Trainer saves its checkpoint (model,
   optimizer, scheduler, RNG states, step) into OUT.partial/trainer-STAGE/checkpoint-STEP; a marker
   written last, after every file is flushed, makes it complete, and only then are older ones
   removed. At each stage's end the model goes to OUT.partial/stage (swapped in whole,
   files.commit_folder). `--resume` continues from the last complete one: the stages done are
   skipped, the current one resumes where the Trainer left it (the same data order, optimizer,
   schedule and RNG), so the resumed run ends with the weights an uninterrupted one ends with.
8. Episodes (`--rows episode`, the mem1 view). A row per turn feeds the episode's prompt (up to
   ~340 tokens at N = 16) again with every one of its 2N + 2 turns. Here the data are the teacher's
   episodes (sft_data.py [7]) and a step is scored by the exact `packed` layout of masks.py: each
   episode's prompt encoded once, its turns' blocks after it attending to the prompt's KV cache,
   the blocks in up to `EPISODE_BUCKETS` stages of like lengths (masks.py [11]: ~10% faster than
   padding every block to the longest). The loss is the one a row per turn gives, the summed
   cross-entropy of the response tokens (float64-equal, values and gradients: tests/test_sft.py),
   divided by the step's response tokens (`num_items_in_batch`) as FastSFTTrainer divides it. A
   step holds `step_budget` response tokens: on average what a step of turn rows of the same data
   holds, counted from the packs TRL's best-fit-decreasing packing makes of them (long rows leave
   packs part empty: at N = 1..16 a step of 1,024 x 8 holds ~5.2 k tokens, ~500 of them response
   tokens, not 8.2 k x the response share 0.09), so the presets' step counts and learning rates
   keep their meaning; an episode longer than a step is cut at a turn boundary (sft_data.py [8],
   masks.py [10]). One forward and backward per step, through transformers' Trainer (the collator
   builds the layout; nothing to pack) with the probes, clocks, checkpoints and resume of the row
   path. Response tokens only: a stage with the loss on every token is refused before any data
   are built (a prompt or a passage stands in several blocks, so "every token" has no single
   weight). One process, and no activation checkpointing (the layout reuses the prompt's KV
   cache). `mem1 bench sft` times both ways side by side.
9. Stages may name their own rows (`Stage.rows`). The `n16` preset, the headline recipe in one
   command, reads on turn rows (every token's loss needs rows) and responds on episodes: each
   rows mode's data are built once (their own cache key) and each stage trains on its own.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .domains import fit_default, fit_objectives, load_domain
from .files import (
    append_text,
    check_output,
    commit_folder,
    find_folder,
    fsync_tree,
    new_folder,
    one_run,
    remove_folder,
    save_figure,
    write_text,
    writing,
)
from .masks import build_packed, causal_lm, layout_hidden
from .model import (
    TINY_DIR,
    build_tiny_model,
    check_whole_model,
    count_parameters,
    load_policy,
    load_tokenizer,
    resolve_model,
)
from .plots import probe_curves
from .probe import greedy_em, name_token_ids, probe_samples, teacher_forced_accuracy, teacher_trajectories
from .sft_data import (
    ROWS,
    episode,
    episode_packs,
    episode_totals,
    keeps_episodes,
    row_lengths,
    teacher_sft_data,
    to_dataset,
    turn_row_lengths,
)
from .store import sha256_file
from .threads import use_threads


@dataclass
class Stage:
    """One training stage."""

    name: str
    """label in logs and curves"""
    loss_on: str = "all"
    """'all' tokens (language modelling) or 'response' tokens only"""
    minutes: float = 10.0
    """wall-clock budget of the stage (probes included)"""
    max_steps: int = 100_000
    """optimizer steps at most"""
    lr: float = 1e-3
    """peak learning rate (AdamW)"""
    warmup_steps: int = 50
    """linear warm-up steps"""
    schedule: str = "constant_with_warmup"
    """'constant_with_warmup', 'linear' (decay to 0 over max_steps) or 'cosine'"""
    rows: str | None = None
    """this stage's rows, 'turn' or 'episode' (None: the run's `rows`); the `n16` recipe reads on
    turn rows (loss on every token) and then responds on episodes [9]"""
    data: dict | None = None
    """this stage's teacher data where it differs from the run's: SFTArgs fields `objectives`,
    `long_share`, `tasks` (the `n16` recipe reads on short tasks, where copying comes ~2x sooner) [9]"""


@dataclass
class SFTArgs:
    """Supervised fine-tuning from scratch on teacher trajectories."""

    out: str = "runs/sft"
    """output directory: the final model, card.json, probe.jsonl, probe.png"""
    preset: str = "quick"
    """'quick' or 'standard' (fills in the fields below unless given)"""
    seed: int = 0
    """seeds the model init, the data draw and the trainer"""
    init: str | None = None
    """start from this checkpoint directory instead of a fresh tiny model (the same as `model`)"""
    model: str = "tiny"
    """base model: `tiny` (fresh, from scratch), `qwen2.5-0.5b` or a local directory (model.py presets;
    a real model trains in float32 weights with bfloat16 autocast on a GPU and checkpointing)"""
    objectives: tuple[int, ...] = (1, 2, 3, 4)
    """task sizes in the data, drawn in equal shares"""
    tasks: int = 24_000
    """teacher tasks played to make the data (all sizes together)"""
    long_share: float = 0.0
    """share of the tasks at the largest size, the rest in equal shares over all sizes: a size-N
    task holds answers lists of length 0..N-1, so without it the long lists are rare in the data
    (0.5: every list length gets at least half the turns the empty list gets)"""
    pointer: str = "text"
    """how the teacher's state points at the current question: its `text`, or its `number` and
    text (teacher.py [5])"""
    agent: str = "mem1"
    """whose view of the context the samples take (mem1; full for the full-context baseline)"""
    rows: str = "turn"
    """a sample per teacher turn, or per episode: in the full view one row holding every turn's row
    as a prefix, so the same response tokens are scored in ~1/3 of the tokens (sft_data.py [6]); in
    the mem1 view the episode under the packed layout, its prompt encoded once [8]"""
    stages: tuple[Stage, ...] = field(default_factory=tuple)
    """training stages, run in order"""
    max_length: int = 512
    """packed sequence length (attention is quadratic in it: 512 beat 1024 by ~14%, 2048 by more)"""
    batch_packs: int = 1
    """packed sequences per forward pass"""
    grad_accum: int = 16
    """forward passes per optimizer step (~6.4k tokens per step)"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    probe_minutes: float = 3.0
    """minutes between teacher-forced probes"""
    em_minutes: float = 15.0
    """minutes between greedy-EM probes"""
    em_min_token_acc: float = 0.7
    """skip the greedy-EM probe until teacher-forced response-token accuracy reaches this"""
    probe_max_new_tokens: int = 192
    """longest response in the greedy-EM probes (an untrained model always writes that many)"""
    sft_pool_eval_tasks: int = 100
    """sft-pool tasks (N = 2) of the final evaluation, for the gap to dev that shows memorising"""
    probe_tasks: int = 24
    """dev tasks (N = 2) of the teacher-forced probe"""
    em_tasks: int = 32
    """dev tasks per N of the greedy-EM probe"""
    final_eval_tasks: int = 100
    """dev tasks per N of the final evaluation on the card"""
    final_eval_objectives: tuple[int, ...] = (1, 2, 4, 8, 16)
    """N values of the final evaluation"""
    threads: int | None = None
    """torch CPU threads (None: the thread policy, threads.py: one for the tiny model)"""
    data_workers: int | None = None
    """processes that play the teacher for the data (None: min(2, cores)); the rows do not depend
    on it (sft_data.py)"""
    env: str = "qa"
    """domain: qa or webshop (domains.py)"""
    data: str | None = None
    """the domain's data folder (default: the shipped one, e.g. data/qa)"""
    checkpoint_minutes: float = 10.0
    """minutes between the Trainer's checkpoints in OUT.partial (0: at stage ends only) [7]"""
    resume: bool = False
    """continue the interrupted run in OUT.partial from its last complete checkpoint [7]"""


PRESETS = {
    "quick": dict(
        tasks=600,
        stages=(
            Stage("read", "all", minutes=0.6, max_steps=30, warmup_steps=5),
            Stage("respond", "response", minutes=0.4, max_steps=20, warmup_steps=0, schedule="linear"),
        ),
        max_length=1024,
        grad_accum=1,
        probe_minutes=0.3,
        em_minutes=60.0,
        probe_tasks=6,
        em_tasks=8,
        final_eval_tasks=4,
        final_eval_objectives=(1,),
        sft_pool_eval_tasks=0,
        probe_max_new_tokens=48,
    ),
    # Step budgets make the recipe reproducible whatever else the machine does; the minute caps
    # only guard a run on a much slower machine. ~6.4k tokens per step: 2,750 steps ~ 18 M tokens,
    # about 60 minutes at the ~5k tokens/s one thread gives here (two threads were slower).
    # exp1 (docs/DESIGN.md) saw copying appear after ~4 M tokens and reach 0.93 (first name part)
    # by ~8.4 M, so the read stage's 1,800 steps (~11.5 M tokens) leave room past that.
    "standard": dict(
        tasks=36_000,
        stages=(
            Stage("read", "all", minutes=75, max_steps=1800, warmup_steps=100),
            Stage("respond", "response", minutes=30, max_steps=700, lr=5e-4, warmup_steps=0),
            Stage(
                "anneal", "response", minutes=12, max_steps=250, lr=5e-4, warmup_steps=0, schedule="linear"
            ),
        ),
        em_minutes=20.0,
    ),
    # Continue a trained checkpoint (`--init`) on long tasks: in the mem1 view a turn's context
    # stays ~0.3-0.6 k tokens whatever N, so N = 16 samples cost about what N = 2 ones do. The
    # model already reads, so the loss is on responses only; half the tasks are N = 16 so that
    # every answers-list length 0..15 is well represented.
    "long": dict(
        tasks=2_400,
        objectives=tuple(range(1, 17)),
        long_share=0.5,
        stages=(
            Stage("respond", "response", minutes=68, max_steps=3000, lr=5e-4, warmup_steps=20),
            Stage(
                "anneal", "response", minutes=10, max_steps=300, lr=5e-4, warmup_steps=0, schedule="linear"
            ),
        ),
        em_minutes=20.0,
    ),
}


# [9] The headline recipe in one run, from scratch. The `read` stage (loss on every token, turn
# rows) reads short tasks (N = 1..4): there the copying circuits come after ~650 steps, while on
# N = 1..16 data 904 steps gave none (docs/experiments/n16-read-on-long-tasks.probe.jsonl: the
# first name part never copied; sft-mem1-n8's read copied 0.44 of them by step 854). Then
# `respond` and `anneal` on whole episodes of N = 1..16 (the packed layout, ~1.8x the response
# tokens a second), half the tasks at N = 16 (`long_share`, so every answers-list length is well
# represented), the hop pointer throughout (teacher.py [6]). The steps are about what the four-run
# chain (mem1 chain, ~4.5 h) gave its model: its per-turn exactness rose with steps, not with any
# change of recipe (docs/DESIGN.md, section 10). The step counts bind; the minute caps only guard a
# much slower machine (on one idle thread: read ~1.4 s a step, respond ~0.7 s).
PRESETS["n16"] = dict(
    tasks=6_000,
    objectives=tuple(range(1, 17)),
    long_share=0.5,
    pointer="hop",
    rows="episode",
    stages=(
        Stage(
            "read",
            "all",
            minutes=90,
            max_steps=1800,
            warmup_steps=100,
            rows="turn",
            data={"objectives": (1, 2, 3, 4), "long_share": 0.0, "tasks": 12_000},
        ),
        Stage("respond", "response", minutes=120, max_steps=7000, lr=5e-4, warmup_steps=20),
        Stage("anneal", "response", minutes=20, max_steps=800, lr=5e-4, warmup_steps=0, schedule="linear"),
    ),
    em_minutes=20.0,
)

# [9] The same recipe at the quick preset's size: its mechanics (two data sets, three stages, the
# hop pointer, N = 1..16) in about a minute, for notebook 03 and the tests. Not skill.
QUICK_SIZES = (
    "grad_accum",
    "probe_minutes",
    "em_minutes",
    "probe_tasks",
    "em_tasks",
    "final_eval_tasks",
    "final_eval_objectives",
    "sft_pool_eval_tasks",
    "probe_max_new_tokens",
)
"""the quick preset's probe and evaluation sizes, which a quick variant of another preset takes"""

PRESETS["n16-quick"] = (
    PRESETS["n16"]
    | {k: PRESETS["quick"][k] for k in QUICK_SIZES}
    | dict(
        tasks=48,
        stages=tuple(
            replace(
                s,
                minutes=minutes,
                max_steps=steps,
                warmup_steps=min(s.warmup_steps, 2),
                **({"data": s.data | {"tasks": 40}} if s.data else {}),
            )
            for s, minutes, steps in zip(PRESETS["n16"]["stages"], (0.5, 0.4, 0.2), (12, 12, 4))
        ),
    )
)


def make_args(preset: str, **overrides) -> SFTArgs:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    fields = PRESETS[preset] | {k: v for k, v in overrides.items() if v is not None}
    return SFTArgs(preset=preset, **fields)


def _tqdm_on() -> bool:
    """Progress bars (the data build's, the Trainer's) unless MEM1_TQDM=0."""
    return os.environ.get("MEM1_TQDM", "1") == "1"


# ---------------------------------------------------------------------------------------------
# Callbacks: wall-clock budget and the reading probe


class _Budget:
    """Shared clock of a whole run, so that probes and stages log on one time axis."""

    def __init__(self):
        self.start = time.perf_counter()
        self.last_probe = -1e9  # shared by the stages, so a new stage does not probe at once
        self.last_em = -1e9

    def minutes(self) -> float:
        return (time.perf_counter() - self.start) / 60


def _decide(flag: bool, processes) -> bool:
    """[6] The main process's `flag`, on every process (a clock is read on one machine)."""
    if processes is not None and processes.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        return bool(broadcast_object_list([flag], from_process=0)[0])
    return flag


def _callbacks(
    args: SFTArgs,
    stage: Stage,
    clock: _Budget,
    probe,
    log_path: Path,
    processes=None,
    stage_index: int = 0,
    stage_minutes: float = 0.0,
):
    """The stage clock and the checkpoints on every process; the probe on the main process only
    (`probe` is None on the others). [6] `processes` (an accelerate PartialState) makes the clocks'
    decisions the main one's. `stage_minutes`: the stage's time spent before a resume [7]."""
    from transformers import TrainerCallback

    main = processes is None or processes.is_main_process

    class StageClock(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter() - stage_minutes * 60

        def minutes(self) -> float:
            return (time.perf_counter() - self.t0) / 60

        def on_step_end(self, a, state, control, **kw):
            if _decide(self.minutes() >= stage.minutes, processes):
                control.should_training_stop = True

    stage_clock = StageClock()

    class Checkpoints(TrainerCallback):
        """[7] Ask the Trainer for a checkpoint every `checkpoint_minutes`; once it is written, flush
        it, mark it complete, then remove the older ones."""

        def on_train_begin(self, a, state, control, **kw):
            self.last = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            due = 0 < args.checkpoint_minutes <= (time.perf_counter() - self.last) / 60
            if _decide(due, processes):
                control.should_save = True

        def on_save(self, a, state, control, **kw):
            self.last = time.perf_counter()
            if main:
                folder = Path(a.output_dir) / f"checkpoint-{state.global_step}"
                mark_complete(
                    folder,
                    CHECKPOINT_MARKER,
                    progress_record(clock, log_path, stage_index, stage_clock.minutes()),
                )
                for older in Path(a.output_dir).glob("checkpoint-*"):
                    if older != folder:
                        remove_folder(older, CHECKPOINT_MARKER)

    class Probe(TrainerCallback):
        def _run(self, state, model, force_em=False):
            now = clock.minutes()
            record = {"minutes": round(now, 2), "stage": stage.name, "step": state.global_step}
            losses = [h["loss"] for h in state.log_history if "loss" in h]
            if losses:
                record["train_loss"] = losses[-1]
            record |= probe.teacher_forced(model)
            # Greedy EM is worth its minute only once the format is mostly right.
            ready = record["response_token_acc"] >= args.em_min_token_acc
            if force_em or (ready and now - clock.last_em >= args.em_minutes):
                record |= probe.em(model)
                clock.last_em = clock.minutes()
            clock.last_probe = clock.minutes()  # the interval counts from the end of the probe
            save_snapshot(model, log_path.parent / "snapshot")  # inspect or rescue a long run
            append_text(log_path, json.dumps(record) + "\n")
            keys = [
                k
                for k in (
                    "name_acc_fact_part1",
                    "name_acc_fact_part2",
                    "name_acc_copy_part1",
                    "em_per_objective_n1",
                    "em_per_objective_n2",
                )
                if k in record
            ]
            print(
                f"[probe {now:6.1f} min, {stage.name} step {state.global_step}] "
                + "  ".join(f"{k} {record[k]:.3f}" for k in keys),
                flush=True,
            )

        def on_step_end(self, a, state, control, model=None, **kw):
            if clock.minutes() - clock.last_probe >= args.probe_minutes:
                self._run(state, model)

        def on_train_end(self, a, state, control, model=None, **kw):
            self._run(state, model)  # the final evaluation plays the greedy episodes

    return [stage_clock, Checkpoints()] + ([Probe()] if probe is not None else [])


# ---------------------------------------------------------------------------------------------
# Checkpoints and resume [7]


RUN_FILE = "run.json"
"""in OUT.partial: the options the run started with (a resume must give the same)"""
STAGE_DIR = "stage"
"""in OUT.partial: the model after the last finished stage"""
STAGE_MARKER = "stage.json"
"""written last into the stage folder: it is complete"""
CHECKPOINT_MARKER = "mem1-complete.json"
"""written last into a Trainer checkpoint, once its files are flushed: it is complete"""
VOLATILE_OPTIONS = ("resume", "threads", "checkpoint_minutes", "data_workers")
"""options a resume may change: they do not change what is trained"""


@dataclass
class Progress:
    """Where an interrupted run stands (`find_progress`)."""

    stages_done: int
    """stages finished; the model after the last of them is in `stage_dir`"""
    stage_dir: Path | None
    """OUT.partial/stage (or stage.old, where a kill cut its swap short)"""
    checkpoint: Path | None
    """the last complete Trainer checkpoint of the next stage, if it has one"""
    record: dict
    """`progress_record` of the newest of the two"""


def progress_record(clock: _Budget, log_path: Path, stage_index: int, stage_minutes: float) -> dict:
    """A marker's content: the stage, both clocks, and how many probe records belong to this point."""
    lines = len(log_path.read_text().splitlines()) if log_path.is_file() else 0
    return {
        "stage": stage_index,
        "stage_minutes": stage_minutes,
        "minutes": clock.minutes(),
        "last_probe": clock.last_probe,
        "last_em": clock.last_em,
        "probe_lines": lines,
    }


def mark_complete(folder: Path, marker: str, record: dict) -> None:
    """Flush every file of `folder`, then write its marker, with every file's sha256 (a resume
    trusts only what matches them): from now on it is complete."""
    with writing(folder):
        fsync_tree(folder)
        files = {str(f.relative_to(folder)): sha256_file(f) for f in sorted(folder.rglob("*")) if f.is_file()}
        write_text(folder / marker, json.dumps(record | {"files": files}) + "\n")


def _read_marker(file: Path) -> dict:
    try:
        record = json.loads(file.read_text())
        int(record["stage"])
        if not isinstance(record.get("files", {}), dict):
            raise TypeError("its files are not a table")
        return record
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{file} cannot be read ({type(exc).__name__}); delete {file.parent} to resume from the "
            "checkpoint before it"
        ) from None


def check_files(folder: Path, record: dict, before: str) -> None:
    """[7] Every file a marker lists is there with its sha256, or one line naming the first that is
    not; nothing is deleted (the state `before` it is kept, and resuming from it is one delete away).
    A marker of an older run, without the files' sha256, gets each file read through instead."""
    if "files" not in record:
        return _read_through(folder, before)
    for name, digest in sorted(record["files"].items()):
        file = folder / name
        if not file.is_file():
            why = "is missing"
        elif sha256_file(file) != digest:
            why = "is damaged (its sha256 differs from the one recorded when it was saved)"
        else:
            continue
        raise ValueError(f"{file} {why}; {before} is kept: delete {folder} to resume from it")


def _read_through(folder: Path, before: str) -> None:
    """Every file of `folder` read whole: JSON parsed, torch's zip archives CRC-checked, safetensors
    headers and tensors read (a cut or damaged file is named, not met inside the Trainer)."""
    import zipfile

    from safetensors import safe_open

    for file in sorted(f for f in folder.rglob("*") if f.is_file()):
        try:
            if file.suffix == ".json":
                json.loads(file.read_text())
            elif file.suffix in (".pt", ".pth", ".bin"):
                with zipfile.ZipFile(file) as archive:
                    bad = archive.testzip()
                if bad is not None:
                    raise ValueError(f"member {bad} fails its CRC")
            elif file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as f:
                    for key in f.keys():
                        f.get_tensor(key)
        except Exception as exc:  # json, zipfile and safetensors raise many types for a damaged file
            raise ValueError(
                f"{file} is damaged ({type(exc).__name__}); {before} is kept: delete {folder} to resume "
                "from it"
            ) from None


def last_checkpoint(folder: Path) -> Path | None:
    """The complete Trainer checkpoint of the highest step in `folder`, or None."""
    complete = [p for p in folder.glob("checkpoint-*") if (p / CHECKPOINT_MARKER).is_file()]
    return max(complete, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def find_progress(work: Path, stages) -> Progress | None:
    """The newest complete state a run left in `work`, or None when it left none."""
    stage_dir = find_folder(work / STAGE_DIR, STAGE_MARKER)
    record = _read_marker(stage_dir / STAGE_MARKER) if stage_dir is not None else {}
    done = record["stage"] + 1 if stage_dir is not None else 0
    if stage_dir is not None:
        check_files(stage_dir, record, "nothing before the finished stages")
    checkpoint = last_checkpoint(work / f"trainer-{stages[done].name}") if done < len(stages) else None
    if checkpoint is not None:
        record = _read_marker(checkpoint / CHECKPOINT_MARKER)
        before = f"the model after stage {done} ({stage_dir})" if stage_dir is not None else "the start"
        check_files(checkpoint, record, before)
    if stage_dir is None and checkpoint is None:
        return None
    return Progress(done, stage_dir, checkpoint, record)


def save_snapshot(model, path: Path) -> None:
    """The probe's copy of the model, swapped in whole (a full disk never leaves half a model there)."""
    tmp = new_folder(path)
    try:
        with writing(path):
            model.save_pretrained(tmp)
        commit_folder(tmp, path, "config.json")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_stage(work: Path, model, tokenizer, record: dict) -> None:
    """The model after a finished stage, swapped in whole over the previous stage's."""
    tmp = new_folder(work / STAGE_DIR)
    try:
        with writing(work / STAGE_DIR):  # a refused write names the stage folder, not the temporary
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        mark_complete(tmp, STAGE_MARKER, record)
        commit_folder(tmp, work / STAGE_DIR, STAGE_MARKER)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_options(args: SFTArgs) -> dict:
    """What a resumed run must share with the run it continues (JSON values: tuples as lists)."""
    options = json.loads(json.dumps(asdict(args)))
    return {k: v for k, v in options.items() if k not in VOLATILE_OPTIONS}


def check_resume(work: Path, args: SFTArgs) -> None:
    """`--resume` continues a run started with the same options, or refuses in one line."""
    file = work / RUN_FILE
    if not file.is_file():
        raise ValueError(f"--resume: no interrupted run to continue at {work} (no {RUN_FILE})")
    try:
        started = json.loads(file.read_text())
        if not isinstance(started, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{file} cannot be read ({type(exc).__name__}); delete {work} and start again"
        ) from None
    now = run_options(args)
    changed = sorted(k for k in started.keys() | now.keys() if started.get(k) != now.get(k))
    if changed:
        shown = "; ".join(
            f"{k}: {str(started.get(k))[:40]} then, {str(now.get(k))[:40]} now" for k in changed
        )
        raise ValueError(f"--resume: {work} was started with other options ({shown}); give the same ones")


def restore_clock(clock: _Budget, record: dict, log_path: Path) -> None:
    """Continue the run's clocks from a marker, and drop the probe records written after it (the
    steps that wrote them are trained again)."""
    clock.start = time.perf_counter() - record.get("minutes", 0.0) * 60
    clock.last_probe = record.get("last_probe", -1e9)
    clock.last_em = record.get("last_em", -1e9)
    if log_path.is_file():
        lines = log_path.read_text().splitlines()[: record.get("probe_lines", 0)]
        write_text(log_path, "".join(line + "\n" for line in lines))


class ReadingProbe:
    """The probe of probe.py, bound to a domain: name tokens exist only where the domain has a
    world of named entities (QA); elsewhere the teacher-forced part measures response tokens only."""

    def __init__(self, domain, tokenizer, args: SFTArgs):
        self.domain, self.tokenizer, self.args = domain, tokenizer, args
        self.objectives = 2 if 2 in args.objectives or domain.name == "qa" else args.objectives[0]
        trajs = teacher_trajectories(
            domain, tokenizer, "dev", self.objectives, args.probe_tasks, seed=1, agent=args.agent
        )
        world = getattr(domain, "world", None)
        names = name_token_ids(tokenizer, world) if world is not None else set()
        self.samples = probe_samples(trajs, tokenizer, names)

    def teacher_forced(self, model) -> dict:
        return teacher_forced_accuracy(model, self.samples, pad_id=self.tokenizer.pad_token_id)

    def em(self, model, objectives=None, tasks: int | None = None, split: str = "dev") -> dict:
        """Greedy EM per objective at each size of `objectives` (None: N = 1 and 2, fitted to the
        domain; sizes given are taken as they are, e.g. the final evaluation's, fitted already)."""
        out = {}
        for n in fit_objectives((1, 2), self.domain) if objectives is None else objectives:
            s = greedy_em(
                model,
                self.tokenizer,
                self.domain,
                split,
                n,
                tasks or self.args.em_tasks,
                seed=1,
                agent=self.args.agent,
                max_new_tokens=self.args.probe_max_new_tokens,
            )
            out[f"em_per_objective_n{n}"] = s["em_per_objective"]
            out[f"format_errors_n{n}"] = s["format_errors"]
        return out


# ---------------------------------------------------------------------------------------------
# Training


def _fast_sft_trainer():
    """TRL's SFTTrainer with a plain loss: the LM head on the scored positions, then one
    cross-entropy. TRL's default tiled log-prob head (built to spare GPU memory on big
    vocabularies) took ~38% of a step of the tiny model here; this is the same loss, faster."""
    from trl import SFTTrainer

    class FastSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"][:, 1:]
            keep = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
            # The LM head runs only where some row is scored (`logits_to_keep`), and the call goes
            # through `model` itself, so that under DDP the wrapper sees the forward and all-reduces.
            positions = (labels != -100).any(0).nonzero()[:, 0]  # (K,) positions over all rows
            logits = model(**keep, use_cache=False, logits_to_keep=positions).logits  # (B, K, V)
            targets = labels[:, positions]  # (B, K)
            scored = targets != -100
            logits, targets = logits[scored], targets[scored]
            n = num_items_in_batch if num_items_in_batch is not None else scored.sum()
            loss = F.cross_entropy(logits.float(), targets, reduction="sum") / torch.as_tensor(n).clamp(min=1)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                if self.accelerator.num_processes > 1:  # n counts every process's tokens; DDP averages
                    loss = loss * self.accelerator.num_processes
            mode = "train" if model.training else "eval"
            with torch.no_grad():
                accuracy = (
                    (logits.argmax(-1) == targets).float().mean() if targets.numel() else logits.new_zeros(())
                )
            self._metrics[mode]["mean_token_accuracy"].append(float(accuracy))
            return (loss, None) if return_outputs else loss

    return FastSFTTrainer


class EpisodePacks(torch.utils.data.Dataset):
    """[8] A stage's steps: each item one step's turn ranges (sft_data.episode_packs)."""

    def __init__(self, packs):
        self.packs = packs

    def __len__(self) -> int:
        return len(self.packs)

    def __getitem__(self, i: int) -> dict:
        return {"pieces": self.packs[i]}


EPISODE_BUCKETS = 3
"""[8] block stages of a step's packed layout (masks.py [11])"""


class EpisodeCollator:
    """[8] A step's turn ranges -> their `packed` layout (masks.py, `buckets` block stages), with the
    response tokens as `labels` / `shift_labels`, which the Trainer counts for `num_items_in_batch`
    (never fed)."""

    def __init__(self, episodes, buckets: int = EPISODE_BUCKETS):
        self.episodes, self.buckets = episodes, buckets

    def __call__(self, items: list[dict]) -> dict:
        pieces = [piece for item in items for piece in item["pieces"]]
        trajectories = [episode(self.episodes, e) for e, _, _ in pieces]
        turns = [range(a, b) for _, a, b in pieces]
        layout = build_packed(trajectories, turns=turns, buckets=self.buckets)
        targets = layout.target_ids[None]
        return {"layout": layout, "labels": targets, "shift_labels": targets}


def _episode_sft_trainer():
    """[8] transformers' Trainer with the loss of FastSFTTrainer computed through the packed layout:
    the LM head on the hidden state before each response token, one summed cross-entropy, divided
    by the step's response tokens."""
    from transformers import Trainer

    class EpisodeSFTTrainer(Trainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.model_accepts_loss_kwargs = True  # the loss below is divided by num_items_in_batch

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            layout = inputs["layout"]
            n = num_items_in_batch if num_items_in_batch is not None else layout.policy_tokens
            loss = episode_loss(model, layout) / torch.as_tensor(n).clamp(min=1)
            return (loss, None) if return_outputs else loss

    return EpisodeSFTTrainer


def episode_loss(model, layout) -> torch.Tensor:
    """[8] The summed cross-entropy of the response tokens of a `packed` layout: the LM head on the
    hidden state before each of them (masks.layout_hidden), half precision raised to float32."""
    logits = causal_lm(model).lm_head(layout_hidden(model, layout))  # (T, V)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, layout.target_ids.to(logits.device), reduction="sum")


def step_budget(args: SFTArgs, episodes) -> int:
    """[8] Response tokens of an episode step: what a step of turn rows of the same data holds on
    average, their response tokens x `grad_accum` / the packs TRL's best-fit-decreasing packing
    makes of them (at the pack length `fit_pack_length` gives). Not `max_length` x `grad_accum` x
    the response share: a pack of long rows is part empty (N = 1..16: ~5.2 k of 8.2 k tokens)."""
    lengths = turn_row_lengths(episodes)
    fitted = fit_pack_length(args, int(lengths.max()))
    scored = episode_totals(episodes)["scored"]
    return max(1, round(scored * fitted.grad_accum / best_fit_packs(lengths, fitted.max_length)))


def best_fit_packs(lengths, max_length: int) -> int:
    """How many packs of `max_length` best-fit-decreasing packing makes of rows of these lengths
    (trl's `pack_dataset(..., "bfd")`: longest first, each into the pack with the least room that
    holds it, else a new pack; a longer row is cut to a pack)."""
    rooms: list[int] = []  # sorted
    for n in sorted((min(int(x), max_length) for x in lengths), reverse=True):
        i = bisect.bisect_left(rooms, n)
        if i < len(rooms):
            room = rooms.pop(i) - n
        else:
            room = max_length - n
        bisect.insort(rooms, room)
    return len(rooms)


def stage_trainer(
    args: SFTArgs,
    stage: Stage,
    rows,
    model,
    tokenizer,
    output_dir: Path,
    seed: int,
    spec=None,
    grad_accum: int | None = None,
    budget: int | None = None,
    callbacks=None,
):
    """The Trainer of one stage: FastSFTTrainer on `rows` (turn rows, or the full view's episode
    rows) packed best-fit-decreasing, `grad_accum` packs a step; or, given a `budget`, [8] the
    episode trainer on steps of `budget` response tokens of the episodes `rows`. `seed` draws the
    stage's order; `spec` (default tiny) sets bfloat16 on a GPU and activation checkpointing."""
    from transformers import TrainingArguments
    from trl import SFTConfig

    spec = spec or resolve_model("tiny")
    cuda = torch.cuda.is_available()
    common = dict(
        output_dir=str(output_dir),
        learning_rate=stage.lr,
        lr_scheduler_type=stage.schedule,
        warmup_steps=stage.warmup_steps,
        max_steps=stage.max_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=1.0,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        bf16=spec.real and cuda,
        use_cpu=not cuda,
        ddp_find_unused_parameters=False,
        seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=not _tqdm_on(),
    )
    if budget is not None:  # [8] a step = one pack of turn ranges, one forward
        config = TrainingArguments(
            **common,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=1,
            remove_unused_columns=False,
        )
        make_trainer = _episode_sft_trainer()
        data = dict(
            train_dataset=EpisodePacks(episode_packs(rows, budget, seed=seed)),
            data_collator=EpisodeCollator(rows),
        )
    else:
        config = SFTConfig(
            **common,
            per_device_train_batch_size=args.batch_packs,
            gradient_accumulation_steps=grad_accum or args.grad_accum,
            packing=True,
            packing_strategy="bfd",
            max_length=args.max_length,
            # TRL turns activation checkpointing on by default; a 1.7 M model needs no memory saving,
            # and recomputing every forward cost ~30% of the step time here. A real model needs it.
            gradient_checkpointing=spec.gradient_checkpointing,
        )
        make_trainer = _fast_sft_trainer()
        data = dict(train_dataset=to_dataset(rows, stage.loss_on, seed=seed))
    return make_trainer(
        model=model, args=config, **data, processing_class=tokenizer, callbacks=list(callbacks or [])
    )


def fresh_model_assets(model: str) -> Path | None:
    """Where a from-scratch tiny model takes its tokenizer and config: data/tiny for `tiny`, or a
    folder `mem1 tokenizer --out DIR` wrote (tokenizer and untrained config, no weights), the way to
    train on a world of other names (tokenizer.require_name_parts); None for a model to load."""
    if model == "tiny":
        return TINY_DIR
    folder = Path(model)
    assets = ("config.json", "tokenizer.json", "tokenizer_config.json")
    weights = [*folder.glob("*.safetensors"), *folder.glob("*.bin"), folder / "adapter_config.json"]
    if all((folder / f).is_file() for f in assets) and not any(f.exists() for f in weights):
        return folder
    return None


def train_sft(args: SFTArgs) -> dict:
    """Run every stage, save the model with its card, and return the card. The main process holds
    the output's lock: a second run on the same --out is refused, naming this one."""
    check_output(args.out, folder=True)
    with one_run(args.out, f"training into {args.out}"):
        return _train_sft(args)


def _train_sft(args: SFTArgs) -> dict:
    import datasets
    from accelerate import PartialState
    from transformers import set_seed

    datasets.disable_progress_bars()
    cuda = torch.cuda.is_available()
    processes = PartialState(cpu=not cuda)  # [6] one process unless `accelerate launch` started several
    main = processes.is_main_process
    say = print if main else (lambda *a, **k: None)
    use_threads(args.threads, args.init or args.model, say=say)
    set_seed(args.seed)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose another --out or delete it")
    spec = resolve_model(args.init or args.model)
    check_whole_model(spec.path)  # an adapter (a PPO output) is no base to train
    check_rows(args)
    episodes = any(keeps_episodes(stage_args(args, s).rows, args.agent) for s in args.stages)  # [8]
    if episodes and (processes.num_processes > 1 or spec.gradient_checkpointing):
        raise ValueError(
            "--rows episode (mem1 view) runs in one process without activation checkpointing "
            f"(the packed layout reuses the prompt's KV cache): not for {spec.name} on "
            f"{processes.num_processes} process(es)"
        )
    domain = load_domain(args.env, args.data, pointer=args.pointer)  # bad options fail before any write
    args = fit_to_domain(args, domain)
    work = out.with_name(out.name + ".partial")
    progress = find_progress(work, args.stages)  # [7]
    if args.resume:
        check_resume(work, args)
    elif progress is not None:  # a fresh start would delete it
        raise FileExistsError(
            f"{work} holds an interrupted run's checkpoint; pass --resume to continue it, or delete {work}"
        )
    processes.wait_for_everyone()  # every process has looked at `out` before the main one writes
    if main and not args.resume:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        write_text(work / RUN_FILE, json.dumps(run_options(args), indent=1) + "\n")
    clock = _Budget()
    log_path = work / "probe.jsonl"
    if args.resume:
        where = progress.checkpoint or progress.stage_dir if progress is not None else "the first step"
        say(f"resuming {work} from {where}", flush=True)
        if main:
            restore_clock(clock, progress.record if progress is not None else {}, log_path)
    done = progress.stages_done if progress is not None else 0
    if done:  # [7] the model the finished stages left
        model, tokenizer = load_policy(progress.stage_dir)
    elif fresh_model_assets(spec.path) is None:  # float32; a real model gets bfloat16 autocast on a GPU below
        model, tokenizer = load_policy(spec.path)
    else:  # from scratch, with the shipped tokenizer or another world's (`mem1 tokenizer --out DIR`)
        tokenizer = load_tokenizer(fresh_model_assets(spec.path))
        model = build_tiny_model(seed=args.seed, tiny_dir=fresh_model_assets(spec.path))
    say(
        f"model: {spec.name}, {count_parameters(model) / 1e6:.2f} M parameters; "
        f"building teacher data ({args.tasks} tasks, "
        f"N in {list(args.objectives)}, agent {args.agent})",
        flush=True,
    )
    data = {}  # [9] each stage's data, built once for the stages that share it
    for stage in args.stages:
        key = stage_data_key(args, stage)
        if key not in data:
            with processes.main_process_first():  # [6] the others read the main process's cache
                data[key] = build_rows(
                    domain, tokenizer, stage_args(args, stage), progress=main and _tqdm_on(), say=say
                )
    first = next(iter(data.values()))
    n_samples, n_tokens = first.samples, first.tokens
    fitted = fit_pack_length(args, max(d.longest for d in data.values()))
    if fitted != args:
        say(
            f"longest sample {max(d.longest for d in data.values())} tokens > max_length {args.max_length}: "
            f"packing {fitted.max_length} tokens x {fitted.grad_accum} per step (the same tokens per step)",
            flush=True,
        )
        args = fitted
    probe = ReadingProbe(domain, tokenizer, args) if main else None
    # [6] the same tokens per optimizer step as one process: accumulation split over the processes
    grad_accum = max(1, round(args.grad_accum / processes.num_processes))
    if grad_accum * processes.num_processes != args.grad_accum:
        say(
            f"{processes.num_processes} processes x {grad_accum} accumulated packs per step "
            f"(one process: {args.grad_accum})",
            flush=True,
        )
    for i, stage in enumerate(args.stages):
        if i < done:  # [7] finished before the resume
            if main:
                shutil.rmtree(work / f"trainer-{stage.name}", ignore_errors=True)
            continue
        resume_from = progress.checkpoint if progress is not None and i == done else None
        stage_data = data[stage_data_key(args, stage)]
        trainer = stage_trainer(
            args,
            stage,
            stage_data.rows,
            model,
            tokenizer,
            work / f"trainer-{stage.name}",
            seed=args.seed + i,
            spec=spec,
            grad_accum=grad_accum,
            budget=stage_data.budget,
            callbacks=_callbacks(
                args,
                stage,
                clock,
                probe,
                log_path,
                processes,
                stage_index=i,
                stage_minutes=progress.record["stage_minutes"] if resume_from is not None else 0.0,
            ),
        )
        say(
            f"stage {stage.name}: loss on {stage.loss_on} tokens, {stage.rows or args.rows} rows, "
            f"lr {stage.lr}, {stage.schedule}, <= {stage.minutes} min",
            flush=True,
        )
        with writing(work / f"trainer-{stage.name}"):  # its checkpoints: a refused write in one line
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
        model = trainer.model
        if main:  # [7] the stage's model first, then its Trainer checkpoints may go
            save_stage(work, model, tokenizer, progress_record(clock, log_path, i, 0.0))
            shutil.rmtree(work / f"trainer-{stage.name}", ignore_errors=True)

    digests = _parameter_digests(model, processes)  # [6] DDP keeps the processes equal: checked
    if len(set(digests)) > 1:
        raise RuntimeError(f"the {processes.num_processes} processes ended with different weights: {digests}")
    if not main:
        return {}
    print(f"final evaluation (greedy, {args.agent} agent)", flush=True)
    final = {}
    for n in args.final_eval_objectives:
        final |= probe.em(model, objectives=(n,), tasks=args.final_eval_tasks)
    if args.sft_pool_eval_tasks:
        final |= {
            f"sft_pool_{k}": v
            for k, v in probe.em(
                model, fit_objectives((2,), probe.domain), tasks=args.sft_pool_eval_tasks, split="sft"
            ).items()
        }
    final |= probe.teacher_forced(model)
    with writing(work):
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
    shutil.rmtree(work / "snapshot", ignore_errors=True)  # the last probe's copy: the model is here now
    for name in (STAGE_DIR, STAGE_DIR + ".old"):  # [7] resume state: the run is complete now
        remove_folder(work / name, STAGE_MARKER)
    (work / RUN_FILE).unlink(missing_ok=True)
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    fig = probe_curves(
        records,
        title=f"SFT {args.preset} (N in {list(args.objectives)})",
        score=f"greedy dev {domain.score_name}",
    )
    save_figure(fig, work / "probe.png")
    card = {
        "kind": "sft",
        "command": " ".join(
            ["mem1 sft", f"--preset {args.preset}", f"--out {args.out}", f"--seed {args.seed}"]
            + (
                [f"--objectives {','.join(map(str, args.objectives))}"]
                if args.objectives != SFTArgs.objectives or args.env != "qa"  # webshop: sizes always named
                else []
            )
            + ([f"--agent {args.agent}"] if args.agent != "mem1" else [])
            + ([f"--rows {args.rows}"] if args.rows != "turn" else [])
            + ([f"--pointer {args.pointer}"] if args.pointer != "text" else [])
            + ([f"--tasks {args.tasks}"] if args.tasks != PRESETS.get(args.preset, {}).get("tasks") else [])
            + ([f"--env {args.env}"] if args.env != "qa" else [])
            + _minutes_scale_flag(args)
            + _lr_scale_flag(args)
            + ([f"--model {args.init or args.model}"] if spec.path != "tiny" else [])
        ),
        "model": spec.name,
        "processes": processes.num_processes,
        "parameter_sha256_per_process": digests,
        "args": asdict(args),
        "minutes": round(clock.minutes(), 1),
        "parameters": count_parameters(model),
        "rows": args.rows,
        "samples": n_samples,
        "tokens": n_tokens,
        **next(
            (
                {
                    "episodes": len(d.rows),
                    "response_tokens": d.response_tokens,
                    "step_response_tokens": d.budget,
                }
                for d in data.values()
                if d.budget is not None
            ),
            {},
        ),
        "dev_metrics": final,
        "sha256": {"model.safetensors": sha256_file(work / "model.safetensors")},
        "torch_threads": torch.get_num_threads(),
    }
    write_text(work / "card.json", json.dumps(card, indent=2) + "\n")
    if out.exists():
        out.rmdir()
    work.rename(out)
    print(json.dumps(card["dev_metrics"], indent=1))
    return card


def _minutes_scale_flag(args: SFTArgs) -> list[str]:
    """`--minutes-scale X` when the stages' minute caps are the preset's scaled (cli.py scales them)."""
    preset = PRESETS.get(args.preset, {}).get("stages")
    if not preset or not args.stages or args.stages[0].minutes == preset[0].minutes:
        return []
    return [f"--minutes-scale {args.stages[0].minutes / preset[0].minutes:g}"]


def _lr_scale_flag(args: SFTArgs) -> list[str]:
    """`--lr-scale X` when the stages' learning rates are the preset's scaled (cli.py scales them)."""
    preset = PRESETS.get(args.preset, {}).get("stages")
    if not preset or not args.stages or args.stages[0].lr == preset[0].lr:
        return []
    return [f"--lr-scale {args.stages[0].lr / preset[0].lr:g}"]


def check_rows(args: SFTArgs) -> None:
    """Episode rows: one causal row in the full view (sft_data.py [6]); in a pruning view the
    episode under the packed layout, which scores response tokens only [8]. Each stage may name
    its own rows [9]."""
    for stage in args.stages:
        mode = stage.rows or args.rows
        if mode not in ROWS:
            raise ValueError(f"rows must be one of {', '.join(ROWS)}, got {mode!r}")
        if keeps_episodes(mode, args.agent) and stage.loss_on != "response":
            raise ValueError(
                f"--rows episode ({args.agent} view) scores response tokens only: stage "
                f"{stage.name!r} has the loss on {stage.loss_on} tokens (use --rows turn, or a "
                "preset whose stages score responses, e.g. --preset long)"
            )
    if args.rows not in ROWS:
        raise ValueError(f"rows must be one of {', '.join(ROWS)}, got {args.rows!r}")


def stage_args(args: SFTArgs, stage: Stage) -> SFTArgs:
    """[9] The run's options as the stage's data see them: its rows mode and its data fields."""
    fields = dict(stage.data or {})
    bad = sorted(set(fields) - STAGE_DATA_FIELDS)
    if bad:
        raise ValueError(
            f"stage {stage.name!r}: data may set {', '.join(sorted(STAGE_DATA_FIELDS))}, not {bad}"
        )
    if "objectives" in fields:
        fields["objectives"] = tuple(fields["objectives"])
    return replace(args, rows=stage.rows or args.rows, **fields)


STAGE_DATA_FIELDS = {"objectives", "long_share", "tasks"}
"""[9] what a stage's `data` may change"""


def stage_data_key(args: SFTArgs, stage: Stage) -> str:
    """[9] Stages with the same key train on the same data (built once)."""
    return json.dumps({"rows": stage.rows or args.rows, **(stage.data or {})}, sort_keys=True)


@dataclass
class StageData:
    """[9] One rows mode's data: the rows (or episodes), the step budget of episodes (None for
    rows), and their size counted as turn rows."""

    rows: object
    budget: int | None
    samples: int
    tokens: int
    longest: int
    response_tokens: int | None = None


def build_rows(domain, tokenizer, args: SFTArgs, progress: bool, say=print) -> StageData:
    """The teacher's data in `args.rows` (sft_data.py), and the figures the run prints of them."""
    t0 = time.perf_counter()
    rows = teacher_sft_data(domain, tokenizer, args, progress=progress, log=say)
    if keeps_episodes(args.rows, args.agent):  # [8]
        totals, budget = episode_totals(rows), step_budget(args, rows)
        say(
            f"{len(rows)} episodes ({totals['turns']} turns, {totals['scored'] / 1e6:.2f} M response tokens; "
            f"as turn rows {totals['turn_tokens'] / 1e6:.1f} M tokens), in {time.perf_counter() - t0:.0f} s; "
            f"steps of {budget} response tokens (what a step of turn rows holds on average)",
            flush=True,
        )
        # an episode's turns are never packed as rows: no pack length to fit
        return StageData(rows, budget, totals["turns"], totals["turn_tokens"], 0, totals["scored"])
    lengths = row_lengths(rows)
    say(
        f"{len(rows)} samples, {int(lengths.sum()) / 1e6:.1f} M tokens, in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return StageData(rows, None, len(rows), int(lengths.sum()), int(lengths.max()))


def _parameter_digests(model, processes) -> list[str]:
    """Every process's sha256 of its weights' bytes, in rank order."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    if processes.num_processes == 1:
        return [h.hexdigest()]
    from accelerate.utils import gather_object

    return gather_object([h.hexdigest()])


def fit_to_domain(args: SFTArgs, domain) -> SFTArgs:
    """Bring the QA-shaped default task sizes within the domain's (WebShop-lite tasks have N = 1).
    Sizes a user chose are left alone: the domain then says what is wrong with them."""
    objectives = fit_default(args.objectives, SFTArgs.objectives, domain)
    final = fit_objectives(args.final_eval_objectives, domain)
    cap = getattr(domain, "max_objectives", None)
    if cap and max(objectives) > max(final):  # larger tasks than the defaults (WebShop's N = 2..4): those too
        final = tuple(n for n in args.final_eval_objectives if n <= min(cap, max(objectives))) or final
    return replace(args, objectives=objectives, final_eval_objectives=final)


def fit_pack_length(args: SFTArgs, longest: int) -> SFTArgs:
    """Packs long enough that no sample is cut (TRL truncates a sample longer than a pack, and a
    cut full-context sample loses the very response it teaches): the pack length doubles until the
    longest sample fits and accumulation halves with it, so an optimizer step sees the same tokens
    and the full-context baseline trains on the same budget as mem1."""
    max_length, grad_accum = args.max_length, args.grad_accum
    while max_length < longest:
        max_length *= 2
        grad_accum = max(1, grad_accum // 2)
    return replace(args, max_length=max_length, grad_accum=grad_accum)
