"""LoRA PPO on masked trajectories: our own loop (TRL 1.x has no PPO trainer).

    mem1 ppo --preset quick --init data/checkpoints/sft-mem1 --out runs/ppo-quick
    mem1 ppo --preset standard --init data/checkpoints/sft-mem1 --out runs/ppo
    mem1 ppo --preset standard --init ... --out runs/ppo --resume      # continue from runs/ppo/checkpoint
    mem1 ppo --model qwen2.5-0.5b --out runs/ppo-qwen                 # LoRA PPO straight from Qwen2.5-0.5B
    accelerate launch --multi_gpu --num_processes 4 -m mem1lite.cli ppo --init runs/sft --out runs/ppo-4

One step = roll out a batch of episodes with the current policy, score them, then a few epochs of
clipped PPO updates over minibatches of episodes. The MEM1-specific details, numbered in the code:

1. Rollouts use the mem1 agent on the `rl` pool (entities the SFT data never saw), sampled at
   temperature 1, each episode from its own seeded generator (rollout.py).
2. Training tensors come from an exact masked-trajectory layout (masks.py, `packed` by default):
   each policy token is scored in exactly the context it was generated in. The first minibatch
   of the first epoch therefore has ratio 1 up to float error.
3. The policy is the SFT model with LoRA adapters (peft); the reference policy is the same model
   with the adapter disabled, so no second copy is kept. The value head is a zero-initialised
   linear map of the last hidden state: values start at 0.
4. Rewards live on policy tokens only: -kl_coef * (log pi - log pi_ref) on each, plus the task
   reward (exact match summed over the objectives) on the episode's last generated token.
   Observation and prompt tokens are not steps: GAE runs over the policy tokens of all turns,
   in order, with gamma = lambda = 1 by default (ppo_math.py).
5. Advantages are whitened over the batch's policy tokens (masked).
6. Clipped ratio and clipped value loss, an entropy bonus, gradient clipping, and separate
   learning rates for the actor (LoRA) and the critic (value head).
7. A NaN or inf loss stops the run with one clear line; the last good checkpoint stays.
8. Checkpoints hold the adapter, the value head, both optimisers, the step and the RNG states;
   the task draw and sampling of step k depend only on (seed, k), so a resumed run equals an
   uninterrupted one. A checkpoint is written whole into a temporary folder, flushed, and swapped
   in by renames that keep the previous one as checkpoint.old until the new one is in place
   (files.commit_folder): a kill at any instant leaves a complete one, which resume finds. Resume
   refuses another base (--init) than the adapter was trained over.
9. Data parallelism (`accelerate launch`; `Processes` in distributed.py holds every exchange
   between processes, and with one process each of its calls is the identity): each process
   plays a contiguous share of the step's episodes, seeded and recorded as in the whole batch
   (RolloutConfig.first_episode), and scores them; the scored episodes are then gathered, so
   that every process holds the whole batch and computes GAE and whitening exactly as one
   process would. Each minibatch of the one-process run is split across the processes; a
   process's loss is the sum over its share of the minibatch's policy tokens divided by the
   minibatch's token count (times the number of processes, which DDP's gradient averaging
   divides out again), so the all-reduced gradient is the one-process gradient, and the run
   matches a one-process run to float rounding. One process logs, evaluates and writes
   checkpoints; all of them check at the end that they hold the very same parameters.
10. `advantage='group'` draws episodes_per_step / group tasks and plays each `group` times (each
   episode its own sampling generator); a token's advantage is its reward-to-go (the KL penalties
   after it plus the terminal reward) minus the group's mean reward, then whitened as in [5].
11. Speed (`stage_tokens`, masks.py [12]): scoring and updates run the `packed` layout's turn
   blocks in stages of at most 4096 padded tokens, longest first, and the LM head over 1024
   scored tokens at a time; the same values (tested in float64 against `stage_tokens=0`, the one
   padded stage before). Measured on one N = 16 step (sft-n16-hop2, 8 episodes, one thread): one
   stage held 215 blocks padded to 384 tokens (85 k padded for 63 k real), and every tensor of it
   (a 169 MB MLP activation, a 241 MB mask, 326 MB of (T, V) logits) was over glibc's 32 MB mmap
   limit, so fresh pages from the kernel each time: the process spent 42 s of 107 s in system
   time. In stages: 64 k padded tokens, ~1 s of system time a step. `mem1 bench ppo --policy
   sft-n16-hop2 --objectives 2,16 --episodes 8 --threads 1 --compare` (3 interleaved rounds,
   medians, beside a training job): N = 16 step 95.6 -> 54.2 s (1.83x; scoring 18.7 -> 10.7 s,
   update 65.4 -> 31.9 s, the two 2.08x, CPU time 2.04x), the unchanged 11.6 s rollout now a
   fifth of it; N = 2 1.02x (one stage of 23 blocks: nothing to cut). What is left is compute
   (update: matmuls 37%, flash attention 27%). The old log-probs are still scored, not taken
   from the rollout: the value head needs the policy's pass anyway, so the recorded ones would
   spare only its LM head (0.5 s of the 10.7), and they differ from the layout's by float32
   rounding (8.5e-5 at N = 16), which would end the exact KL = 0 of the first step.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .distributed import Processes
from .domains import fit_default, fit_objectives, load_domain
from .files import (
    append_text,
    check_output,
    commit_folder,
    find_folder,
    new_folder,
    one_run,
    save_figure,
    write_text,
    writing,
)
from .generate import GenerationConfig, ModelPolicy
from .masks import ValueHead, layout_forward
from .metrics import paired_bootstrap
from .model import (
    LORA_TARGETS,  # noqa: F401  (re-exported: every linear map of a Qwen2 block)
    ModelLoadError,
    check_whole_model,
    load_policy,
    resolve_model,
)
from .plots import ppo_curves
from .ppo_math import (
    explained_variance,
    gae,
    group_baseline,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from .probe import greedy_em
from .rollout import RolloutConfig, run_episodes
from .store import sha256_file
from .terms import DEFAULT_LAYOUT
from .threads import use_threads


class PPOError(RuntimeError):
    """A run that cannot go on (message is one line)."""


@dataclass
class PPOArgs:
    """LoRA PPO on the mem1 agent's masked trajectories."""

    out: str = "runs/ppo"
    """output directory: adapter, value head, card.json, log.jsonl, curves.png, checkpoint/"""
    init: str = "data/checkpoints/sft-mem1"
    """the base under the adapter (frozen): an SFT checkpoint directory, or a model preset, `tiny` or
    `qwen2.5-0.5b` (model.py; `--model` on the command line)"""
    preset: str = "quick"
    """'quick' or 'standard'"""
    seed: int = 0
    """seeds task draws, sampling and minibatch order"""
    resume: bool = False
    """continue from out/checkpoint (or out/checkpoint.old, where a kill cut a checkpoint's swap short)"""
    agent: str = "mem1"
    """memory policy of the rollouts (full: the full-context baseline, plain causal sequences)"""
    split: str = "rl"
    """pool the training tasks come from"""
    objectives: tuple[int, ...] = (2,)
    """task sizes, cycled over steps (the paper trains on N = 2)"""
    steps: int = 40
    """PPO steps (each: one batch of rollouts, then updates)"""
    minutes: float = 60.0
    """wall-clock budget; the run stops after the step that crosses it"""
    episodes_per_step: int = 48
    """episodes rolled out per step"""
    minibatch_episodes: int = 8
    """episodes per gradient step"""
    ppo_epochs: int = 2
    """passes over each batch"""
    temperature: float = 1.0
    """sampling temperature of the rollouts"""
    max_new_tokens: int = 160
    """longest response"""
    layout: str = DEFAULT_LAYOUT
    """masked-trajectory layout used for training (masks.py)"""
    stage_tokens: int = 4096
    """[11] the `packed` layout's turn blocks go through the model in stages of at most this many
    padded tokens, and the LM head 1024 scored tokens at a time (masks.py [12]); 0: one stage and
    one head pass over the whole minibatch (the same values, ~2x the time at N = 16)"""
    lora_r: int = 16
    """LoRA rank"""
    lora_alpha: int = 32
    """LoRA scale numerator (scale = alpha / r)"""
    actor_lr: float = 2e-4
    """learning rate of the LoRA parameters"""
    critic_lr: float = 2e-3
    """learning rate of the value head (10x the actor's)"""
    kl_coef: float = 1e-3
    """per-token KL penalty against the reference policy [4]"""
    clip_ratio: float = 0.2
    """PPO ratio clip"""
    clip_value: float = 0.2
    """value clip (in reward units)"""
    vf_coef: float = 0.5
    """weight of the value loss"""
    entropy_coef: float = 1e-3
    """weight of the entropy bonus"""
    max_grad_norm: float = 1.0
    """gradient clipping"""
    gamma: float = 1.0
    """discount over policy tokens"""
    lam: float = 1.0
    """GAE lambda"""
    advantage: str = "gae"
    """'gae': the value head is the baseline; 'group': each task is played `group` times and the
    baseline is its group's mean reward (GRPO-style, no critic in the advantage; the value head
    still trains, unused). With one terminal reward the critic explains ~0 of the variance, which is
    what the group baseline replaces [10]"""
    group: int = 4
    """episodes per task with advantage='group' (episodes_per_step must be a multiple)"""
    eval_every: int = 10
    """steps between greedy dev evaluations (0: never)"""
    eval_tasks: int = 64
    """dev tasks (N = 2) per evaluation"""
    checkpoint_every: int = 5
    """steps between checkpoints"""
    final_eval: tuple[tuple[int, int], ...] = ((2, 200), (4, 50), (8, 30), (16, 20))
    """(N, dev tasks) pairs of the final greedy comparison with the SFT start (adapter off)"""
    threads: int | None = None
    """torch CPU threads (None: the thread policy, threads.py: one for the tiny model)"""
    env: str = "qa"
    """domain: qa or webshop (domains.py)"""
    data: str | None = None
    """the domain's data folder (default: the shipped one)"""


