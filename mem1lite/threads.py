"""One thread policy for every command and notebook: how many torch CPU threads a process uses.

The tiny model's matrices are so small (1.7 M parameters, width 128) that a second thread costs
more in hand-offs than it saves in arithmetic, and on a busy 2-core laptop it competes with
whatever else runs: measured on main, one `mem1 eval` took 57.9 s / 21.7 s with torch's default
of two threads against 34.5 s / 12.6 s with one, in two back-to-back pairs under load (issue
#20; `scripts/thread_check.py` measures `make demo` quiet and beside a busy job). So:

1. `--threads K` (or a config's `threads`) wins.
2. Otherwise a model under `LARGE_PARAMETERS` gets one thread, and so does work with no model
   (the teacher, data building); a larger one (a real Qwen on CPU, where a matmul is worth
   splitting) gets up to `MAX_THREADS` of the cores.
3. The choice is said once per process, on stderr, with the reason.

OpenMP's wait policy matters only with more than one thread: idle threads that spin steal the
other job's core. `mem1lite/cli.py` sets `OMP_WAIT_POLICY=PASSIVE` (unless set) before torch is
imported, which is the only time it is read.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

LARGE_PARAMETERS = 50_000_000
"""from this many parameters on a model gets more than one thread by default"""
MAX_THREADS = 8
"""the most threads the default gives (beyond this a CPU matmul of a ~0.5 B model stops gaining)"""

_said: set[int] = set()


def model_parameters(path: str | Path | None) -> int | None:
    """Parameters of the checkpoint in `path` counted from its safetensors headers (no weights
    read); an adapter folder adds its base model's. None when `path` holds no checkpoint."""
    if path is None or not Path(path).is_dir():
        return None
    folder = Path(path)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    count = sum(_header_parameters(f) for f in files)
    adapter = folder / "adapter_config.json"
    if adapter.exists():
        try:
            base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        except (OSError, ValueError):
            base = None
        if base:
            base_path = Path(base) if Path(base).is_absolute() else folder / base
            count += model_parameters(base_path) or 0
    return count


def _header_parameters(file: Path) -> int:
    """Sum of the tensor sizes a safetensors file declares (its JSON header); 0 when unreadable."""
    try:
        with open(file, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error):
        return 0
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        size = 1
        for dim in entry.get("shape", []):
            size *= dim
        total += size
    return total


def max_threads(cores: int | None = None) -> int:
    """The most threads a caller may ask for: 4x the cores (more only wait for a core; 100,000
    made OpenMP crash while creating them)."""
    return 4 * (cores or os.cpu_count() or 1)


def default_threads(parameters: int | None, cores: int | None = None) -> int:
    """The policy's choice for a model of `parameters` (None: no model) on `cores` CPUs."""
    cores = cores or os.cpu_count() or 1
    if parameters is None or parameters < LARGE_PARAMETERS:
        return 1
    return max(1, min(cores, MAX_THREADS))


def use_threads(requested: int | None, *models, say=None) -> int:
    """Set torch's CPU threads for this process: `requested`, else the policy for the largest of
    `models` (checkpoint folders; names that are not folders count as no model). Says the
    choice once per process (on stderr unless `say` is given). Returns the count."""
    import torch

    if requested is not None and not 1 <= requested <= max_threads():
        raise ValueError(f"threads must be in 1..{max_threads()} (4x the cores), got {requested}")
    sizes = [p for p in (model_parameters(m) for m in models) if p is not None]
    largest = max(sizes) if sizes else None
    count = requested or default_threads(largest)
    torch.set_num_threads(count)
    if count not in _said:
        _said.add(count)
        if requested:
            why = "--threads"
        elif largest is None:
            why = "the default with no checkpoint; --threads to change"
        else:
            why = f"default for a {largest / 1e6:.1f} M-parameter model; --threads to change"
        (say or (lambda s: print(s, file=sys.stderr, flush=True)))(f"mem1: {count} torch thread(s) ({why})")
    return count
