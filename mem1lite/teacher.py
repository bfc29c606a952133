"""The scripted teacher: a policy that plays the MEM1 protocol perfectly by reading its context.

It sees exactly what a model would see (the context text of the turn) and nothing else: no gold
answers, no world lookup. That makes it a true mem1 policy (it needs only the prompt, its last
internal state and the last observation) and makes every response it writes a function of the
visible context, which is what SFT needs to learn.

The internal state is index-free, so that one learned behaviour serves any number of questions:

    answers: Velmora Vale; Talis Morrow. question: Who is the founder of Kel Works?
    now: the founder of Kel Works.

1. `answers`: the answers found so far, in question order.
2. `question`: the text of the question being worked on, copied from the prompt. When it is
   answered, the next question is the one that follows it in the prompt, whatever its number: a
   model can find it by matching this text, so nothing depends on N.
3. `now`: the one-hop fact looked for, "the R of X". The passage that answers it contains the very
   words "The R of X is V.", so reading is matching the phrase and copying the two tokens after it.
   For a two-hop question "the R2 of the R1 of E", `now` is first "the R1 of E", then
   "the R2 of B" once the bridge entity B is read.
4. The action searches X (the entity of `now`); once every question is answered, the answer repeats
   the answers list. If the fact is not in the passages (a retrieval miss), the search is repeated
   with the relation word added.
5. With `numbered=True` the question keeps its number from the prompt (`question: 6. Who is ...?`).
   The next question is then "the line numbered one more", which a model can find by matching two
   tokens (the number and the dot after a line break) instead of a whole question's text: a
   cheaper pointer to follow in a long prompt. Both forms are read whichever the teacher writes.
6. With `hops=True` (pointer "hop": the number as in [5], and more) `now` also says which hop of
   the question's chain it is: `now: the founder of Kel Works (hop 1 of 2).` The turn that reads
   the fact must decide "bridge or answer?"; without the marker that means matching the relation
   of `now` against the question's chain, with it the decision is read off two digits (1 of 2:
   a bridge, search again; 2 of 2 or 1 of 1: the answer). The pointer made the question
   explicit; this makes the hop explicit, for the "hop confusion" the failure anatomy found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache, partial

from .protocol import parse_prompt_questions
from .world import RELATIONS

_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_INFO = re.compile(r"<information>(.*?)</information>", re.S)
_STATE = re.compile(r"^answers: (?P<answers>.*?)\. question: (?P<question>.*?) now: (?P<now>.*?)\.$", re.S)
_NOW = re.compile(r"^the (?P<relation>\w+) of (?P<entity>.+)$")
_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S)


_NUMBERED = re.compile(r"^(?P<number>\d+)\. (?P<question>.+)$", re.S)
_HOP = re.compile(r"^(?P<now>.+) \(hop (?P<hop>\d+) of (?P<hops>\d+)\)$", re.S)
POINTERS = ("text", "number", "hop")
"""how the state points at the current question: its text; its number and text [5]; its number and
text and `now`'s hop in the question's chain [6]"""


@dataclass
class State:
    answers: list[str]
    question: str | None
    now: str | None
    number: int | None = None
    """the question's number in the prompt (1-based), written before its text when set"""
    hop: tuple[int, int] | None = None
    """(which hop `now` is, how many the question has), written after `now` when set [6]"""

    def render(self) -> str:
        answers = "; ".join(self.answers) if self.answers else "none"
        question = self.question or "none."
        if self.question and self.number is not None:
            question = f"{self.number}. {question}"
        now = self.now or "none"
        if self.now and self.hop is not None:
            now = f"{now} (hop {self.hop[0]} of {self.hop[1]})"
        return f"answers: {answers}. question: {question} now: {now}."


def parse_state(text: str) -> State | None:
    m = _STATE.match(text.strip())
    if not m:
        return None
    answers = [] if m["answers"] == "none" else [a.strip() for a in m["answers"].split(";")]
    question = None if m["question"] == "none." else m["question"]
    now = None if m["now"] == "none" else m["now"]
    number = None
    numbered = _NUMBERED.match(question or "")
    if numbered:
        number, question = int(numbered["number"]), numbered["question"]
    hop = None
    marked = _HOP.match(now or "")
    if marked:
        now, hop = marked["now"], (int(marked["hop"]), int(marked["hops"]))
    return State(answers, question, now, number, hop)


def split_context(context: str) -> tuple[str, str]:
    """A turn's context text -> (the user prompt, what follows it: the states and observations kept)."""
    user = _USER.search(context)
    return (user.group(1), context[user.end() :]) if user else (context, context)


