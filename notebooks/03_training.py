# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Training: teach a tiny model to read (SFT), then LoRA PPO on masked trajectories
#
# MEM1 starts from a pretrained Qwen2.5-7B that already reads, and trains it with RL. We start from
# nothing: a 1.6 M-parameter Qwen2 initialised at random, on a CPU. So the paper's single RL stage
# becomes two:
#
# 1. **SFT** (supervised warm start) on the scripted teacher's turns, in exactly the view the mem1
#    agent feeds the model: the prompt, the previous response and the previous observation. This is
#    where the model must learn to *read*: copy a name from a passage into its internal state and
#    its next query, and pick the right one among look-alikes.
# 2. **PPO** with LoRA adapters, on masked trajectories, as in the paper.
#
# > Everything here runs in quick mode by default (`MEM1_QUICK=1`, a few minutes: mechanics, not
# > skill). The shipped checkpoints under `data/checkpoints/` were trained with the `standard`
# > presets; their cards and curves are loaded below when present.

# %%
import json
import os
import tempfile
from pathlib import Path

import torch

from mem1lite.domains import QADomain
from mem1lite.model import TINY_DIR, load_policy, load_tokenizer
from mem1lite.plots import ppo_curves, probe_curves
from mem1lite.probe import compare_with_teacher, greedy_em, teacher_trajectories
from mem1lite.threads import use_threads

QUICK = os.environ.get("MEM1_QUICK", "1") != "0"
use_threads(None)  # the one thread policy (threads.py): one thread for the tiny model
CHECKPOINTS = (
    Path("../data/checkpoints") if Path("../data/checkpoints").exists() else Path("data/checkpoints")
)
SFT_SHIPPED = CHECKPOINTS / "sft-mem1"
PPO_SHIPPED = CHECKPOINTS / "ppo-mem1"
qa = QADomain()
tokenizer = load_tokenizer(TINY_DIR)
print(
    "quick mode" if QUICK else "full mode",
    "| shipped SFT:",
    SFT_SHIPPED.exists(),
    "| shipped PPO:",
    PPO_SHIPPED.exists(),
)

# %% [markdown]
# ## The SFT data: the mem1 view, one sample per turn
#
# A sample is the exact token ids the teacher was fed at one turn, followed by what it wrote. In the
# first stage the loss covers every token; later only the response (underlined below as `[...]`).

# %%
traj = teacher_trajectories(qa, tokenizer, "sft", 2, 1, seed=0)[0]
j = 2
context = tokenizer.decode(traj.context_ids(j), skip_special_tokens=False)
response = tokenizer.decode(traj.turns[j].output_ids, skip_special_tokens=False)
print(
    f"turn {j}: {len(traj.context_ids(j))} context tokens, {len(traj.turns[j].output_ids)} response tokens\n"
)
print("...", context[-700:])
print("\n[", response, "]")

# %% [markdown]
# ## The recipe, and why
#
# `mem1lite/sft.py` documents it; in short:
#
# - **Stage `read`: language-model loss on every token**, passages included. Passages repeat names
#   ("The birthplace of Talis Morrow is … The mentor of Talis Morrow is …"); predicting the repeats
#   is what grows the copying circuits. With the loss on responses only, a prototype guessed name
#   parts for 30 minutes (docs/DESIGN.md).
# - **A constant learning rate** after warm-up: the switch from guessing to copying comes late.
# - **Stage `respond`**: loss on the response only, then a short linear decay (`anneal`).
# - **Data mixes N = 1..4**, so the state's answer list is seen with 0..3 entries. The paper trains on
#   N = 2 only; `mem1 sft --preset standard --objectives 2` trains that variant (not shipped). The
#   study run shipped instead, `sft-mem1-n8` (N = 1..8), shows why more sizes matter at this scale:
#   a trained policy tracks about as many questions as its data had (notebook 04, README).
#
# The **reading probe** runs every few minutes: teacher-forced accuracy of name tokens on `dev`
# (entities never trained on), split into the first / second name part, and into *copies* (the
# name is already in the prompt or the previous state) and *facts* (the name is only in the
# retrieved passages: the model had to read it). Greedy dev EM comes now and then.
#
# Below: the curves of an exploratory 90-minute run on a shared machine (about 8.8 M tokens): the
# format is learned in minutes, then nothing happens to the first name part for ~4 M tokens, then
# copying switches on, copies first and extracted facts after.

