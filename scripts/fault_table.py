"""The fault table ("nothing lost, nothing silent"): each fault is made on a temporary
copy (a copied tiny checkpoint, world or PPO run), the command is run as a user would run it, and
its behaviour is read from the exit code, stderr and what is left on disk:

- clear error: a non-zero exit with one `mem1` error line, no traceback;
- recovered: the command carried on from what the fault left (a resume, a rebuilt cache), said so
  where it rebuilt something, and the data at stake is whole;
- traceback / silent accept / data lost: the defects this table is there to find.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/fault_table.py     # ~2-3 min; writes docs/results/faults.md

Nothing outside the temporary folder is written but the table.
"""

from __future__ import annotations

import json
import os
import re
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
    return faults


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
    if "Traceback (most recent call last)" in err or rc not in (0, 2):
        return "traceback", message
    if rc == 0:
        shown = [line for line in (out + err).splitlines() if fault.evidence and fault.evidence in line]
        if fault.recover and shown:
            return "recovered", shown[-1].strip()
        return "silent accept", message
    errors = [line for line in said if ": error:" in line]
    return ("clear error" if len(errors) == 1 else "unclear error"), message


def run(fault: Fault, t: Path) -> Outcome:
    t0 = time.perf_counter()
    try:
        fault.setup(t)
        env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(full_command(fault, t), cwd=ROOT, capture_output=True, text=True, env=env)
        intact = fault.intact(t) if fault.intact is not None else None
    finally:
        writable(t / "ro")
    behaviour, said = classify(proc.returncode, proc.stdout, proc.stderr, fault, intact)
    said = re.sub(r"pid \d+", "pid N", said.replace(str(t), "$T").replace(str(ROOT) + "/", ""))
    return Outcome(fault, behaviour, said, time.perf_counter() - t0)


def prepare(t: Path) -> None:
    """The shared copies: the tiny checkpoint and a one-step PPO run over it."""
    copy(CHECKPOINT, t / "model")
    subprocess.run(
        [*MEM1, "ppo", "--init", str(t / "model"), "--out", str(t / "ppo"), "--steps", "1", *PPO_OPTIONS],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


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
            "# Fault table (issue 18: nothing lost, nothing silent)",
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


BEHAVIOURS = ("clear error", "recovered", "unclear error", "traceback", "silent accept", "data lost")


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
    counts = Counter(o.behaviour for o in outcomes)
    seconds = time.perf_counter() - t0
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    write_text(TABLE, markdown(outcomes, counts, seconds))
    print(
        f"tried {len(outcomes)}: clear errors {counts['clear error']}, recovered {counts['recovered']}, "
        f"unclear errors {counts['unclear error']}, tracebacks {counts['traceback']}, "
        f"silent {counts['silent accept']}, data lost {counts['data lost']} ({seconds / 60:.1f} min); "
        f"wrote {TABLE.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
