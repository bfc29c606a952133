"""`mem1 demo` quiet and beside a busy CPU job, under the thread policy and under torch's default.

    .venv/bin/python scripts/thread_check.py [--rounds 2] [--json runs/thread-check.json]

Each round runs four demos back to back, in an order that alternates between rounds: the thread
policy (threads.py, one thread for the tiny model) alone and beside one busy process (a Python
loop that keeps one core at 100%), and `--threads <cores>` (torch's own default before the
policy) alone and beside the same busy process. It prints each median and the ratios "busy /
quiet" side by side: issue #20's goal is a busy / quiet ratio of at most 1.5 under the policy.
Every demo writes to a fresh temporary folder; nothing in runs/ is touched unless --json is given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def demo_seconds(threads: int | None, busy: bool) -> float:
    """Wall seconds of one `mem1 demo` (into a temporary folder), optionally beside a busy loop."""
    hog = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "mem1lite.cli", "demo", "--out", out]
            cmd += ["--threads", str(threads)] if threads else []
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
            start = time.perf_counter()
            subprocess.run(
                cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            return time.perf_counter() - start
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the four demos (median over them)")
    parser.add_argument("--json", default=None, help="write the measurements here")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    cores = os.cpu_count() or 1
    cases = [
        ("policy", None, False),
        ("policy", None, True),
        ("default", cores, False),
        ("default", cores, True),
    ]
    times: dict[tuple[str, bool], list[float]] = {(name, busy): [] for name, _, busy in cases}
    load = os.getloadavg()[0]
    for r in range(args.rounds):
        for name, threads, busy in cases if r % 2 == 0 else cases[::-1]:
            seconds = demo_seconds(threads, busy)
            times[(name, busy)].append(seconds)
            print(f"round {r + 1}: {name:7s} {'busy ' if busy else 'quiet'} {seconds:6.1f} s", flush=True)
    med = {key: statistics.median(v) for key, v in times.items()}
    print(
        f"\nmem1 demo, {cores} cores, median of {args.rounds} round(s), load average {load:.1f} at the start"
    )
    print(f"{'threads':>28s}  quiet s  busy s  busy/quiet")
    rows = []
    for name, label in (
        ("policy", "policy (1 for the tiny model)"),
        ("default", f"--threads {cores} (torch default)"),
    ):
        quiet, busy = med[(name, False)], med[(name, True)]
        print(f"{label:>28s}  {quiet:7.1f}  {busy:6.1f}  {busy / quiet:10.2f}")
        rows.append({"threads": name, "quiet_s": quiet, "busy_s": busy, "busy_over_quiet": busy / quiet})
    ratio = med[("default", True)] / med[("policy", True)]
    print(f"beside a busy job, torch's default takes {ratio:.2f}x the policy's time")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"cores": cores, "rounds": args.rounds, "load": load, "rows": rows})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