# %%
exp = Path("../docs/experiments/exp1-probe.jsonl")
exp = exp if exp.exists() else Path("docs/experiments/exp1-probe.jsonl")
if exp.exists():
    records = [json.loads(line) for line in exp.read_text().splitlines()]
    fig = probe_curves(records, title="exploratory run: read stage only, N = 1..4, shared CPU")

# %% [markdown]
# ### The shipped SFT checkpoint

# %%
if SFT_SHIPPED.exists():
    card = json.loads((SFT_SHIPPED / "card.json").read_text())
    print(card["command"], "|", card["minutes"], "min |", f"{card['tokens'] / 1e6:.0f} M tokens of data")
    print(json.dumps(card["dev_metrics"], indent=1))
    records = [json.loads(line) for line in (SFT_SHIPPED / "probe.jsonl").read_text().splitlines()]
    fig = probe_curves(records, title="shipped SFT run")

# %% [markdown]
# What the shipped run (60 minutes, one thread, ~18 M tokens trained) shows:
#
# - In `read`, the same delayed switch as the exploratory run: copied first name parts sit at 0 for
#   ~15 minutes (~6 M tokens), then climb to 0.9; second parts and extracted facts lag far behind
#   (a fact's second part 0.33 at the end of the stage), and greedy EM is still 0.
# - `respond` moves the loss onto what the agent writes, and that is where EM appears: fact second
#   parts 0.33 -> 0.88, greedy dev EM per objective 0 -> 0.56 (N = 1) within ten minutes.
# - The final card: dev EM per objective 0.72 / 0.63 / 0.33 at N = 1 / 2 / 4 on entities never
#   trained on, against 0.87 on `sft`-pool tasks at N = 2 (the gap is memorising). At N = 8 and 16,
#   sizes it never saw, it nearly always fails (0.016, 0.003): the state format generalises, the
#   tiny model does not.

# %% [markdown]
# ### Long tasks: every size in the data
#
# The shipped run fails at N = 8 and 16 because its data stopped at N = 4 (notebook 04's failure
# anatomy shows the walls sit exactly there). In the mem1 view a turn's context stays under ~0.7 k
# tokens whatever N, so adding N = 16 costs no more per sample than N = 2: that asymmetry is MEM1's
# lever. `mem1 sft --preset long --init data/checkpoints/sft-mem1-n8 --pointer number` continues the
# N <= 8 study run on N = 1..16 (half the tasks at N = 16, so that long answers lists are common),
# loss on responses only. `--pointer number` makes the teacher's state keep the question's number
# (`question: 6. Who is ...?`): the next question is then "the line numbered one more", a cheaper
# pointer to follow in a long prompt than matching a whole question's text. The two lines below are
# what the data's sizes look like, then the shipped run's card.

# %%
from mem1lite.protocol import task_prompt  # noqa: E402
from mem1lite.sft_data import tasks_per_size  # noqa: E402
from mem1lite.teacher import teacher_for  # noqa: E402

counts = tasks_per_size(range(1, 17), 2400, long_share=0.5)
print({n: counts[n] for n in (1, 2, 8, 15, 16)})
q = ["Who is the mayor of Velmora Vale?", "Who is the founder of Kel Works?"]
context = f"<|im_start|>user\n{task_prompt(q)}<|im_end|>\n<|im_start|>assistant\n"
print(teacher_for("number")(context))
LONG = SFT_SHIPPED.parent / "sft-mem1-n16"
if LONG.exists():
    card = json.loads((LONG / "card.json").read_text())
    print(card["command"], "|", card["minutes"], "min |", f"{card['tokens'] / 1e6:.0f} M tokens of data")
    print({k: round(v, 3) for k, v in card["dev_metrics"].items() if k.startswith("em_per_objective")})

# %% [markdown]
# Dev EM per objective of `sft-mem1-n16` at N = 1 / 2 / 4 / 8 / 16: 0.53 / 0.49 / 0.48 / 0.22 /
# 0.16 (the start, `sft-mem1-n8`: 0.53 / 0.44 / 0.34 / 0.16 / 0.01). On the test split it keeps 38%
# of its N = 2 score at N = 16 (the paper's MEM1 keeps 35%) and beats the full-context baseline
# there; the text-pointer control trained the same way keeps 19% (README, "Long tasks").

# %% [markdown]
# ### A quick run, live
#
# The `quick` preset trains for well under a minute: enough to watch the mechanics (data, stages,
# probe, card), not to learn to read.

