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
# # 01 · The MEM1 protocol and context-pruning rollouts
#
# *"The standard approach is to append everything to the context. Every past observation,
# action, and thought gets added to the prompt. This creates three compounding issues: O(N)
# memory growth, degraded reasoning on out-of-distribution context lengths, and attention
# dilution."* MEM1's answer: *"At each turn, the model updates a compact internal state that
# simultaneously consolidates prior information and reasons about next actions. After each turn,
# all previous observations, actions, and states are discarded. Only the most recent internal
# state remains."*
#
# > Our notes are in blockquotes; the quotes come from the public summary of the paper. This
# > notebook plays the QA world of notebook 00 with that protocol: the tags and the parser that
# > enforces them, a scripted **teacher** that plays perfectly, and three memory policies
# > (**agents**) that decide what the model sees each turn: `mem1` (prune), `full` (keep all,
# > ReAct-style) and `truncate` (keep the last K tokens). Then an untrained tiny Qwen2 tries the
# > same protocol, and fails in the way the protocol is built to absorb.

# %%
import time

from mem1lite.generate import GenerationConfig, ModelPolicy, TeacherPolicy
from mem1lite.model import TINY_DIR, build_tiny_model, count_parameters, load_tokenizer
from mem1lite.plots import context_per_turn, peak_tokens_vs_n
from mem1lite.protocol import QAEnvironment, max_turns, parse_response
from mem1lite.retrieval import Retriever
from mem1lite.rollout import RolloutConfig, run_episodes
from mem1lite.trajectory import summarize
from mem1lite.world import load_world, make_tasks

t_start = time.perf_counter()
world = load_world()
tokenizer = load_tokenizer(TINY_DIR)
retriever = Retriever(world.documents_of("dev"))


def play(policy, tasks, agent="mem1", **kw):
    """Play `tasks` to the end with `policy` under `agent`; one trajectory per task."""
    envs = [QAEnvironment.from_task(t, retriever) for t in tasks]
    return run_episodes(policy, tokenizer, envs, RolloutConfig(agent=agent, progress=False, **kw), tasks)


# %% [markdown]
# ## The protocol
#
# Four tags, as in the paper's code: `<think>` holds the internal state (IS), `<search>` a query,
# `<information>` the environment's reply, `<answer>` the final answers. Each turn the model writes
# `<think>IS</think>` followed by **exactly one** action, `<search> name</search>` or
# `<answer> a1; a2; ...</answer>`. The task prompt is an instruction plus N numbered questions,
# wrapped in the chat template (the same one a real Qwen2.5 uses).

# %%
task = make_tasks(world, "dev", 2, 1, seed=0)[0]
env = QAEnvironment.from_task(task, retriever)
prompt = tokenizer.apply_chat_template(
    [{"role": "user", "content": env.prompt()}], tokenize=False, add_generation_prompt=True
)
print(prompt)
print(f"{len(tokenizer.encode(prompt))} tokens; turn budget {env.turn_limit}")

# %% [markdown]
# > **The turn budget** is `max_turns(N) = 2N + 2`: a question needs at most two searches (two
# > hops), the answer needs one turn, and one turn is spare. That is 6 turns at N = 2, the
# > paper's default, and 34 at N = 16. Every observation starts with a hint of how many turns
# > are left, as in the paper's environment. Running out of turns ends the episode with no
# > answer: reward 0.

# %%
print({n: max_turns(n) for n in (1, 2, 4, 8, 16)})
entity = task.questions[0].split(" of ")[-1].rstrip("?")  # the name the first hop starts from
out = env.step(f"<think> answers: none.</think><search> {entity}</search>")
print(out.observation[:400], "...")

# %% [markdown]
# ## The parser never raises
#
# A small model, and any model early in RL, writes garbage. The official code crashes or
# silently mis-scores on some of it; here every malformation becomes a **format error**: the
# environment replies with an `<information>` that says what was wrong, and the turn is spent.
# The model is never fed an exception, and one bad turn never takes an episode down.
#
# > The fuzz test (`tests/test_protocol.py`) feeds 2,300 generated malformed outputs (no tag,
# > two actions, unclosed or nested tags, empty queries, overlong text, invalid UTF-8, control
# > bytes, random bytes, mutations of valid responses) and checks each one becomes a format
# > error that costs a turn, while 500 valid ones parse.

