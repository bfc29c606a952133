"""Started by tests/test_distributed.py under `accelerate launch`: one training run in each process.

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_worker.py ppo '{"out": ...}'

The first argument names the trainer (`ppo` or `sft`), the second is a JSON object of its Args
fields (tuples as lists), plus `"float64": true` to run in float64 with stock Qwen2's float32
islands removed (masks.without_float32_islands), which leaves only the rounding of float64 between
a one-process and a two-process run. Not a test module: pytest does not collect it.
"""

import contextlib
import json
import sys

import torch


@contextlib.contextmanager
def float64_everywhere():
    """Load every model in float64 (model.ModelSpec.dtype) and keep Qwen2 in float64 throughout."""
    from mem1lite.masks import without_float32_islands
    from mem1lite.model import ModelSpec

    saved = ModelSpec.dtype
    ModelSpec.dtype = lambda self, device: torch.float64
    try:
        with without_float32_islands():
            yield
    finally:
        ModelSpec.dtype = saved


def main(kind: str, fields: str) -> None:
    torch.set_num_threads(1)
    kw = json.loads(fields)
    with float64_everywhere() if kw.pop("float64", False) else contextlib.nullcontext():
        run(kind, kw)


def run(kind: str, kw: dict) -> None:
    if kind == "ppo":
        from mem1lite.ppo import PPOArgs, train_ppo

        kw["objectives"] = tuple(kw.get("objectives", (2,)))
        kw["final_eval"] = tuple(tuple(x) for x in kw.get("final_eval", ()))
        train_ppo(PPOArgs(**{k: v for k, v in kw.items() if k in PPOArgs.__dataclass_fields__}))
    elif kind == "sft":
        import mem1lite.sft as sft
        import mem1lite.sft_data as sft_data

        if "cache_dir" in kw:
            from pathlib import Path

            sft_data.CACHE_DIR = Path(kw.pop("cache_dir"))
        kw["objectives"] = tuple(kw["objectives"])
        kw["final_eval_objectives"] = tuple(kw["final_eval_objectives"])
        kw["stages"] = tuple(sft.Stage(**s) for s in kw["stages"])
        sft.train_sft(sft.SFTArgs(**kw))
    else:
        raise SystemExit(f"unknown trainer {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