PRESETS = {
    "quick": dict(
        steps=3,
        minutes=5.0,
        episodes_per_step=8,
        minibatch_episodes=4,
        ppo_epochs=1,
        eval_every=0,
        eval_tasks=8,
        checkpoint_every=1,
        max_new_tokens=128,
        final_eval=((2, 8),),  # the mechanics of the comparison, not its statistics
    ),
    "standard": dict(
        steps=60,
        minutes=60.0,
        episodes_per_step=48,
        minibatch_episodes=8,
        ppo_epochs=2,
        eval_every=10,
        eval_tasks=64,
        checkpoint_every=5,
    ),
}


def make_args(preset: str, **overrides) -> PPOArgs:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    return PPOArgs(preset=preset, **(PRESETS[preset] | {k: v for k, v in overrides.items() if v is not None}))


# ---------------------------------------------------------------------------------------------
# Model: base + LoRA + value head


def build_policy(init: str, args: PPOArgs, device=None):
    """(peft model, value head, tokenizer) from an SFT checkpoint directory or a model preset [3].

    A real model (model.ModelSpec) is loaded in bfloat16 on a GPU, with float32 LoRA weights and
    value head (peft keeps adapters in float32), and recomputes activations in the backward pass
    unless the layout is `packed`, which reuses the prompt's KV cache and cannot.
    """
    from peft import LoraConfig, get_peft_model

    spec = resolve_model(init)
    check_init(spec.path)
    base, tokenizer = load_policy(spec.path, dtype=spec.dtype(device))
    base.config.use_cache = True
    for p in base.parameters():
        p.requires_grad_(False)
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(spec.lora_targets),
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(args.seed)
    model = get_peft_model(base, config)
    if spec.gradient_checkpointing and args.layout != "packed":
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.train()  # checkpointing acts in training mode only; dropout is 0 in Qwen2 configs
    dtype = next(base.parameters()).dtype
    head = ValueHead(base.config.hidden_size, dtype=torch.float32 if dtype.itemsize < 4 else dtype)
    torch.nn.init.zeros_(head.summary.weight)  # [3] values start at exactly 0
    torch.nn.init.zeros_(head.summary.bias)
    return model, head, tokenizer


