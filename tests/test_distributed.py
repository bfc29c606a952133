"""Data parallelism under `accelerate launch`: two CPU processes (gloo) against one.

`mem1 ppo` split over 2 processes plays each its half of a step's episodes (seeded as in the whole
batch), gathers the scored batch, takes half of every minibatch and all-reduces the gradients: both
processes must end with the very same parameters, and those must equal a one-process run of the
same global batch to float rounding. Both runs are in float64 with stock Qwen2's float32 islands
removed, so the comparison is tight (measured: 4e-13; in float32 the same two Adam steps at lr 1e-2
differ by ~5e-5, rounding that Adam's normalisation amplifies where a gradient is near zero). The
launch costs two interpreter starts; the model is the 32-wide 2-layer Qwen2 of test_ppo.py and
responses stop at 12 tokens, so it stays well under a minute.
"""

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mem1lite.ppo import PPOArgs, train_ppo

sys.path.insert(0, str(Path(__file__).parent))
from distributed_worker import float64_everywhere  # noqa: E402

WORKER = Path(__file__).with_name("distributed_worker.py")
TOLERANCE = 1e-10
"""largest |difference| allowed between the 2-process and the 1-process parameters (float64)"""


def ppo_args(init, out) -> PPOArgs:
    args = PPOArgs(
        out=str(out),
        init=init,
        preset="test",
        objectives=(1,),
        steps=2,
        episodes_per_step=4,
        minibatch_episodes=2,
        ppo_epochs=1,
        max_new_tokens=12,
        eval_every=0,
        checkpoint_every=1,
        threads=1,
        actor_lr=1e-2,
        critic_lr=1e-2,
    )
    if "final_eval" in PPOArgs.__dataclass_fields__:
        args = replace(args, final_eval=())
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(kind: str, fields: dict, processes: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes N` (torchrun underneath; on a machine without
    CUDA our trainers ask accelerate for CPU processes, which then talk over gloo)."""
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(WORKER), kind, json.dumps(fields),
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if not torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = ""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def trained(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    params = load_file(str(out / "adapter_model.safetensors"))
    return params | {f"value_head.{k}": v for k, v in torch.load(out / "value_head.pt").items()}


@pytest.mark.slow
def test_ppo_on_two_processes_matches_one(tiny_init, tmp_path):
    one = ppo_args(tiny_init, tmp_path / "one")
    with float64_everywhere():
        card_one = train_ppo(one)
    two = replace(one, out=str(tmp_path / "two"))
    result = launch("ppo", dict(two.__dict__, float64=True))
    card = json.loads((tmp_path / "two" / "card.json").read_text())
    # both processes hold the very same bytes (train_ppo checks it, the card keeps the digests)
    digests = card["parameter_sha256_per_process"]
    assert card["processes"] == 2 and len(digests) == 2 and digests[0] == digests[1]
    assert card_one["processes"] == 1
    # one process logged and wrote: one line per step, one card
    log = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert result.stdout.count("step   2") == 1
    # the same global batch as one process: same episodes, same rewards, same parameters
    log_one = [json.loads(x) for x in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    for a, b in zip(log_one, log):
        for key in ("reward", "policy_tokens", "peak_tokens", "turns", "format_errors"):
            assert a[key] == b[key], key
        for key in ("kl", "policy_loss", "value_loss", "entropy", "first_ratio"):
            assert a[key] == pytest.approx(b[key], abs=1e-12), key
    p1, p2 = trained(tmp_path / "one"), trained(tmp_path / "two")
    assert p1.keys() == p2.keys()
    before = {k: v for k, v in p1.items() if "lora_B" in k}
    assert any(v.abs().max() > 0 for v in before.values())  # training moved the adapter off zero
    diff = max(float((p1[k] - p2[k]).abs().max()) for k in p1)
    print(f"2 processes vs 1: max |parameter difference| {diff:.3g}")
    assert diff <= TOLERANCE


@pytest.mark.slow
def test_sft_on_two_processes_matches_one(tiny_init, tmp_path, monkeypatch):
    """TRL's Trainer does the data parallelism; ours is the loss (through the DDP wrapper, scaled for
    token averaging across processes), the split accumulation and the main-process-only probe and card."""
    import mem1lite.sft as sft
    import mem1lite.sft_data as sft_data

    monkeypatch.setattr(sft_data, "CACHE_DIR", tmp_path / "cache")
    fields = dict(
        preset="test", init=tiny_init, tasks=4, objectives=[1], max_length=512, grad_accum=2,
        stages=[dict(name="read", loss_on="all", minutes=5, max_steps=2, lr=1e-3, warmup_steps=0)],
        probe_minutes=100, em_minutes=100, probe_tasks=1, em_tasks=1, final_eval_tasks=1,
        final_eval_objectives=[1], threads=1,
    )  # fmt: skip
    args = sft.SFTArgs(
        **fields
        | dict(
            out=str(tmp_path / "one"),
            objectives=(1,),
            final_eval_objectives=(1,),
            stages=(sft.Stage(**fields["stages"][0]),),
        )
    )
    card_one = sft.train_sft(args)
    result = launch("sft", fields | {"out": str(tmp_path / "two"), "cache_dir": str(tmp_path / "cache")})
    assert result.stdout.count("final evaluation") == 1
    card = json.loads((tmp_path / "two" / "card.json").read_text())
    digests = card["parameter_sha256_per_process"]
    assert card["processes"] == 2 and len(digests) == 2 and digests[0] == digests[1]
    assert card_one["processes"] == 1 and not (tmp_path / "two.partial").exists()
    records = [json.loads(x) for x in (tmp_path / "two" / "probe.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in records] == [("read", 1), ("read", 2)]  # one writer
    from safetensors.torch import load_file

    w0 = load_file(str(Path(tiny_init) / "model.safetensors"))
    w1 = load_file(str(tmp_path / "one" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert max(float((w1[k] - w0[k]).abs().max()) for k in w1) > 1e-4  # training moved the weights
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    print(f"SFT, 2 processes vs 1 (float32, 2 AdamW steps at lr 1e-3): max |weight difference| {diff:.3g}")
    # Measured: 0 (each process runs one pack per step as one process does, and the factor 2 that
    # undoes DDP's averaging is exact in binary floating point). A different global batch would
    # move the weights by ~lr = 1e-3.
    assert diff <= 1e-6
