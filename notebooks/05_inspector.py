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
# # 05 · The trajectory inspector: see exactly what the model saw
#
# MEM1's claim is about what the model is *fed*. In the words of the public summary:
#
# *"At each turn, the model updates a compact internal state that simultaneously consolidates
# prior information and reasons about next actions. After each turn, all previous observations,
# actions, and states are discarded. Only the most recent internal state remains."*
#
# and about how it is *trained*: *"stitching sub-trajectories together and applying 2D attention
# masks that restrict each token's attention to only what was visible when it was generated."*
#
# > Both are easy to state and easy to get wrong in code (the official implementation's mask hid
# > nothing; see notebook 02). This notebook opens recorded trajectories token by token, so you can
# > check both claims yourself: the exact ids fed at each turn (never re-tokenised text), the kind
# > of every token, which tokens carry the loss, and, for any token, the row of the training mask
# > that says what it may attend to. `mem1lite.inspector` renders everything as plain HTML
# > strings; the widget is a thin layer of controls on top, and `mem1 inspect` writes the same
# > view as a static page.
# >
# > It opens with the whole story in one picture: an N = 16 task played live by our headline model
# > under mem1, beside the scripted teacher under full context. Quick mode (`MEM1_QUICK=1`, the
# > default, what CI runs) takes **10-20 s on one core** (measured with `OMP_NUM_THREADS=1` on a
# > 2-core machine busy with two training runs).

# %%
import time
from pathlib import Path

from IPython.display import HTML, display

from mem1lite.checkpoints import HEADLINE
from mem1lite.evaluate import EvalConfig, evaluate
from mem1lite.inspector import (
    Origins,
    TokenText,
    find_partner,
    load_trajectories,
    mask_row_of,
    piece_label,
    turn_view,
)
from mem1lite.inspector_html import css, render_compare, render_mask_row, render_turn
from mem1lite.inspector_widget import Inspector
from mem1lite.model import TINY_DIR, load_tokenizer

t_start = time.perf_counter()
tokenizer = load_tokenizer(TINY_DIR)  # the shipped tokenizer: token text comes from the recorded ids
text_of = TokenText(tokenizer)


def show(fragment: str) -> None:
    """Display an inspector HTML fragment with its stylesheet."""
    display(HTML(f'{css()}<div class="mi">{fragment}</div>'))


# %% [markdown]
# ## N = 16: the headline model under mem1, the teacher under full context
#
# One test task of 16 questions, played live and greedy: the headline model
# (`checkpoints.HEADLINE`) under the mem1 agent, and the scripted teacher under the full agent,
# which is fed everything so far at every turn. Both play the same task (same split and seed), so
# the inspector pairs them. The teacher stands in for full context because it answers every
# question: its context is what full context costs when the task is done right.

# %%
played = {}
for policy, agent in ((HEADLINE, "mem1"), ("teacher", "full")):
    cfg = EvalConfig((policy,), (agent,), (16,), episodes=1, keep_trajectories=True, progress=False)
    played[agent] = evaluate(cfg, log=None).trajectories[policy, agent, 16][0]
mem1_16, full_16 = played["mem1"], played["full"]
for t in (mem1_16, full_16):
    em = f"EM {t.em:g} of {t.objectives}"
    print(f"{t.policy:13s} {t.agent}: {em}, {len(t.turns)} turns, peak {t.peak_tokens:,} tokens")
print(f"full context's peak is {full_16.peak_tokens / mem1_16.peak_tokens:.1f}x mem1's")
show(render_compare(mem1_16, full_16, len(mem1_16.turns) - 1, text_of))

# %% [markdown]
# > The two charts share one y-axis. At every turn mem1 is fed the prompt (16 question lines), its
# > last state and the last observation, so its context stays flat; the full agent's grows by one
# > response and one observation per turn, and its last turn holds the whole episode. The state
# > does the remembering: the answers list of the mem1 turn shown holds everything found so far.
#
# ## The shipped examples
#
# The same views work on any recorded episode. The live pair joins the shipped examples:

# %%
EXAMPLES = Path("../data/examples") if Path("../data/examples").is_dir() else Path("data/examples")
examples = load_trajectories([EXAMPLES, mem1_16, full_16])  # every *.jsonl there, then the live pair
print(f"{len(examples.trajectories)} episodes from {len(set(examples.sources))} files in {EXAMPLES}")
for name in sorted(set(examples.sources)):
    trajs = [t for t, s in zip(examples.trajectories, examples.sources) if s == name]
    t = trajs[0]
    print(f"  {name:32s} {len(trajs)} episodes  agent {t.agent:5s} policy {t.policy:8s} N={t.objectives}")