def check_init(path: str) -> None:
    """The base is a whole model: an adapter (a PPO run's output) under a new adapter is refused."""
    try:
        check_whole_model(path)
    except ModelLoadError as exc:
        raise PPOError(f"{exc} (PPO trains a new adapter over a whole model)") from None


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizers(model, head, args: PPOArgs) -> tuple[torch.optim.AdamW, torch.optim.AdamW]:
    """(actor, critic): AdamW over the adapter's parameters and over the value head's, no decay."""
    actor = torch.optim.AdamW(trainable_parameters(model), lr=args.actor_lr, weight_decay=0.0)
    critic = torch.optim.AdamW(head.parameters(), lr=args.critic_lr, weight_decay=0.0)
    return actor, critic


# ---------------------------------------------------------------------------------------------
# One step


@dataclass
class Batch:
    trajs: list
    advantages: torch.Tensor
    returns: torch.Tensor
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    mask: torch.Tensor
    stats: dict


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919) % (2**31 - 1)


def collect(
    model, head, tokenizer, domain, args: PPOArgs, step: int, procs: Processes | None = None
) -> Batch:
    """[1] roll out a batch, [2] score it under the layout, [4] rewards, GAE, [5] whitening.
    [9] Several processes: each plays and scores its share, then all hold the whole batch."""
    procs = procs or Processes()
    trajs, n, seconds = play(model, tokenizer, domain, args, step, procs)
    return score(model, head, trajs, n, seconds, args, procs)


