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
# # 02 · Masked trajectories: training on rollouts that forget
#
# A MEM1 agent rewrites its internal state every turn and throws the rest away, so a rollout is
# not one sequence the way a chat transcript is. The public summary of the paper puts the problem
# and the fix in two sentences:
#
# *"Because MEM1 dynamically prunes context, standard policy optimization breaks since tokens
# don't belong to a single continuous trajectory. The authors solve this by stitching
# sub-trajectories together and applying 2D attention masks that restrict each token's attention
# to only what was visible when it was generated."*
#
# > Our notes are in blockquotes. PPO needs, for every token the policy produced, its log-prob
# > under the *current* parameters **in the context it was produced in**. This notebook builds the
# > three ways `mem1lite.masks` computes that, draws their masks, checks them against the
# > log-probs recorded while sampling, shows the masking bug of the official code live, and
# > measures how far the paper's stitched layout is from exact.

# %%
import copy
import inspect
import os
import time

import matplotlib.pyplot as plt
import torch

from mem1lite.generate import GenerationConfig, ModelPolicy, TeacherPolicy
from mem1lite.masks import (
    additive_mask,
    bool_mask_as_float,
    build_layout,
    build_packed,
    layout_forward,
    logprob_deviation,
    mask_row,
    packed_blocks,
    run_layout,
    without_float32_islands,
)
from mem1lite.model import DATA_DIR, TINY_DIR, build_tiny_model, load_policy, load_tokenizer
from mem1lite.plots import plot_mask
from mem1lite.protocol import QAEnvironment
from mem1lite.retrieval import Retriever
from mem1lite.rollout import RolloutConfig, run_episodes
from mem1lite.terms import LAYOUTS
from mem1lite.threads import use_threads
from mem1lite.world import load_world, make_tasks

use_threads(None)  # the one thread policy (threads.py): one thread for the tiny model
t_start = time.perf_counter()
QUICK = os.environ.get("MEM1_QUICK", "1") != "0"
"""quick (default, what CI runs): 2 rollouts of the trained policy; MEM1_QUICK=0: 4, as the bench"""
EPISODES = 2 if QUICK else 4
world = load_world()
tokenizer = load_tokenizer(TINY_DIR)
retriever = Retriever(world.documents_of("dev"))
tasks = make_tasks(world, "dev", 2, 4, seed=0)


def rollouts(policy, agent, tasks=tasks, **kw):
    envs = [QAEnvironment.from_task(t, retriever) for t in tasks]
    return run_episodes(policy, tokenizer, envs, RolloutConfig(agent=agent, progress=False, **kw), tasks)


teacher_mem1 = rollouts(TeacherPolicy(tokenizer), "mem1")
traj = teacher_mem1[0]
print(f"{len(traj.turns)} turns, prompt {len(traj.prompt_ids)} tokens, contexts {traj.context_lengths()}")

# %% [markdown]
# ## One rollout, many contexts
#
# Each turn records the *spans* it saw: `[piece, start, end]`, where piece -1 is the prompt,
# `2j` the response of turn j and `2j+1` the observation that followed it. The mem1 agent sees
# the prompt, its last response (internal state + action) and the last observation, nothing older.

# %%
NAMES = {-1: "prompt"}
for j, turn in enumerate(traj.turns):
    seen = ", ".join(
        f"{NAMES.get(p, ('response ' if p % 2 == 0 else 'observation ') + str(p // 2))}[{a}:{b}]"
        for p, a, b in turn.spans
    )
    print(f"turn {j}: sees {seen}  ->  writes {len(turn.output_ids)} tokens ({turn.action})")
print("\nlast response:", tokenizer.decode(traj.turns[-1].output_ids))

# %% [markdown]
# ## Three layouts
#
# 1. **`per_turn`** (the reference): every turn's context + response is its own causal sequence.
#    Exact, but the prompt is re-encoded once per turn, and under the `full` agent the history is
#    re-encoded once per turn too (quadratic in turns).
# 2. **`packed`** (exact): the prompt once, then one *block* per turn holding fresh copies of what
#    that turn saw after the prompt, followed by its response. A block attends to the prompt and
#    causally to itself; every token keeps the position id it had when sampled. Consecutive turns
#    share a block when one's context extends the other's (mem1's turns 0 and 1; every turn of
#    `full`, which therefore packs into one ordinary causal sequence).
# 3. **`stitched`** (the paper's): each token once, in order, with a 2D mask that lets it see only
#    what it saw when it first appeared.
#
# > `packed` and `packed_dense` are the same computation: `packed_dense` is one sequence per
# > trajectory with a dense L x L mask (the pictures below); `packed` encodes the prompts, then
# > runs all blocks as one padded batch whose prefix is the prompt's KV cache, expanded over the
# > blocks. Gradients flow back through the shared prefix; no L x L mask is ever built.