for warning in examples.warnings:
    print("warning:", warning)

# %% [markdown]
# The shipped examples (`scripts/make_example_trajectories.sh`) are teacher episodes under the
# `mem1` and `full` agents at N = 2 and N = 4, on the same tasks (same split and seed), and a few
# episodes of the *untrained* tiny model, and the shipped SFT and PPO checkpoints' greedy episodes
# on the same tasks. Any other rollout file dropped in the folder appears here without a change to
# this notebook.
#
# ## The inspector
#
# Pick an episode (filter by agent, N and reward), a turn, a token and a training layout. The
# panes show the context fed at that turn and the response written, coloured by kind; the context
# length of every turn with its peak; the mask row of the selected token; and the same task played
# by the other agent. Tokens hidden from the selected token fade out, and the selected one is
# outlined in red. Hover over a token for its position, id, kind and log-prob.

# %%
inspector = Inspector(examples, tokenizer=tokenizer)
inspector

# %% [markdown]
# > In JupyterLab (`make lab`) the controls are live. Everything below uses the same rendering
# > functions directly, so it reads the same on a static page. Let us walk through one task turn by
# > turn: four questions, played by the scripted teacher under `mem1`.

# %%
trajs = examples.trajectories
mem1 = next(t for t in trajs if t.agent == "mem1" and t.policy == "teacher" and t.objectives == 4)
full = find_partner(mem1, trajs)
print(
    f"task {mem1.task_id}, reward {mem1.reward:g} of {mem1.objectives}; partner: {full.agent}, {full.policy}"
)
for i, q in enumerate(mem1.questions, 1):
    print(f"  {i}. {q}  ->  {mem1.golds[i - 1]}")

# %% [markdown]
# ## Turn 0: only the prompt
#
# At the first turn the context is the chat-formatted task prompt and nothing else. The model
# answers with `<think>` (its internal state: blue) and one action, here `<search>` (green). Those
# are the only tokens of the turn that carry the loss (underlined): the prompt was given, not
# generated, so no gradient should push the model to "predict" it.

# %%
show(render_turn(mem1, 0, text_of, max_tokens=400))

# %% [markdown]
# ## Turn 1 and after: the last state, the last observation, nothing older
#
# From turn 1 the context is the prompt, the previous response (state + action) and the
# observation that followed it (orange). Look at the spans in the heading: `prompt, response 1,
# observation 1` at turn 2. Response 0 and observation 0 are gone. Whatever the agent still needs
# from them must have been copied into its state, which is exactly what the teacher's state does:
# `answers: ...` accumulates what was found.

# %%
show(render_turn(mem1, 2, text_of, max_tokens=500))

# %% [markdown]
# ## Why mem1's context stays flat
#
# Per turn, mem1 is fed |prompt| + |last response| + |last observation|: three bounded pieces,
# whatever the turn number. The full agent is fed the prompt plus *every* piece so far, so its
# context grows by one response and one observation per turn, and its peak is the last turn's.
# The charts share one y-axis; the red outline is the turn shown.

# %%
show(render_compare(mem1, full, 2, text_of))
o = Origins.of(mem1)
for j, turn in enumerate(mem1.turns):
    parts = " + ".join(f"{piece_label(p)} {b - a}" for p, a, b in turn.spans)
    print(f"turn {j}: mem1 {mem1.context_lengths()[j]:5d} = {parts}")
print("full:", full.context_lengths(), "peak", full.peak_tokens, "| mem1 peak", mem1.peak_tokens)
assert mem1.peak_tokens < full.peak_tokens

# %% [markdown]
# > The growth matters twice: memory (the KV cache, and the attention cost, grow with the context)
# > and reasoning (the summary notes that models "degrade on out-of-distribution context lengths").
# > mem1's context grows only with the prompt (one line per question) and the state (one answer per
# > question): the N = 16 pair at the top of this notebook shows where each ends up.
#
# ## What a mask row means
#
# Training does not replay each turn separately (too slow); it lays a whole episode out as one or
# a few sequences and uses a 2D attention mask: row *q* of the mask says which keys the token at
# *q* may attend to. For PPO to be right, that row must be what the token could see when it was
# generated. Take a token in the middle of turn 2's state and look at its row in `packed_dense`
# (the exact layout drawn as one sequence: the prompt once, then one block per turn).