def play(model, tokenizer, domain, args: PPOArgs, step: int, procs: Processes | None = None):
    """[1] This process's share of step `step`'s episodes, rolled out: (trajectories, N, seconds)."""
    procs = procs or Processes()
    n = args.objectives[step % len(args.objectives)]
    seed = step_seed(args.seed, step)
    if args.advantage == "group":  # [10] each task `group` times in a row
        tasks = domain.tasks(args.split, n, args.episodes_per_step // args.group, seed=seed)
        tasks = [t for t in tasks for _ in range(args.group)]
    else:
        tasks = domain.tasks(args.split, n, args.episodes_per_step, seed=seed)
    first, last = procs.shard(len(tasks))  # [9] (0, all) for one process
    tasks = tasks[first:last]
    envs = [domain.environment(t) for t in tasks]
    policy = ModelPolicy(
        model,
        tokenizer,
        GenerationConfig(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            batch_size=args.episodes_per_step,
        ),
        name="ppo",
    )
    t0 = time.perf_counter()
    rollout = RolloutConfig(agent=args.agent, seed=seed, progress=False, first_episode=first)
    trajs = run_episodes(policy, tokenizer, envs, rollout, tasks)
    return trajs, n, time.perf_counter() - t0


def score(
    model, head, trajs, n: int, rollout_s: float, args: PPOArgs, procs: Processes | None = None
) -> Batch:
    """[2] Score rolled-out trajectories under the layout, [4] rewards and GAE, [5] whitening."""
    procs = procs or Processes()
    t0 = time.perf_counter()
    kw = dict(temperature=args.temperature, stage_tokens=args.stage_tokens or None)  # [11]
    with torch.no_grad():
        out = layout_forward(model, trajs, args.layout, value_head=head, **kw)  # [2]
        with model.disable_adapter():  # [3] the reference policy
            ref = layout_forward(model, trajs, args.layout, **kw)
    trajs, logprobs, ref_logprobs, values, mask, rollout_s = procs.gather_scored(  # [9] the whole batch
        trajs, out.logprobs, ref.logprobs, out.values, out.mask, rollout_s
    )
    rewards = torch.zeros_like(logprobs)
    advantages = torch.zeros_like(logprobs)
    returns = torch.zeros_like(logprobs)
    kls = torch.zeros_like(logprobs)
    group = args.advantage == "group"
    ems = [float(t.em) for t in trajs]
    baseline = group_baseline(ems, args.group) if group else None
    for b, t in enumerate(trajs):
        T = int(mask[b].sum())
        r, kl = token_rewards(logprobs[b, :T], ref_logprobs[b, :T], float(t.em), args.kl_coef)  # [4]
        adv, ret = gae(r, values[b, :T], args.gamma, args.lam)
        if group:  # [10] reward-to-go minus the group's mean reward
            adv = gae(r, torch.zeros_like(r), args.gamma, args.lam)[0] - baseline[b]
        rewards[b, :T], advantages[b, :T], returns[b, :T], kls[b, :T] = r, adv, ret, kl
    fmask = mask.to(logprobs.dtype)
    advantages = masked_whiten(advantages, fmask)  # [5]
    score_s = time.perf_counter() - t0  # this process's scoring, gathering and advantages
    generated = sum(len(turn.output_ids) for t in trajs for turn in t.turns)
    stats = {
        "reward": sum(t.em for t in trajs) / len(trajs),
        "em_per_objective": sum(t.em / t.objectives for t in trajs) / len(trajs),
        "objectives": n,
        "kl": float((kls * fmask).sum() / len(trajs)),
        "kl_per_token": float(masked_mean(kls, fmask)),
        "peak_tokens": sum(t.peak_tokens for t in trajs) / len(trajs),
        "turns": sum(len(t.turns) for t in trajs) / len(trajs),
        "format_errors": sum(t.format_errors for t in trajs) / len(trajs),
        "policy_tokens": int(mask.sum()),
        "rollout_seconds": rollout_s,
        "rollout_tokens_per_s": generated / max(rollout_s, 1e-9),
        "generated_tokens": generated,
        "score_seconds": score_s,
    }
    if group:  # groups whose episodes scored differently: the only ones that teach anything
        groups = [ems[g : g + args.group] for g in range(0, len(ems), args.group)]
        stats["groups_with_signal"] = sum(max(g) > min(g) for g in groups) / len(groups)
    return Batch(trajs, advantages, returns, logprobs, values, mask, stats)


def update(
    model, head, batch: Batch, optimizers, args: PPOArgs, step: int, procs: Processes | None = None
) -> dict:
    """[6] ppo_epochs passes of clipped updates over minibatches of episodes. [9] Several processes:
    each takes its share of every minibatch, weighted so that the all-reduced gradient is the
    one-process gradient."""
    procs = procs or Processes()
    g = torch.Generator().manual_seed(step_seed(args.seed, step) + 1)
    n = len(batch.trajs)
    logs: dict[str, list[float]] = {}
    first_ratio = None
    t0 = time.perf_counter()
    trained_tokens = 0
    params = trainable_parameters(model) + list(head.parameters())
    for _epoch in range(args.ppo_epochs):
        order = torch.randperm(n, generator=g).tolist()
        for s in range(0, n, args.minibatch_episodes):
            # [9] this process's share of the minibatch (all of it for one process), and its tokens
            idx, minibatch_tokens = procs.split(order[s : s + args.minibatch_episodes], batch.mask)
            trajs = [batch.trajs[i] for i in idx]
            out = procs.forward(  # [2] [11]
                model, head, trajs, args.layout, args.temperature, stage_tokens=args.stage_tokens or None
            )
            T = out.logprobs.shape[1]
            sel = torch.tensor(idx)
            mask = batch.mask[sel][:, :T].to(out.logprobs.dtype)
            adv, ret = batch.advantages[sel][:, :T], batch.returns[sel][:, :T]
            old_lp, old_v = batch.old_logprobs[sel][:, :T], batch.old_values[sel][:, :T]
            pg_loss, clipfrac, approx_kl = policy_loss(out.logprobs, old_lp, adv, mask, args.clip_ratio)
            v_loss = value_loss(out.values, old_v, ret, mask, args.clip_value)
            entropy = masked_mean(out.entropy, mask)
            loss = pg_loss + args.vf_coef * v_loss - args.entropy_coef * entropy
            ratio = masked_mean(torch.exp(out.logprobs - old_lp).detach(), mask)
            # [9] weighted so that the all-reduced gradient is the one-process one; logged: global means
            loss, (pg_loss, v_loss, entropy, clipfrac, approx_kl, ratio) = procs.weigh(
                loss, mask, minibatch_tokens, [pg_loss, v_loss, entropy, clipfrac, approx_kl, ratio]
            )
            if not torch.isfinite(loss):  # [7]
                raise PPOError(
                    f"non-finite loss at step {step} (policy {float(pg_loss)}, value {float(v_loss)}, "
                    f"entropy {float(entropy)}); the last good checkpoint is {args.out}/checkpoint"
                )
            if first_ratio is None:  # [2] 1 up to float error
                first_ratio = float(ratio)
                worst = float(((out.logprobs - old_lp).abs() * mask).max().detach())
                logs["max_abs_log_ratio_first"] = [max(procs.gather([worst]))]  # [9] over all processes
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            procs.backward(loss)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            for opt in optimizers:
                opt.step()
            trained_tokens += minibatch_tokens
            for k, v in (
                ("policy_loss", pg_loss),
                ("value_loss", v_loss),
                ("entropy", entropy),
                ("clipfrac", clipfrac),
                ("approx_kl", approx_kl),
                ("grad_norm", grad_norm),
            ):
                logs.setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v) else float(v))
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        ev = explained_variance(batch.old_values, batch.returns, batch.mask.to(batch.returns.dtype))
    out = {k: sum(v) / len(v) for k, v in logs.items()}
    out |= {
        "first_ratio": first_ratio,
        "explained_variance": ev,
        "train_seconds": seconds,
        "train_tokens_per_s": trained_tokens / max(seconds, 1e-9),
    }
    return out


