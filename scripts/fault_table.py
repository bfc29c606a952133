"""The fault table ("nothing lost, nothing silent"): each fault is made on a temporary
copy (a copied tiny checkpoint, world or PPO run), the command is run as a user would run it, and
its behaviour is read from the exit code, stderr and what is left on disk:

- clear error: a non-zero exit with one `mem1` error line, no traceback;
- recovered: the command carried on from what the fault left (a resume, a rebuilt cache, a dead
  run's lock taken over), said so, and the data at stake is whole;
- traceback (a Python traceback, or the one line `main` prints for an unexpected exception),
  silent accept, data lost, hang (no answer within `HANG_SECONDS`): the defects this table is
  there to find.

Issue #32 added its classes: write failures (a full disk on a small tmpfs where this runs as root,
a file size limit, read-only and wrong-type paths), one run per output folder, bounds on sizes,
trust only what was checked, SFT resume and data-cache faults, flags that do nothing.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/fault_table.py     # ~10 min; writes docs/results/faults.md

Nothing outside the temporary folder is written but the table (the SFT data cache is pointed at
the temporary folder by MEM1_CACHE_DIR).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mem1lite.files import write_text

ROOT = Path(__file__).resolve().parent.parent
MEM1 = [sys.executable, "-m", "mem1lite.cli"]
TABLE = ROOT / "docs" / "results" / "faults.md"
CHECKPOINT = ROOT / "data" / "checkpoints" / "sft-mem1"
"""the tiny checkpoint every model fault damages a copy of"""
HANG_SECONDS = 300
"""a command that has not answered by then is called a hang"""
PPO_OPTIONS = ["--episodes-per-step", "2", "--objectives", "1", "--threads", "1"]
"""a PPO run of tiny steps (one step of it makes the checkpoint the resume faults damage copies of)"""
CHECKPOINT_FILES = (
    "optimizer.pt",
    "adapter_model.safetensors",
    "value_head.pt",
    "state.json",
    "adapter_config.json",
)
"""the files of a PPO checkpoint"""


@dataclass
class Fault:
    """One fault: how to make it, the command that meets it, and what must survive it."""

    name: str
    """what goes wrong"""
    command: list[str]
    """arguments after `mem1` (or a full command when it starts with `python`); $T is the
    temporary folder"""
    setup: Callable[[Path], None] = lambda t: None
    """makes the damaged copy the command meets"""
    intact: Callable[[Path], bool] | None = None
    """True when the data the fault puts at stake survived (None: nothing at stake)"""
    recover: bool = False
    """the right behaviour is to carry on (resume, rebuild), not to refuse"""
    note: str = ""
    """shown beside the behaviour"""
    shown: str = ""
    """the command as the table shows it (default: `mem1` and the arguments)"""
    evidence: str = ""
    """for a command that carries on: the output line that shows it did (e.g. 'resumed from')"""
    asserts: str = ""
    """for a pytest row: the behaviour its passing test asserts (default 'recovered')"""
    file_limit: int | None = None
    """a file size limit (bytes, `ulimit -f`) the command runs under"""
    needs: str = ""
    """'full disk': skipped where no small file system can be mounted (not root)"""


@dataclass
class Outcome:
    fault: Fault
    behaviour: str
    said: str
    seconds: float


# ---------------------------------------------------------------------------------------------
# Making faults


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def model_copy(t: Path, name: str) -> Path:
    return copy(CHECKPOINT, t / name)


def ppo_copy(t: Path, name: str) -> Path:
    return copy(t / "ppo", t / name)


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def read_only(folder: Path) -> None:
    """A folder no one may write into. Root ignores permission bits, so root gets the immutable
    attribute instead (removed again by `writable`)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)


def writable(folder: Path) -> None:
    if folder.exists():
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        folder.chmod(0o755)


def ppo_checkpoint_step(run: Path) -> int | None:
    """The step of the complete checkpoint a PPO run holds (checkpoint, else checkpoint.old)."""
    for name in ("checkpoint", "checkpoint.old"):
        state = run / name / "state.json"
        if state.is_file():
            return json.loads(state.read_text())["step"]
    return None


def kill_between_the_swaps_renames(t: Path) -> None:
    """What a kill leaves between `checkpoint -> checkpoint.old` and the new one's rename, with a
    half-written temporary folder of the next save beside it."""
    run = ppo_copy(t, "killed")
    (run / "checkpoint").rename(run / "checkpoint.old")
    half = run / ".checkpoint.k1ll3d.tmp"
    half.mkdir()
    (half / "optimizer.pt").write_bytes(b"half a file")


