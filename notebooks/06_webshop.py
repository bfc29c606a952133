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
# # 06 · WebShop-lite: the paper's second domain
#
# The public summary of MEM1: *"On WebShop navigation, MEM1-7B outperforms AgentLM-13B (twice the
# parameters) with 2.8x less peak token usage."* WebShop (Yao et al., 2022) is a simulated web
# store: an agent gets an instruction ("i am looking for a machine washable t-shirt in red, size
# medium, and price lower than 20.00 dollars"), searches, opens items, selects options and buys; it
# is scored by how well the bought item matches the instruction.
#
# > Our notes are in blockquotes. The real WebShop (1.18 M scraped products) cannot be downloaded
# > here, so `mem1lite.webshop` **generates** a store with the same structure from one seed, and
# > carries WebShop's actions on the MEM1 tags, so that the *same* parser, agents, model, SFT, PPO,
# > evaluation and inspector serve both domains. This notebook shows the store, the environment
# > and its reward, the scripted shopper, a (quick-)trained agent under mem1 and full context, and
# > the table in the paper's WebShop columns.

# %%
import os
import shutil
import time
from pathlib import Path

from IPython.display import Markdown, display

from mem1lite.domains import load_domain
from mem1lite.evaluate import CHECKPOINT_DIR
from mem1lite.generate import TeacherPolicy
from mem1lite.inspector_widget import Inspector
from mem1lite.model import TINY_DIR, load_tokenizer
from mem1lite.plots import context_per_turn
from mem1lite.ppo import make_args as ppo_args
from mem1lite.ppo import train_ppo
from mem1lite.rollout import RolloutConfig, run_episodes
from mem1lite.sft import make_args as sft_args
from mem1lite.sft import train_sft
from mem1lite.trajectory import summarize
from mem1lite.webshop import SPLITS, catalogue_statistics
from mem1lite.webshop_env import TURN_LIMIT, item_page, purchase_reward, results_page
from mem1lite.webshop_eval import WebShopEvalConfig, evaluate_webshop, webshop_table

QUICK = os.environ.get("MEM1_QUICK", "1") != "0"
"""quick (default, what CI runs): quick-trained checkpoints (a minute each) unless shipped ones exist,
8 goals per table row; MEM1_QUICK=0: 200 goals per row"""
EPISODES = 8 if QUICK else 200
MAX_NEW_TOKENS = 96 if QUICK else 192  # the teacher's longest response: 61 tokens
t_start = time.perf_counter()

domain = load_domain("webshop")  # data/webshop, checked against its manifest's sha256
catalogue, shop = domain.catalogue, domain.shop
tokenizer = load_tokenizer(TINY_DIR)
catalogue_statistics(catalogue)

# %% [markdown]
# ## The store
#
# 2,400 products in six categories and 43 product types. A product has a brand, a price, three or
# four attributes (`cotton`, `slim fit`, `machine washable`), two option types with 3-5 choices
# (`color` and `size`, or `scent` / `flavor` / `pack`), a one-line description, and a title that
# names only one or two of its attributes: the rest are on the item page, as on a real shop.
#
# > `products_satisfying_a_goal_mean` above: about 3.6 products satisfy a goal completely (the
# > goal's own target and a few others). The rest of the same type miss an attribute, an option or
# > the price: a shopper has to read the pages.

# %%
product = catalogue.products[0]
print(item_page(product, {}), "\n")
query = f"{product.attributes[0]} {product.type}"
print(results_page(query, shop.search(query), 1))

# %% [markdown]
# ## Goals and splits
#
# A goal is made from a *target* product: its type, one to three of its attributes, one value of
# each option type, and a price bound a little above its price, phrased like WebShop's
# instructions. Four splits, named like the QA pools so that SFT (`sft`), PPO (`rl`) and evaluation
# (`dev`, `test`) need no new flags. The store is shared, as in WebShop, but the splits' target
# products and instructions are disjoint.

# %%
for goal in catalogue.goals["dev"][:3]:
    print(goal.instruction, "\n   ->", goal.summary())
targets = {s: {g.target for g in catalogue.goals[s]} for s in SPLITS}
print({s: len(catalogue.goals[s]) for s in SPLITS}, "shared targets:", len(targets["sft"] & targets["dev"]))

