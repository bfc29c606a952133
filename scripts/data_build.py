"""Build the QA teacher data for SFT (N = 1..16 by default) with whichever mem1lite is first on the
path, and print one JSON line: seconds (rows, labels), peak memory, and a digest of the rows.

It times the builder of any commit, so that today's can be set beside an older one's in one
script (issue #22 compares with the builder it was filed against, da009cb~1):

    git worktree add /tmp/mem1-at-filing da009cb~1
    PYTHONPATH=/tmp/mem1-at-filing .venv/bin/python scripts/data_build.py --tasks 9000 --workers 1
    .venv/bin/python scripts/data_build.py --tasks 9000 --workers 2

Both print the same `digest` when they build the same rows. Memory: `peak_rss_mb` is the process's
high-water mark (VmHWM, as `time -v` reports it); `peak_anon_mb` / `peak_file_mb` split it, sampled
every 50 ms, into memory the process owns and pages of files it has mapped (the kernel can drop
those); `helpers_peak_rss_mb` is the largest of its worker processes'. The domain and tokenizer are
loaded, and the sft pool's index built, before the clock starts: every builder needs them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

PEAK = {"anon": 0.0, "file": 0.0}


def _sample() -> None:
    while True:
        status = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith("Rss"))
        for key, field in (("anon", "RssAnon"), ("file", "RssFile")):
            PEAK[key] = max(PEAK[key], int(status[field].split()[0]) / 1024)
        time.sleep(0.05)


def _digest(rows) -> str:
    """sha256 over each column's row lengths and values (int64), chunk by chunk: sft_data.rows_digest
    for turn rows, copied here because the commits this script times against predate it."""
    import numpy as np
    import pyarrow.compute as pc

    digest = hashlib.sha256()
    for column in ("input_ids", "response_mask"):
        lengths, values = hashlib.sha256(), hashlib.sha256()
        for chunk in rows.data.column(column).chunks:
            lengths.update(
                pc.list_value_length(chunk).to_numpy(zero_copy_only=False).astype(np.int64).tobytes()
            )
            values.update(pc.list_flatten(chunk).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
        digest.update(lengths.digest() + values.digest())
    return digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks", type=int, default=2000, help="tasks in all, in equal shares over the sizes"
    )
    parser.add_argument("--objectives", default="1-16", help="sizes N, as FIRST-LAST")
    parser.add_argument("--workers", type=int, default=2, help="processes (builders that have them)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    first, _, last = args.objectives.partition("-")
    sizes = tuple(range(int(first), int(last or first) + 1))

    import torch

    torch.set_num_threads(1)
    import datasets

    datasets.disable_progress_bars()
    import mem1lite
    from mem1lite import sft
    from mem1lite.domains import load_domain
    from mem1lite.model import TINY_DIR, load_tokenizer

    try:
        from mem1lite import sft_data  # the streamed builder
    except ImportError:  # before it: the builder in sft.py
        sft_data = sft
    domain, tokenizer = load_domain("qa", None), load_tokenizer(TINY_DIR)
    domain.environment(domain.tasks("sft", 1, 1, seed=args.seed)[0])  # the sft pool's index
    options = sft.SFTArgs(tasks=args.tasks, objectives=sizes, seed=args.seed)
    options.data_workers = args.workers
    sft_data.CACHE_DIR = Path(tempfile.mkdtemp(prefix="mem1-data-build-"))
    threading.Thread(target=_sample, daemon=True).start()
    t0 = time.perf_counter()
    if sft_data is sft:
        rows = sft.teacher_sft_data(domain, tokenizer, options)
    else:
        rows = sft_data.teacher_sft_data(domain, tokenizer, options, progress=False, log=lambda *a: None)
    t1 = time.perf_counter()
    sft_data.to_dataset(rows, "response", args.seed)
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    helpers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    record = {
        "mem1lite": str(Path(mem1lite.__file__).parent.parent),
        "builder": "streamed" if sft_data is not sft else "in memory",
        "tasks": args.tasks,
        "objectives": f"{sizes[0]}..{sizes[-1]}",
        "workers": args.workers if sft_data is not sft else 1,
        "rows": len(rows),
        "rows_seconds": round(t1 - t0, 2),
        "labels_seconds": round(t2 - t1, 2),
        "seconds": round(t2 - t0, 2),
        "peak_rss_mb": round(peak),
        "peak_anon_mb": round(PEAK["anon"]),
        "peak_file_mb": round(PEAK["file"]),
        "helpers_peak_rss_mb": round(helpers),
        "digest": _digest(rows),
    }
    print(json.dumps(record))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
