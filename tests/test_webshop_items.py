"""WebShop-lite tasks of N goals (multi-item, the harder split that tests memory; webshop.py [5],
webshop_env.py [5], webshop_teacher.py [7-9]).

- N = 1 is byte-identical to the code before multi-item goals (digests of 40 teacher episodes);
- task i of size N: deterministic, independent of `count`, N goals of N types; bad N is refused;
- the k-th purchase is scored against instruction k, whatever it was meant for; unbought items
  score 0; the page after a purchase does not say what is next;
- the teacher buys the items in order; it reserves turns for the later items; its mem1 context is
  flat in N while full context grows with N;
- `mem1 webshop --eval --objectives 1,2` gives one row per N in a table with an N column.
"""

import hashlib
import json
import random
import re
from dataclasses import asdict, replace

import pytest

from mem1lite.cli import main
from mem1lite.domains import load_domain
from mem1lite.generate import TeacherPolicy
from mem1lite.protocol import observation
from mem1lite.rollout import RolloutConfig, run_episodes
from mem1lite.trajectory import summarize
from mem1lite.webshop import MAX_ITEMS
from mem1lite.webshop_env import (
    INSTRUCTION,
    MULTI_ITEM,
    TURN_LIMIT,
    WebShopEnvironment,
    item_page,
    parse_prompt_instructions,
    purchase_reward,
    purchase_text,
    search_page,
    task_prompt,
)
from mem1lite.webshop_teacher import State, parse_instruction, parse_state, play_text, teacher_response

TEXT_DIGEST = "2622341405e4713f7a969f5534e4105a59c66fdb41c32f6a1ca1fea8360ac258"
"""`_text_digest` of the shipped catalogue, computed with this very function on commit bcc3509 (the
code before multi-item goals, working tree clean), before any of their edits"""
TRAJECTORY_DIGEST = "ee4084d9e929c802cc84f70c3bfdc21aee01ec4c255ee1f76e00c281192b0e6d"
"""`_trajectory_digest` with the shipped tokenizer, computed the same way on the same commit"""


@pytest.fixture(scope="module")
def domain():
    return load_domain("webshop")


def _think(action: str) -> str:
    return f"<think> notes</think>{action}"


def _page(obs: str) -> str:
    return re.sub(r"^<information>\[HINT\]You have \d+ turns left\.\[/HINT\] |</information>$", "", obs)


# ---------------------------------------------------------------------------------------------
# N = 1 unchanged


def _text_digest(domain, n: int = 40) -> str:
    """sha256 over n N = 1 teacher episodes on `test`, played through the domain interface in the
    mem1 view (prompt + last response + last page): task ids, prompts, questions, golds, every
    response and page, every EpisodeResult field, and the domain fingerprint (the cache key's)."""
    h = hashlib.sha256(domain.fingerprint().encode())
    teacher = domain.teacher()
    for task in domain.tasks("test", 1, n, seed=0):
        env = domain.environment(task)
        head = f"<|im_start|>user\n{env.prompt()}<|im_end|>\n<|im_start|>assistant\n"
        rows, last = [task.id, env.prompt(), list(env.questions), list(env.golds)], ""
        while not env.done:
            response = teacher(head + last)
            obs = env.step(response).observation
            rows.append([response, obs])
            last = response + (obs or "")
        rows.append(asdict(env.result()))
        h.update(json.dumps(rows).encode())
    return h.hexdigest()


def _trajectory_digest(domain, tokenizer, n: int = 40) -> str:
    """sha256 over the jsonl records (timings zeroed) of the same n episodes played by
    rollout.run_episodes under the mem1 and the full agent: token ids, spans, em, f1, per-slot em."""
    h = hashlib.sha256()
    tasks = domain.tasks("test", 1, n, seed=0)
    for agent in ("mem1", "full"):
        envs = [domain.environment(t) for t in tasks]
        policy = TeacherPolicy(tokenizer, domain.teacher())
        for t in run_episodes(policy, tokenizer, envs, RolloutConfig(agent=agent, progress=False), tasks):
            t = replace(t, seconds=0.0, turns=[replace(x, seconds=0.0) for x in t.turns])
            h.update(t.to_json().encode())
    return h.hexdigest()