# %% [markdown]
# ## Actions on the MEM1 tags
#
# Every turn the agent writes `<think>` its internal state `</think>` and one action:
#
# | WebShop | MEM1 response |
# |---|---|
# | `search[query]` | `<search> red cotton t-shirt</search>` |
# | `click[item]`, `click[option]` | `<search> click[B1234]</search>`, `<search> click[red]</search>` |
# | `click[< Prev]`, `click[Next >]`, `click[Back to Search]` | `<search> click[< prev]</search>` ... |
# | `click[Buy Now]` | `<answer> buy now</answer>` (ends the episode) |
#
# The environment answers with a text page inside `<information>[HINT]You have k turns left.[/HINT]
# ...</information>`. A click on something that is not on the page, `buy now` off an item page, or
# a malformed response (the QA parser, unchanged) is an error line followed by the same page again,
# and costs a turn. The budget is 10 turns: 5 for the shortest purchase (search, open, two
# options, buy) plus two detours to look at other items (open, back) and one spare.
#
# Here is one goal played by hand, with an invalid action on the way:

# %%
goal = catalogue.goals["dev"][0]
target = catalogue.by_id[goal.target]
task = domain.tasks("dev", 1, 1)[0]
env = domain.environment(task)
env.goal = goal
print(env.prompt(), "\n")
script = [
    f"<search> {goal.attributes[0]} {goal.type}</search>",
    "<search> click[B0000]</search>",
    f"<search> {target.title}</search>",
    f"<search> click[{target.id}]</search>",
    *(f"<search> click[{v}]</search>" for v in goal.options.values()),
    "<answer> buy now</answer>",
]
for action in script:
    outcome = env.step(f"<think> notes</think>{action}")
    print(f">>> {action}\n{outcome.observation or '(episode over)'}\n")
print(env.result())

# %% [markdown]
# ## The reward
#
# WebShop's formula (`get_reward` in the WebShop code), with exact matching in place of its fuzzy
# text matching:
#
# $$ r = r_{type} \cdot \frac{|A_{goal} \cap A_{item}| + |O_{goal} \cap O_{sel}| + 1[p \le b]}
#                         {|A_{goal}| + |O_{goal}| + 1} $$
#
# with $r_{type}$ = 1 for the goal's product type, 0.5 for another type of the same category, 0.1
# for another category whose title shares a word with the goal's type, 0 otherwise.
#
# > For webshop, `EpisodeResult.em` carries this reward (in [0, 1]; the paper reports it x 100), so
# > PPO, the tables and the inspector read it where they read QA's exact match; `f1` carries the
# > share of clauses met without the type factor. A reward of 1 is WebShop's "success".

# %%
right = dict(goal.options)
wrong = {t: next(v for v in target.options[t] if v != right[t]) for t in right}
other = next(p for p in catalogue.products if p.category == target.category and p.type != target.type)
for label, prod, sel in [
    ("target, wanted options", target, right),
    ("target, no option selected", target, {}),
    ("target, other options", target, wrong),
    ("same category, other type", other, right),
]:
    r = purchase_reward(goal, prod, sel)
    print(
        f"{label:28s} reward {r.reward:.2f}  (type {r.r_type}, attributes {r.attributes}, "
        f"options {r.options}, price {r.price})"
    )

# %% [markdown]
# ## The scripted shopper
#
# Like the QA teacher it reads only its context (the instruction, its last internal state, the
# last page) and writes an index-free state: what is wanted, which items it rejected, and the step
# it takes. It searches with a short query, opens the best-looking title within the budget, checks
# the item page, rejects and goes back at most twice, then selects the options and buys. Those
# shortcuts make it good, not perfect.

# %%
teacher = TeacherPolicy(tokenizer, domain.teacher())
tasks = domain.tasks("dev", 1, 100, seed=0)
runs = {}
for agent in ("mem1", "full"):
    envs = [domain.environment(t) for t in tasks]
    runs[agent] = run_episodes(teacher, tokenizer, envs, RolloutConfig(agent=agent, progress=False), tasks)
example = next(i for i, t in enumerate(runs["mem1"]) if len(t.turns) >= 7)
for turn in runs["mem1"][example].turns:
    print(tokenizer.decode(turn.output_ids))
    print(tokenizer.decode(turn.observation_ids)[:400], "\n")
for agent, trajs in runs.items():
    s = summarize(trajs)
    print(
        f"{agent:5s} reward {100 * s['em']:.1f}  peak tokens {s['peak_tokens']:.0f}  turns {s['turns']:.2f}"
    )

# %% [markdown]
# The same episode seen by the two agents: mem1 feeds the model the prompt, its last response and
# the last page; full context feeds everything so far. The teacher acts the same under both (it
# only reads the last state and page), so the difference is memory alone.

# %%
fig = context_per_turn({a: runs[a][example] for a in runs}, title="one shopping episode: tokens fed per turn")