# %%
examples = [
    "<think> answers: none.</think><search> Gevorn Bank</search>",
    "<think> answers: Talis Morrow.</think><answer> Talis Morrow; Velmora Vale</answer><|im_end|>",
    "Gevorn Bank",
    "<think> notes</think><search> Gevorn Bank</search><search> Talis Morrow</search>",
    "<think> notes<search> Gevorn Bank</search></think>",
    "<think> notes</think><search> Gevorn Bank",
    "<think> notes</think><search>   </search>",
    "<think> notes</think><search> Gevorn Bank</search> and then some",
    b"<think> \xff\xfe</think><search> x</search>",
    "<think> \x07bell</think><search> x</search>",
    "<think>" + "x" * 3000 + "</think><search> x</search>",
]
for text in examples:
    p = parse_response(text)
    shown = repr(text if len(text) < 70 else text[:60] + "...")
    print(f"{shown:74s} -> {p.kind:6s} {p.argument or p.error}")

# %% [markdown]
# ## The teacher plays one task under three agents
#
# The **teacher** (`mem1lite.teacher`) is a scripted policy that sees exactly the text a model
# would see, the decoded context of the turn, and nothing else: no gold answers, no world lookup.
# Its internal state is *index-free*: the answers so far, the text of the question being worked
# on, and the one fact wanted now. It never says "question 2 of 16", so one behaviour serves
# every N; it finds the next question by matching the current one's text in the prompt.
#
# Agents decide what it sees. A turn records its visible *spans* (`[piece, start, end]`: piece -1
# is the prompt, `2j` response j, `2j+1` observation j), and the context is rebuilt from them
# token for token: ids are never decoded and re-tokenised.

# %%
task4 = make_tasks(world, "dev", 4, 1, seed=3)[0]
teacher = TeacherPolicy(tokenizer)
runs = {a: play(teacher, [task4], a, truncate_tokens=256)[0] for a in ("mem1", "full", "truncate")}
for i, (q, a) in enumerate(zip(task4.questions, task4.answers), 1):
    print(f"{i}. {q}  ->  {a}")
print({agent: (t.em, len(t.turns)) for agent, t in runs.items()}, "(EM out of 4, turns)")


