"""The scripted teacher: near-perfect play under the mem1 agent at every N, from the visible context only."""

import pytest

from mem1lite.generate import TeacherPolicy
from mem1lite.protocol import QAEnvironment, max_turns, parse_response, task_prompt
from mem1lite.retrieval import PoolRetrievers
from mem1lite.rollout import RolloutConfig, run_episodes
from mem1lite.teacher import State, find_fact, parse_state, question_chain, teacher_for, teacher_response
from mem1lite.trajectory import summarize

EPISODES = {1: 200, 2: 200, 4: 150, 8: 100, 16: 60}  # ~3,000 questions in all, a few seconds


@pytest.fixture(scope="module")
def dev(world):
    return PoolRetrievers(world)["dev"]


def play(world, retriever, tokenizer, n, episodes, agent="mem1", split="dev", seed=0):
    from mem1lite.world import make_tasks

    tasks = make_tasks(world, split, n, episodes, seed=seed)
    envs = [QAEnvironment.from_task(t, retriever) for t in tasks]
    cfg = RolloutConfig(agent=agent, seed=seed, progress=False)
    return run_episodes(TeacherPolicy(tokenizer), tokenizer, envs, cfg, tasks)


@pytest.mark.parametrize("n", sorted(EPISODES))
def test_teacher_mem1_scores_at_least_098_per_objective_on_dev(world, dev, tokenizer, n):
    trajs = play(world, dev, tokenizer, n, EPISODES[n])
    s = summarize(trajs)
    assert s["em_per_objective"] >= 0.98, s
    assert s["format_errors"] == 0
    assert all(len(t.turns) <= max_turns(n) for t in trajs)
    # mem1: the context never holds more than the prompt, one response and one observation
    assert all(len(turn.spans) <= 3 for t in trajs for turn in t.turns)


def test_teacher_writes_valid_index_free_states(world, dev, tokenizer):
    for t in play(world, dev, tokenizer, 4, 10):
        for turn in t.turns:
            text = tokenizer.decode(turn.output_ids)
            parsed = parse_response(text)
            assert parsed.kind in ("search", "answer")
            state = parse_state(parsed.state)
            assert state is not None, parsed.state
            # index-free: the state names the question by its text, never by its number
            assert state.question is None or state.question in t.questions
            assert "Q1" not in parsed.state and "1." not in parsed.state


def test_teacher_also_solves_tasks_under_full_context(world, dev, tokenizer):
    s = summarize(play(world, dev, tokenizer, 4, 20, agent="full"))
    assert s["em_per_objective"] >= 0.98


def _context(questions, assistant: str = "") -> str:
    user = task_prompt(questions)
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{assistant}"


def test_teacher_steps_through_a_two_hop_question_from_text_alone():
    q = ["What is the birthplace of the founder of Gevorn Bank?", "Who is the mayor of Velmora Vale?"]
    first = teacher_response(_context(q))
    assert first == (
        "<think> answers: none. question: What is the birthplace of the founder of Gevorn Bank? "
        "now: the founder of Gevorn Bank.</think><search> Gevorn Bank</search>"
    )
    info = (
        "<information>[HINT]You have 5 turns left.[/HINT] Doc 1(Title: Gevorn Works) The founder of "
        "Gevorn Works is Kel Arrow. Doc 2(Title: Gevorn Bank) The founder of Gevorn Bank is Talis "
        "Morrow.</information>"
    )
    second = teacher_response(_context(q, first + info))
    assert "now: the birthplace of Talis Morrow." in second and second.endswith(
        "<search> Talis Morrow</search>"
    )
    info2 = (
        "<information>Doc 1(Title: Talis Morrow) The birthplace of Talis Morrow is Oskel Ford.</information>"
    )
    third = teacher_response(_context(q, second + info2))
    assert "answers: Oskel Ford. question: Who is the mayor of Velmora Vale?" in third
    # a retrieval miss: the same entity is searched again with the relation word
    miss = teacher_response(_context(q, third + "<information>No results.</information>"))
    assert miss.endswith("<search> Velmora Vale mayor</search>")
    info3 = "<information>Doc 1(Title: Velmora Vale) The mayor of Velmora Vale is Dara Quill.</information>"
    last = teacher_response(_context(q, third + info3))
    assert last.endswith("<answer> Oskel Ford; Dara Quill</answer>")