# ---------------------------------------------------------------------------------------------
# Checkpoints [8]


def _rng_state() -> dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


CHECKPOINT_MARKER = "state.json"
"""written last into a checkpoint: a folder holding it is complete"""


def save_checkpoint(path: Path, model, head, optimizers, step: int, base: str, history: list[dict]) -> None:
    """[8] Write the checkpoint whole into a new folder beside `path`, then swap it in: at every
    instant a complete checkpoint exists at `path` or `path.old` (files.commit_folder)."""
    tmp = new_folder(path)
    try:
        with writing(path):  # a refused write names the checkpoint, not the temporary folder
            save_adapter(tmp, model, head, base)
            torch.save(
                {"optimizers": [o.state_dict() for o in optimizers], "rng": _rng_state()},
                tmp / "optimizer.pt",
            )
            files = {
                f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.is_file()
            }  # trusted on resume
            (tmp / CHECKPOINT_MARKER).write_text(
                json.dumps({"step": step, "history": history, "files": files}) + "\n"
            )
        commit_folder(tmp, path, CHECKPOINT_MARKER)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find_checkpoint(path: Path) -> Path | None:
    """The complete checkpoint a run left: `path`, else `path.old` (a kill mid-swap), else None."""
    return find_folder(path, CHECKPOINT_MARKER)