def resumed_whole(run: Path) -> bool:
    """The resumed run's checkpoint is at step 2, nothing of the kill is left beside it."""
    leftovers = list(run.glob("checkpoint.old")) + list(run.glob(".checkpoint.*"))
    return ppo_checkpoint_step(run) == 2 and not leftovers


def only_a_checkpoint(t: Path) -> None:
    run = ppo_copy(t, "only-ckpt")
    for p in run.iterdir():
        if p.name != "checkpoint":
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def fake_interrupted_sft(t: Path) -> None:
    """An SFT run killed after its first stage: OUT.partial holds the stage's model and marker."""
    stage = t / "sft.partial" / "stage"
    shutil.copytree(CHECKPOINT, stage)
    (stage / "stage.json").write_text(json.dumps({"stage": 0, "minutes": 1.0, "probe_lines": 0}))
    (t / "sft.partial" / "run.json").write_text("{}")


def sft_cache(t: Path) -> None:
    """A cache of the SFT data (2 teacher tasks) under $T/cache, its arrow file cut in half."""
    run_python(t, SFT_CACHE_SNIPPET)
    (arrow,) = (t / "cache").glob("sft-*/*.arrow")
    truncate(arrow)


SFT_CACHE_SNIPPET = (
    "import pathlib, datasets, mem1lite.sft_data as s; from mem1lite.sft import SFTArgs; "
    "from mem1lite.domains import QADomain; "
    "from mem1lite.model import TINY_DIR, load_tokenizer; datasets.disable_progress_bars(); "
    "s.CACHE_DIR = pathlib.Path('$T/cache'); "
    "s.teacher_sft_data(QADomain(), load_tokenizer(TINY_DIR), SFTArgs(tasks=2, objectives=(1,)), "
    "progress=False)"
)


def sft_cache_rebuilt(t: Path) -> bool:
    (cached,) = (t / "cache").glob("sft-*")
    return any(cached.glob("*.arrow")) and not list((t / "cache").glob(".*.tmp"))


def run_python(t: Path, snippet: str) -> None:
    subprocess.run([sys.executable, "-c", snippet.replace("$T", str(t))], cwd=ROOT, check=True)


def world_copy(t: Path, name: str, change: Callable[[dict], None]) -> None:
    edit_json(copy(ROOT / "data" / "qa", t / name) / "manifest.json", change)


def records_with_wrong_types(t: Path) -> None:
    records = json.loads((ROOT / "docs" / "results" / "eval-qa.json").read_text())
    records[0]["em"], records[0]["objectives"] = "high", "two"
    (t / "records.json").write_text(json.dumps(records))


