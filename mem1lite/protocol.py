"""The MEM1 protocol: tags, task prompt, observations, the response parser and the QA environment.

A turn of the agent is one response, `<think>IS</think>` (the internal state) followed by exactly
one action, `<search> query</search>` or `<answer> a1; a2; ...</answer>`. The environment answers a
search with `<information>[HINT]You have k turns left.[/HINT] Doc 1(Title: t) text ...</information>`
(top-3 passages) and ends the episode on an answer.

Rules written down here and tested:

1. Turn budget: `max_turns(N) = 2 N + 2`. A question needs at most two searches, the answer needs
   one turn, and one turn is spare (6 turns at N = 2, the paper's default).
2. The parser never raises. No tag, two actions, an unclosed or nested tag, an empty query or
   answer, text outside the tags, an overlong response, invalid UTF-8 or control bytes: each gives a
   format-error observation that costs a turn.
3. Running out of turns ends the episode with the answers given so far: none, so reward 0.
4. The reward is exact match summed over objectives (0..N), per-slot (metrics.score_answers).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from .metrics import score_answers
from .retrieval import Retriever, format_passages

THINK, SEARCH, INFORMATION, ANSWER = "think", "search", "information", "answer"
TAG_TOKENS = [f"<{t}>" for t in (THINK, SEARCH, INFORMATION, ANSWER)] + [
    f"</{t}>" for t in (THINK, SEARCH, INFORMATION, ANSWER)
]
STOP_STRINGS = ("</search>", "</answer>")
MAX_RESPONSE_CHARS = 2000
TOP_K = 3

INSTRUCTION = (
    "Answer every question below by searching a knowledge base. "
    "Each turn, first write your notes inside <think> and </think>: the answers found so far, "
    "the question you are working on, and the fact you are looking for now. Only your last notes "
    "and the last search results stay visible, so keep in your notes everything you will need. "
    "Then either search for a name with <search> name</search>, or, once every question is "
    "answered, give all answers in the order of the questions as <answer> answer1; answer2</answer>."
)


def max_turns(objectives: int) -> int:
    """[1] Turn budget: two searches per question, one answer turn, one spare."""
    return 2 * objectives + 2


def task_prompt(questions: list[str] | tuple[str, ...]) -> str:
    """The user message of a task: the instruction and the numbered questions."""
    lines = [INSTRUCTION, "Questions:"] + [f"{i}. {q}" for i, q in enumerate(questions, 1)]
    return "\n".join(lines)


def parse_prompt_questions(text: str) -> list[str]:
    """The numbered questions of a task prompt (inverse of `task_prompt`)."""
    _, _, tail = text.partition("Questions:\n")
    out = []
    for line in tail.split("\n"):
        m = re.match(r"^(\d+)\. (.+)$", line.strip())
        if m:
            out.append(m.group(2).strip())
    return out


def observation(passages: str, turns_left: int) -> str:
    return f"<information>[HINT]You have {turns_left} turns left.[/HINT] {passages}</information>"


def format_error_observation(reason: str, turns_left: int) -> str:
    return (
        f"<information>[HINT]You have {turns_left} turns left.[/HINT] Format error: {reason}. Write "
        f"<think> notes</think> then <search> name</search> or <answer> answer1; answer2</answer>."
        "</information>"
    )


# ---------------------------------------------------------------------------------------------
# The parser


@dataclass(frozen=True)
class Parsed:
    kind: str
    """'search', 'answer' or 'error'"""
    argument: str = ""
    """the query or the answer string (stripped)"""
    state: str = ""
    """the internal state, the text inside <think>...</think>"""
    error: str = ""
    """why the response is malformed ('' when it is not)"""


_TAG = re.compile(r"</?(think|search|information|answer)>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")
_END_MARKERS = ("<|im_end|>", "<|endoftext|>")


def parse_response(response: str | bytes, hit_length_limit: bool = False) -> Parsed:
    """[2] Parse one response. Never raises: any malformation becomes kind='error' with a reason."""
    try:
        if isinstance(response, bytes):
            try:
                response = response.decode("utf-8")
            except UnicodeDecodeError:
                return Parsed("error", error="invalid UTF-8")
        if not isinstance(response, str):
            return Parsed("error", error="not text")
        for marker in _END_MARKERS:
            response = response.replace(marker, "")
        if hit_length_limit or len(response) > MAX_RESPONSE_CHARS:
            return Parsed("error", error="response too long")
        if _CONTROL.search(response):
            return Parsed("error", error="invalid characters")
        return _parse_tags(response)
    except Exception as exc:  # belt and braces: the parser must never take an episode down
        return Parsed("error", error=f"unparseable response ({type(exc).__name__})")


def _parse_tags(text: str) -> Parsed:
    tags = [(m.group(0), m.start(), m.end()) for m in _TAG.finditer(text)]
    # Walk the tags with a stack to find nesting and unclosed tags.
    stack: list[str] = []
    spans: list[tuple[str, int, int]] = []  # (name, content start, content end) of top-level tags
    open_at = 0
    for tag, start, end in tags:
        name = tag.strip("</>")
        if not tag.startswith("</"):
            if stack:
                return Parsed("error", error=f"<{name}> nested inside <{stack[-1]}>")
            stack.append(name)
            open_at = end
        else:
            if not stack:
                return Parsed("error", error=f"</{name}> without <{name}>")
            if stack[-1] != name:
                return Parsed("error", error=f"<{stack[-1]}> closed by </{name}>")
            stack.pop()
            spans.append((name, open_at, start))
    if stack:
        return Parsed("error", error=f"unclosed <{stack[-1]}>")
    names = [s[0] for s in spans]
    if "information" in names:
        return Parsed("error", error="<information> is written by the environment, not the agent")
    actions = [s for s in spans if s[0] in (SEARCH, ANSWER)]
    if not actions:
        return Parsed("error", error="no <search> or <answer>")
    if len(actions) > 1:
        return Parsed("error", error="more than one action")
    if names.count(THINK) != 1 or names[0] != THINK:
        return Parsed("error", error="missing <think> before the action")
    if names[-1] not in (SEARCH, ANSWER) or len(names) != 2:
        return Parsed("error", error="the action must come last, right after </think>")
    # Text between tags: only white space allowed outside the two tag pairs.
    between = [text[: tags[0][1]], text[tags[1][2] : tags[2][1]], text[tags[3][2] :]]
    if any(chunk.strip() for chunk in between):
        return Parsed("error", error="text outside the tags")
    state = text[spans[0][1] : spans[0][2]].strip()
    kind, a_start, a_end = actions[0]
    argument = text[a_start:a_end].strip()
    if not argument:
        return Parsed("error", error=f"empty <{kind}>")
    return Parsed(kind, argument=argument, state=state)


# ---------------------------------------------------------------------------------------------
# The environment


@dataclass
class StepOutcome:
    observation: str | None
    """text to append to the context, or None when the episode ended"""
    done: bool
    parsed: Parsed


@dataclass
class EpisodeResult:
    answer: str | None
    em: float
    f1: float
    per_slot_em: tuple[float, ...]
    turns: int
    format_errors: int
    searches: int


@dataclass
class QAEnvironment:
    """One N-objective QA task. `step` takes the agent's raw response text and never raises."""

    questions: tuple[str, ...]
    golds: tuple
    retriever: Retriever
    top_k: int = TOP_K
    turn_limit: int | None = None
    turns: int = 0
    format_errors: int = 0
    searches: int = 0
    answer: str | None = None
    done: bool = False
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        if self.turn_limit is None:
            self.turn_limit = max_turns(len(self.questions))

    @classmethod
    def from_task(cls, task, retriever: Retriever, **kw) -> QAEnvironment:
        return cls(questions=tuple(task.questions), golds=tuple(task.answers), retriever=retriever, **kw)

    def prompt(self) -> str:
        return task_prompt(self.questions)

    @property
    def turns_left(self) -> int:
        return self.turn_limit - self.turns

    def step(self, response: str | bytes, hit_length_limit: bool = False) -> StepOutcome:
        if self.done:
            raise RuntimeError("step() called on a finished episode")
        parsed = parse_response(response, hit_length_limit)
        self.turns += 1
        if parsed.kind == ANSWER:
            self.answer, self.done = parsed.argument, True
            return StepOutcome(None, True, parsed)
        if self.turns >= self.turn_limit:  # [3] out of turns: no answer given
            self.done = True
            if parsed.kind == "error":
                self.format_errors += 1
            return StepOutcome(None, True, parsed)
        if parsed.kind == "error":
            self.format_errors += 1
            return StepOutcome(format_error_observation(parsed.error, self.turns_left), False, parsed)
        self.searches += 1
        try:
            passages = format_passages(self.retriever.search(parsed.argument, k=self.top_k))
        except Exception as exc:  # a retriever failure is an observation, never a crash
            passages = f"Search failed ({type(exc).__name__})."
        return StepOutcome(observation(passages, self.turns_left), False, parsed)

    def result(self) -> EpisodeResult:
        s = score_answers(self.answer, self.golds)  # [4]
        return EpisodeResult(
            answer=self.answer,
            em=s.em,
            f1=s.f1,
            per_slot_em=s.per_slot_em,
            turns=self.turns,
            format_errors=self.format_errors,
            searches=self.searches,
        )