def save_adapter(path: Path, model, head, base: str) -> None:
    """The adapter (peft format, base named by a path relative to the adapter) and the value head."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    cfg_path = path / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    base_abs = Path(base).resolve()
    if str(base) == "tiny":  # the untrained tiny model (model.load_policy rebuilds it)
        cfg["base_model_name_or_path"] = "tiny"
    else:
        try:
            cfg["base_model_name_or_path"] = str(Path(_relpath(base_abs, path.resolve())))
        except ValueError:
            cfg["base_model_name_or_path"] = str(base_abs)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    torch.save(head.state_dict(), path / "value_head.pt")


def _relpath(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)


def _read_checkpoint_file(path: Path, read):
    """`read(path)`, or one line naming the damaged file: a checkpoint cannot be rebuilt, only
    trained again."""
    try:
        return read(path)
    except FileNotFoundError:
        problem = "is missing"
    except Exception as exc:  # torch, safetensors and json raise many types for a damaged file
        problem = f"cannot be read ({type(exc).__name__})"
    raise PPOError(
        f"{path} {problem}: the checkpoint is damaged; train again into a fresh --out (without --resume)"
    )


def _read_json(path: Path) -> dict:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def load_checkpoint(path: Path, model, head, optimizers) -> tuple[int, list[dict]]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if not (path / CHECKPOINT_MARKER).is_file():
        raise PPOError(f"no checkpoint to resume at {path}")
    state = _read_checkpoint_file(path / CHECKPOINT_MARKER, _read_json)
    if not isinstance(state.get("step"), int) or not isinstance(state.get("history"), list):
        raise PPOError(f"{path / CHECKPOINT_MARKER} lacks its step or history: the checkpoint is damaged")
    files = state.get("files", {})  # absent in a checkpoint of an older run: its files are only read
    for name, digest in sorted(files.items() if isinstance(files, dict) else []):
        if not (path / name).is_file() or sha256_file(path / name) != digest:
            raise PPOError(
                f"{path / name} is damaged or missing (its sha256 differs from the one recorded when it was "
                "saved); train again into a fresh --out (without --resume)"
            )
    weights = _read_checkpoint_file(path / "adapter_model.safetensors", lambda p: load_file(str(p)))
    head_state = _read_checkpoint_file(path / "value_head.pt", torch.load)
    blob = _read_checkpoint_file(path / "optimizer.pt", lambda p: torch.load(p, weights_only=False))
    try:  # the files read, but do they fit this model (another --lora-r, another base size)?
        set_peft_model_state_dict(model, weights)
        head.load_state_dict(head_state)
        for opt, opt_state in zip(optimizers, blob["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        random.setstate(blob["rng"]["python"])
        torch.set_rng_state(blob["rng"]["torch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise PPOError(
            f"{path} does not fit this model ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            "resume with the run's own options"
        ) from None
    return state["step"], state["history"]


def recorded_base(checkpoint: Path) -> str:
    """The base model a checkpoint's adapter was trained over: `tiny`, or a resolved directory."""
    config = checkpoint / "adapter_config.json"
    base = _read_checkpoint_file(config, _read_json).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise PPOError(f"{config} names no base model: the checkpoint is damaged")
    return base if base == "tiny" else str((checkpoint / base).resolve())  # relative to the adapter


def check_base(checkpoint: Path, init: str) -> None:
    """`--resume` continues the adapter over the base it was trained on, or refuses: an adapter over
    another base trains on, silently, as a different model."""
    recorded = recorded_base(checkpoint)
    given = init if init == "tiny" else str(Path(init).resolve())
    if given != recorded:
        raise PPOError(
            f"--init {init} is not the base this run was trained over ({recorded}, named in "
            f"{checkpoint / 'adapter_config.json'}); resume with --init {recorded}"
        )


# ---------------------------------------------------------------------------------------------
# The run


def evaluate_dev(model, tokenizer, domain, args: PPOArgs) -> dict:
    n = args.objectives[0] if domain.name != "qa" else 2
    s = greedy_em(
        model,
        tokenizer,
        domain,
        "dev",
        n,
        args.eval_tasks,
        seed=1,
        agent=args.agent,
        max_new_tokens=args.max_new_tokens,
    )
    return {"dev_em_per_objective": s["em_per_objective"], "dev_format_errors": s["format_errors"]}


