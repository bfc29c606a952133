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
# # 04 · Evaluation: from 2 to 16 objectives, with the paper beside us
#
# The claim to test, in the words of the public summary of MEM1:
#
# *"On 16-objective multi-hop QA, MEM1-7B improves performance by 3.5x while reducing memory usage
# by 3.7x compared to Qwen2.5-14B-Instruct. Peak token usage stays nearly constant as task
# complexity increases, while baseline methods scale linearly. [...] Notably, the agent trained on
# 2-objective tasks generalizes to 16-objective tasks."*
#
# > Our notes are in blockquotes. This notebook runs the evaluation sweep of `mem1lite.evaluate`
# > (the same functions as `mem1 eval` and `make demo`): every policy under the three memory
# > policies (agents) at N = 1, 2, 4, 8, 16 questions per task, on the same `test` tasks, decoded
# > greedily. It prints the paper's Table 1 columns, draws peak tokens and EM against N, puts the
# > paper's numbers beside ours, reads the internal states for the emergent behaviour, and checks
# > the targets of issue 8 from the numbers.
#
# > **What is measured, and why.**
# > - **EM** is exact match *summed* over the N answers of a task (0..N), as in the paper, so it grows
# >   with N by construction. **EM per objective** (EM / N) is what compares across N, and across
# >   papers: a 16-question task scoring 1.97 answers 12% of its questions. Both are shown, so that
# >   0 against 0 is never read as a win.
# > - **Peak tokens**: the largest context the model was fed in any turn, prompt included. It is
# >   what memory (the KV cache) must hold: flat for MEM1, growing with N for full context.
# > - **Dependency**: the sum over turns of (context + output / 2) x output: how many attention
# >   pairs the generated tokens cost, the paper's compute proxy.
# > - **Time** per task: on our CPU with a 1.3M-parameter model, so only its shape across N and
# >   agents compares with the paper's GPU seconds.

# %%
import inspect
import os
import time

import matplotlib.pyplot as plt
from IPython.display import Image, Markdown, display

from mem1lite import anatomy, paper, study
from mem1lite.demo import demo_sweeps, run_sweeps
from mem1lite.evaluate import (
    AGENTS,
    CHECKPOINT_DIR,
    SHIPPED,
    EvalConfig,
    load_records,
    read_state,
    state_text,
)
from mem1lite.model import TINY_DIR, load_tokenizer
from mem1lite.report import (
    behaviour_table,
    check_targets,
    figures,
    paper_comparison,
    per_objective_table,
    reproduction_text,
    results_table,
    to_markdown,
)
from mem1lite.world import load_world, make_tasks

QUICK = os.environ.get("MEM1_QUICK", "1") != "0"
"""quick (default, what CI runs): 4 tasks per N and the demo's small sweep; MEM1_QUICK=0: 32 tasks
per N and every policy under every agent (the issue's full sweep, minutes to tens of minutes)"""
EPISODES = 4 if QUICK else 32
OBJECTIVES = (1, 2, 4, 8, 16)
t_start = time.perf_counter()

# The teacher always; shipped checkpoints when they exist (the lead trains them).
shipped = [name for name, (folder, _) in SHIPPED.items() if (CHECKPOINT_DIR / folder).is_dir()]
policies = ["teacher"] + shipped
print(f"quick={QUICK}: {EPISODES} tasks per N; policies: {', '.join(policies)}")
for name, (folder, command) in SHIPPED.items():
    if name not in shipped:
        print(f"  not shipped yet: {name} (data/checkpoints/{folder}); `{command}` trains it")

# %% [markdown]
# ## The same tasks for everyone
#
# For each N, task i is `make_tasks(world, "test", N, K, seed=0)[i]`: every policy under every agent
# answers exactly these questions, from the `test` pool whose entities no training data ever saw.
# Task lists are prefixes of each other, so the quick run's 4 tasks are the first 4 of the full 32.

# %%
world = load_world()
for i, q in enumerate(make_tasks(world, "test", 4, 1, seed=0)[0].questions, 1):
    print(f"{i}. {q}")

# %% [markdown]
# ## The sweep
#
# > In quick mode (and in `make demo`) the sweep has four parts (`demo_sweeps`): the teacher under
# > every agent; each mem1-trained model under `mem1`; the main model under `truncate`; and the
# > full-context baseline (a `*-full` checkpoint, else the main model) under `full`. A model's
# > full-context rows cost the most by far, since the whole history is fed again at every turn.
# > With `MEM1_QUICK=0` every policy runs under every agent.

# %%
if QUICK:
    configs = demo_sweeps(policies, OBJECTIVES, EPISODES, keep_trajectories=True, progress=False)
else:
    configs = [EvalConfig(tuple(policies), AGENTS, OBJECTIVES, EPISODES, keep_trajectories=True)]
run = run_sweeps(configs)
records = run.records

# %% [markdown]
# ## Table 1 columns
#
# One row per policy x agent x N. EM and F1 are summed over the objectives; `EM/N` and `F1/N` are per
# objective. `format err` counts turns per task whose response broke the protocol.