# %%
for layout in LAYOUTS:
    b = build_layout([traj], layout)
    shapes = " + ".join(f"{tuple(s.input_ids.shape)}" for s in b.stages)
    print(
        f"{layout:12s} stages {shapes:18s} tokens fed {b.layout_tokens:5d}  policy tokens {b.policy_tokens}"
    )
print("packed blocks (tokens after the prompt):", [len(blk.ids) for blk in packed_blocks(traj)])

# %% [markdown]
# ## The code of the exact layout
#
# `packed` is one function, `build_packed`, on top of `packed_blocks`. It only builds tensors;
# `run_layout` runs them. First the blocks: each turn's context *after the prompt*, then its
# response. A turn joins the previous block when that block is a prefix of its context (same ids at
# the same positions give the same hidden states, so there is nothing to recompute); otherwise it
# opens a fresh block. `scores` remembers, for each response token, which block token predicts it.

# %%
print(inspect.getsource(packed_blocks))

# %% [markdown]
# Then `build_packed`. Skip the `if dense:` branch (the same blocks laid end to end in one row per
# trajectory, with an L x L mask: the pictures below) and read the rest in four parts:
#
# 1. **The prompt's KV once** (`prompt_stage`): each trajectory's prompt is one plain causal row.
#    `run_layout` keeps this stage's KV cache and hands every block its owner's rows
#    (`prefix_rows`), so a prompt is encoded once per trajectory instead of once per turn, and every
#    block's gradient flows back into it.
# 2. **Turn blocks, padded** (`block_stage`): all blocks of all trajectories, right-padded to the
#    longest (`Lb`), run as one batch: one forward for the whole rollout batch.
# 3. **The mask** (`visible`, bool): a block row sees its owner's prompt (the first `P` keys, up to
#    that prompt's own length, since prompts are padded too) and itself causally; padding is hidden,
#    except that every row sees itself, so no softmax row is empty (NaN). `run_layout` turns it
#    into the *additive* mask the model adds to its attention scores: 0 where visible, the dtype's
#    most negative number where hidden (`additive_mask`, printed below). Never a bool cast to float;
#    see the official pitfall further down.
# 4. **Generation-time position ids** (`_positions(b_len, Lb, start=owner_p)`): a block counts on
#    from its owner's prompt length, the positions its tokens had when the turn was sampled (the
#    turn's context was the prompt followed by exactly these tokens). Rotary embeddings make a
#    token at another position another computation, so positions are always passed explicitly.
#
# Last, `score_index` picks for every response token the hidden state of the token before it, in
# trajectory and turn order across both stages (a block's first response token is predicted by the
# prompt's last token). Only those rows reach the LM head.

# %%
print(inspect.getsource(build_packed))
print(inspect.getsource(additive_mask))
packed = build_layout([traj], "packed")
prompt_stage, block_stage = packed.stages
print("prompt stage", tuple(prompt_stage.input_ids.shape), " block stage", tuple(block_stage.input_ids.shape))
for blk_pos, n in zip(block_stage.position_ids, block_stage.lengths):
    print(f"block of {n:3d} tokens at positions {int(blk_pos[0])}..{int(blk_pos[n - 1])}")
assert all(int(p[0]) == len(traj.prompt_ids) for p in block_stage.position_ids)

# %% [markdown]
# ## The masks
#
# Queries run down, keys across; a coloured cell means "may attend", coloured by the key's kind
# (prompt, internal state, action, answer, information). The strips along the edges band the
# rows and columns by kind.
#
# In `packed_dense` each turn's block is a triangle standing on the prompt's columns; blocks never
# see each other. In `stitched` the same turns are interleaved: a response row sees the previous
# response and observation, which are stored only once.

# %%
fig = plot_mask(traj, "packed_dense")
plt.show()
fig = plot_mask(traj, "stitched")
plt.show()

# %% [markdown]
# ### The mask row of one token
#
# Take the first token of the last turn's response. What may it see? Exactly the context of that
# turn: the prompt, the previous response and the previous observation.