def card_command(args: PPOArgs) -> str:
    """The command that reruns this training: the preset plus whatever the run changed."""
    preset = PPOArgs(**PRESETS.get(args.preset, {}))  # a caller's own preset name: the defaults
    parts = [f"mem1 ppo --preset {args.preset} --init {args.init} --out {args.out} --seed {args.seed}"]
    fields = ("agent", "steps", "minutes", "env", "advantage", "episodes_per_step", "layout")
    fields += ("temperature", "actor_lr", "kl_coef", "max_new_tokens")
    for field in fields:
        if getattr(args, field) != getattr(preset, field):
            parts.append(f"--{field.replace('_', '-')} {getattr(args, field)}")
    if args.objectives != preset.objectives:
        parts.append("--objectives " + ",".join(map(str, args.objectives)))
    if args.advantage == "group":
        parts.append(f"--group {args.group}")
    return " ".join(parts)


def compare_to_start(model, tokenizer, domain, args: PPOArgs) -> dict:
    """Greedy dev EM of the trained policy and of its SFT start (the same model with the adapter
    off) on the same tasks, with a paired bootstrap interval of the difference per N."""
    out = {}
    for n, count in args.final_eval:
        n = fit_objectives((n,), domain)[0]
        if f"n{n}" in out:  # a size the domain caps (webshop: N = 1) is compared once, on the first count
            continue
        kw = dict(seed=2, agent=args.agent, max_new_tokens=args.max_new_tokens)
        trained = greedy_em(model, tokenizer, domain, "dev", n, count, **kw)
        with model.disable_adapter():
            start = greedy_em(model, tokenizer, domain, "dev", n, count, **kw)
        a = [t.em / t.objectives for t in start["trajectories"]]
        b = [t.em / t.objectives for t in trained["trajectories"]]
        out[f"n{n}"] = paired_bootstrap(a, b) | {
            "em_per_objective_sft": start["em_per_objective"],
            "em_per_objective_ppo": trained["em_per_objective"],
            "peak_tokens_sft": start["peak_tokens"],
            "peak_tokens_ppo": trained["peak_tokens"],
            "format_errors_sft": start["format_errors"],
            "format_errors_ppo": trained["format_errors"],
        }
        r = out[f"n{n}"]
        print(
            f"dev N={n} ({count} tasks): EM/objective SFT {r['mean_a']:.3f} -> PPO {r['mean_b']:.3f}, "
            f"diff {r['diff']:+.3f} [95% CI {r['low']:+.3f}, {r['high']:+.3f}]",
            flush=True,
        )
    return out


def train_ppo(args: PPOArgs) -> dict:
    """The run. Under `accelerate launch` every process runs this; the main one writes [9], and
    holds the output's lock: a second run on the same --out is refused, naming this one."""
    with one_run(args.out, f"training into {args.out}"):
        return _train_ppo(args)