# %%
display(Markdown(to_markdown(results_table(records))))

# %% [markdown]
# ## EM per objective
#
# > The number that says whether a policy trained on 2 questions still answers at 16. The teacher
# > is a scripted upper bound: 1.000 everywhere means the harness (tasks, retrieval, scoring) is
# > sound, not that anything was learned.

# %%
display(Markdown(to_markdown(per_objective_table(records))))
figs = figures(records)
for fig in figs.values():
    plt.close(fig)  # shown one at a time below, with display()
display(figs["em_vs_n"])

# %% [markdown]
# ## Memory: peak tokens against N
#
# > The mem1 agent feeds the prompt, its last internal state and the last observation: its peak
# > grows only with the prompt (N question lines) and the answers list in its state. The full
# > agent feeds everything, so its peak grows with the number of turns; truncate caps the history
# > (512 tokens here) but, as the paper shows, loses what it cut. Right: the paper's models, in
# > tokens (their prompts and passages are longer, so compare the growth, not the size).

# %%
display(figs["peak_tokens_vs_n"])

# %% [markdown]
# ## The paper beside ours
#
# Paper rows (Table 1 as quoted in DESIGN.md, and the RL vs SFT comparison) next to the row of ours
# that plays the same part: MEM1-QA beside our main model under `mem1`, Qwen2.5-14B-Instruct (full
# context) beside our full-context baseline, Truncation beside our main model under `truncate`.
#
# > What each paper number is, and why only some compare, is written in `mem1lite/paper.py`: EM is
# > summed over objectives in both, so per-objective EM compares; peak tokens and seconds compare
# > only as ratios across N and agents.

# %%
display(Markdown(to_markdown(paper_comparison(records))))
print({k: round(v, 3) for k, v in paper.paper_ratios().items()})
display(figs["rl_vs_sft"])

# %% [markdown]
# ## Emergent behaviour: what the internal state holds
#
# The summary lists *"maintaining structured memory for multiple concurrent questions, shifting
# focus when one objective stalls"*. Our states are text, so both can be read off them
# (`read_state`: the teacher's format first, then field by field for a malformed state):
#
# - **questions tracked**: answers listed + the question in progress, the most over an episode;
#   divided by N it is the state's **coverage** (1.0: it ends holding every answer);
# - **early switches**: the question in progress changes while no answer was added: the agent
#   moved on before finishing (the teacher never does; a stalled search is where a trained agent
#   might).
#
# Here are the states of one episode, turn by turn:

# %%
tokenizer = load_tokenizer(TINY_DIR)
key = next(k for k in run.trajectories if k[1] == "mem1" and k[2] == 4)
traj = run.trajectories[key][0]
print(f"{key[0]} under {key[1]}, N={key[2]}, EM {traj.em:g}")
for j, turn in enumerate(traj.turns):
    text = state_text(tokenizer, turn.output_ids)
    print(f"turn {j}: {turn.action:6s} {'read' if read_state(text) else 'UNREADABLE'}: {(text or '')[:150]}")

# %%
display(Markdown(to_markdown(behaviour_table(records))))
display(figs["state_behaviour"])

# %% [markdown]
# > **What the shipped models' states say** (README, 32 test tasks per N): questions tracked stop
# > near the largest N of the SFT data, whatever N the task has: ~4 for the N <= 4 runs (the
# > full-context baseline then answers and ends the episode after ~7 turns), ~5 for the study run
# > trained on N = 1..8. A 1.7 M-parameter policy learns a count, not a loop, when its data stop at
# > a size: that, more than the memory, is why the N <= 4 and N <= 8 runs do not generalise to
# > N = 16. With every size up to 16 in the data the states at N = 16 track ~12 questions
# > (`sft-n16`, coverage 0.74; the text-pointer control ~10) instead of ~5, and N = 16 scores
# > 0.12-0.21 per objective on the test split (README, "Long tasks").

# %% [markdown]
# ## Failure anatomy: where the first error comes from
#
# EM says *that* a long episode failed, not *why*. The teacher (teacher.py) is a function of the
# visible context, so in any context it says what a perfect mem1 policy would write there. That
# gives two measurements of a checkpoint (`mem1lite.anatomy`, `mem1 diagnose`):
#
# 1. **Free play**: the model plays; at each turn the teacher answers the model's own context. The
#    first turn where they differ is the episode's *first divergence*; it is classified (premature
#    answer, answers list corrupted, wrong next question, hop confusion, reading error, ...).
#    Errors compound over 2N + 1 turns: the first one is the cause, the rest consequences.
# 2. **Teacher-forced**: the teacher plays; at each turn the model writes its response in the
#    teacher's context. Per-turn exactness by the number of answers already held (k) separates a
#    loop (flat in k) from a count (falls at the largest k of the training data).
#
# The classifier, in full:

# %%
print(inspect.getsource(anatomy.classify))