def test_one_goal_tasks_are_byte_identical_to_before(domain, tokenizer):
    assert _text_digest(domain) == TEXT_DIGEST
    assert _trajectory_digest(domain, tokenizer) == TRAJECTORY_DIGEST
    task = domain.tasks("test", 1, 1)[0]
    assert task.id == "shop-test-s0-0" and task.goals == (task.goal,) and task.objectives == 1


# ---------------------------------------------------------------------------------------------
# Tasks


def test_tasks_of_n_goals_are_deterministic_and_of_different_types(domain):
    for n in range(2, MAX_ITEMS + 1):
        a = domain.tasks("test", n, 30, seed=1)
        assert [t.goals for t in a] == [t.goals for t in domain.tasks("test", n, 30, seed=1)]
        assert [t.goals for t in a[:7]] == [t.goals for t in domain.tasks("test", n, 7, seed=1)]
        assert [t.goals for t in a] != [t.goals for t in domain.tasks("test", n, 30, seed=2)]
        assert all(len({g.type for g in t.goals}) == n and t.objectives == n for t in a)
        assert all(g.split == "test" for t in a for g in t.goals)
        assert a[3].id == f"shop-test-n{n}-s1-3" and a[3].questions == tuple(
            g.instruction for g in a[3].goals
        )
    assert len({tuple(g.id for g in t.goals) for t in domain.tasks("test", 2, 200)}) == 200  # none alike
    for bad in (0, MAX_ITEMS + 1, 2.0, True, "2"):
        with pytest.raises(ValueError, match=r"1 to 4 goals \(objectives = 1\.\.4\), got") as info:
            domain.tasks("test", bad, 3)
        assert "\n" not in str(info.value)


def test_prompt_lists_the_instructions_in_order(domain):
    task = domain.tasks("test", 3, 1)[0]
    prompt = domain.environment(task).prompt()
    assert parse_prompt_instructions(prompt) == list(task.questions)
    assert prompt.startswith(f"{INSTRUCTION} {MULTI_ITEM}\nInstruction 1: ")
    assert "per instruction, in the order given" in MULTI_ITEM and "Instruction: " not in prompt
    one = task_prompt(task.goal.instruction)
    assert one == f"{INSTRUCTION}\nInstruction: {task.goal.instruction}"
    assert parse_prompt_instructions(one) == [task.goal.instruction]


# ---------------------------------------------------------------------------------------------
# The environment


def _buy(env: WebShopEnvironment, product, options: dict) -> str | None:
    """Search the product's title, open it, select `options` (those it offers), buy."""
    obs = env.step(_think(f"<search> {product.title}</search>")).observation
    while f"[{product.id}]" not in obs:
        obs = env.step(_think("<search> click[next >]</search>")).observation
    env.step(_think(f"<search> click[{product.id}]</search>"))
    for otype, value in options.items():
        if value in product.options.get(otype, ()):
            env.step(_think(f"<search> click[{value}]</search>"))
    return env.step(_think("<answer> buy now</answer>")).observation


def test_each_purchase_is_scored_against_its_instruction(domain):
    """Buying goal 2's target first: it is scored against instruction 1 (and goal 1's target
    against instruction 2); the page after a purchase names neither what is next nor how many."""
    task = domain.tasks("test", 2, 1, seed=4)[0]
    g1, g2 = task.goals
    t1, t2 = (domain.catalogue.by_id[g.target] for g in task.goals)
    env = domain.environment(task)
    assert env.turn_limit == 2 * TURN_LIMIT and env.questions == task.questions and len(env.golds) == 2
    obs = _buy(env, t2, g2.options)
    assert _page(obs) == f"You bought {purchase_text(t2, g2.options)}.\n{search_page()}"
    assert not env.done and env.page == "search" and env.item is None and env.selected == {}
    assert g1.instruction not in obs and g2.instruction not in obs and "nstruction" not in obs
    assert _buy(env, t1, g1.options) is None and env.done
    r = env.result()
    wrong = (purchase_reward(g1, t2, g2.options).reward, purchase_reward(g2, t1, g1.options).reward)
    assert r.per_slot_em == wrong and r.em == pytest.approx(sum(wrong)) and max(wrong) < 1.0
    assert r.answer == f"bought {purchase_text(t2, g2.options)}; bought {purchase_text(t1, g1.options)}"
    # in the right order, both are perfect
    env = domain.environment(task)
    _buy(env, t1, g1.options)
    _buy(env, t2, g2.options)
    assert env.result().per_slot_em == (1.0, 1.0) and env.result().em == 2.0 and env.result().f1 == 2.0