# %%
from mem1lite.sft import make_args, train_sft  # noqa: E402

quick_dir = Path(tempfile.mkdtemp()) / "sft-quick"
quick_card = train_sft(make_args("quick", out=str(quick_dir)))
records = [json.loads(line) for line in (quick_dir / "probe.jsonl").read_text().splitlines()]
fig = probe_curves(records, title="quick SFT run (mechanics only)")

# %% [markdown]
# ### What the model gets right and wrong
#
# Teacher-forced: at each turn of a teacher episode, the model writes its own response in the
# teacher's context. Mismatches show where it fails before errors compound over turns.

# %%
sft_dir = SFT_SHIPPED if SFT_SHIPPED.exists() else quick_dir
sft_model, sft_tokenizer = load_policy(sft_dir)
for row in compare_with_teacher(sft_model, sft_tokenizer, qa, objectives=2, count=1, max_new_tokens=96):
    mark = "==" if row["match"] else "!="
    print(f"turn {row['turn']} {mark}\n  teacher: {row['teacher']}\n  model:   {row['model'][:300]}")

# %% [markdown]
# ## PPO on masked trajectories
#
# `mem1lite/ppo.py` is our own loop (TRL 1.x has no PPO trainer). Each step rolls out a batch of
# episodes with the mem1 agent on the `rl` pool, scores every policy token *in the exact context it
# was generated in* (the `packed` layout of notebook 02), and makes a few clipped updates of the
# LoRA adapter and a value head. The arithmetic lives in `mem1lite/ppo_math.py`; here it is on toy
# numbers, detail by detail.
#
# **Rewards on policy tokens only.** Each policy token gets a KL penalty against the reference (the
# same model with the adapter switched off); the task reward (EM summed over objectives) lands on
# the episode's last generated token. Observation tokens are not steps at all.

# %%
from mem1lite.ppo_math import gae, masked_whiten, policy_loss, token_rewards, value_loss  # noqa: E402

logp = torch.tensor([-1.0, -0.5, -2.0, -0.1])  # 2 tokens of turn 0, then 2 of turn 1
ref = torch.tensor([-1.5, -0.5, -1.0, -0.1])
rewards, kl = token_rewards(logp, ref, task_reward=2.0, kl_coef=0.1)
print("per-token KL", kl.tolist(), "\nrewards     ", rewards.tolist())

# %% [markdown]
# **GAE over policy tokens** (γ = λ = 1 by default, as in the paper): the advantage of a token is
# the reward still to come minus the value estimate there.

# %%
values = torch.tensor([0.5, 1.0, 1.5, 1.8])
advantages, returns = gae(rewards, values, gamma=1.0, lam=1.0)
print("returns   ", returns.tolist(), "\nadvantages", advantages.tolist())
print("whitened  ", masked_whiten(advantages, torch.ones(4)).tolist())

# %% [markdown]
# **Clipped ratio and clipped value loss.** A ratio that moved past 1 ± 0.2 in the direction the
# advantage favours gets no more gradient; the value loss takes the worse of the clipped and
# unclipped errors.

# %%
loss, clipfrac, approx_kl = policy_loss(
    torch.tensor([[-0.5]]), torch.tensor([[-1.0]]), torch.tensor([[1.0]]), torch.ones(1, 1)
)
print(f"policy loss {loss:.3f} (clipped at -1.2), clipfrac {clipfrac:.0f}, approx KL {approx_kl:.3f}")
print(
    "value loss",
    float(value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.ones(1, 1))),
)

# %% [markdown]
# ### A quick PPO run, live
#
# Three steps of 8 episodes from the SFT checkpoint: mechanics only (reward, KL, clipping, entropy,
# value fit and throughput are logged each step; the first minibatch has ratio 1 exactly, because
# the layout is exact).

# %%
from mem1lite.ppo import make_args as ppo_args  # noqa: E402
from mem1lite.ppo import train_ppo  # noqa: E402

ppo_dir = Path(tempfile.mkdtemp()) / "ppo-quick"
ppo_card = train_ppo(ppo_args("quick", init=str(sft_dir), out=str(ppo_dir)))
history = [json.loads(line) for line in (ppo_dir / "log.jsonl").read_text().splitlines()]
fig = ppo_curves(history, title="quick PPO (mechanics only)")
print("first-minibatch ratio of step 1:", history[0]["first_ratio"])