def deep_jsonl(t: Path) -> None:
    (t / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")


class Background:
    """A first `mem1 world` build running while the fault's command (the second) starts."""

    process: subprocess.Popen | None = None

    @classmethod
    def start_world_build(cls, t: Path) -> None:
        lock = t / "w.lock"
        cls.process = subprocess.Popen(
            [*MEM1, "world", "--out", str(t / "w")],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(600):  # the first build holds its lock (or has failed)
            if lock.exists() or cls.process.poll() is not None:
                break
            time.sleep(0.05)

    @classmethod
    def first_build_whole(cls, t: Path) -> bool:
        rc = cls.process.wait()
        check = subprocess.run(
            [*MEM1, "world", "--check", "--path", str(t / "w")], cwd=ROOT, capture_output=True
        )
        return rc == 0 and check.returncode == 0 and not (t / "w.lock").exists()


# ---------------------------------------------------------------------------------------------
# The faults


def faults() -> list[Fault]:
    ppo = ["ppo", "--init", "$T/model", *PPO_OPTIONS]
    resume = ["--steps", "2", "--resume"]
    pytest_kill = ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_ppo.py"]
    faults = [
        # earlier fixes
        Fault("--temperature nan", ["rollout", "--temperature", "nan", "--out", "$T/x.jsonl"]),
        Fault("negative --minutes", [*ppo, "--out", "$T/p", "--minutes", "-1"]),
        Fault("output path under /proc", ["eval", "--episodes", "1", "--json", "/proc/mem1/e.json"]),
        Fault("output path is a folder", ["eval", "--episodes", "1", "--json", "$T"]),
        Fault(
            "missing tokenizer.json",
            ["rollout", "--policy", "$T/no-tok", "--out", "$T/x.jsonl"],
            lambda t: (model_copy(t, "no-tok") / "tokenizer.json").unlink(),
        ),
        Fault(
            "read-only output folder",
            ["rollout", "--episodes", "1", "--out", "$T/ro/x.jsonl"],
            lambda t: read_only(t / "ro"),
            note="root: the folder is made immutable (chattr +i)" if os.geteuid() == 0 else "",
        ),
        # PPO checkpoints
        Fault(
            "ppo killed between the checkpoint swap's renames",
            [*ppo, "--out", "$T/killed", *resume],
            kill_between_the_swaps_renames,
            intact=lambda t: resumed_whole(t / "killed"),
            recover=True,
            note="resumed from checkpoint.old; the half-written temporary folder removed",
            evidence="resumed from",
        ),
        Fault(
            "ppo killed at each file operation of a checkpoint save",
            [*pytest_kill, "-k", "kill_at_any_instant"],
            recover=True,
            note="every instant in turn: a complete checkpoint found and loaded after each",
            shown="pytest tests/test_ppo.py -k kill_at_any_instant",
            evidence="passed",
        ),
        Fault(
            "ppo without --resume over a folder holding only a checkpoint",
            [*ppo, "--out", "$T/only-ckpt"],
            only_a_checkpoint,
            intact=lambda t: ppo_checkpoint_step(t / "only-ckpt") == 1,
        ),
        Fault(
            "ppo --resume over another base (--init)",
            ["ppo", "--init", "data/checkpoints/sft-full", *PPO_OPTIONS, "--out", "$T/other", *resume],
            lambda t: ppo_copy(t, "other"),
            intact=lambda t: ppo_checkpoint_step(t / "other") == 1,
        ),
    ]
    for name in CHECKPOINT_FILES:
        faults.append(
            Fault(
                f"ppo --resume, truncated checkpoint/{name}",
                [*ppo, "--out", f"$T/cut-{name}", *resume],
                lambda t, name=name: truncate(ppo_copy(t, f"cut-{name}") / "checkpoint" / name),
            )
        )
    faults += [
        # upper bounds
        Fault("--episodes 1e9", ["eval", "--episodes", "1000000000"]),
        Fault("--objectives 1000 (eval)", ["eval", "--objectives", "1000"]),
        Fault("--objectives 1000 (rollout)", ["rollout", "--objectives", "1000", "--out", "$T/x.jsonl"]),
        Fault("--tasks 1e9 (sft)", ["sft", "--out", "$T/s", "--tasks", "1000000000"]),
        # concurrent writers
        Fault(
            "two concurrent `mem1 world --out D`",
            ["world", "--out", "$T/w"],
            Background.start_world_build,
            intact=Background.first_build_whole,
            note="the second, started while the first generates; the first finishes whole",
        ),
        # loaders
        Fault(
            "truncated model.safetensors",
            ["rollout", "--policy", "$T/cut", "--out", "$T/x.jsonl"],
            lambda t: truncate(model_copy(t, "cut") / "model.safetensors"),
        ),
        Fault(
            "invalid config.json",
            ["rollout", "--policy", "$T/badcfg", "--out", "$T/x.jsonl"],
            lambda t: truncate(model_copy(t, "badcfg") / "config.json"),
        ),
        Fault(
            "corrupted SFT data cache",
            ["python", "-c", SFT_CACHE_SNIPPET],
            sft_cache,
            intact=sft_cache_rebuilt,
            recover=True,
            note="the loader run again over a cache whose arrow file was cut in half",
            shown="python -c '<sft_data.teacher_sft_data with runs/cache at $T/cache>'",
            evidence="mem1: warning",
        ),
        Fault(
            "sft without --resume over an interrupted run",
            ["sft", "--out", "$T/sft"],
            fake_interrupted_sft,
            intact=lambda t: (t / "sft.partial/stage/stage.json").is_file(),
        ),
        Fault(
            "QA manifest missing a key (sha256)",
            ["world", "--check", "--path", "$T/qa-nokey"],
            lambda t: world_copy(t, "qa-nokey", lambda m: m.pop("sha256")),
        ),
        Fault(
            "QA manifest holding a null (config.seed)",
            ["world", "--check", "--path", "$T/qa-null"],
            lambda t: world_copy(t, "qa-null", lambda m: m["config"].update(seed=None)),
        ),
        Fault(
            "eval --records with wrong field types",
            ["eval", "--records", "$T/records.json"],
            records_with_wrong_types,
            note="evaluate.load_records checks each contract field's type",
        ),
        Fault(
            "inspect a jsonl line nested 100,000 deep",
            ["inspect", "$T/deep.jsonl", "--episode", "0", "--html", "$T/deep.html"],
            deep_jsonl,
        ),
    ]
    return faults + faults_32()


# ---------------------------------------------------------------------------------------------
# Issue #32's classes


class FullDisk:
    """A 1 MiB tmpfs at $T/full, filled to the last byte (root only; `mounted` False elsewhere)."""

    mounted = False

    @classmethod
    def mount(cls, t: Path) -> None:
        full = t / "full"
        full.mkdir()
        if os.geteuid() != 0:
            return
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], capture_output=True
        )
        if done.returncode != 0:
            return
        cls.mounted = True
        for name in ("eval-figs", "ppo", "world", "sft"):
            (full / name).mkdir()

    FREE = 16 << 10
    """bytes left free before each fault: a lock file and a small log fit, a figure or a checkpoint
    does not, so the disk fills in the middle of the command's writes"""

    @classmethod
    def top_up(cls, t: Path) -> None:
        """Fill the disk to the last byte, then free `FREE` bytes of the filler."""
        filler = t / "full" / "filler"
        try:  # every byte taken (the last write fails, and so may the close's flush)
            with open(filler, "ab", buffering=0) as f:
                while True:
                    f.write(b"\0" * 4096)
        except OSError:
            pass
        os.truncate(filler, max(0, filler.stat().st_size - cls.FREE))

    @classmethod
    def unmount(cls, t: Path) -> None:
        if cls.mounted:
            subprocess.run(["umount", str(t / "full")], check=False)
            cls.mounted = False