def test_out_of_turns_unbought_items_score_zero(domain):
    task = domain.tasks("test", 3, 1, seed=5)[0]
    env = domain.environment(task)
    _buy(env, domain.catalogue.by_id[task.goal.target], task.goal.options)
    while not env.done:
        env.step(_think("<search> cotton</search>"))
    r = env.result()
    assert r.turns == 3 * TURN_LIMIT and r.per_slot_em == (1.0, 0.0, 0.0) and r.em == 1.0
    assert r.answer.count("bought") == 1 and env.bought.id == task.goal.target


# ---------------------------------------------------------------------------------------------
# The teacher


@pytest.mark.parametrize("n", [2, 3])
def test_teacher_buys_the_items_in_order(domain, n):
    for task in domain.tasks("test", n, 5, seed=0):
        turns = play_text(task.goals, domain.shop)
        env = WebShopEnvironment(task.goals, domain.shop)
        for response, _ in turns:
            env.step(response)
        assert env.done and len(env.purchases) == n
        expected = tuple(purchase_reward(g, p, o).reward for g, (p, o) in zip(task.goals, env.purchases))
        assert env.result().per_slot_em == expected and env.result().em == pytest.approx(sum(expected))
        pointers = [int(re.search(r"<think> item (\d+) of", r)[1]) for r, _ in turns]
        assert pointers == sorted(pointers) and set(pointers) == set(range(1, n + 1))


def test_teacher_state_pointer_and_turn_reserve(domain):
    """[7] the pointer round-trips; [9] with one item after this one, 10 turns left count as 5: the
    teacher settles for a wrong item (selects or buys) that it rejects with 12 left, as the last
    item, or in a one-item task."""
    g1, g2 = domain.tasks("test", 2, 1)[0].goals
    state = State(parse_instruction(g1.instruction), item=1, items=2)
    assert state.render().startswith("item 1 of 2. want: ") and parse_state(state.render()) == state
    wrong = next(p for p in domain.catalogue.products if p.type != g1.type)

    def rejects(prompt: str, state: State, turns_left: int) -> bool:
        context = (
            f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think> {state.render()}</think>"
        )
        page = observation(item_page(wrong, {}), turns_left)
        response = teacher_response(f"{context}<search> click[{wrong.id}]</search>{page}")
        assert response.startswith(f"<think> {state.render().split('want:')[0]}want: ")  # same pointer
        return response.endswith("<search> click[< prev]</search>") and f"rejected: {wrong.id}." in response

    two = task_prompt((g1.instruction, g2.instruction))
    assert not rejects(two, state, 10) and rejects(two, state, 12)
    assert rejects(two, State(parse_instruction(g2.instruction), item=2, items=2), 10)
    assert rejects(task_prompt(g1.instruction), State(parse_instruction(g1.instruction)), 10)