# %%
dense = build_layout([traj], "packed_dense")
stage = dense.stages[0]
j = len(traj.turns) - 1
query = int(dense.score_index[dense.turn_index == j][0]) + 1  # the token after its predictor
row = mask_row(dense, 0, query)
kinds = stage.kinds[0]
runs, start = [], 0
for i in range(1, len(row) + 1):
    if i == len(row) or row[i] != row[start] or kinds[i] != kinds[start]:
        runs.append((start, i, bool(row[start]), kinds[start]))
        start = i
print(f"query position {query} (kind {kinds[query]!r}) sees {int(row.sum())} of {len(row)} tokens:")
for a, b, vis, k in runs:
    if vis:
        print(f"  [{a:4d}:{b:4d}) kind {k!r}")
assert int(row.sum()) == len(traj.context_ids(j)) + 1  # its turn's context, and itself

# %% [markdown]
# ## Exactness, live
#
# Now a real policy: the tiny Qwen2 (untrained, float64), sampling at temperature 1, records the
# log-prob of every token it samples. Re-scoring the same tokens through a layout must give the
# same numbers.
#
# > Stock Qwen2 has two float32 islands even in a float64 model (RMSNorm casts to float32; eager
# > attention's softmax runs in float32). On a trained checkpoint's rollouts they put up to ~4e-6
# > (mean ~2e-8) between two computations of the same log-prob under eager attention, so for
# > this float64 check we keep them in float64 (`without_float32_islands`). The tests do the
# > same, and check float32 too.

# %%
with without_float32_islands():
    model = build_tiny_model(dtype=torch.float64)
    policy = ModelPolicy(model, tokenizer, GenerationConfig(max_new_tokens=24, temperature=1.0))
    sampled = {agent: rollouts(policy, agent, tasks[:2], truncate_tokens=200) for agent in ("mem1", "full")}
    for agent, trajs in sampled.items():
        for layout in LAYOUTS:
            with torch.no_grad():
                dev = logprob_deviation(layout_forward(model, trajs, layout))
            print(f"{agent:5s} {layout:12s} max |Δ logprob| {dev['max_abs']:.1e}  mean {dev['mean_abs']:.1e}")

# %% [markdown]
# `per_turn`, `packed` and `packed_dense` agree with generation to float64 rounding; `stitched`
# does only for `full` (nothing pruned) and drifts for `mem1`. Gradients agree too:

# %%
with without_float32_islands():
    params = [p for p in model.parameters()]
    trajs = sampled["mem1"]

    def grads(layout):
        out = layout_forward(model, trajs, layout)
        return torch.autograd.grad((out.logprobs * out.mask).sum(), params)

    ref = grads("per_turn")
    scale = max(g.abs().max() for g in ref)
    for layout in ("packed", "packed_dense", "stitched"):
        err = max((g - r).abs().max() for g, r in zip(grads(layout), ref)) / scale
        print(f"{layout:12s} max |Δ grad| / max |grad| = {err:.1e}")

# %% [markdown]
# ## The official pitfall: a bool mask cast to float hides nothing
#
# A mask can be *boolean* (True = may attend) or *additive* (0 = may attend, a huge negative
# number = hidden, added to the attention scores before the softmax). The official MEM1 code
# builds a boolean mask, casts it to bf16 and passes it where an additive one is expected: visible
# keys get +1, hidden keys +0. A constant shift per row changes almost nothing, and **nothing is
# hidden, not even the future**.
#
# > The test: change the last token of the trajectory, and watch the log-prob of the very first
# > response token. With our mask it cannot move; with the cast one it does.

# %%
with without_float32_islands():
    t0 = sampled["mem1"][0]
    batch = build_layout([t0], "packed_dense")
    changed = build_layout([t0], "packed_dense")
    last = changed.stages[0].lengths[0] - 1
    changed.stages[0].input_ids[0, last] = (changed.stages[0].input_ids[0, last] + 1) % 100
    with torch.no_grad():
        for name, fn in (("additive (ours)", additive_mask), ("bool cast to float", bool_mask_as_float)):
            before = run_layout(model, batch, mask_fn=fn)
            after = run_layout(model, changed, mask_fn=fn)
            moved = abs(float(before.logprobs[0, 0] - after.logprobs[0, 0]))
            off = logprob_deviation(before)["max_abs"]
            print(f"{name:20s} first token moves by {moved:.2e}; vs generation max |Δ| {off:.2e}")

