"""scripts/gpu_check.sh without a GPU, and its code path on CPU at toy sizes.

The GPU table itself needs a CUDA machine; here the same functions run on CPU with a 2-layer model
and a handful of tokens, so that the script is known to work before a GPU is at hand.
"""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from mem1lite import gpu_check

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_script_without_cuda_says_so_in_one_line_and_exits_0():
    result = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == gpu_check.NO_CUDA_EXIT == 0
    assert result.stdout.strip().count("\n") == 0 and "no CUDA device" in result.stdout


@pytest.mark.slow
def test_dry_run_on_cpu(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    argv = ["--device", "cpu", "--quick", "--episodes", "2", "--minibatch", "2", "--max-new-tokens", "6"]
    assert gpu_check.main(argv + ["--json", str(out)]) == 0
    records = json.loads(out.read_text())
    exact = [r for r in records if r["check"] == "exact"]
    assert {(r["dtype"], r["attention"]) for r in exact} == {
        (d, a) for d in ("float32", "bfloat16") for a in ("sdpa", "eager")
    }
    assert all(r["max_abs"] <= 1e-4 for r in exact if r["dtype"] == "float32")
    assert all(r["ok"] for r in records if "ok" in r)
    steps = [r for r in records if r["check"] == "ppo_step"]
    assert [r["layout"] for r in steps] == ["per_turn", "packed", "packed_dense", "stitched"]
    assert [r["checkpointing"] for r in steps] == [True, False, True, True]  # packed cannot
    assert all(r["first_ratio"] == pytest.approx(1.0, abs=1e-5) for r in steps)
    printed = capsys.readouterr().out
    assert "| layout | checkpointing |" in printed and "exactness passed" in printed