# %% [markdown]
# A short diagnosis of the N <= 8 study run (quick mode: 4 tasks per N; `mem1 diagnose --policy
# sft-n8 --objectives 2,4,8,16 --episodes 32` is the full one, in `docs/results/anatomy/`):

# %%
if (CHECKPOINT_DIR / "sft-mem1-n8").is_dir():
    quick = anatomy.diagnose(
        str(CHECKPOINT_DIR / "sft-mem1-n8"), "sft-n8", (2, 8), episodes=4 if QUICK else 32, progress=False
    )
    display(Markdown(quick.markdown()))
    plt.close(anatomy.anatomy_figure(quick))

# %% [markdown]
# The full diagnoses of the shipped checkpoints (32 dev tasks per N), as committed:

# %%
for name in ("sft-n8", "ppo", "sft-n16", "ppo-n16-n2", "sft-n16-hop", "sft-n16-hop2"):
    figure = CHECKPOINT_DIR.parent.parent / "docs" / "results" / "anatomy" / f"{name}.png"
    if figure.is_file():
        display(Image(filename=str(figure)))

# %% [markdown]
# > **What the anatomy shows** (`docs/results/anatomy/`, 32 dev tasks per N): two walls, both where
# > the SFT data stopped. `ppo` (N <= 4 data) gets 0.65 of its turns exact at N = 4 with no answer
# > held, but 0.12 at N = 8 and 0.00 at N = 16: a longer prompt than any trained breaks even the
# > first turn's copy of the question. `sft-n8` is never exact once it holds 8 or more answers. The
# > run with every size in the data (`sft-n16`) removes both walls; what is left is per-step
# > reliability over 33 turns (README, "Failure anatomy"). Two more rounds of the same data, with
# > the hop marked in the state (`sft-n16-hop`, `sft-n16-hop2`), raise teacher-forced exactness
# > from ~0.6 to ~0.9 at every k, and the first free-play error at N = 16 moves from turn ~3 to ~9.

# %% [markdown]
# ## The generalisation study: how far past its data does a model carry?
#
# The paper trains on N = 2 and tests at 16. Our runs differ in the largest N of their SFT data
# (4, 8, 16) and in whether PPO followed, so `mem1lite.study` names each arm with what it was
# trained on and marks with `*` every size beyond it. Two things keep it honest:
#
# - every policy plays the same tasks for a given N, so each record keeps its per-task EM
#   (`em_by_task`) and two policies' differences are bootstrapped over *paired* tasks;
# - a claim ("RL above SFT", "mem1 above the same-budget full-context baseline") is a row whose
#   interval must sit above 0, not two means read side by side.
#
# The pairing, in full:

# %%
print(inspect.getsource(study.paired))

# %% [markdown]
# On this run's records (quick mode: 4 tasks per N, so the intervals are wide):

# %%
display(Markdown(to_markdown(study.study_table(records))))
display(Markdown(to_markdown(study.comparison_table(records))))

# %% [markdown]
# And on the committed sweep (`docs/results/eval-qa.json`, 32 test tasks per N):

# %%
committed = load_records([CHECKPOINT_DIR.parent.parent / "docs" / "results" / "eval-qa.json"])
display(Markdown(to_markdown(study.study_table(committed))))
display(Markdown(to_markdown(study.comparison_table(committed))))
display(study.figure(committed))
plt.close("all")

# %% [markdown]
# > **What the committed study says** (32 test tasks per N): the wall sits at the largest N of the
# > SFT data for every model trained on N <= 4 or 8 (the `*` cells); with every size up to 16 in
# > the data the mem1 models keep 22-44% of their N = 2 score at N = 16 (the paper: 35%). No
# > recipe carries a model *past* the largest N it was trained on. RL at N = 2 on top of the
# > N <= 16 model lifts N = 1-2 and costs N = 4 (its anatomy: a shortcut for choosing the next
# > question); RL over N = 2, 4, 8 beats it at N = 4 and 8. The full-context baseline continued on
# > the same N = 1..16 mix for the same minutes saw ~1/22 of the samples (each of its turns carries
# > the whole history) and collapsed to 0 at N >= 4: at N = 16 mem1 is above it by +0.21, CI above 0.
# > Two more rounds of the long SFT with the hop marked (`sft-n16-hop2`) carry the loop: 0.875 at
# > N = 2 and 0.758 at N = 16, kept 87% (the paper 35%), at 1.67x the N = 2 peak tokens.

# %% [markdown]
# ## Targets, computed from the numbers
#
# The targets of issue 8, each with the measured values and the paper's own value of the same
# quantity. `SKIP` means the records cannot say (a policy or an N was not evaluated). Note the
# paper's own per-objective EM keeps 35% from N = 2 to 16: the "half" target is stricter than the
# paper.

# %%
checks = check_targets(records)
print("\n".join(c.line for c in checks))
display(Markdown(reproduction_text(records, checks)))

# %%
print(f"notebook ran in {time.perf_counter() - t_start:.0f} s (sweep {run.seconds:.0f} s)")
