"""The MEM1 protocol: the parser never raises, malformed output costs a turn, the turn budget.

The fuzz test generates more than a thousand malformed responses of every kind the protocol names
(no tag, two actions, unclosed or nested tags, empty query, overlong, invalid UTF-8 or control
bytes, random bytes, mutations of valid responses) and checks that each one becomes a
format-error observation that costs a turn, while valid responses parse.
"""

import random

import pytest

from mem1lite.protocol import (
    MAX_RESPONSE_CHARS,
    QAEnvironment,
    format_error_observation,
    max_turns,
    observation,
    parse_prompt_questions,
    parse_response,
    task_prompt,
)

WORDS = ["Gevorn", "Bank", "Talis", "Morrow", "Velmora", "Vale", "founder", "of", "the", "birthplace", "1."]
TAGS = [
    "<think>",
    "</think>",
    "<search>",
    "</search>",
    "<answer>",
    "</answer>",
    "<information>",
    "</information>",
]


def _text(rng: random.Random, lo: int = 1, hi: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def valid_responses(rng: random.Random, count: int) -> list[tuple[str, str, str]]:
    """(response, kind, argument) with random white space around the tags and end markers."""
    out = []
    for _ in range(count):
        kind = rng.choice(["search", "answer"])
        state, arg = _text(rng, 0, 12), _text(rng)
        if kind == "answer":
            arg = "; ".join(_text(rng, 1, 3) for _ in range(rng.randint(1, 4)))
        ws = [rng.choice(["", " ", "\n", "  \n"]) for _ in range(5)]
        end = rng.choice(["", "<|im_end|>", "<|endoftext|>"])
        text = f"{ws[0]}<think>{ws[1]}{state}</think>{ws[2]}<{kind}>{ws[3]}{arg}{ws[4]}</{kind}>{end}"
        out.append((text, kind, arg.strip()))
    return out


def _mutations(rng: random.Random, text: str) -> list[str]:
    """Structure-breaking edits of a valid response (each one is malformed by construction)."""
    tags = [t for t in TAGS if t in text]
    action_end = max(text.rfind("</search>"), text.rfind("</answer>")) + 1  # inside the last closing tag
    victim = rng.choice(tags)
    i = text.index(victim)
    other = rng.choice([t for t in TAGS if t != victim])
    return [
        text.replace(victim, "", 1),  # a tag removed
        text[: i + 1] + text[i + 2 :],  # a tag misspelt
        text.replace(victim, other, 1),  # a tag swapped for another
        text[:i] + victim + text[i:],  # a tag doubled
        text + " trailing words",  # text after the action
        "preamble " + text,  # text before the state
        text + text,  # two whole responses
        text[: rng.randint(1, action_end)],  # cut short (an unclosed tag, or no action)
        text.replace("</think>", "</think>\x07", 1),  # a control character
        text.replace("<think>", "<think>" + rng.choice(["\x00", "\x1b[31m", "\ufffd", "\x7f"]), 1),
    ]


def malformed_responses(rng: random.Random) -> list[str | bytes]:
    out: list[str | bytes] = []
    for _ in range(60):
        s, q = _text(rng), _text(rng)
        out += [
            # no tag at all, or a state without an action
            _text(rng, 1, 20),
            "",
            "   \n ",
            f"<think>{s}</think>",
            f"<search>{q}</search>",  # an action without the state
            # two actions
            f"<think>{s}</think><search>{q}</search><search>{q}</search>",
            f"<think>{s}</think><search>{q}</search><answer>{q}</answer>",
            f"<think>{s}</think><answer>{q}</answer><think>{s}</think>",
            # unclosed and nested tags
            f"<think>{s}</think><search>{q}",
            f"<think>{s}<search>{q}</search>",
            f"<think>{s}</think><search>{q}</answer>",
            f"<think><search>{q}</search></think>",
            f"<think>{s}</think><answer>{q}<think>{s}</think></answer>",
            f"</think>{s}<think><search>{q}</search>",
            # the agent writing the environment's tag
            f"<think>{s}</think><information>{q}</information><search>{q}</search>",
            # empty query or answer
            f"<think>{s}</think><search></search>",
            f"<think>{s}</think><search>  \n </search>",
            f"<think>{s}</think><answer> </answer>",
            # actions in the wrong order
            f"<search>{q}</search><think>{s}</think>",
            # overlong
            f"<think>{'x' * (MAX_RESPONSE_CHARS + rng.randint(1, 500))}</think><search>{q}</search>",
            # invalid UTF-8, control bytes, random bytes
            f"<think>{s}</think><search>{q}</search>".encode() + b"\xff",
            b"<think>\xc3\x28</think><search>a</search>",
            f"<think>{s}\x00</think><search>{q}</search>".encode(),
            rng.randbytes(rng.randint(1, 300)),
            bytes(rng.randint(0, 31) for _ in range(rng.randint(1, 40))),
        ]
    for text, _, _ in valid_responses(rng, 80):
        out += _mutations(rng, text)
    return out


class BrokenRetriever:
    def search(self, query, k=3):
        raise RuntimeError("index on fire")


class EchoRetriever:
    """Returns one fake passage naming the query, so observations are predictable."""

    def search(self, query, k=3):
        from mem1lite.retrieval import Hit
        from mem1lite.world import Document

        return [Hit(Document(id=0, title=query, text=f"About {query}.", entity=0, pool="dev"), 1.0)]


def _env(n: int = 2, retriever=None, **kw) -> QAEnvironment:
    questions = tuple(f"Who is the founder of Org {i}?" for i in range(n))
    golds = tuple(f"Person {i}" for i in range(n))
    return QAEnvironment(questions=questions, golds=golds, retriever=retriever or EchoRetriever(), **kw)


# ---------------------------------------------------------------------------------------------


def test_parser_fuzz_malformed_outputs_become_format_errors_that_cost_a_turn():
    rng = random.Random(0)
    cases = malformed_responses(rng)
    assert len(cases) >= 1000
    reasons = set()
    for case in cases:
        parsed = parse_response(case)  # must not raise
        assert parsed.kind == "error", f"accepted malformed response {case!r}"
        assert parsed.error and "\n" not in parsed.error
        reasons.add(parsed.error.split(" (")[0])
        env = _env(n=4)  # 10 turns: a format error never ends the episode here
        outcome = env.step(case)
        assert not outcome.done and env.turns == 1 and env.format_errors == 1 and env.searches == 0
        assert outcome.observation.startswith(
            "<information>[HINT]You have 9 turns left.[/HINT] Format error: "
        )
        assert outcome.observation.endswith("</information>")
    # every family of malformation is seen, each with its own reason
    for reason in [
        "no <search> or <answer>",
        "more than one action",
        "unclosed <search>",
        "empty <search>",
        "response too long",
        "invalid UTF-8",
        "invalid characters",
        "text outside the tags",
        "missing <think> before the action",
    ]:
        assert reason in reasons, reason
    assert any("nested inside" in r for r in reasons)


def test_valid_responses_parse():
    rng = random.Random(1)
    for text, kind, arg in valid_responses(rng, 500):
        for form in (text, text.encode()):
            parsed = parse_response(form)
            assert (parsed.kind, parsed.argument, parsed.error) == (kind, arg, ""), text
    parsed = parse_response("<think> answers: none.</think><search> Gevorn Bank</search>")
    assert parsed.state == "answers: none." and parsed.argument == "Gevorn Bank"


def test_hitting_the_token_limit_is_a_format_error_even_when_the_text_looks_valid():
    text = "<think> a</think><search> b</search>"
    assert parse_response(text).kind == "search"
    assert parse_response(text, hit_length_limit=True).error == "response too long"


def test_parser_never_raises_on_non_text():
    for thing in (None, 3, ["<think>"], object()):
        assert parse_response(thing).kind == "error"


def test_max_turns_rule():
    assert [max_turns(n) for n in (1, 2, 4, 8, 16)] == [4, 6, 10, 18, 34]
    assert max_turns(2) == 6  # the paper's default budget at N = 2
    for n in (1, 3, 16):
        env = _env(n)
        assert env.turn_limit == max_turns(n) == 2 * n + 2
        assert env.turns_left == env.turn_limit
    assert _env(2, turn_limit=3).turn_limit == 3


def test_observation_has_hint_and_passages():
    env = _env(2)
    out = env.step("<think> s</think><search> Gevorn Bank</search>")
    assert not out.done and env.searches == 1
    assert out.observation == observation("Doc 1(Title: Gevorn Bank) About Gevorn Bank.", 5)
    assert out.observation.startswith("<information>[HINT]You have 5 turns left.[/HINT] Doc 1(Title: ")
    assert "Format error" in format_error_observation("x", 1)


def test_running_out_of_turns_gives_reward_zero():
    env = _env(2)
    for turn in range(1, 7):
        out = env.step("<think> s</think><search> Org 0</search>")
        assert out.done == (turn == 6)
    assert out.observation is None and env.turns == 6
    r = env.result()
    assert r.answer is None and r.em == 0 and r.f1 == 0 and r.turns == 6 and r.searches == 5
    with pytest.raises(RuntimeError):
        env.step("<think> s</think><answer> Person 0; Person 1</answer>")


def test_only_format_errors_run_out_with_reward_zero():
    env = _env(1)
    for _ in range(max_turns(1)):
        env.step(b"\xff garbage")
    r = env.result()
    assert env.done and r.em == 0 and r.format_errors == 4 and r.turns == 4


def test_an_answer_on_the_last_turn_counts():
    env = _env(2)
    for _ in range(5):
        env.step("<think> s</think><search> Org 0</search>")
    out = env.step("<think> s</think><answer> Person 0; nobody</answer>")
    assert out.done
    r = env.result()
    assert r.answer == "Person 0; nobody" and r.em == 1.0 and r.per_slot_em == (1.0, 0.0)


def test_retriever_failure_becomes_an_observation():
    env = _env(2, retriever=BrokenRetriever())
    out = env.step("<think> s</think><search> Gevorn Bank</search>")
    assert not out.done and "Search failed (RuntimeError)." in out.observation
    assert env.turns == 1 and env.format_errors == 0


def test_task_prompt_round_trip():
    questions = ["Who is the founder of Gevorn Bank?", "What is the birthplace of Talis Morrow?"]
    text = task_prompt(questions)
    assert "1. Who is the founder of Gevorn Bank?\n2. What" in text
    assert parse_prompt_questions(text) == questions