# %% [markdown]
# ### The shipped PPO adapter
#
# An adapter directory names its base (the SFT checkpoint) by a relative path, so `load_policy`
# loads both. Its card holds the curves of the standard run and the dev comparison with SFT.

# %%
if PPO_SHIPPED.exists():
    card = json.loads((PPO_SHIPPED / "card.json").read_text())
    print(card["command"], "|", card["minutes"], "min |", card["steps"], "steps")
    ppo_model, ppo_tokenizer = load_policy(PPO_SHIPPED)
    history = [json.loads(line) for line in (PPO_SHIPPED / "log.jsonl").read_text().splitlines()]
    fig = ppo_curves(history, title="shipped PPO run")
    n_tasks = 8 if QUICK else 200
    for name, model in (("sft", sft_model), ("ppo", ppo_model)):
        s = greedy_em(model, sft_tokenizer, qa, "dev", 2, n_tasks, seed=1)
        print(f"{name}: dev EM per objective at N = 2 over {n_tasks} tasks: {s['em_per_objective']:.3f}")
    for n, r in card["dev_comparison"].items():
        ci = f"[{r['low']:+.3f}, {r['high']:+.3f}]"
        print(f"card, {n}: SFT {r['mean_a']:.3f} -> PPO {r['mean_b']:.3f}, 95% CI of the difference {ci}")

# %% [markdown]
# What the shipped run shows: on N = 2, the size it trained on, PPO lifts greedy dev EM per
# objective from 0.61 to 0.82 (200 tasks; the paired bootstrap interval of the difference,
# [+0.17, +0.26], excludes 0). The gain shrinks with N (+0.06 at N = 4, not significant over 50
# tasks) and vanishes at N = 16, where the SFT model never worked: RL sharpens what SFT half
# learned, it does not teach the model to handle eight or sixteen questions. The paper's gain grows
# with N because its 7B base already handles long prompts. The KL to the reference grew steadily
# (its coefficient, 1e-3, barely resists), the clip fraction stayed under 1%, and the value head
# never explained the returns: with one reward at the end it acts as a baseline.

# %% [markdown]
# ### Exact log-probs or the paper's stitched layout: what PPO is fed
#
# PPO's ratio, KL and gradient all come from the log-probs the training forward computes
# (notebook 02). The paper's `stitched` layout lays every token out once under one 2D mask, so
# from mem1's turn 2 on a kept token's hidden state is computed under a context the policy never
# saw at generation: on the trained checkpoints its log-probs are off by a mean of ~1.5 nats.
# Two runs from `sft-mem1-n16` with the same seed, scored with `packed` (exact) and with
# `--layout stitched`, compared over their first 25 steps (logs committed under
# `docs/results/ppo-layout/`; the commands are in the README, "Masked trajectories"):

# %%
from mem1lite.plots import ppo_layout_comparison  # noqa: E402

layout_dir = CHECKPOINTS.parent.parent / "docs" / "results" / "ppo-layout"
runs = {
    name: [json.loads(line) for line in (layout_dir / f"{name}-log.jsonl").read_text().splitlines()]
    for name in ("packed", "stitched")
}
runs["packed"] = [r for r in runs["packed"] if r.get("step", 0) <= 25]  # the same steps as stitched
for name, history in runs.items():
    steps = [r for r in history if "clipfrac" in r]
    mean = {k: sum(r[k] for r in steps) / len(steps) for k in ("clipfrac", "approx_kl", "entropy", "reward")}
    negative = sum(r["kl"] < 0 for r in steps)
    shown = "  ".join(f"{k} {v:.4f}" for k, v in mean.items())
    print(f"{name:8s} {shown}  KL estimate < 0 on {negative} steps")
fig = ppo_layout_comparison(runs, title="PPO from sft-mem1-n16: packed (exact) vs stitched")

# %% [markdown]
# Both runs score their "old" log-probs with their own layout, so the first-minibatch ratio is 1
# in both: the error hides there. It shows in what the optimizer is fed: under stitched the
# sampled tokens sit in a distribution 2.4x as entropic, where they are often improbable; their
# gradients are larger, six times as many ratios leave the clip range, the approximate KL per
# update is 12x, and the KL estimate to the reference (a sum of log-prob differences at tokens
# the *generation* distribution sampled) goes negative on 3 of 25 steps, which an honest estimate
# cannot. At this size learning still moved (dev N = 2: 0.417 -> 0.510 after 25 stitched steps;
# packed 0.542 after 51): the bias is there, its cost is not separable from noise in 25 steps.