# %% [markdown]
# ## A trained agent
#
# SFT on the teacher's turns in the mem1 view (`mem1 sft --env webshop`), then LoRA PPO on the `rl`
# goals (`mem1 ppo --env webshop`), the very code of notebook 03. The shipped checkpoints are used
# (a clone without them trains the quick presets, about a minute each, which teach the format at
# best: expect format errors and zero reward from those). They came from
#
#     mem1 sft --env webshop --preset standard --out data/checkpoints/sft-webshop      # 58 min
#     mem1 ppo --env webshop --preset standard --init data/checkpoints/sft-webshop \
#         --out data/checkpoints/ppo-webshop --minutes 25                               # 14 steps
#
# A shopping PPO step is slow on a CPU (48 episodes of up to ten turns, ~2 min), so 25 minutes gave
# 14 steps: the training reward rose, the dev reward barely moved (0.646 -> 0.658 over 200 goals).
# Two longer runs with the group baseline (`ppo-webshop-group`: 55 min at temperature 0.7; a third
# with a 4x smaller step and 5x the KL weight) did not move it either: the README has the numbers.
#
# The full-context baseline is the same SFT recipe on the teacher's full-context episodes, in the
# mem1 SFT's minutes (`--agent full --rows episode --minutes-scale 0.5`): one row per episode,
# which holds every turn's row as a prefix (the same response tokens scored, a quarter of the
# tokens fed).
#
#     mem1 sft --env webshop --preset standard --agent full --rows episode --minutes-scale 0.5 \
#         --out data/checkpoints/sft-webshop-full                                      # 64 min

# %%
sft_dir, ppo_dir = CHECKPOINT_DIR / "sft-webshop", CHECKPOINT_DIR / "ppo-webshop"
if not (sft_dir.is_dir() and ppo_dir.is_dir()):
    work = Path("runs/nb06")
    shutil.rmtree(work, ignore_errors=True)
    sft_dir, ppo_dir = work / "sft-quick", work / "ppo-quick"
    os.environ["MEM1_TQDM"] = "0"
    train_sft(sft_args("quick", out=str(sft_dir), env="webshop"))
    train_ppo(ppo_args("quick", out=str(ppo_dir), init=str(sft_dir), env="webshop"))
# The full-context baseline: the same SFT recipe on the teacher's full-context turns. A model
# trained in the mem1 view and then fed the whole history is no baseline (it never saw one).
full_dir = CHECKPOINT_DIR / "sft-webshop-full"
baseline = (str(full_dir),) if full_dir.is_dir() else ()
print("policies:", sft_dir, ppo_dir, *baseline)

# %% [markdown]
# One goal, the trained policy under mem1 and under full context (greedy):

# %%
keep = {}
records = evaluate_webshop(
    WebShopEvalConfig(
        policies=("teacher", str(sft_dir), str(ppo_dir), *baseline),
        agents=("mem1", "full"),
        episodes=EPISODES,
        split="test",
    ),
    keep=keep,
)
for agent in ("mem1", "full"):
    traj = keep[str(ppo_dir), agent][0]
    print(f"--- {agent}: reward {traj.em:.2f}, {len(traj.turns)} turns, peak {traj.peak_tokens} tokens")
    for turn in traj.turns[:3]:
        print(repr(tokenizer.decode(turn.output_ids)[:300]))

# %% [markdown]
# ## The table, in the paper's WebShop columns
#
# Reward (0-100), peak tokens in context, dependency (attention pairs of the generated tokens) and
# time per task, for each policy under mem1 and full context, on the same `test` goals, with the
# paper's rows below ours.
#
# > Time is our CPU's with a 1.6M-parameter model and the teacher costs nothing: only the shape
# > compares with the paper's GPU seconds. The shape the paper shows is mem1's peak context well
# > below full context's (AgentLM-7B / MEM1: 2.8x) at equal or better reward. The teacher has it by
# > construction (it acts the same under both agents). For trained models, read the mem1 rows
# > against the full-context baseline's `full` row, not against a mem1-trained model under `full`:
# > fed a history it never saw in training, that one falls apart (on 200 test goals: reward ~15
# > against ~66 under mem1). The README holds the 200-goal table; this one has 8 goals per row.

# %%
display(Markdown(webshop_table(records)))

# %% [markdown]
# ## The inspector
#
# The trajectory inspector of notebook 05 reads shopping episodes as they are (it uses nothing but
# the trajectory records): here the teacher's episode above, under both agents.

# %%
inspector = Inspector([runs["mem1"][example], runs["full"][example]], tokenizer=tokenizer)
inspector  # noqa: B018

# %%
print(f"notebook ran in {time.perf_counter() - t_start:.0f} s (quick={QUICK}, turn budget {TURN_LIMIT})")