def no_empty_png(folder: Path) -> bool:
    """No 0-byte (or cut) PNG where a report reads its figures."""
    return all(p.stat().st_size > 100 for p in folder.glob("*.png"))


def no_leftovers(folder: Path) -> bool:
    """No temporary file or folder, and no lock, left after a failed write."""
    return not [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".lock"))]


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - 200] ^= 0x01  # inside the last tensor's data: safetensors reads it without a word
    path.write_bytes(bytes(data))


def records_with(t: Path, name: str, **change) -> None:
    records = json.loads((ROOT / "docs" / "results" / "eval-qa.json").read_text())
    records[0].update(change)
    (t / name).write_text(json.dumps(records))


def jsonl_edit(t: Path, name: str, change: Callable[[dict], None]) -> None:
    lines = [json.loads(line) for line in (t / "m.jsonl").read_text().splitlines()]
    for d in lines:
        change(d)
    (t / name).write_text("".join(json.dumps(d) + "\n" for d in lines))


def smaller_vocabulary(t: Path) -> None:
    """A checkpoint whose embedding has 1,000 rows beside the 5,668-token tokenizer."""
    run_python(
        t,
        "import json, shutil, pathlib; from safetensors.torch import load_file, save_file; "
        f"d = pathlib.Path('$T/vocab'); shutil.copytree('{CHECKPOINT}', d); "
        "c = json.loads((d / 'config.json').read_text()); c['vocab_size'] = 1000; "
        "(d / 'config.json').write_text(json.dumps(c)); (d / 'card.json').unlink(); "
        "w = load_file(str(d / 'model.safetensors')); "
        "w = {k: (v[:1000].clone() if v.shape[0] > 5000 else v) for k, v in w.items()}; "
        "save_file(w, str(d / 'model.safetensors'), metadata={'format': 'pt'})",
    )


def no_adapter_weights(t: Path) -> None:
    run = copy(ROOT / "data" / "checkpoints" / "ppo-mem1", t / "no-adapter")
    (run / "adapter_model.safetensors").unlink()
    cfg = run / "adapter_config.json"
    edit_json(cfg, lambda c: c.update(base_model_name_or_path=str(CHECKPOINT)))


def stale_lock(t: Path) -> None:
    (t / "w2.lock").write_text(
        '{"pid": 99999999, "started": "2026-01-01 00:00:00", "command": "mem1 world"}\n'
    )


class SecondRun:
    """A first `mem1 ppo` (three steps) running while the fault's command, the same --out, starts."""

    process: subprocess.Popen | None = None

    @classmethod
    def start_ppo(cls, t: Path) -> None:
        lock = t / "twice.lock"
        argv = [
            *MEM1,
            "ppo",
            "--init",
            str(t / "model"),
            *PPO_OPTIONS,
            "--steps",
            "3",
            "--out",
            str(t / "twice"),
        ]
        cls.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV | {"MEM1_CACHE_DIR": str(t / "cache")},
        )
        for _ in range(1200):
            if lock.exists() or cls.process.poll() is not None:
                break
            time.sleep(0.05)

    @classmethod
    def first_whole(cls, t: Path) -> bool:
        """The first run finished, its log holds its steps once each, nothing of the second's."""
        rc = cls.process.wait()
        steps = [json.loads(line)["step"] for line in (t / "twice" / "log.jsonl").read_text().splitlines()]
        once = steps == sorted(set(steps)) and steps[-1] == 3  # each step once, none of a second run
        return rc == 0 and once and ppo_checkpoint_step(t / "twice") == 3