def held_state(context: str) -> State | None:
    """The last state visible in a context (what the teacher reads); None at the first turn."""
    thinks = list(_THINK.finditer(split_context(context)[1]))
    return parse_state(thinks[-1].group(1)) if thinks else None


def teacher_for(pointer: str = "text"):
    """The teacher whose states point at the current question by `pointer` (POINTERS)."""
    if pointer not in POINTERS:
        raise ValueError(f"unknown pointer {pointer!r}: expected one of {', '.join(POINTERS)}")
    return partial(teacher_response, numbered=pointer in ("number", "hop"), hops=pointer == "hop")


def question_chain(question: str) -> tuple[list[str], str]:
    """'What is the birthplace of the founder of X?' -> (['founder', 'birthplace'], 'X'): inner first."""
    phrase = re.sub(r"^(Who|What) is ", "", question.strip()).rstrip("?")
    outer_to_inner = []
    while True:
        m = re.match(r"^the (\w+) of (.+)$", phrase)
        if not m or m.group(1) not in RELATIONS:
            break
        outer_to_inner.append(m.group(1))
        phrase = m.group(2)
    return outer_to_inner[::-1], phrase


def find_fact(passages: str, relation: str, entity: str) -> str | None:
    """The value V of the first "The R of X is V." in the passages (V without '.' or ';'), or None.
    String search, not a regex built per call: every (relation, entity) is new, so a compiled
    pattern was never reused and compiling it was ~15% of playing the teacher (#22)."""
    phrase = f"The {relation} of {entity} is "
    at = passages.find(phrase)
    while at >= 0:
        start = at + len(phrase)
        stop = start
        while stop < len(passages) and passages[stop] not in ".;":
            stop += 1
        if stop > start and passages[stop : stop + 1] == ".":
            return passages[start:stop].strip()
        at = passages.find(phrase, at + 1)
    return None


def _first_hop(question: str) -> tuple[str, str]:
    relations, entity = question_chain(question)
    return f"the {relations[0]} of {entity}", entity


def teacher_response(context: str, numbered: bool = False, hops: bool = False) -> str:
    """The teacher's next response for a turn's context text (prompt + whatever the agent kept).
    [5] `numbered`: the state carries the current question's number from the prompt; [6] `hops`:
    `now` carries its hop in the question's chain."""

    def say(state: State, action: str, argument: str) -> str:
        state.hop = _hop_of(state) if hops else None
        return f"<think> {state.render()}</think><{action}> {argument}</{action}>"

    prompt, assistant = split_context(context)
    questions = _questions(prompt)
    if not questions:
        return "<think> answers: none. question: none. now: none.</think><answer> none</answer>"
    thinks = list(_THINK.finditer(assistant))
    state = parse_state(thinks[-1].group(1)) if thinks else None
    if state is None or state.question not in questions:
        # First turn (or a state the teacher cannot read): start from the first question.
        state = State([], questions[0], None, 1 if numbered else None)
        state.now, query = _first_hop(questions[0])
        return say(state, "search", query)

    state.number = questions.index(state.question) + 1 if numbered else None
    infos = list(_INFO.finditer(assistant, thinks[-1].end()))
    passages = infos[-1].group(1) if infos else ""
    now = _NOW.match(state.now or "")
    if not now:
        state.now, query = _first_hop(state.question)
        return say(state, "search", query)
    relation, entity = now["relation"], now["entity"]
    value = find_fact(passages, relation, entity)
    if value is None:  # [4] retrieval miss: search again, with the relation word
        return say(state, "search", f"{entity} {relation}")
    hop, length = _hop_of(state)  # 1-based: which hop `now` is, of how many
    if hop < length:  # [3] a bridge entity: look for the outer relation next
        state.now = f"the {question_chain(state.question)[0][hop]} of {value}"
        return say(state, "search", value)
    state.answers.append(value)
    index = questions.index(state.question)
    if index + 1 < len(questions):  # [2] next question: the one after this one in the prompt
        state.question = questions[index + 1]
        state.number = index + 2 if numbered else None
        state.now, query = _first_hop(state.question)
        return say(state, "search", query)
    state.question, state.now = None, None
    return say(state, "answer", "; ".join(state.answers))


@lru_cache(maxsize=64)
def _questions(prompt: str) -> tuple[str, ...]:
    """The prompt's questions, parsed once per prompt: every turn of an episode shows the same one."""
    return tuple(parse_prompt_questions(prompt))


def _hop_of(state: State) -> tuple[int, int] | None:
    """[6] (which hop of its question's chain `now` looks for, how many hops the chain has)."""
    now = _NOW.match(state.now or "")
    if not state.question or not now:
        return None
    relations, start = question_chain(state.question)
    return (1 if now["entity"] == start else 2), len(relations)