# %% [markdown]
# ### The same mask on a trained policy, through transformers' own call
#
# The official actor passes its 4D mask of ones and zeros (bfloat16, the model's dtype) straight to
# the model. transformers hands a 4D mask to SDPA as it is, and SDPA reads a float mask as
# *additive*, so causal masking is gone as well: a training forward sees later tokens and the
# padding. Below, the shipped `sft-mem1` plays a few tasks at temperature 1, and
# `official_mask_leak` scores the last turn of the first rollout with the model's own forward: the
# official mask against ours, when the last token changes (`future`) and when hidden padding is
# put in front (`padding`). Then `layout_leaks` asks the same of every one of our layouts.

# %%
import transformers  # noqa: E402

from mem1lite.layout_check import (  # noqa: E402
    layout_deviation,
    layout_leaks,
    official_mask_leak,
    pick,
    plot_stitched_by_turn,
    sample_rollouts,
)

sft, sft_tokenizer = load_policy(DATA_DIR / "checkpoints" / "sft-mem1")
sft_rollouts = sample_rollouts(sft, sft_tokenizer, "mem1", 4, EPISODES, seed=0)
print(f"sft-mem1, mem1 agent, N = 4: turns {[len(t.turns) for t in sft_rollouts]}")
print(f"transformers {transformers.__version__}, float32:", official_mask_leak(sft, sft_rollouts[0]))
with without_float32_islands():
    sft64 = copy.deepcopy(sft).to(torch.float64)
    for layout in LAYOUTS:
        print(f"ours, {layout:12s} (float64):", layout_leaks(sft64, sft_rollouts, layout))

# %% [markdown]
# > Under the official mask a later token moves earlier log-probs by tenths of a nat and hidden
# > padding by nats; under ours by 0 (future) and float rounding (padding). `after` shows that the
# > changed token did reach the model: only the tokens after it moved.

# %% [markdown]
# ## How far is the stitched approximation?
#
# In `stitched`, a kept token's hidden state is computed once, in the turn where it first
# appeared, and then reused by later turns. At generation, the later turn recomputed it under a
# *different* context (older tokens pruned) and at a *different* position. The error is the
# difference between those two computations, compounded through the layers.
#
# > Measured above on sampled trajectories: not zero, and only for pruning agents. On teacher
# > trajectories (teacher-forced tokens, no sampling record), compare with the exact `per_turn`:

# %%
with without_float32_islands():
    with torch.no_grad():
        exact = layout_forward(model, teacher_mem1, "per_turn")
        approx = layout_forward(model, teacher_mem1, "stitched")
    d = (approx.logprobs - exact.logprobs).abs()[exact.mask]
    turn_of = exact.turn_index[exact.mask]
    per_turn_err = [float(d[turn_of == j].max()) for j in range(int(turn_of.max()) + 1)]
    print(
        f"stitched vs exact, teacher mem1 trajectories: max {float(d.max()):.2e}  mean {float(d.mean()):.2e}"
    )
    print("max |Δ| by turn:", " ".join(f"{e:.0e}" for e in per_turn_err))

fig, ax = plt.subplots(figsize=(6, 3))
ax.semilogy(range(len(per_turn_err)), [max(e, 1e-17) for e in per_turn_err], marker="o")
ax.set_xlabel("turn")
ax.set_ylabel("max |Δ logprob|")
ax.set_title("stitched vs exact, mem1 teacher trajectories")
plt.show()

# %% [markdown]
# Turns 0 and 1 are exact (their contexts never lost anything); from turn 2 on, each response
# attends to a previous response whose hidden states were computed next to tokens it never saw.
#
# > Even an untrained model shows errors of a few 1e-2 in log-prob, far above float noise. PPO's
# > importance ratio is exp(new - old): with stitched log-probs as "new" and sampling log-probs
# > as "old", a policy that has not changed at all already has ratios ~3% off 1, the scale of the
# > 0.2 clip. A trained policy reads its context, and there it is much worse:

# %% [markdown]
# ## Where it matters: a trained policy
#
# Why stitched goes wrong from turn 2 on: at turn 2 the mem1 agent shows the prompt, response 1 and
# observation 1. At generation, response 1's tokens were recomputed in *that* context. In the
# stitched sequence they were computed once, at turn 1, when they were being written: there they
# saw the prompt, response 0 and observation 0, which turn 2 never sees. Every layer of turn 2's
# response attends to those stale keys and values. Turns 0 and 1 are exact because nothing they
# saw had been pruned (turn 1's context extends turn 0's). An untrained model's hidden states
# hardly depend on context, so the stale ones are almost right; a trained model reads, so they are
# wrong by whatever the pruned tokens told it.
#
# `layout_deviation` scores the `sft-mem1` rollouts above with every layout, against `per_turn`,
# turn by turn, in float64 (islands removed) and float32 (also against the recorded sampling
# log-probs); then the untrained tiny model scores the same records.
# `mem1 bench masks --deviation` does this for sft-mem1 and ppo-mem1, mem1 N = 4 and truncate
# N = 2, with 4 tasks each.