def test_teacher_reads_only_the_last_state_and_the_observation_after_it():
    q = ["Who is the mayor of Velmora Vale?"]
    stale = (
        "<think> answers: Wrong Name. question: none. now: none.</think><search> x</search>"
        "<information>x</information>"
    )
    fresh = teacher_response(_context(q))
    info = "<information>The mayor of Velmora Vale is Dara Quill.</information>"
    assert teacher_response(_context(q, stale + fresh + info)).endswith("<answer> Dara Quill</answer>")


def test_state_helpers():
    s = State(["A B", "C D"], "Who is the founder of X Y?", "the founder of X Y")
    assert parse_state(s.render()) == s
    assert parse_state(State([], None, None).render()) == State([], None, None)
    assert parse_state("garbage") is None
    assert question_chain("What is the birthplace of the founder of Gevorn Bank?") == (
        ["founder", "birthplace"],
        "Gevorn Bank",
    )
    assert (
        find_fact("The founder of Gevorn Bank is Talis Morrow.", "founder", "Gevorn Bank") == "Talis Morrow"
    )
    assert find_fact("The founder of Gevorn Works is Kel Arrow.", "founder", "Gevorn Bank") is None


def test_numbered_pointer_names_the_question_by_its_number_and_text():
    q = [
        "Who is the mayor of Velmora Vale?",
        "Who is the founder of Kel Works?",
        "Who is the mayor of Oskel Ford?",
    ]
    numbered = teacher_for("number")
    first = numbered(_context(q))
    assert "question: 1. Who is the mayor of Velmora Vale? now:" in first
    info = "<information>Doc 1(Title: Velmora Vale) The mayor of Velmora Vale is Dara Quill.</information>"
    second = numbered(_context(q, first + info))
    assert "answers: Dara Quill. question: 2. Who is the founder of Kel Works? now:" in second
    # the same decisions as the text pointer, only the number added
    text_second = teacher_response(_context(q, teacher_response(_context(q)) + info))
    assert second == text_second.replace("question: Who is the founder", "question: 2. Who is the founder")
    # either teacher reads either form of state
    assert teacher_response(_context(q, first + info)) == text_second
    miss = numbered(_context(q, second + "<information>No results.</information>"))
    assert "question: 2. Who is the founder of Kel Works?" in miss
    assert miss.endswith("<search> Kel Works founder</search>")
    s = parse_state("answers: none. question: 12. Who is the founder of X Y? now: the founder of X Y.")
    assert (s.number, s.question) == (12, "Who is the founder of X Y?")
    assert parse_state(s.render()) == s
    with pytest.raises(ValueError, match="unknown pointer"):
        teacher_for("index")


def test_numbered_teacher_solves_long_tasks_with_numbered_states(world, dev, tokenizer):
    from mem1lite.domains import QADomain
    from mem1lite.world import make_tasks

    domain = QADomain(world=world, pointer="number")
    tasks = make_tasks(world, "dev", 16, 8, seed=0)
    envs = [QAEnvironment.from_task(t, dev) for t in tasks]
    policy = TeacherPolicy(tokenizer, domain.teacher())
    trajs = run_episodes(policy, tokenizer, envs, RolloutConfig(progress=False), tasks)
    assert summarize(trajs)["em_per_objective"] >= 0.98
    for t in trajs:
        for turn in t.turns[:-1]:
            state = parse_state(parse_response(tokenizer.decode(turn.output_ids)).state)
            assert t.questions[state.number - 1] == state.question
    assert domain.fingerprint() != QADomain(world=world).fingerprint()  # caches keyed apart


