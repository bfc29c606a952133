"""WebShop-lite: the catalogue, the environment, the reward, the teacher, and the shared machinery on it.

- the catalogue is deterministic (same seed, same bytes; the shipped one is seed 0 regenerated),
  big enough, its splits' target products and instructions disjoint; bad files are one line;
- the reward formula on hand-made purchases, and the action mapping on a scripted episode;
- a few hundred random responses never crash the environment and always cost a turn;
- the teacher shops well (reward on dev above what we measured, minus a margin), acts the same
  under mem1 and full, and the mem1 agent's peak context stays >= 2.5x below full's;
- the shared machinery: run_episodes with a model, jsonl, the inspector, `mem1 webshop` / `mem1
  rollout --env webshop`, sft/ppo task sizes fitted to the domain, the tokenizer extension.

Tasks of N >= 2 goals (multi-item, the harder split) are tested in test_webshop_items.py.
"""

import json
import random
import re

import pytest

from mem1lite.cli import main
from mem1lite.domains import QADomain, WebShopDomain, fit_objectives, load_domain
from mem1lite.generate import GenerationConfig, ModelPolicy, TeacherPolicy
from mem1lite.model import TINY_DIR, build_tiny_model, load_tokenizer
from mem1lite.rollout import RolloutConfig, run_episodes
from mem1lite.store import DataError
from mem1lite.trajectory import read_jsonl, summarize, write_jsonl
from mem1lite.webshop import (
    DEFAULT_WEBSHOP_DIR,
    SPLITS,
    CatalogueConfig,
    Goal,
    Product,
    generate_catalogue,
    load_catalogue,
    satisfies,
    save_catalogue,
)
from mem1lite.webshop_env import (
    MAX_RESULTS,
    PAGE_SIZE,
    TURN_LIMIT,
    WebShopEnvironment,
    purchase_reward,
)
from mem1lite.webshop_teacher import parse_instruction, parse_state, play_text, teacher_response

SMALL = CatalogueConfig(seed=3, products=300, goals_per_product=2)
TEACHER_DEV_REWARD = 0.93
"""the teacher's mean reward on 100 dev goals must stay above this (measured: 0.959 on 500 dev
goals, 0.955 on 500 test goals; success rate 0.84)"""


@pytest.fixture(scope="module")
def domain():
    return load_domain("webshop")


def _think(action: str) -> str:
    return f"<think> notes</think>{action}"