KILLED_WORKER_SNIPPET = (
    "import os, threading, time, multiprocessing as mp, datasets, mem1lite.sft_data as s; "
    "from mem1lite.sft import SFTArgs; from mem1lite.domains import QADomain; "
    "from mem1lite.model import TINY_DIR, load_tokenizer; datasets.disable_progress_bars()\n"
    "def kill():\n"
    "    while not mp.active_children(): time.sleep(0.05)\n"
    "    time.sleep(7.0); os.kill(mp.active_children()[0].pid, 9)\n"
    "threading.Thread(target=kill, daemon=True).start()\n"
    "s.teacher_sft_data(QADomain(), load_tokenizer(TINY_DIR), SFTArgs(tasks=12000, objectives=(1,), "
    "data_workers=2), progress=False)"
)
"""a data build on two workers whose helper is killed (SIGKILL) 7 s after it starts (playing by then)"""


def killed_worker_cli(t: Path) -> None:
    """The snippet as a script (spawned workers import the main module again: it must be guarded),
    its error said as `mem1` says it."""
    body = "".join("    " + line + "\n" for line in KILLED_WORKER_SNIPPET.splitlines())
    (t / "killed-worker.py").write_text(
        "import sys\nfrom mem1lite.cli import error_line\n\n\ndef main():\n" + body + "\n\n"
        "if __name__ == '__main__':\n    try:\n        main()\n    except Exception as exc:\n"
        "        print(f'mem1: error: {error_line(exc)}', file=sys.stderr)\n        sys.exit(2)\n"
    )