def _train_ppo(args: PPOArgs) -> dict:
    procs = Processes.start()  # [9] one process unless `accelerate launch` started several
    use_threads(args.threads, args.init)
    out = Path(args.out)
    ckpt = out / "checkpoint"
    check_output(out, folder=True)
    if out.exists() and any(out.iterdir()) and not args.resume:  # a fresh run would overwrite a checkpoint
        raise FileExistsError(f"{out} is not empty; choose another --out, delete it, or pass --resume")
    if args.advantage not in ("gae", "group"):
        raise PPOError(f"unknown advantage {args.advantage!r}: expected gae or group")
    if args.advantage == "group" and (args.group < 2 or args.episodes_per_step % args.group):
        raise PPOError(
            f"--advantage group: --group must be >= 2 and divide the episodes per step "
            f"({args.episodes_per_step}), got {args.group}"
        )
    found = find_checkpoint(ckpt) if args.resume else None
    if args.resume and found is None:
        raise PPOError(f"--resume: no checkpoint at {ckpt} or {ckpt}.old (a complete one holds state.json)")
    if args.episodes_per_step % procs.count or args.minibatch_episodes % procs.count:
        raise PPOError(
            f"{procs.count} processes: episodes per step ({args.episodes_per_step}) and per minibatch "
            f"({args.minibatch_episodes}) must both be multiples of the number of processes"
        )
    spec = resolve_model(args.init)
    check_init(spec.path)
    if found is not None:
        check_base(found, spec.path)
    procs.wait()  # every process has looked at `out` before the main one writes into it
    domain = load_domain(args.env, args.data)
    args = replace(args, objectives=fit_default(args.objectives, PPOArgs.objectives, domain))
    model, head, tokenizer = build_policy(args.init, args, device=procs.device)
    if spec.path != "tiny":  # a trained model on a world of names it cannot write: one line, no run
        domain.check_tokenizer(tokenizer, args.init)
    optimizers = procs.prepare(
        model,
        head,
        args.layout,
        args.temperature,
        *make_optimizers(model, head, args),
        stage_tokens=args.stage_tokens or None,
    )  # [9]
    start, history = 0, []
    if args.resume:
        start, history = load_checkpoint(found, model, head, optimizers)
        if procs.main:
            print(f"resumed from {found} at step {start}", flush=True)
    log_path = out / "log.jsonl"
    if procs.main:  # created only now: a run that fails to start leaves no directory to block a rerun
        out.mkdir(parents=True, exist_ok=True)
        write_text(log_path, "".join(json.dumps(h) + "\n" for h in history))
    t_start = time.perf_counter()
    if start == 0 and args.eval_every and procs.main:
        history.append({"step": 0, "minutes": 0.0} | evaluate_dev(model, tokenizer, domain, args))
        append_text(log_path, json.dumps(history[-1]) + "\n")
    bar = tqdm(range(start, args.steps), desc="ppo", initial=start, total=args.steps, disable=not procs.main)
    step = start
    for step in bar:
        batch = collect(model, head, tokenizer, domain, args, step, procs)
        upd = update(model, head, batch, optimizers, args, step, procs)
        record = (
            {"step": step + 1, "minutes": round((time.perf_counter() - t_start) / 60, 2)} | batch.stats | upd
        )
        if args.eval_every and (step + 1) % args.eval_every == 0 and procs.main:
            record |= evaluate_dev(model, tokenizer, domain, args)
        history.append(record)
        if procs.main:
            append_text(log_path, json.dumps(record) + "\n")
            bar.set_postfix(
                reward=f"{record['reward']:.2f}", kl=f"{record['kl']:.3f}", clip=f"{record['clipfrac']:.2f}"
            )
            print(
                f"step {step + 1:3d}  reward {record['reward']:.3f}  kl {record['kl']:.4f}  clipfrac "
                f"{record['clipfrac']:.3f}  approx_kl {record['approx_kl']:.4f}  "
                f"entropy {record['entropy']:.3f}  "
                f"value_loss {record['value_loss']:.4f}  ev {record['explained_variance']:.3f}  peak "
                f"{record['peak_tokens']:.0f}  tok/s {record['rollout_tokens_per_s']:.0f}/"
                f"{record['train_tokens_per_s']:.0f}"
                + (
                    f"  dev_em/obj {record['dev_em_per_objective']:.3f}"
                    if "dev_em_per_objective" in record
                    else ""
                ),
                flush=True,
            )
            if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.steps:
                save_checkpoint(ckpt, model, head, optimizers, step + 1, spec.path, history)
        if procs.decide((time.perf_counter() - t_start) / 60 >= args.minutes):
            if procs.main:
                print(f"time budget of {args.minutes} min reached after step {step + 1}", flush=True)
                save_checkpoint(ckpt, model, head, optimizers, step + 1, spec.path, history)
            break
    bar.close()
    digests = procs.digests(model, head)  # [9] every process must hold the very same parameters
    if len(set(digests)) > 1:
        raise PPOError(f"the {procs.count} processes ended with different parameters: {digests}")
    if not procs.main:
        return {}
    with writing(out):
        save_adapter(out, model, head, spec.path)
    comparison = compare_to_start(model, tokenizer, domain, args) if args.final_eval else {}
    fig = ppo_curves(history, title=f"PPO {args.preset} from {Path(args.init).name}")
    save_figure(fig, out / "curves.png")
    card = {
        "kind": "ppo",
        "base": spec.path if spec.path == "tiny" else str(Path(spec.path)),
        "command": card_command(args),
        "args": asdict(args),
        "steps": len([h for h in history if "reward" in h]),
        "minutes": round((time.perf_counter() - t_start) / 60, 1),
        "last": history[-1] if history else {},
        "dev_comparison": comparison,
        "processes": procs.count,
        "parameter_sha256_per_process": digests,
        "sha256": {name: sha256_file(out / name) for name in ("adapter_model.safetensors", "value_head.pt")},
    }
    write_text(out / "card.json", json.dumps(card, indent=2, default=str) + "\n")
    return card


__all__ = ["PPOArgs", "PPOError", "make_args", "train_ppo", "build_policy", "collect", "update"]