# %%
rows = layout_deviation(sft, sft_rollouts)
tiny_rows = layout_deviation(build_tiny_model(seed=0), sft_rollouts, dtypes=("float64",), recorded=False)
for layout in ("packed", "packed_dense", "stitched"):
    for dtype, ref in (("float64", "per_turn"), ("float32", "per_turn"), ("float32", "recorded")):
        r = pick(rows, dtype=dtype, layout=layout, reference=ref)
        print(f"{layout:12s} {dtype} vs {ref:8s}: max |Δ| {r['max_abs']:.1e}  mean {r['mean_abs']:.1e}")
print("\nstitched by turn (float64, vs per_turn):   trained sft-mem1   |  untrained tiny")
for r in rows:
    if r["layout"] == "stitched" and r["dtype"] == "float64" and r["turn"] is not None:
        t = pick(tiny_rows, r["turn"], layout="stitched")
        print(
            f"  turn {r['turn']}: {r['tokens']:4d} tokens  mean {r['mean_abs']:7.2g} max {r['max_abs']:7.2g}"
            f"  |  mean {t['mean_abs']:7.2g} max {t['max_abs']:7.2g}"
        )
meta = {"bench": "masks-deviation", "agent": "mem1", "objectives": 4, "sampler": "sft-mem1"}
fig = plot_stitched_by_turn(
    [meta | {"scorer": "sft-mem1"} | r for r in rows] + [meta | {"scorer": "tiny"} | r for r in tiny_rows]
)
plt.show()
assert pick(rows, dtype="float64", layout="stitched", reference="per_turn")["max_abs"] > 1
assert pick(rows, dtype="float64", layout="packed", reference="per_turn")["max_abs"] < 1e-10

# %% [markdown]
# > Nats, not float noise: before any update, PPO's log-ratio (stitched minus sampled) would be
# > off by more than 1 nat on average from turn 2 on, and by about 20 on the worst tokens, where
# > the clip range is log 0.8 to log 1.2 (-0.22 to +0.18). Measured by the bench on 4 tasks per
# > row (3,025 tokens), mem1 N = 4: sft-mem1 and ppo-mem1 both reach 23 nats (mean 1.5 and 1.8);
# > truncate N = 2 is exact until its window cuts, then mean 0.06 to 3.3 per turn. The untrained
# > tiny model on the same records: max 0.05 to 0.08. The exact layouts stay at float64 rounding
# > (~4e-14) and float32 rounding (~3e-5, also against the recorded log-probs). We train on
# > `packed`.

# %% [markdown]
# ## Cost
#
# `mem1 bench masks` times forward + backward (LoRA, value head, float32, the shipped tiny
# model) for each layout on the same teacher trajectories, interleaved. Below, a miniature run;
# the full one (`mem1 bench masks --json runs/bench_masks.json`) uses N = 2 and N = 8.
#
# > Measured on this 2-core machine (1 thread, 4 mem1 teacher trajectories, LoRA + value
# > head, median of 5 interleaved rounds), policy tokens/s relative to `per_turn`:
# >
# > | layout | N = 2 | N = 8 | peak memory at N = 8 |
# > |---|---|---|---|
# > | `per_turn` (exact) | 1.00x | 1.00x | 2.26 GB |
# > | `packed` (exact, prefix cache) | **1.83x** | **1.91x** | 1.60 GB |
# > | `packed_dense` (exact, L x L mask) | 1.15x | 0.67x | 1.53 GB |
# > | `stitched` (approximate) | 1.34x | 0.80x | 1.16 GB |
# >
# > A dense L x L mask makes `packed_dense` quadratic in the whole trajectory, and at N = 8 it
# > loses to `per_turn`; so does the paper's `stitched`, which feeds the fewest tokens of all.
# > The prefix-cache form of `packed` computes exactly what `packed_dense` computes without that
# > mask, and is the training default (`DEFAULT_LAYOUT`).

# %%
from mem1lite.bench import bench_masks  # noqa: E402
from mem1lite.terms import DEFAULT_LAYOUT  # noqa: E402

records = bench_masks(objectives=(2,), episodes=2, repeats=1)
print("default training layout:", DEFAULT_LAYOUT)
print(f"notebook ran in {time.perf_counter() - t_start:.0f} s")