def faults_32() -> list[Fault]:
    ppo = ["ppo", "--init", "$T/model", *PPO_OPTIONS]
    pytest = ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    records = ["eval", "--records", "docs/results/eval-qa.json"]
    return [
        # 1. write failures after the up-front check: one line naming the path and the cause
        Fault(
            "disk full: eval --figures",
            [*records, "--figures", "$T/full/eval-figs"],
            needs="full disk",
            intact=lambda t: no_empty_png(t / "full" / "eval-figs"),
        ),
        Fault(
            "disk full: rollout",
            ["rollout", "--episodes", "16", "--out", "$T/full/x.jsonl"],
            needs="full disk",
            intact=lambda t: no_leftovers(t / "full"),
        ),
        Fault(
            "disk full: world",
            ["world", "--out", "$T/full/world/w"],
            needs="full disk",
            intact=lambda t: no_leftovers(t / "full" / "world"),
        ),
        Fault(
            "disk full: ppo",
            [*ppo, "--steps", "1", "--out", "$T/full/ppo/p"],
            needs="full disk",
            intact=lambda t: no_leftovers(t / "full" / "ppo"),
        ),
        Fault(
            "disk full: tokenizer",
            ["tokenizer", "--out", "$T/full/tok"],
            needs="full disk",
            intact=lambda t: not list((t / "full").glob(".tok.*")) and not (t / "full" / "tok").exists(),
        ),
        Fault(
            "disk full: sft",
            ["sft", "--out", "$T/full/sft/s", "--tasks", "2", "--objectives", "1", "--minutes-scale", "0.01"],
            needs="full disk",
        ),
        Fault("file size limit (100 kB): world", ["world", "--out", "$T/big-w"], file_limit=100_000),
        Fault(
            "file size limit (100 kB): ppo", [*ppo, "--steps", "1", "--out", "$T/big-p"], file_limit=100_000
        ),
        Fault(
            "file size limit (100 kB): eval --figures",
            [*records, "--figures", "$T/big-figs"],
            file_limit=100_000,
            intact=lambda t: no_empty_png(t / "big-figs"),
        ),
        Fault(
            "read-only folder: ppo --out",
            [*ppo, "--steps", "1", "--out", "$T/ro/p"],
            lambda t: read_only(t / "ro"),
        ),
        Fault(
            "read-only folder: eval --figures",
            [*records, "--figures", "$T/ro/figs"],
            lambda t: read_only(t / "ro"),
        ),
        Fault("--out is a file: ppo", [*ppo, "--out", "$T/afile"], lambda t: (t / "afile").write_text("x")),
        Fault("--out is a file: sft", ["sft", "--out", "$T/afile"], lambda t: (t / "afile").write_text("x")),
        Fault(
            "--out is a file: tokenizer",
            ["tokenizer", "--out", "$T/afile"],
            lambda t: (t / "afile").write_text("x"),
        ),
        Fault(
            "--figures is a file: eval",
            [*records, "--figures", "$T/afile"],
            lambda t: (t / "afile").write_text("x"),
        ),
        Fault("--json is a folder: bench retrieval", ["bench", "retrieval", "--limit", "5", "--json", "$T"]),
        Fault("--html is a folder: inspect", ["inspect", "$T/m.jsonl", "--episode", "0", "--html", "$T"]),
        Fault(
            "cache path is a file (MEM1_CACHE_DIR)",
            ["sft", "--out", "$T/s-cache", "--tasks", "2"],
            lambda t: (t / "cache-file").write_text("x"),
            shown="MEM1_CACHE_DIR=$T/cache-file mem1 sft ...",
        ),
        # 2. one run per output folder
        Fault(
            "two concurrent `mem1 ppo --out D`",
            [*ppo, "--steps", "3", "--out", "$T/twice"],
            SecondRun.start_ppo,
            intact=SecondRun.first_whole,
            note="the second, started while the first trains; the first finishes whole, its log alone",
        ),
        Fault(
            "a lock left by a killed world build",
            ["world", "--out", "$T/w2"],
            stale_lock,
            recover=True,
            evidence="took over",
            intact=lambda t: (t / "w2" / "manifest.json").is_file(),
        ),
        Fault(
            "two sft runs on one --out",
            [*pytest, "tests/test_sft.py", "-k", "second_run"],
            shown="pytest tests/test_sft.py -k second_run",
            evidence="passed",
            asserts="clear error",
            note="the second refused naming the first's pid and start; nothing written",
        ),
        # 3. bounds before work
        Fault("--threads 100000", ["eval", "--episodes", "1", "--threads", "100000"]),
        Fault(
            "--max-new-tokens 1e9 (bench generate)", ["bench", "generate", "--max-new-tokens", "1000000000"]
        ),
        Fault("bench data --tasks 1e9", ["bench", "data", "--tasks", "1000000000"]),
        Fault("bench sft --episodes 1e6", ["bench", "sft", "--episodes", "1000000"]),
        Fault("empty --engines", ["bench", "generate", "--engines", ","]),
        Fault("--seed -1", ["world", "--out", "$T/neg", "--seed", "-1"]),
        Fault("ppo --steps 1e9", [*ppo, "--out", "$T/p9", "--steps", "1000000000"]),
        # 4. trust only what was checked
        Fault(
            "a byte flipped in model.safetensors (card holds its sha256)",
            ["rollout", "--policy", "$T/flip", "--episodes", "1", "--out", "$T/x.jsonl"],
            lambda t: flip_a_byte(model_copy(t, "flip") / "model.safetensors"),
        ),
        Fault(
            "card.json is not an object",
            ["rollout", "--policy", "$T/card", "--out", "$T/x.jsonl"],
            lambda t: (model_copy(t, "card") / "card.json").write_text("[1, 2]"),
        ),
        Fault(
            "card.json is binary garbage",
            ["rollout", "--policy", "$T/card2", "--out", "$T/x.jsonl"],
            lambda t: (model_copy(t, "card2") / "card.json").write_bytes(b"\x89PNG\x00\xff\xfe"),
        ),
        Fault(
            "a checkpoint's vocabulary differs from its tokenizer's",
            ["rollout", "--policy", "$T/vocab", "--out", "$T/x.jsonl"],
            smaller_vocabulary,
        ),
        Fault(
            "garbage tokenizer_config.json",
            ["rollout", "--policy", "$T/tokcfg", "--out", "$T/x.jsonl"],
            lambda t: (model_copy(t, "tokcfg") / "tokenizer_config.json").write_text("{ garbage"),
        ),
        Fault(
            "an adapter without weights",
            ["rollout", "--policy", "$T/no-adapter", "--out", "$T/x.jsonl"],
            no_adapter_weights,
        ),
        Fault(
            "ppo --init is an adapter",
            ["ppo", "--init", "data/checkpoints/ppo-mem1", *PPO_OPTIONS, "--out", "$T/p-adapter"],
        ),
        Fault(
            "records with EM inf",
            ["eval", "--records", "$T/inf.json"],
            lambda t: records_with(t, "inf.json", em=float("inf")),
        ),
        Fault(
            "records with EM -5",
            ["eval", "--records", "$T/neg.json"],
            lambda t: records_with(t, "neg.json", em=-5),
        ),
        Fault(
            "inspect --compare of another world's task (same id)",
            ["inspect", "$T/m.jsonl", "--episode", "0", "--html", "$T/c.html", "--compare", "$T/other.jsonl"],
            lambda t: jsonl_edit(
                t,
                "other.jsonl",
                lambda d: d.update(agent="full", questions=[q + " (elsewhere)" for q in d["questions"]]),
            ),
        ),
        Fault(
            "inspect: token ids out of the tokenizer's range",
            ["inspect", "$T/big-ids.jsonl", "--episode", "0", "--html", "$T/b.html"],
            lambda t: jsonl_edit(t, "big-ids.jsonl", lambda d: d["prompt_ids"].append(10**6)),
        ),
        Fault("a QA world given as a WebShop-lite store", ["webshop", "--check", "--data", "data/qa"]),
        Fault("a WebShop-lite store given as a QA world", ["world", "--check", "--data", "data/webshop"]),
        Fault(
            "QA manifest whose counts are a string",
            ["world", "--check", "--path", "$T/qa-counts"],
            lambda t: world_copy(t, "qa-counts", lambda m: m.update(counts="12")),
        ),
        # 5. SFT resume and the data cache
        Fault(
            "a damaged Trainer file under sft --resume",
            [*pytest, "tests/test_sft.py", "-k", "damaged_trainer"],
            shown="pytest tests/test_sft.py -k damaged_trainer",
            evidence="passed",
            asserts="clear error",
            note="a byte flipped in checkpoint-2/optimizer.pt: named, the checkpoint kept",
        ),
        Fault(
            "stale .sft-*.tmp build folders after a kill",
            [*pytest, "tests/test_sft_data.py", "-k", "killed_builds"],
            shown="pytest tests/test_sft_data.py -k killed_builds",
            evidence="passed",
            recover=True,
            note="a dead builder's folder removed at the next start, a live one's kept",
        ),
        Fault(
            "a data worker killed (SIGKILL) mid-build",
            ["python", "$T/killed-worker.py"],
            killed_worker_cli,
            shown="python -c '<sft_data.teacher_sft_data on two workers, the helper killed>'",
            recover=True,
            evidence="mem1: note: a teacher data worker died",
            note="either the worker had claimed a shard (one line, nothing cached) or this process "
            "played every shard itself (the same rows)",
        ),
        Fault("--data-workers 1000", ["sft", "--out", "$T/s-workers", "--data-workers", "1000"]),
        Fault(
            "a KV cache past the free memory (batch 4,096 x 8,192 new tokens)",
            [
                "eval",
                "--policy",
                "$T/model",
                "--agents",
                "mem1",
                "--objectives",
                "1",
                "--episodes",
                "4096",
                "--batch-size",
                "4096",
                "--max-new-tokens",
                "8192",
            ],
        ),
        Fault(
            "a byte flipped in a PPO checkpoint's adapter (--resume)",
            [*ppo, "--out", "$T/flip-ckpt", "--steps", "2", "--resume"],
            lambda t: flip_a_byte(ppo_copy(t, "flip-ckpt") / "checkpoint" / "adapter_model.safetensors"),
            intact=lambda t: ppo_checkpoint_step(t / "flip-ckpt") == 1,
        ),
        Fault("ppo --episodes-per-step 1e5", [*ppo, "--out", "$T/p-eps", "--episodes-per-step", "100000"]),
        Fault(
            "--json /dev/full (a device)",
            [*records, "--json", "/dev/full"],
            intact=lambda t: Path("/dev/full").is_char_device(),
        ),
        Fault(
            "a WebShop-lite checkpoint played on the QA world",
            ["rollout", "--policy", "data/checkpoints/sft-webshop", "--out", "$T/x.jsonl"],
        ),
        Fault(
            "diagnose a WebShop-lite checkpoint (QA only)",
            ["diagnose", "--policy", "data/checkpoints/sft-webshop", "--episodes", "1"],
        ),
        Fault(
            "sft --init is an adapter",
            ["sft", "--out", "$T/s-adapter", "--init", "data/checkpoints/ppo-mem1"],
        ),
        # 6. flags that do nothing in the chosen mode
        Fault("eval --records with --policy", [*records, "--policy", "sft"]),
        Fault("ppo --group under the GAE advantage", [*ppo, "--out", "$T/p-group", "--group", "4"]),
        Fault("bench data with --limit (a retrieval flag)", ["bench", "data", "--limit", "5"]),
    ]