# ---------------------------------------------------------------------------------------------
# The catalogue


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = save_catalogue(generate_catalogue(SMALL), tmp_path / "a")
    b = save_catalogue(generate_catalogue(SMALL), tmp_path / "b")
    for name in ("products.parquet", "goals.parquet", "manifest.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    other = generate_catalogue(CatalogueConfig(seed=4, products=300, goals_per_product=2))
    assert [p.title for p in other.products] != [p.title for p in generate_catalogue(SMALL).products]


def test_shipped_catalogue_is_seed_zero_regenerated(tmp_path):
    out = save_catalogue(generate_catalogue(CatalogueConfig(seed=0)), tmp_path / "w")
    for name in ("products.parquet", "goals.parquet", "manifest.json"):
        assert (out / name).read_bytes() == (DEFAULT_WEBSHOP_DIR / name).read_bytes(), name


def test_shipped_catalogue_sizes_and_fields(domain):
    cat = domain.catalogue
    assert len(cat.products) >= 2000
    assert len({p.id for p in cat.products}) == len(cat.products)
    assert len({p.type for p in cat.products}) >= 40
    assert {s: len(cat.goals[s]) >= 1000 for s in SPLITS} == dict.fromkeys(SPLITS, True)
    for p in cat.products[:200]:
        assert p.title and p.description and p.category and p.type in p.title
        assert 0 < p.price < 200 and 3 <= len(p.attributes) <= 4 and len(p.options) == 2
        assert all(3 <= len(v) <= 5 for v in p.options.values())
        values = [v for vs in p.options.values() for v in vs]
        assert len(values) == len(set(values))  # a click on a value names one option type
    for g in cat.goals["dev"][:200]:
        assert g.type in g.instruction and all(a in g.instruction for a in g.attributes)
        assert all(v in g.instruction for v in g.options.values()) and f"{g.price_bound:.2f}" in g.instruction
        assert satisfies(cat.by_id[g.target], g)  # the target always satisfies its goal


def test_splits_are_disjoint(domain):
    cat = domain.catalogue
    targets = {s: {g.target for g in cat.goals[s]} for s in SPLITS}
    texts = {s: {g.instruction for g in cat.goals[s]} for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not targets[a] & targets[b] and not texts[a] & texts[b], (a, b)
    for s in SPLITS:  # a product's goals all go to the split of its pool
        assert all(cat.by_id[t].pool == s for t in targets[s])


def test_tasks_are_deterministic_prefix_stable_and_fresh(domain):
    a = domain.tasks("dev", 1, 50, seed=2)
    assert [t.goal.id for t in a] == [t.goal.id for t in domain.tasks("dev", 1, 50, seed=2)]
    assert [t.goal.id for t in a[:10]] == [t.goal.id for t in domain.tasks("dev", 1, 10, seed=2)]
    assert len({t.goal.id for t in a}) == 50  # no goal repeats before all were used
    assert [t.goal.id for t in a] != [t.goal.id for t in domain.tasks("dev", 1, 50, seed=3)]
    with pytest.raises(ValueError, match="1 to 4 goals"):
        domain.tasks("dev", 5, 5)
    with pytest.raises(ValueError, match="unknown split"):
        domain.tasks("train", 1, 5)


def test_missing_and_corrupted_files_name_the_file_and_the_fix(tmp_path, domain):
    out = save_catalogue(generate_catalogue(SMALL), tmp_path / "c")
    assert len(load_catalogue(out).products) == 300
    # the SFT data cache is keyed by the fingerprint: it follows the stored files
    small = WebShopDomain(out).fingerprint()
    assert small == WebShopDomain(catalogue=load_catalogue(out)).fingerprint() != domain.fingerprint()
    (out / "goals.parquet").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"goals\.parquet is corrupted .*mem1 webshop --out"):
        load_catalogue(out)
    (out / "goals.parquet").unlink()
    with pytest.raises(DataError, match=r"goals\.parquet is missing; rebuild it with `mem1 webshop"):
        load_catalogue(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match=r"manifest\.json is corrupted"):
        load_catalogue(out)


def test_cli_refuses_to_overwrite_and_checks(tmp_path, capsys):
    out = tmp_path / "w"
    save_catalogue(generate_catalogue(SMALL), out)
    assert main(["webshop", "--out", str(out), "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--force" in err
    (out / "products.parquet").unlink()
    assert main(["webshop", "--check", "--path", str(out)]) == 2
    assert "products.parquet is missing" in capsys.readouterr().err
    assert main(["webshop", "--check"]) == 0
    assert "target@page" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# The reward


def _product(**kw) -> Product:
    base = dict(
        id="B1000",
        title="Maple cotton slim fit t-shirt",
        category="clothing",
        type="t-shirt",
        brand="Maple",
        price=18.99,
        attributes=["cotton", "slim fit", "machine washable"],
        options={"color": ["red", "blue"], "size": ["small", "medium"]},
        description="",
        pool="dev",
    )
    return Product(**(base | kw))


GOAL = Goal(
    id="g",
    split="dev",
    instruction="",
    target="B1000",
    category="clothing",
    type="t-shirt",
    attributes=["cotton", "slim fit"],
    options={"color": "red", "size": "medium"},
    price_bound=20.0,
)


@pytest.mark.parametrize(
    "product, selected, reward",
    [
        (_product(), {"color": "red", "size": "medium"}, 1.0),  # everything: 5/5
        (_product(), {"color": "red"}, 4 / 5),  # one option not selected
        (_product(), {"color": "blue", "size": "small"}, 3 / 5),  # both options wrong
        (_product(price=20.01), {"color": "red", "size": "medium"}, 4 / 5),  # over the bound
        (_product(price=20.0), {"color": "red", "size": "medium"}, 1.0),  # the bound itself is fine
        (_product(attributes=["wool"]), {"color": "red", "size": "medium"}, 3 / 5),  # no attribute
        (_product(type="hoodie", title="Maple hoodie"), {"color": "red", "size": "medium"}, 0.5),
        (_product(type="mug", category="home", title="Maple t-shirt mug"), {}, 0.1 * 3 / 5),
        (_product(type="mug", category="home", title="Maple mug", attributes=[]), {}, 0.0),
    ],
)
def test_reward_formula_on_hand_made_purchases(product, selected, reward):
    r = purchase_reward(GOAL, product, selected)
    assert r.reward == pytest.approx(reward)
    assert 0.0 <= r.reward <= r.share <= 1.0


# ---------------------------------------------------------------------------------------------
# The environment


def test_a_scripted_shopping_episode(domain):
    goal = domain.catalogue.goals["dev"][0]
    target = domain.catalogue.by_id[goal.target]
    env = domain.environment(domain.tasks("dev", 1, 1)[0])
    env.goal = goal
    assert env.prompt().endswith(goal.instruction) and env.turns_left == TURN_LIMIT
    obs = env.step(_think("<answer> buy now</answer>")).observation  # not on an item page
    assert "Invalid action: [Buy Now] is on an item page" in obs and "Search page" in obs
    obs = env.step(_think(f"<search> {target.title}</search>")).observation
    assert "[HINT]You have 8 turns left.[/HINT]" in obs and f"[{target.id}]" in obs
    assert obs.count("\n[B") + obs.startswith("[B") <= PAGE_SIZE and "[Next >]" in obs
    obs = env.step(_think("<search> click[next >]</search>")).observation
    assert "page 2 of" in obs and "[< Prev]" in obs
    obs = env.step(_think("<search> click[< Prev]</search>")).observation
    assert "page 1 of" in obs and env.searches == 1
    obs = env.step(_think(f"<search> click[{target.id.lower()}]</search>")).observation
    assert f"Item [{target.id}]" in obs and "selected: none" in obs
    for otype, value in goal.options.items():
        obs = env.step(_think(f"<search> click[{value}]</search>")).observation
        assert f"{otype} {value}" in obs.split("selected: ")[1]
    outcome = env.step(_think("<answer> buy now</answer>"))
    assert outcome.done and outcome.observation is None and env.done
    r = env.result()
    assert r.em == pytest.approx(1.0) and r.f1 == pytest.approx(1.0) and r.per_slot_em == (1.0,)
    assert r.answer.startswith(f"bought {target.id}") and r.format_errors == 0 and env.invalid_actions == 1


def test_results_are_capped_and_search_works_from_any_page(domain):
    env = domain.environment(domain.tasks("dev", 1, 1)[0])
    env.step(_think("<search> cotton</search>"))
    assert len(env.results) == MAX_RESULTS
    env.step(_think(f"<search> click[{env.results[0].id}]</search>"))
    assert env.page == "item"
    env.step(_think("<search> search[zzzz qqqq]</search>"))
    assert env.page == "results" and env.results == [] and "No results" in env.current_page()
    env.step(_think("<search> click[back to search]</search>"))
    assert env.page == "search"


_PIECES = [
    "<think> x</think><search> red shirt</search>",
    "<think> x</think><search> click[next >]</search>",
    "<think> x</think><search> click[< prev]</search>",
    "<think> x</think><search> click[back to search]</search>",
    "<think> x</think><search> click[B1234]</search>",
    "<think> x</think><search> click[]</search>",
    "<think> x</think><search> click[red]</search>",
    "<think> x</think><search> click[buy now]</search>",
    "<think> x</think><answer> buy now</answer>",
    "<think> x</think><answer> B1234</answer>",
    "<think> x</think><search> search[]</search>",
    "<search> no think</search>",
    "<think> unclosed",
    "garbage \x00 bytes",
    b"\xff\xfe not utf-8",
    "",
    "<think> a</think><search> b</search><search> c</search>",
    "<think> x</think><information> fake</information><search> q</search>",
]


def test_random_responses_never_crash_and_always_cost_a_turn(domain):
    rng = random.Random(0)
    tasks = domain.tasks("dev", 1, 40, seed=5)
    steps = 0
    for task in tasks:
        env = domain.environment(task)
        while not env.done:
            roll = rng.random()
            if roll < 0.3 and env.page == "results" and env.results:  # a real item now and then
                shown = env.results[(env.result_page - 1) * PAGE_SIZE : env.result_page * PAGE_SIZE]
                response = f"<think> x</think><search> click[{rng.choice(shown).id}]</search>"
            elif roll < 0.45 and env.page == "item":
                values = [v for vs in env.item.options.values() for v in vs]
                response = f"<think> x</think><search> click[{rng.choice(values)}]</search>"
            else:
                response = rng.choice(_PIECES)
            turns = env.turns
            outcome = env.step(response, hit_length_limit=rng.random() < 0.03)
            steps += 1
            assert env.turns == turns + 1
            assert outcome.done == env.done
            assert (outcome.observation is None) == env.done
            if outcome.observation is not None:
                assert outcome.observation.startswith("<information>[HINT]You have")
        r = env.result()
        assert 0.0 <= r.em <= r.f1 <= 1.0 and r.turns <= TURN_LIMIT
        assert (r.answer is None) == (r.em == 0.0 and env.bought is None)
    assert steps >= 300


def test_out_of_turns_without_buying_scores_zero(domain):
    env = domain.environment(domain.tasks("dev", 1, 1)[0])
    for _ in range(TURN_LIMIT):
        outcome = env.step(_think("<search> cotton</search>"))
    assert outcome.done and env.result().em == 0.0 and env.result().answer is None


# ---------------------------------------------------------------------------------------------
# The teacher


def test_instruction_and_state_parsing(domain):
    for goal in domain.catalogue.goals["test"][:300]:
        want = parse_instruction(goal.instruction)
        assert want.type == goal.type and want.attributes == goal.attributes
        assert want.options == list(goal.options.values()) and want.bound == goal.price_bound
    prompt = domain.environment(domain.tasks("dev", 1, 1)[0]).prompt()
    text = teacher_response(f"<|im_start|>user\n{prompt}<|im_end|>")
    state = parse_state(text.split("<think>")[1].split("</think>")[0])
    assert state is not None and state.rejected == [] and state.now == "search"
    assert parse_state("answers: none. question: none. now: none.") is None


def test_teacher_reads_only_its_context(domain):
    """Same context text, same response; it never touches the goal record (play_text builds the
    contexts from text only) and a garbled state restarts it from the instruction."""
    goal = domain.catalogue.goals["dev"][3]
    turns = play_text(goal, domain.shop)
    assert turns == play_text(goal, domain.shop)
    assert turns[-1][0].endswith("<answer> buy now</answer>") and turns[-1][1] is None
    for response, _ in turns:
        assert "B" not in response.split("want: ")[1].split(".")[0]  # no id in what is wanted
    prompt = WebShopEnvironment(goal, domain.shop).prompt()
    head = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    assert teacher_response(head + "<think> ???</think><search> x</search>") == turns[0][0]


def test_teacher_shops_well_and_mem1_keeps_peak_tokens_low(domain, tokenizer):
    tasks = domain.tasks("dev", 1, 100, seed=0)
    out = {}
    for agent in ("mem1", "full"):
        envs = [domain.environment(t) for t in tasks]
        trajs = run_episodes(
            TeacherPolicy(tokenizer, domain.teacher()),
            tokenizer,
            envs,
            RolloutConfig(agent=agent, progress=False),
            tasks,
        )
        out[agent] = (summarize(trajs), trajs)
    mem1, full = out["mem1"][0], out["full"][0]
    assert mem1["em"] >= TEACHER_DEV_REWARD and mem1["format_errors"] == 0
    assert mem1["em"] < 1.0  # well, not perfectly
    # The teacher reads only the last state and page: it acts the same under both agents.
    for a, b in zip(out["mem1"][1], out["full"][1]):
        assert [t.output_ids for t in a.turns] == [t.output_ids for t in b.turns]
    assert full["peak_tokens"] >= 2.5 * mem1["peak_tokens"]
    assert all(t.env == "webshop" for t in out["mem1"][1])


# ---------------------------------------------------------------------------------------------
# The shared machinery


def test_untrained_model_rolls_out_and_writes_jsonl(domain, tokenizer, tmp_path):
    model = build_tiny_model(seed=0).eval()
    tasks = domain.tasks("dev", 1, 2, seed=0)
    policy = ModelPolicy(model, tokenizer, GenerationConfig(max_new_tokens=12, temperature=1.0))
    for agent in ("mem1", "full"):
        envs = [domain.environment(t) for t in tasks]
        trajs = run_episodes(
            policy, tokenizer, envs, RolloutConfig(agent=agent, progress=False, seed=1), tasks
        )
        assert all(t.env == "webshop" and len(t.turns) == TURN_LIMIT and t.em == 0.0 for t in trajs)
        assert all(t.format_errors == TURN_LIMIT for t in trajs)  # untrained: garbage every turn
    path = write_jsonl(trajs, tmp_path / "w.jsonl")
    loaded = read_jsonl(path, strict=True).trajectories
    assert [t.to_json() for t in loaded] == [t.to_json() for t in trajs]


def test_cli_rollout_and_inspector_render_a_shopping_episode(tmp_path, capsys):
    from mem1lite.inspector_html import export_html

    out = tmp_path / "shop.jsonl"
    assert main(["rollout", "--env", "webshop", "--episodes", "2", "--out", str(out)]) == 0
    assert "wrote 2 episodes" in capsys.readouterr().out
    traj = read_jsonl(out, strict=True).trajectories[0]
    assert traj.env == "webshop" and traj.objectives == 1 and traj.em > 0
    html = tmp_path / "shop.html"
    export_html(out, 0, html)
    page = html.read_text()
    words = re.sub(r"<[^>]+>", " ", page).split()  # the panes draw one span per token
    assert "webshop" in words and "Results" in words and "Buy" in words and "features" in words
    assert main(["rollout", "--env", "webshop", "--objectives", "5", "--out", str(out)]) == 2
    assert "1 to 4 goals" in capsys.readouterr().err


def test_sft_and_ppo_task_sizes_fit_the_domain(domain):
    from mem1lite.ppo import PPOArgs
    from mem1lite.sft import fit_to_domain, make_args

    assert fit_objectives((1, 2, 3, 4), domain) == (1,) and fit_objectives((2,), domain) == (1,)
    assert fit_objectives((1, 2, 4), QADomain.__new__(QADomain)) == (1, 2, 4)
    args = fit_to_domain(make_args("quick", env="webshop"), domain)
    assert args.objectives == (1,) and args.final_eval_objectives == (1,)
    chosen = fit_to_domain(make_args("quick", env="webshop", objectives=(2,)), domain)
    assert chosen.objectives == (2,)  # a user's choice is left for the domain to refuse
    multi = fit_to_domain(make_args("long", env="webshop", objectives=(1, 2, 3, 4)), domain)
    assert multi.objectives == (1, 2, 3, 4)  # chosen, though equal to the QA default: kept
    assert multi.final_eval_objectives == (1, 2, 4)  # multi-item data: evaluated at those sizes too
    assert fit_to_domain(make_args("standard", env="webshop"), domain).objectives == (1,)
    assert PPOArgs.objectives == (2,) and isinstance(domain, WebShopDomain)
    assert domain.max_objectives == 4 and domain.default_max_objectives == 1  # defaults stay one goal


def test_shared_tokenizer_keeps_qa_encodings_and_shortens_shop_text(world, domain, tokenizer, tmp_path):
    """data/tiny is the QA tokenizer extended with merges learned on shop text (tokenizer.py 6-7)."""
    from mem1lite.model import tiny_qwen2_config
    from mem1lite.tokenizer import qa_texts, train_tokenizer

    base = train_tokenizer(world)
    base.save_pretrained(tmp_path)
    tiny_qwen2_config(base).save_pretrained(tmp_path)
    base = load_tokenizer(tmp_path)
    assert len(tokenizer) > len(base)
    assert tokenizer.convert_ids_to_tokens(list(range(len(base)))) == base.convert_ids_to_tokens(
        list(range(len(base)))
    )
    texts = list(qa_texts(world, tasks=2))
    sample = random.Random(0).sample(texts[:30000], 300) + texts[-400:]  # documents ... episodes
    assert all(base.encode(t) == tokenizer.encode(t) for t in sample)
    shop = [r + (o or "") for r, o in play_text(domain.catalogue.goals["dev"][0], domain.shop)]
    assert sum(len(tokenizer.encode(t)) for t in shop) < 0.7 * sum(len(base.encode(t)) for t in shop)
    assert json.loads((TINY_DIR / "config.json").read_text())["vocab_size"] >= len(tokenizer)


def test_webshop_table_has_the_papers_columns_and_rows(capsys):
    from mem1lite.webshop_eval import WebShopEvalConfig, evaluate_webshop, peak_ratios, webshop_table

    keep = {}
    records = evaluate_webshop(WebShopEvalConfig(episodes=12, split="dev"), keep=keep)
    assert [(r["policy"], r["agent"]) for r in records] == [("teacher", "mem1"), ("teacher", "full")]
    assert records[0]["reward"] == pytest.approx(100 * records[0]["em"]) and records[0]["objectives"] == 1
    assert len(keep["teacher", "mem1"]) == 12 and peak_ratios(records)["teacher"] >= 2.5
    table = webshop_table(records)
    assert "| reward | success | peak tokens (x10^3) | dependency (x10^6) | time (s) |" in table
    assert "| MEM1 (7B) (paper) | | 70.87 | | 0.81 | | 2.61 | |" in table and "full / mem1" in table
    assert main(["eval", "--env", "webshop", "--agents", "mem1", "--episodes", "3", "--split", "dev"]) == 0
    assert "| teacher | mem1 | 1 |" in capsys.readouterr().out


def test_webshop_records_join_saved_runs_and_refuse_bad_input(tmp_path, capsys):
    """`mem1 webshop --records` rebuilds the table from saved --json runs without playing; a QA
    records file, a missing file or --eval together with --records is a one-line error."""
    a, b, joined, md = (tmp_path / name for name in ("a.json", "b.json", "j.json", "t.md"))
    play = "webshop --eval teacher --episodes 3 --agents".split()
    assert main([*play, "mem1", "--json", str(a)]) == 0 and main([*play, "full", "--json", str(b)]) == 0
    capsys.readouterr()
    assert main(["webshop", "--records", f"{a},{b}", "--markdown", str(md), "--json", str(joined)]) == 0
    table = md.read_text()
    assert "| teacher | mem1 |" in table and "| teacher | full |" in table and "full / mem1: teacher" in table
    assert len(json.loads(joined.read_text())) == 2
    qa = tmp_path / "qa.json"
    qa_eval = "eval --policy teacher --agents mem1 --objectives 1 --episodes 2 --json".split()
    assert main([*qa_eval, str(qa)]) == 0
    capsys.readouterr()
    for argv, message in (
        (["webshop", "--records", str(qa)], "not webshop records"),
        (["webshop", "--records", str(tmp_path / "none.json")], "no records file"),
        (["webshop", "--records", str(a), "--eval", "teacher"], "not both"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