def show(traj, j, width=1200):
    """What the model saw at turn j after the prompt, and what it wrote (long text shortened)."""
    n_prompt = len(traj.prompt_ids)
    seen = tokenizer.decode(traj.context_ids(j)[n_prompt:], skip_special_tokens=False)
    if len(seen) > width:
        seen = seen[: width // 2] + " [...] " + seen[-width // 2 :]
    print(f"--- turn {j}: {traj.context_lengths()[j]} tokens = prompt ({n_prompt}) + {seen or '(nothing)'}")
    print(f"    writes: {tokenizer.decode(traj.turns[j].output_ids)}")


mem1 = runs["mem1"]
for j in range(len(mem1.turns)):
    show(mem1, j, width=500)

# %% [markdown]
# > Under `mem1` each context holds the prompt, the last response and the last observation, so
# > the last turn is no longer than the second. The state carries the answers forward; the
# > observation it came from is gone. Under `full`, the last turn sees everything:

# %%
show(runs["full"], len(runs["full"].turns) - 1)

# %% [markdown]
# > `truncate` (here K = 256 history tokens, the prompt always kept) keeps the tail of the
# > history and cuts the oldest piece it reaches mid-way, which is why its context can start in
# > the middle of a passage:

# %%
show(runs["truncate"], len(runs["truncate"].turns) - 1)
print("spans of the last turn:", runs["truncate"].turns[-1].spans)

# %% [markdown]
# ## Context length per turn
#
# *"Peak token usage stays nearly constant as task complexity increases, while baseline methods
# scale linearly."* Per turn, `full` grows by a response and an observation (~180 tokens here),
# `truncate` grows until it reaches its budget, `mem1` stays flat after the first turn.

# %%
task8 = make_tasks(world, "dev", 8, 1, seed=0)[0]
runs8 = {agent: play(teacher, [task8], agent)[0] for agent in ("mem1", "full", "truncate")}
fig = context_per_turn(runs8, title="one 8-objective task, teacher policy")

# %% [markdown]
# ## Peak tokens against N
#
# Peak tokens is the largest context fed in any turn, prompt included (the paper's memory
# measure). The teacher answers every question under every agent (EM = N), so the curves show
# the cost of each memory policy alone.
#
# > `mem1` still grows a little with N: the prompt lists N questions, and the state holds the
# > answers found so far. The paper's MEM1-7B went from 6.4 to 10.4 hundred tokens between 2 and
# > 16 objectives (1.6x); our teacher goes from ~350 to ~590 (1.7x), while `full` reaches
# > ~5,600 (9.5x `mem1` at N = 16). `mem1 bench rollout` prints these ratios.

# %%
records = []
for n in (1, 2, 4, 8, 16):
    tasks_n = make_tasks(world, "dev", n, 20, seed=0)
    for agent in ("mem1", "full", "truncate"):
        s = summarize(play(teacher, tasks_n, agent))
        records.append({"agent": agent, "objectives": n} | s)
        print(
            f"N={n:2d} {agent:8s} EM/objective {s['em_per_objective']:.2f}  "
            f"peak tokens {s['peak_tokens']:6.0f}  turns {s['turns']:4.1f}"
        )
fig = peak_tokens_vs_n(records, title="teacher on dev, 20 tasks per point")

# %% [markdown]
# ## An untrained model tries the protocol
#
# The same rollout code drives a causal LM (`ModelPolicy`): a tiny Qwen2 (about 1.6 M
# parameters, built from a `Qwen2Config`) with the byte-level BPE tokenizer trained on the world,
# where each tag is one special token and every name part is one token. Untrained, it writes
# noise; every turn becomes a format error, the episode runs out of turns and scores 0. Nothing
# crashes, and each turn is still recorded token for token, with its sampling log-probs and the
# kind of each token (`e` = format error), ready for the masked layouts of notebook 02.

# %%
model = build_tiny_model(seed=0)
print(f"{count_parameters(model) / 1e6:.2f} M parameters")
generation = GenerationConfig(max_new_tokens=48, temperature=1.0)
untrained = ModelPolicy(model, tokenizer, generation, name="untrained")
trajs = play(untrained, make_tasks(world, "dev", 2, 4, seed=0))
t = trajs[0]
turn = t.turns[0]
print("writes :", repr(tokenizer.decode(turn.output_ids)[:200]))
print("kinds  :", turn.output_kinds[:48], "| error:", turn.error, "| hit the token limit:", turn.hit_limit)
print("logprob:", [round(x, 2) for x in turn.logprobs[:8]], "...")
print("reply  :", tokenizer.decode(turn.observation_ids)[:200])
s = summarize(trajs)
print({k: round(v, 2) for k, v in s.items() if k in ("em", "turns", "format_errors", "peak_tokens")})

# %% [markdown]
# ## Batched generation
#
# Rollouts generate many episodes at once with a KV cache; episodes end at different turns and
# their responses at different lengths. Each row is left-padded, its position ids count from its
# own first token, finished rows leave the batch, each episode samples from its own random
# generator, and the prompt's keys and values are computed once per episode and reused every
# turn. So a batched rollout gives the same tokens as playing each episode alone:
#
# > `tests/test_rollout.py` checks this for greedy, sampled and top-p decoding in float64
# > (log-probs within 1e-9). `mem1 bench rollout` measures the speed: 64 episodes batched against one at a
# > time with this tiny model.

# %%
tasks_b = make_tasks(world, "dev", 2, 4, seed=1)
greedy = {bs: GenerationConfig(max_new_tokens=16, temperature=0.0, batch_size=bs) for bs in (1, 4)}
alone, together = (play(ModelPolicy(model, tokenizer, greedy[bs]), tasks_b) for bs in (1, 4))
same = all(a.output_ids == b.output_ids for x, y in zip(alone, together) for a, b in zip(x.turns, y.turns))
print("batched == one at a time:", same)
print(f"notebook ran in {time.perf_counter() - t_start:.0f} s")

# %% [markdown]
# Next: **02** turns these pruned rollouts into training tensors, with the 2D masks that let each
# token see only what it saw when it was generated.