# ---------------------------------------------------------------------------------------------
# Running and reading


def full_command(fault: Fault, t: Path) -> list[str]:
    args = [a.replace("$T", str(t)) for a in fault.command]
    return [sys.executable, *args[1:]] if args[0] == "python" else [*MEM1, *args]


def shown_command(fault: Fault) -> str:
    return fault.shown or "mem1 " + " ".join(a.replace(str(ROOT) + "/", "") for a in fault.command)


def classify(rc: int, out: str, err: str, fault: Fault, intact: bool | None) -> tuple[str, str]:
    """(behaviour, the line that says it) from the exit code, stdout, stderr and the data at stake."""
    lines = [line for line in err.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("mem1")]
    message = said[-1] if said else (lines[-1] if lines else "")
    if intact is False:
        return "data lost", message
    unexpected = any(line.startswith("mem1: error: unexpected ") for line in said)
    if "Traceback (most recent call last)" in err or unexpected or rc not in (0, 2):
        return "traceback", message
    if rc == 0:
        shown = [line for line in (out + err).splitlines() if fault.evidence and fault.evidence in line]
        if (fault.recover or fault.asserts) and shown:
            return fault.asserts or "recovered", shown[-1].strip()
        return "silent accept", message
    errors = [line for line in said if ": error:" in line]
    return ("clear error" if len(errors) == 1 else "unclear error"), message


