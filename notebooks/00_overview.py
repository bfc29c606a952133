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
# # 00 · mem1lite overview: the world the agent lives in
#
# MEM1 ("Learning to Synergize Memory and Reasoning for Efficient Long-Horizon Agents",
# arXiv 2506.15841) trains an LLM agent that keeps **one compact internal state**, rewritten every
# turn, and throws everything else away, so that its memory stays flat while tasks grow long.
# The paper's main testbed is *multi-objective multi-hop QA*: N questions asked at once, each
# needing one or two searches, answered together at the end.
#
# > mem1lite rebuilds that testbed small enough for a laptop CPU. Instead of Wikipedia we generate
# > a **fictional world**: nobody, not even a pretrained model, can know that the founder of
# > *Gevorn Bank* was born in *Velmora Vale*; the only way to answer is to search and read.
#
# This notebook tours that world: its entities, documents, questions, the retriever, and the
# N-objective tasks that the agent will face in the next notebooks.

# %%
import time

from mem1lite.plots import world_overview
from mem1lite.retrieval import Retriever, format_passages, retrieval_recall
from mem1lite.world import SPLITS, load_world, make_tasks, world_statistics

t0 = time.perf_counter()
world = load_world()  # data/qa, checked against its manifest's sha256
print(f"loaded in {time.perf_counter() - t0:.1f} s")
world_statistics(world)

# %% [markdown]
# ## Entities and documents
#
# Every name is two *name parts* (`Talis Morrow`, `Gevorn Bank`, `Velmora Vale`). The tokenizer
# makes each part one token, so copying a name from a passage is copying two tokens: the skill the
# tiny model has to learn. Each entity has one document stating its facts as
# "The *relation* of *entity* is *value*." — plus facts nobody asks about (`residence`), and for a
# third of the entities a second document that mentions the name often but holds no asked fact.

# %%
person = next(e for e in world.entities if e.type == "person" and e.pool == "dev")
for doc in world.documents:
    if doc.entity == person.id:
        print(f"[{doc.title}]\n{doc.text}\n")

# %% [markdown]
# ## Four pools that never share an entity
#
# Questions come in four pools, `sft`, `rl`, `dev` and `test`. Their entities are disjoint, and the
# retriever of a pool only holds that pool's documents: a model trained on `sft` has never seen a
# single `dev` fact, so every `dev` point it scores comes from reading. Name *parts* are shared, and
# each pool reuses them at the same density, so look-alike names (`Gevorn Bank`, `Gevorn Works`) are
# as common in `dev` as in `sft`.

# %%
for split in SPLITS:
    q = world.questions[split][0]
    print(f"{split:5s} ({len(world.questions[split]):6d} questions)  {q.text}  ->  {q.answer}")

# %% [markdown]
# ## The retriever
#
# BM25 ([bm25s](https://github.com/xhluca/bm25s)) over a pool's documents. Each hop of a question
# has a canonical query, the name of the entity the hop starts from. The agent sees the top 3
# passages in the format of the MEM1 / Search-R1 code. Retrieval is easy to get into the top 3 but
# not always first: the reader must check the title.

# %%
dev_retriever = Retriever(world.documents_of("dev"))
q = next(q for q in world.questions["dev"] if q.hops == 2)
print(q.text, "->", q.answer, "\n")
for hop, query in enumerate(q.queries):
    print(f"hop {hop + 1}: <search> {query}</search>")
    print(format_passages(dev_retriever.search(query, k=3))[:600], "...\n")

# %%
curves = {s: [] for s in ("sft", "dev")}
for s in curves:
    r = retrieval_recall(world, s, k_values=range(1, 6), limit=300)
    curves[s] = [r[f"recall@{k}"] for k in range(1, 6)]
    print(s, {k: round(v, 3) for k, v in r.items()})
fig = world_overview(world, curves)

# %% [markdown]
# ## N-objective tasks
#
# A task joins N distinct questions of one pool; the agent must answer all of them in one
# `<answer>a1; a2; ...; aN</answer>`. The paper trains on N = 2 and tests up to N = 16. Tasks are
# drawn deterministically from a seed, and task *i* does not depend on how many tasks you ask for.

# %%
for n in (1, 2, 4):
    task = make_tasks(world, "dev", n, 1, seed=0)[0]
    print(f"N = {n}: {task.id}")
    for i, (question, answer) in enumerate(zip(task.questions, task.answers), 1):
        print(f"  {i}. {question}  ->  {answer}")

# %% [markdown]
# ## Scoring
#
# The reward is exact match summed over objectives, after SQuAD normalisation. Each slot of the
# answer is scored against its own question; a missing slot scores 0 and extra slots are ignored,
# so a wrong answer count never zeroes the whole task (the official code does that).

# %%
from mem1lite.metrics import score_answers  # noqa: E402

golds = task.answers
print(score_answers("; ".join(golds), golds))
print(score_answers(golds[0], golds))  # only the first slot given
print(score_answers(None, golds))  # malformed: scores 0, never raises

# %% [markdown]
# Next: **01** plays these tasks with the MEM1 protocol, a scripted teacher and a tiny Qwen2
# model, and compares how much context the mem1, full and truncate agents carry per turn.