def test_hop_pointer_marks_which_hop_of_the_chain_now_looks_for():
    q = ["What is the birthplace of the founder of Kel Works?", "Who is the mayor of Oskel Ford?"]
    hop = teacher_for("hop")
    first = hop(_context(q))
    assert (
        "question: 1. What is the birthplace of the founder of Kel Works? "
        "now: the founder of Kel Works (hop 1 of 2)." in first
    )
    info = "<information>Doc 1(Title: Kel Works) The founder of Kel Works is Talis Morrow.</information>"
    second = hop(_context(q, first + info))  # a bridge: the marker moves to hop 2 of 2
    assert "now: the birthplace of Talis Morrow (hop 2 of 2).</think><search> Talis Morrow</search>" in second
    info2 = (
        "<information>Doc 1(Title: Talis Morrow) The birthplace of Talis Morrow is Vel Ford.</information>"
    )
    third = hop(_context(q, second + info2))  # the answer: next question, a one-hop chain
    assert (
        "answers: Vel Ford. question: 2. Who is the mayor of Oskel Ford? "
        "now: the mayor of Oskel Ford (hop 1 of 1)." in third
    )
    miss = hop(_context(q, third + "<information>No results.</information>"))
    assert "(hop 1 of 1).</think><search> Oskel Ford mayor</search>" in miss
    # the same decisions as the numbered pointer, only the marker added; each teacher reads the other's states
    numbered = teacher_for("number")
    assert second.replace(" (hop 2 of 2)", "") == numbered(
        _context(q, first.replace(" (hop 1 of 2)", "") + info)
    )
    assert hop(_context(q, first.replace(" (hop 1 of 2)", "") + info)) == second
    s = parse_state(
        "answers: none. question: 3. Who is the mayor of X Y? now: the mayor of X Y (hop 1 of 1)."
    )
    assert (s.now, s.hop, s.number) == ("the mayor of X Y", (1, 1), 3)
    assert parse_state(s.render()) == s
    final = hop(_context(q[:1], second + info2))
    assert final.endswith("now: none.</think><answer> Vel Ford</answer>")


def test_hop_teacher_solves_long_tasks_with_marked_states(world, dev, tokenizer):
    from mem1lite.domains import QADomain
    from mem1lite.world import make_tasks

    domain = QADomain(world=world, pointer="hop")
    tasks = make_tasks(world, "dev", 16, 8, seed=0)
    envs = [QAEnvironment.from_task(t, dev) for t in tasks]
    trajs = run_episodes(
        TeacherPolicy(tokenizer, domain.teacher()), tokenizer, envs, RolloutConfig(progress=False), tasks
    )
    assert summarize(trajs)["em_per_objective"] >= 0.98
    marked = 0
    for t in trajs:
        for turn in t.turns[:-1]:
            state = parse_state(parse_response(tokenizer.decode(turn.output_ids)).state)
            assert t.questions[state.number - 1] == state.question
            relations, _ = question_chain(state.question)
            assert state.hop is not None and 1 <= state.hop[0] <= state.hop[1] == len(relations)
            marked += state.hop[0] == 2
    assert marked > 0  # two-hop questions reached their second hop
    assert domain.fingerprint() != QADomain(world=world, pointer="number").fingerprint()


def test_find_fact_is_the_regex_it_replaced():
    """find_fact searches strings (#22: a regex compiled per call cost ~15% of playing the teacher);
    it finds what the former pattern found, including where a first match is cut by ';' or is empty."""
    import random
    import re

    def regex(passages, relation, entity):
        m = re.search(rf"The {re.escape(relation)} of {re.escape(entity)} is ([^.;]+)\.", passages)
        return m.group(1).strip() if m else None

    rng = random.Random(0)
    parts = [
        "The founder of Kel Works is ",
        "The founder of Kel Works is.",
        "Talis Morrow",
        ".",
        ";",
        " ",
        "x",
        "The founder of Kel (Works) is ",
        "The author of Kel Works is ",
        "\n",
    ]
    cases = [
        ("".join(rng.choice(parts) for _ in range(rng.randint(0, 8))), "founder", "Kel Works")
        for _ in range(3000)
    ]
    cases += [("The founder of Kel (Works) is A b.", "founder", "Kel (Works)"), ("", "founder", "X")]
    cases += [("The founder of X is ; The founder of X is Y.", "founder", "X")]
    for text, relation, entity in cases:
        assert find_fact(text, relation, entity) == regex(text, relation, entity), text
    assert find_fact("The founder of X is ; The founder of X is Y.", "founder", "X") == "Y"
