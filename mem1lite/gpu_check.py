"""GPU checks: the masks' exactness on a GPU in float32 and bfloat16, and one PPO step of
the real-size Qwen2.5-0.5B per trajectory layout, timed, as a table.

    scripts/gpu_check.sh                                    # on a CUDA machine: ~3-6 minutes
    python -m mem1lite.gpu_check --json gpu-check.json      # the same, records written as JSON
    python -m mem1lite.gpu_check --device cpu --quick       # the code path on CPU at toy sizes (tests)

Without CUDA (and without `--device cpu`) it prints one line and exits 0 (`NO_CUDA_EXIT`). Exit 1
when an exactness check fails.

1. Exactness, what tests/test_masks.py checks on CPU in float64, on the GPU: a small random Qwen2
   with a random LoRA adapter samples mem1, full and truncate episodes (ModelPolicy, temperature 1)
   on the device, and every exact layout (per_turn, packed, packed_dense) re-scores them: max
   |log-prob - generation-time log-prob| in float32 and bfloat16, under sdpa and eager attention.
   Limits: float32 `FLOAT32_LIMIT` (decoding one token at a time and scoring whole sequences run
   different kernels, which round differently; the CPU tests reach 1e-4), bfloat16 `BFLOAT16_LIMIT`
   (8 bits of mantissa: measured and reported, bounded loosely). Also: packed gradients against
   per_turn (float32, relative to the largest gradient), the stitched approximation's deviation,
   and the official bool-cast mask hiding nothing where ours hides the future.
2. Timing: the real-size Qwen2.5-0.5B, bfloat16 weights with float32 LoRA (r 16 on every linear
   map) and value head, as `mem1 ppo --model qwen2.5-0.5b` builds it. The weights are the local
   Qwen2.5-0.5B-Instruct when `$MEM1_QWEN_DIR` or data/models holds it, else a random
   initialisation of the real config (model.QWEN2_5_0_5B) with the tiny tokenizer. One rollout of
   `--episodes` mem1 episodes at N = 2 (a random model never writes a stop, so every response is
   `--max-new-tokens` long: the costliest case), then per layout the scoring pass (policy,
   reference, values) and one epoch of PPO updates over minibatches, with activation
   checkpointing wherever the layout allows it (all but packed), as the preset trains; peak GPU
   memory per layout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from .domains import QADomain
from .files import write_text
from .generate import GenerationConfig, ModelPolicy
from .masks import (
    ValueHead,
    additive_mask,
    bool_mask_as_float,
    build_layout,
    causal_lm,
    layout_forward,
    logprob_deviation,
    run_layout,
)
from .model import (
    TINY_DIR,
    ModelLoadError,
    TinyConfig,
    build_tiny_model,
    load_tokenizer,
    qwen2_5_0_5b_config,
    qwen_dir,
    resolve_model,
    tiny_qwen2_config,
)
from .ppo import PPOArgs, build_policy, make_optimizers, play, score, update
from .rollout import RolloutConfig, run_episodes
from .terms import EXACT_LAYOUTS, LAYOUTS

NO_CUDA_EXIT = 0
"""exit status when there is no CUDA device (the check is skipped, not failed)"""
FLOAT32_LIMIT = 1e-3
"""largest |log-prob difference| allowed in float32 on a GPU"""
BFLOAT16_LIMIT = 0.5
"""largest |log-prob difference| allowed in bfloat16 (reported; a loose sanity bound)"""
GRADIENT_LIMIT = 1e-4
"""largest packed-vs-per_turn gradient difference, relative to the largest gradient (float32)"""


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# 1. Exactness


def _small_lora_model(tokenizer, dtype, device, seed=0):
    from peft import LoraConfig, get_peft_model

    size = TinyConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
    )
    config = tiny_qwen2_config(tokenizer, size)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "up_proj"])
    lora.init_lora_weights = False  # B random: the adapter changes every log-prob
    return get_peft_model(build_tiny_model(config, seed=seed, dtype=dtype), lora).to(device)


def _sample(model, tokenizer, domain, agent, max_new_tokens, per_n=2):
    trajs = []
    for n in (1, 2):  # different prompts and turn counts in one batch
        tasks = domain.tasks("dev", n, per_n, seed=n)
        envs = [domain.environment(t) for t in tasks]
        policy = ModelPolicy(
            model, tokenizer, GenerationConfig(max_new_tokens=max_new_tokens, temperature=1.0)
        )
        cfg = RolloutConfig(agent=agent, seed=n, progress=False, truncate_tokens=60)
        trajs += run_episodes(policy, tokenizer, envs, cfg, tasks)
    return trajs


def _layout_grads(model, trajs, head, params, layout):
    """Gradients of a fixed weighting of log-probs and values, through `layout`."""
    out = layout_forward(model, trajs, layout, value_head=head)
    flat = torch.cat(out.per_trajectory("logprobs"))
    w = torch.linspace(-1, 1, len(flat), device=flat.device)
    loss = (flat * w).sum() + torch.cat(out.per_trajectory("values")).pow(2).sum()
    return torch.autograd.grad(loss, params)


def exactness(device: str, quick: bool = False, log=print) -> list[dict]:
    """Records of every (dtype, attention, agent, layout) deviation, gradient and mask check."""
    tokenizer = load_tokenizer(TINY_DIR)
    domain = QADomain()
    agents = ("mem1", "full") if quick else ("mem1", "full", "truncate")
    max_new = 8 if quick else 24
    records = []
    for dtype, limit in ((torch.float32, FLOAT32_LIMIT), (torch.bfloat16, BFLOAT16_LIMIT)):
        model = _small_lora_model(tokenizer, dtype, device)
        lm = causal_lm(model)
        for agent in agents:
            trajs = _sample(model, tokenizer, domain, agent, max_new, per_n=1 if quick else 2)
            for attn in ("sdpa", "eager"):
                lm.config._attn_implementation = attn
                for layout in EXACT_LAYOUTS:
                    with torch.no_grad():
                        dev = logprob_deviation(layout_forward(model, trajs, layout))
                    records.append(
                        {
                            "check": "exact",
                            "dtype": str(dtype).split(".")[-1],
                            "attention": attn,
                            "agent": agent,
                        }
                        | {"layout": layout, "limit": limit, "ok": dev["max_abs"] <= limit}
                        | dev
                    )
            lm.config._attn_implementation = "sdpa"
            if agent == "mem1":
                with torch.no_grad():
                    dev = logprob_deviation(layout_forward(model, trajs, "stitched"))
                records.append(
                    {"check": "stitched", "dtype": str(dtype).split(".")[-1], "agent": agent, "ok": True}
                    | dev
                )
        if dtype == torch.float32:  # packed gradients == per_turn
            trajs = _sample(model, tokenizer, domain, "mem1", max_new, per_n=1)
            head = ValueHead(lm.config.hidden_size).to(device)
            params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())

            ref = _layout_grads(model, trajs, head, params, "per_turn")
            scale = max(float(g.abs().max()) for g in ref)
            for layout in ("packed", "packed_dense"):
                err = (
                    max(
                        float((g - r).abs().max())
                        for g, r in zip(_layout_grads(model, trajs, head, params, layout), ref)
                    )
                    / scale
                )
                records.append(
                    {"check": "gradients", "dtype": "float32", "layout": layout, "relative_max": err}
                    | {"limit": GRADIENT_LIMIT, "ok": err <= GRADIENT_LIMIT}
                )
        # the official pitfall: a bool mask cast to float hides nothing (here on the device, in dtype)
        traj = trajs[0]
        batch, changed = build_layout([traj], "packed_dense"), build_layout([traj], "packed_dense")
        last = batch.stages[0].lengths[0] - 1
        changed.stages[0].input_ids[0, last] = (batch.stages[0].input_ids[0, last] + 1) % 100
        with torch.no_grad():
            first = [
                [float(run_layout(model, b, mask_fn=fn).logprobs[0, 0]) for b in (batch, changed)]
                for fn in (additive_mask, bool_mask_as_float)
            ]
        ours, official = (abs(a - b) for a, b in first)
        records.append(
            {"check": "bool_mask", "dtype": str(dtype).split(".")[-1], "ours": ours, "official": official}
            | {"ok": ours == 0.0}
        )
    worst = {}
    for r in records:
        if r["check"] == "exact":
            key = (r["dtype"], r["attention"])
            worst[key] = max(worst.get(key, 0.0), r["max_abs"])
    for (dt, attn), v in worst.items():
        log(f"  exact layouts vs generation, {dt:8s} {attn:5s}: max |d logprob| {v:.2e}")
    for r in records:
        if r["check"] == "gradients":
            log(f"  gradients {r['layout']} vs per_turn (float32): {r['relative_max']:.2e} of the largest")
        if r["check"] == "stitched":
            log(
                f"  stitched vs generation, mem1, {r['dtype']}: "
                f"max {r['max_abs']:.3f} mean {r['mean_abs']:.3f}"
            )
        if r["check"] == "bool_mask":
            log(
                f"  bool mask as float, {r['dtype']}: future leaks {r['official']:.2e} (ours {r['ours']:.1e})"
            )
    return records


# ---------------------------------------------------------------------------------------------
# 2. One PPO step of the real-size model per layout


def _real_size_model(tmp: Path, quick: bool) -> tuple[str, str]:
    """(path, what) of the model to time: the local Qwen2.5-0.5B-Instruct, or a random one of its size."""
    from transformers import Qwen2ForCausalLM

    if not quick:
        try:
            return str(qwen_dir()), "Qwen2.5-0.5B-Instruct weights"
        except ModelLoadError:
            pass
    tokenizer = load_tokenizer(TINY_DIR)
    small = dict(num_hidden_layers=2, hidden_size=512, intermediate_size=1024, num_attention_heads=8)
    overrides = dict(
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None
    )
    if quick:  # a toy of the same shape family (width 512 still counts as a real model)
        overrides |= small | dict(vocab_size=(len(tokenizer) + 63) // 64 * 64)
    torch.manual_seed(0)
    Qwen2ForCausalLM(qwen2_5_0_5b_config(**overrides)).to(torch.bfloat16).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    what = (
        "toy 2-layer Qwen2 (--quick)" if quick else "random init of the Qwen2.5-0.5B config, tiny tokenizer"
    )
    return str(tmp), what


def ppo_step_timing(
    device: str,
    quick: bool = False,
    episodes: int = 16,
    minibatch: int = 4,
    max_new_tokens: int = 128,
    log=print,
) -> list[dict]:
    """Rollout once, then per layout: scoring + one epoch of updates, timed; peak memory per layout."""
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        path, what = _real_size_model(Path(tmp), quick)
        spec = resolve_model(path)
        args = PPOArgs(
            init=path,
            episodes_per_step=episodes,
            minibatch_episodes=minibatch,
            ppo_epochs=1,
            max_new_tokens=max_new_tokens,
            objectives=(2,),
            layout="per_turn",
            eval_every=0,
            seed=0,
        )
        model, head, tokenizer = build_policy(path, args, device=device)
        model.to(device)
        head.to(device)
        base = model.get_base_model()
        n_params = sum(p.numel() for p in base.parameters())
        dtype = next(base.parameters()).dtype
        log(
            f"  model: {what}, {n_params / 1e6:.0f} M parameters, {str(dtype).split('.')[-1]} on {device}; "
            f"{episodes} mem1 episodes at N = 2, <= {max_new_tokens} new tokens, minibatch {minibatch}"
        )
        domain = QADomain()
        _sync(device)
        trajs, n, rollout_s = play(model, tokenizer, domain, args, step=0)
        _sync(device)
        generated = sum(len(t.output_ids) for tr in trajs for t in tr.turns)
        log(f"  rollout: {generated} tokens in {rollout_s:.1f} s ({generated / rollout_s:.0f} tokens/s)")
        start = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
        head_start = {k: v.detach().clone() for k, v in head.state_dict().items()}
        for layout in LAYOUTS:
            checkpointing = spec.gradient_checkpointing and layout != "packed"
            if checkpointing:
                base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            elif base.is_activation_checkpointing:
                base.activation_checkpointing_disable()
            with torch.no_grad():  # every layout starts from the same parameters
                for k, v in model.named_parameters():
                    if k in start:
                        v.copy_(start[k])
                head.load_state_dict(head_start)
            actor, critic = make_optimizers(model, head, args)
            a = replace(args, layout=layout)
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            batch = score(model, head, trajs, n, rollout_s, a)
            _sync(device)
            t1 = time.perf_counter()
            upd = update(model, head, batch, [actor, critic], a, step=0)
            _sync(device)
            t2 = time.perf_counter()
            peak = torch.cuda.max_memory_allocated() / 2**30 if torch.device(device).type == "cuda" else None
            records.append(
                {
                    "check": "ppo_step",
                    "model": what,
                    "device": device,
                    "dtype": str(dtype).split(".")[-1],
                    "layout": layout,
                    "checkpointing": checkpointing,
                    "episodes": episodes,
                    "minibatch_episodes": minibatch,
                    "max_new_tokens": max_new_tokens,
                    "policy_tokens": batch.stats["policy_tokens"],
                    "rollout_seconds": rollout_s,
                    "score_seconds": t1 - t0,
                    "update_seconds": t2 - t1,
                    "step_seconds": rollout_s + (t2 - t0),
                    "train_tokens_per_s": upd["train_tokens_per_s"],
                    "peak_gb": peak,
                    "first_ratio": upd["first_ratio"],
                    "max_abs_log_ratio_first": upd["max_abs_log_ratio_first"],
                }
            )
            log(f"  {layout:12s} scored in {t1 - t0:6.2f} s, updated in {t2 - t1:6.2f} s")
    return records


def table(records: list[dict]) -> str:
    """The PPO-step records as a markdown table."""
    rows = [r for r in records if r["check"] == "ppo_step"]
    if not rows:
        return ""
    base = next((r for r in rows if r["layout"] == "per_turn"), rows[0])
    lines = [
        f"One PPO step, {rows[0]['model']}, {rows[0]['dtype']} on {rows[0]['device']}: "
        f"{rows[0]['episodes']} mem1 episodes (N = 2, <= {rows[0]['max_new_tokens']} new tokens), rollout "
        f"{rows[0]['rollout_seconds']:.1f} s, then scoring + 1 epoch of updates (minibatch "
        f"{rows[0]['minibatch_episodes']} episodes)",
        "",
        "| layout | checkpointing | score s | update s | step s | policy tokens/s (update) | vs per_turn | "
        "peak GB | first ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        peak = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "-"
        speed = base["update_seconds"] / r["update_seconds"]
        lines.append(
            f"| {r['layout']} | {'yes' if r['checkpointing'] else 'no'} | {r['score_seconds']:.2f} | "
            f"{r['update_seconds']:.2f} | {r['step_seconds']:.1f} | {r['train_tokens_per_s']:.0f} | "
            f"x{speed:.2f} | {peak} | {r['first_ratio']:.4f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mem1lite.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu (a dry run)")
    parser.add_argument("--quick", action="store_true", help="toy sizes (a CPU dry run of the code path)")
    parser.add_argument("--episodes", type=int, default=16, help="episodes of the timed PPO step")
    parser.add_argument("--minibatch", type=int, default=4, help="episodes per minibatch")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="response limit of the rollout")
    parser.add_argument("--skip-timing", action="store_true", help="exactness only")
    parser.add_argument("--json", help="write every record here")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        print("gpu_check: no CUDA device here, nothing checked (run it on a GPU machine, or --device cpu)")
        return NO_CUDA_EXIT
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "CPU"
    print(f"gpu_check on {name} (torch {torch.__version__})", flush=True)
    print("1. masks: exact layouts against generation-time log-probs, on the device", flush=True)
    records = exactness(device, quick=args.quick)
    failed = [r for r in records if not r["ok"]]
    if not args.skip_timing:
        print("2. one PPO step of the real-size model per layout", flush=True)
        records += ppo_step_timing(
            device, args.quick, args.episodes, args.minibatch, args.max_new_tokens, log=print
        )
        print("\n" + table(records) + "\n")
    if args.json:
        write_text(args.json, json.dumps(records, indent=2, default=str) + "\n")
    exact = [r["max_abs"] for r in records if r["check"] == "exact"]
    print(
        f"{len(records)} records in {time.perf_counter() - t0:.0f} s; exactness "
        + (f"FAILED: {len(failed)} checks over their limits" if failed else "passed")
        + (f" (median max |d| {statistics.median(exact):.1e})" if exact else "")
    )
    for r in failed:
        print(f"  over the limit: {r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