ENV = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(fault: Fault, t: Path) -> Outcome:
    t0 = time.perf_counter()
    if fault.needs == "full disk" and not FullDisk.mounted:
        return Outcome(fault, "skipped", "no tmpfs could be mounted (not root)", 0.0)
    if fault.needs == "full disk":
        FullDisk.top_up(t)
    limit = fault.file_limit

    def limits() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    env = ENV | {"MEM1_CACHE_DIR": str(t / ("cache-file" if "cache-file" in fault.shown else "cache"))}
    try:
        fault.setup(t)
        try:
            proc = subprocess.run(
                full_command(fault, t), cwd=ROOT, capture_output=True, text=True, env=env,
                preexec_fn=limits, timeout=HANG_SECONDS,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            return Outcome(
                fault, "hang", f"no answer in {HANG_SECONDS} s ({str(exc.stderr or '')[-100:]})", HANG_SECONDS
            )
        intact = fault.intact(t) if fault.intact is not None else None
    finally:
        writable(t / "ro")
    behaviour, said = classify(proc.returncode, proc.stdout, proc.stderr, fault, intact)
    said = re.sub(r"pid \d+", "pid N", said.replace(str(t), "$T").replace(str(ROOT) + "/", ""))
    return Outcome(fault, behaviour, said, time.perf_counter() - t0)


def prepare(t: Path) -> None:
    """The shared copies: the tiny checkpoint, a one-step PPO run over it, two teacher episodes
    (the inspector's faults) and the full disk."""
    copy(CHECKPOINT, t / "model")
    env = ENV | {"MEM1_CACHE_DIR": str(t / "cache")}
    subprocess.run(
        [*MEM1, "ppo", "--init", str(t / "model"), "--out", str(t / "ppo"), "--steps", "1", *PPO_OPTIONS],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env=env,
    )
    subprocess.run(
        [*MEM1, "rollout", "--episodes", "2", "--out", str(t / "m.jsonl")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    FullDisk.mount(t)


def markdown(outcomes: list[Outcome], counts: Counter, seconds: float) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("`", "'")

    rows = [
        f"| {cell(o.fault.name)} | `{cell(shown_command(o.fault))}` | **{o.behaviour}**"
        + (f" ({cell(o.fault.note)})" if o.fault.note else "")
        + f" | {cell(o.said[:220])} |"
        for o in outcomes
    ]
    summary = ", ".join(f"{counts[k]} {k}" for k in BEHAVIOURS if counts[k])
    return "\n".join(
        [
            "# Fault table: nothing lost, nothing silent, every failure one line",
            "",
            "Written by `scripts/fault_table.py`: each fault made on a temporary copy ($T), the command",
            "run as a user would, the behaviour read from its exit code, stderr and what is left on disk.",
            "'What it said' is the command's last `mem1` line, or the line that shows it carried on.",
            "",
            f"{len(outcomes)} faults tried: {summary} ({seconds / 60:.1f} min on one thread).",
            "",
            "| fault | command | behaviour | what it said |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )


BEHAVIOURS = ("clear error", "recovered", "unclear error", "traceback", "silent accept", "data lost", "hang")
BEHAVIOURS += ("skipped",)


def main() -> int:
    t0 = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="mem1-faults-") as tmp:
        t = Path(tmp)
        try:
            prepare(t)
            for fault in faults():
                outcomes.append(run(fault, t))
                o = outcomes[-1]
                print(f"{o.behaviour:14s} {o.seconds:5.1f} s  {fault.name}", flush=True)
        finally:
            writable(t / "ro")
            FullDisk.unmount(t)
    counts = Counter(o.behaviour for o in outcomes)
    seconds = time.perf_counter() - t0
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    write_text(TABLE, markdown(outcomes, counts, seconds))
    print(
        f"tried {len(outcomes)}: clear errors {counts['clear error']}, recovered {counts['recovered']}, "
        f"unclear errors {counts['unclear error']}, tracebacks {counts['traceback']}, "
        f"silent {counts['silent accept']}, data lost {counts['data lost']}, hangs {counts['hang']}, "
        f"skipped {counts['skipped']} ({seconds / 60:.1f} min); "
        f"wrote {TABLE.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