def test_teacher_memory_is_flat_in_n_and_full_context_grows(domain, tokenizer):
    """Measured on these 20 tasks, mean peak tokens at N = 1, 2, 4: mem1 309, 395, 465 (the prompt,
    which lists the N instructions, 135, 207, 273; the rest 173, 188, 192), full 1048, 2116, 4504."""
    peak, rest, reward = {}, {}, {}
    for n in (1, 2, 4):
        tasks = domain.tasks("test", n, 20, seed=0)
        outputs = {}
        for agent in ("mem1", "full"):
            envs = [domain.environment(t) for t in tasks]
            policy = TeacherPolicy(tokenizer, domain.teacher())
            trajs = run_episodes(policy, tokenizer, envs, RolloutConfig(agent=agent, progress=False), tasks)
            s = summarize(trajs)
            peak[agent, n], reward[agent, n] = s["peak_tokens"], s["em_per_objective"]
            rest[agent, n] = sum(t.peak_tokens - len(t.prompt_ids) for t in trajs) / len(trajs)
            outputs[agent] = [[x.output_ids for x in t.turns] for t in trajs]
            assert all(t.objectives == n and len(t.per_slot_em) == n for t in trajs)
        assert outputs["mem1"] == outputs["full"]  # it reads only its state and the last page
        assert reward["mem1", n] >= 0.9
    # mem1: what the agent keeps besides the prompt is flat; the peak grows only by the prompt
    assert rest["mem1", 4] <= 1.15 * rest["mem1", 1] and peak["mem1", 4] <= 1.6 * peak["mem1", 1]
    # full: grows with every item, and so does its cost over mem1
    assert peak["full", 2] >= 1.8 * peak["full", 1] and peak["full", 4] >= 3.5 * peak["full", 1]
    assert peak["full", 4] / peak["mem1", 4] >= 2 * peak["full", 1] / peak["mem1", 1]
    assert peak["full", 4] < 8192  # the tiny model's positions


def test_random_responses_never_crash_a_multi_item_episode(domain):
    rng = random.Random(1)
    for task in domain.tasks("dev", 3, 20, seed=3):
        env = domain.environment(task)
        while not env.done:
            if env.page == "results" and env.results and rng.random() < 0.5:
                response = _think(f"<search> click[{rng.choice(env.results[:5]).id}]</search>")
            elif env.page == "item" and rng.random() < 0.4:
                response = _think("<answer> buy now</answer>")
            else:
                response = _think(rng.choice(["<search> red</search>", "<search> click[next >]</search>"]))
            outcome = env.step(response)
            assert (outcome.observation is None) == env.done
        r = env.result()
        assert len(r.per_slot_em) == 3 and 0.0 <= r.em <= r.f1 <= 3.0 and r.turns <= 3 * TURN_LIMIT
        assert (r.answer or "").count("bought") == len(env.purchases)


# ---------------------------------------------------------------------------------------------
# Evaluation


def test_cli_eval_has_an_n_column_and_rebuilds_from_records(tmp_path, capsys):
    out, md = tmp_path / "items.json", tmp_path / "items.md"
    play = "webshop --eval teacher --agents mem1,full --objectives 1,2 --episodes 4 --split test".split()
    assert main([*play, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| model | agent | N | reward | success | peak tokens (x10^3) |" in printed
    for n in (1, 2):
        assert f"| teacher | mem1 | {n} |" in printed and f"| teacher | full | {n} |" in printed
    assert "| MEM1 (7B) (paper) | | 1 | 70.87 |" in printed and "teacher N=2 " in printed
    records = json.loads(out.read_text())
    assert [(r["objectives"], r["agent"]) for r in records] == [
        (1, "mem1"),
        (1, "full"),
        (2, "mem1"),
        (2, "full"),
    ]
    for r in records:  # reward: 100 x the mean reward per item
        assert r["reward"] == pytest.approx(100 * r["em_per_objective"]) and 0 < r["success"] <= 1
    assert main(["webshop", "--records", str(out), "--markdown", str(md)]) == 0
    assert md.read_text().strip() in capsys.readouterr().out
    assert main([*play[:-6], "--objectives", "5", "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "1 to 4 goals" in err and len(err.splitlines()) == 1


def test_the_sft_probe_evaluates_the_sizes_it_is_given(domain, tokenizer, small_qwen, tmp_path):
    """The final evaluation of an SFT run on multi-item data asks for N = 2: the probe plays N = 2
    (its own default, N = 1 and 2, is fitted to WebShop's N = 1)."""
    from mem1lite.model import load_policy
    from mem1lite.sft import ReadingProbe, make_args

    model, _ = load_policy(small_qwen(tmp_path / "m"))
    probe = ReadingProbe(domain, tokenizer, make_args("quick", env="webshop", probe_max_new_tokens=4))
    assert set(probe.em(model, objectives=(2,), tasks=1)) == {"em_per_objective_n2", "format_errors_n2"}
    assert set(probe.em(model, tasks=1)) == {"em_per_objective_n1", "format_errors_n1"}
