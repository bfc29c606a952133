"""The thread policy (threads.py): one thread for the tiny model, more for a large one, --threads wins."""

import json
import os
import struct

import pytest
import torch

from mem1lite.threads import LARGE_PARAMETERS, MAX_THREADS, default_threads, model_parameters, use_threads


def test_parameters_are_counted_from_the_headers(tiny_init):
    from pathlib import Path

    from safetensors import safe_open

    with safe_open(str(Path(tiny_init) / "model.safetensors"), "pt") as f:
        stored = sum(f.get_tensor(k).numel() for k in f.keys())
    assert model_parameters(tiny_init) == stored > 10_000
    assert model_parameters(None) is None and model_parameters("teacher") is None


def _fake_safetensors(path, shapes):
    header = json.dumps(
        {name: {"dtype": "F32", "shape": s, "data_offsets": [0, 0]} for name, s in shapes.items()}
    )
    header = json.dumps({**json.loads(header), "__metadata__": {"format": "pt"}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def test_an_adapter_adds_its_base_and_a_large_model_gets_more_threads(tmp_path):
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir(), adapter.mkdir()
    _fake_safetensors(base / "model-00001-of-00002.safetensors", {"a": [8000, 4000]})
    _fake_safetensors(base / "model-00002-of-00002.safetensors", {"b": [8000, 4000], "c": [7]})
    _fake_safetensors(adapter / "adapter_model.safetensors", {"lora": [10, 10]})
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "../base"}))
    assert model_parameters(base) == 64_000_007
    assert model_parameters(adapter) == 64_000_107
    assert default_threads(model_parameters(base), cores=2) == 2
    assert default_threads(model_parameters(base), cores=64) == MAX_THREADS
    assert default_threads(LARGE_PARAMETERS - 1, cores=64) == 1
    assert default_threads(None, cores=64) == 1
    (base / "broken.safetensors").write_bytes(b"\x01")  # an unreadable header counts nothing
    assert model_parameters(base) == 64_000_007


def test_use_threads_sets_torch_and_says_why_once(tiny_init, monkeypatch):
    from mem1lite import threads

    monkeypatch.setattr(threads, "_said", set())
    before = torch.get_num_threads()
    said = []
    try:
        assert use_threads(None, tiny_init, "teacher", say=said.append) == 1
        assert torch.get_num_threads() == 1
        assert use_threads(None, say=said.append) == 1
        assert use_threads(2, say=said.append) == 2 and torch.get_num_threads() == 2
        for bad in (0, threads.max_threads() + 1, 100_000):  # 100,000 crashed OpenMP before the bound
            with pytest.raises(ValueError, match=r"threads must be in 1\.\.\d+ \(4x the cores\)"):
                use_threads(bad)
    finally:
        torch.set_num_threads(before)
    assert said == [
        "mem1: 1 torch thread(s) (default for a 0.2 M-parameter model; --threads to change)",
        "mem1: 2 torch thread(s) (--threads)",
    ]


def test_the_cli_sets_a_passive_openmp_wait_policy(monkeypatch):
    from mem1lite.cli import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with pytest.raises(SystemExit):  # argparse refuses the flag after the policy is set
        main(["eval", "--episodes", "0"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a user's own choice is kept
    with pytest.raises(SystemExit):
        main(["eval", "--episodes", "0"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