# %%
view = turn_view(mem1, 2)
token = view.n_context + 12  # the 13th token of turn 2's response
row = mask_row_of(mem1, 2, token, "packed_dense", view=view)
show(render_mask_row(row, mem1, text_of))
seen = {piece_label(o.piece_of(c)[0]) for c in row.visible_codes()}
print("visible pieces:", sorted(seen))
assert seen == {"prompt", "response 1", "observation 1", "response 2"}

# %% [markdown]
# The bar runs over every key of the row, in layout order: coloured where visible, pale where
# hidden, the query outlined. The token sees the whole prompt, the copy of response 1 and
# observation 1 in its own block, and the response tokens before it. Every earlier block (turns 0
# and 1, which shared a block since turn 1's context extends turn 0's) and every later block is
# hidden. The thumbnail is the whole 2D mask of that sequence, with this row in red: the prompt
# column on the left, then one causal triangle per block.
#
# ## The paper's stitched layout is an approximation
#
# The `stitched` layout keeps each token *once*. A token that mem1 shows again at a later turn (the
# copy of response 1 in turn 2's context) keeps the row of the turn that first showed it, where it
# was generated and could see response 0 and observation 0. At turn 2 the model met the same
# tokens in a different context; stitched does not recompute them. `packed` does: it copies them.

# %%
copy = len(mem1.prompt_ids)  # first token of response 1, as shown in turn 2's context
for layout in ("packed", "stitched"):
    r = mask_row_of(mem1, 2, copy, layout, view=view)
    pieces = sorted({piece_label(o.piece_of(c)[0]) for c in r.visible_codes()})
    print(f"{layout:8s} the copied token sees {r.n_visible:4d} keys from {pieces}")

# %% [markdown]
# > Notebook 02 measures what this costs in log-probs. Here you can see *why*: stitched's row for a
# > kept token is the generation-time row of another turn.
#
# ## An untrained model's trajectory
#
# The untrained tiny model writes byte soup. The environment answers each response with a
# format-error observation (the response is coloured purple, *format error*) and the episode burns
# its turns. The controls drive the same view; here we set them from code.

# %%
tiny = [i for i, t in enumerate(trajs) if t.policy == "tiny"]
if tiny:
    inspector.agent_filter.value = ""  # any agent
    inspector.episode.value = tiny[0]
    inspector.turn.value = min(1, len(trajs[tiny[0]].turns) - 1)
    t = trajs[tiny[0]]
    print(f"{t.policy}: {t.format_errors} format errors in {len(t.turns)} turns, reward {t.reward:g}")
    display(HTML(inspector.panes["turn"].value))

# %% [markdown]
# ## A trained model beside the teacher
#
# The shipped SFT and PPO checkpoints played the same dev tasks (greedy), so each of their episodes
# has a teacher episode of the same task. Reading the two states turn by turn shows where a small
# model slips: a name part copied from the wrong place (in the first shipped N = 4 episode, the third
# question's "Fabux Tranem" becomes "Fabux Jazern", the second part of an answer already in its
# state), after which the query searches for an entity that does not exist.

# %%
trained = [t for t in trajs if t.policy not in ("teacher", "tiny") and t.objectives == 4]
if trained:
    t = trained[0]
    ref = next(x for x in trajs if x.policy == "teacher" and x.agent == t.agent and x.task_id == t.task_id)
    print(f"{t.policy} on {t.task_id}: EM {t.em:g} of {t.objectives} (teacher {ref.em:g})")
    for j in range(max(len(t.turns), len(ref.turns))):
        for who, x in (("model", t), ("teacher", ref)):
            if j < len(x.turns):
                text = tokenizer.decode(x.turns[j].output_ids, skip_special_tokens=False)
                print(f"turn {j} {who:>7}: {text}")

# %% [markdown]
# ## Outside Jupyter
#
# The same view of one episode, as a self-contained page (no network, no Jupyter):
#
# ```bash
# mem1 inspect data/examples/teacher-mem1-n4.jsonl --episode 0 --html runs/inspect.html \
#     --turn 2 --layout packed_dense --compare data/examples/teacher-full-n4.jsonl
# ```
#
# A malformed or truncated jsonl line is reported as `file:line: why` (a warning above the
# controls here, on stderr there) and the other lines still load.
#
# > Things to try: switch the layout to `per_turn` and move the token slider (its row is always
# > "everything before me in this turn"); pick a `full` episode at N = 4 and watch the context pane
# > grow; roll out your own checkpoint (`mem1 rollout --policy runs/ppo --temperature 0 --out
# > data/examples/my-ppo-n4.jsonl`) and compare its state with the teacher's on the same task.

# %%
print(f"notebook ran in {time.perf_counter() - t_start:.0f} s")
