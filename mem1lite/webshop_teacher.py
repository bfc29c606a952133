"""The scripted WebShop-lite shopper: reads only its context text, shops well but not perfectly.

Like the QA teacher (teacher.py) it sees exactly what a model would see: the prompt (the
instruction), its last internal state and the last page. It never looks at the catalogue or the
goal record, so it is a true mem1 policy and every response is a function of the visible context.

The internal state holds what is wanted, what was ruled out, and the step taken (and, in a task
of N >= 2 goals, which item it is on):

    want: t-shirt; cotton, slim fit; red, medium; under 30. rejected: B1234. now: open B5678.
    item 2 of 3. want: mug; ceramic; blue, large; under 20. rejected: none. now: search.

1. `want`: the product type, the wanted attributes, the wanted option values and the price bound,
   read from the instruction on the first turn (the words of the store's vocabulary that occur in
   it) and copied forward.
2. `rejected`: items opened and found wanting. A mem1 agent no longer sees the earlier pages, so
   this list is what stops it from opening the same item twice.
3. `now`: what this turn's action does: `search`, `open B5678`, `next page`, `back to results`,
   `select red`, `buy B5678`.

The policy, with the shortcuts that keep it from being perfect:

4. Search once, with a short query: the first wanted attribute, the type, and the wanted colour,
   scent or flavour (the other attributes and the sizes are left to the item pages).
5. On a results page, open the first listed item not yet rejected whose title names the type and
   whose price is within the bound, preferring titles that name more wanted attributes (only the
   title is read: attributes missing from it are checked on the item page). With no such item, go
   to the next page, but look at two pages at most; then open the first item not rejected.
6. On an item page, check the type, the features, the price and that every wanted option is on
   offer. If all hold, select the wanted options one per turn, then buy. If not, reject it and go
   back, unless two items were rejected already or the turns left would not cover another try
   (back, open, options, buy): then it buys this item anyway, with the wanted options it offers.

Multi-item tasks (N >= 2 goals, webshop_env.py [5]):

7. The state starts with `item k of N. ` (N = 1: no prefix, the state above). The pages never say
   which instruction is next, so this pointer is the only place the teacher keeps it: `want` is
   read from instruction k of the prompt.
8. After a purchase page (`You bought ...`) it moves on: `item k+1`, `want` read from instruction
   k+1 [1], nothing rejected yet, and a search [4].
9. The turns the later items need are reserved: [6] counts the turns left minus `RESERVE` per item
   after this one, so an item that goes badly settles early instead of starving the next ones.
   Turns an item leaves unused go to the next ones.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from .webshop import ALL_ATTRIBUTES, ALL_TYPES, CATEGORIES, SPLITS, Goal, option_phrase, satisfies
from .webshop_env import (
    PAGE_SIZE,
    Shop,
    WebShopEnvironment,
    item_page,
    parse_prompt_instructions,
    task_prompt,
)

MAX_REJECTED = 2
"""items rejected before the teacher settles for the one it is looking at [6]"""
MAX_PAGES = 2
"""results pages the teacher reads per search [5]"""
RESERVE = 5
"""turns kept for each item after the current one [9]: a shortest purchase (search, open, two
options, buy; webshop_env.py [2]). On 200 test tasks at N = 2, 3, 4, reserves 0 to 8 play the same
episodes (the teacher seldom needs more than its share); a whole item's budget, 10, settles a few
items early (reward per item 95.02 against 95.18 at N = 2, even at N = 4); 12 starves the last
items (89.5 against 95.7 at N = 4)."""

_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S)
_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_INFO = re.compile(r"<information>(.*?)</information>", re.S)
_HINT = re.compile(r"\[HINT\]You have (\d+) turns left\.\[/HINT\]")
_BOUGHT = "You bought "
"""how the page after a purchase with items left begins (webshop_env.py [5])"""
_STATE = re.compile(
    r"^(?:item (?P<item>\d+) of (?P<items>\d+)\. )?"
    r"want: (?P<type>[^;]*); (?P<attrs>[^;]*); (?P<opts>[^;]*); under (?P<bound>[\d.]+)\. "
    r"rejected: (?P<rejected>[^.]*)\. now: (?P<now>.*)\.$",
    re.S,
)
_RESULT = re.compile(r"^\[(B\d+)\] (.*) \| \$([\d.]+)$")
_PAGES = re.compile(r"page (\d+) of (\d+):")
_ITEM = re.compile(r"^Item \[(B\d+)\] (.*) \| \$([\d.]+)$")
_BOUND = re.compile(r"(?:lower than|under|less than) \$?(\d+(?:\.\d+)?)")
_OPTION_VALUES = {
    otype: sorted(
        {v for c in CATEGORIES for t, vs in c.options if t == otype for v in vs}, key=len, reverse=True
    )
    for otype in ("color", "size", "scent", "flavor", "pack")
}


@dataclass
class Want:
    type: str
    attributes: list[str]
    options: list[str]
    """wanted option values, in the order the instruction names them"""
    bound: float

    def render(self) -> str:
        attrs, opts = ", ".join(self.attributes) or "any", ", ".join(self.options) or "any"
        return f"{self.type}; {attrs}; {opts}; under {self.bound:g}"


@dataclass
class State:
    want: Want
    rejected: list[str] = field(default_factory=list)
    now: str = "search"
    item: int = 1
    """[7] the instruction being shopped for, 1-based"""
    items: int = 1
    """[7] instructions in the task (1: the state has no pointer)"""

    def render(self) -> str:
        pointer = f"item {self.item} of {self.items}. " if self.items > 1 else ""
        rejected = ", ".join(self.rejected) or "none"
        return f"{pointer}want: {self.want.render()}. rejected: {rejected}. now: {self.now}."


def _contains(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text) is not None


def parse_instruction(instruction: str) -> Want:
    """[1] The store's words that occur in an instruction: type, attributes, options, price bound."""
    text = instruction.lower()
    types = [t for t in sorted(ALL_TYPES, key=len, reverse=True) if _contains(text, t)]
    ptype = types[0] if types else ""
    attributes = [a for a in ALL_ATTRIBUTES if _contains(text, a)]
    attributes.sort(key=text.index)
    found: list[tuple[int, str]] = []
    for otype, values in _OPTION_VALUES.items():
        for v in values:
            phrase = option_phrase(otype, v)
            if _contains(text, phrase):
                found.append((text.index(phrase), v))
                break
    m = _BOUND.search(text)
    return Want(ptype, attributes, [v for _, v in sorted(found)], float(m.group(1)) if m else 1e9)


def parse_state(text: str) -> State | None:
    m = _STATE.match(text.strip())
    if not m:
        return None
    split = lambda s: [] if s in ("any", "none") else [x.strip() for x in s.split(",")]  # noqa: E731
    want = Want(m["type"], split(m["attrs"]), split(m["opts"]), float(m["bound"]))
    item, items = (int(m["item"]), int(m["items"])) if m["item"] else (1, 1)
    return State(want, split(m["rejected"]), m["now"], item, items)


def search_query(want: Want) -> str:
    """[4] A short query: the first wanted attribute, the type, and the wanted option values that
    are not sizes or pack counts (colour, scent, flavour)."""
    words = [*want.attributes[:1], want.type]
    words += [v for v in want.options if v not in _OPTION_VALUES["size"] and v not in _OPTION_VALUES["pack"]]
    return " ".join(w for w in words if w)


@dataclass
class ItemView:
    id: str
    title: str
    price: float
    type: str
    features: list[str]
    options: dict[str, list[str]]
    selected: dict[str, str]


def parse_item(page: str) -> ItemView | None:
    lines = page.split("\n")
    head = next((_ITEM.match(line) for line in lines if _ITEM.match(line)), None)
    if head is None:
        return None
    ptype, features, options, selected = "", [], {}, {}
    for line in lines:
        key, _, value = line.partition(": ")
        if key == "category":
            ptype = value.split(" > ")[-1]
        elif key == "features":
            features = [f.strip() for f in value.split(",")]
        elif key == "selected" and value != "none":
            for part in value.split(", "):
                t, _, v = part.partition(" ")
                selected[t] = v
        elif key in _OPTION_VALUES:
            options[key] = re.findall(r"\[([^\]]+)\]", value)
    return ItemView(head[1], head[2], float(head[3]), ptype, features, options, selected)


def parse_results(page: str) -> tuple[list[tuple[str, str, float]], int, int]:
    items = [(m[1], m[2], float(m[3])) for m in map(_RESULT.match, page.split("\n")) if m]
    m = _PAGES.search(page)
    return items, (int(m[1]) if m else 1), (int(m[2]) if m else 1)


def _respond(state: State, action: str) -> str:
    return f"<think> {state.render()}</think>{action}"


def teacher_response(context: str) -> str:
    """The teacher's next response for a turn's context text (prompt + whatever the agent kept)."""
    user = _USER.search(context)
    instructions = parse_prompt_instructions(user.group(1) if user else context)
    assistant = context[user.end() :] if user else context
    thinks = list(_THINK.finditer(assistant))
    state = parse_state(thinks[-1].group(1)) if thinks else None
    if state is None:  # first turn (or a state it cannot read): [1] read the instruction, [4] search
        return _start(instructions, 1)
    infos = list(_INFO.finditer(assistant, thinks[-1].end()))
    page = infos[-1].group(1) if infos else ""
    hint = _HINT.search(page)
    turns_left = int(hint.group(1)) if hint else 1
    page = _HINT.sub("", page).strip()
    if page.startswith(_BOUGHT) and state.item < state.items:  # [8] bought: on to the next instruction
        return _start(instructions, state.item + 1)
    turns_left -= RESERVE * (state.items - state.item)  # [9]
    item = parse_item(page)
    if item is not None:
        return _on_item(state, item, turns_left)
    items, page_no, pages = parse_results(page)
    if items:
        return _on_results(state, items, page_no, pages)
    # A search page, an empty result list or an unreadable page: search again, more broadly.
    state.now = "search"
    query = search_query(state.want) if "No results" not in page else state.want.type or "shop"
    return _respond(state, f"<search> {query}</search>")


def _start(instructions: list[str], item: int) -> str:
    """[1, 4, 7] Read instruction `item` (1-based) of the prompt and search for it."""
    instruction = instructions[item - 1] if item <= len(instructions) else ""
    state = State(parse_instruction(instruction), item=item, items=max(1, len(instructions)))
    return _respond(state, f"<search> {search_query(state.want)}</search>")


def _on_results(state: State, items, page_no: int, pages: int) -> str:
    want = state.want
    fresh = [it for it in items if it[0] not in state.rejected]
    good = [it for it in fresh if _contains(it[1].lower(), want.type) and it[2] <= want.bound]
    if good:  # [5] the title naming the most wanted attributes, first listed on ties
        named = [sum(_contains(it[1].lower(), a) for a in want.attributes) for it in good]
        pick = good[named.index(max(named))]
    elif page_no < min(pages, MAX_PAGES):
        state.now = "next page"
        return _respond(state, "<search> click[next >]</search>")
    else:
        pick = (fresh or items)[0]
    state.now = f"open {pick[0]}"
    return _respond(state, f"<search> click[{pick[0]}]</search>")


def _on_item(state: State, item: ItemView, turns_left: int) -> str:
    want = state.want
    offered = {v for vs in item.options.values() for v in vs}
    fits = (
        item.type == want.type
        and all(a in item.features for a in want.attributes)
        and all(v in offered for v in want.options)
        and item.price <= want.bound
    )
    another_try = 3 + len(want.options)  # back, open, one turn per option, buy
    settle = len(state.rejected) >= MAX_REJECTED or turns_left < another_try + 1
    if not fits and not settle and item.id not in state.rejected:  # [6] reject and go back
        state.rejected.append(item.id)
        state.now = "back to results"
        return _respond(state, "<search> click[< prev]</search>")
    chosen = set(item.selected.values())
    for v in want.options if turns_left > 1 else ():  # the last turn buys, selected or not
        if v in offered and v not in chosen:
            state.now = f"select {v}"
            return _respond(state, f"<search> click[{v}]</search>")
    state.now = f"buy {item.id}"
    return _respond(state, "<answer> buy now</answer>")


def play_text(goals, shop, turn_limit: int | None = None) -> list[tuple[str, str | None]]:
    """A teacher episode in plain text, without a tokenizer: [(response, observation or None)].

    `goals`: one `Goal` or the N goals of a task; the turn limit defaults to `TURN_LIMIT` x N. Each
    turn the teacher reads the mem1 view (prompt + last response + last observation), as in
    `rollout.run_episodes` with the mem1 agent."""
    env = WebShopEnvironment(goals, shop, turn_limit=turn_limit or None)
    head = f"<|im_start|>user\n{env.prompt()}<|im_end|>\n<|im_start|>assistant\n"
    turns: list[tuple[str, str | None]] = []
    while not env.done:
        last = "".join(f"{r}{o or ''}" for r, o in turns[-1:])
        response = teacher_response(head + last)
        turns.append((response, env.step(response).observation))
    return turns


def corpus_texts(catalogue, goals_per_split: int | None = 500):
    """The text webshop episodes are made of, for the tokenizer: every item page, and the prompts,
    responses and pages of teacher episodes on the goals (all splits, as the QA tokenizer reads
    questions of every pool)."""
    shop = Shop(catalogue)
    for p in catalogue.products:
        yield item_page(p, {})
    for split in SPLITS:
        for goal in catalogue.goals[split][:goals_per_split]:
            yield task_prompt(goal.instruction)
            for response, obs in play_text(goal, shop):
                yield response + (obs or "")


def search_recall(shop: Shop, goals: list[Goal]) -> dict[str, float]:
    """How often the teacher's query finds the goal's target / any product that satisfies the goal
    on the first results page (`@page`) and among all results (`@50`), and the query time."""
    hits = {"target@page": 0, "target@50": 0, "satisfying@page": 0, "satisfying@50": 0}
    t0 = time.perf_counter()
    for goal in goals:
        found = shop.search(search_query(parse_instruction(goal.instruction)))
        ids = [p.id for p in found]
        hits["target@page"] += goal.target in ids[:PAGE_SIZE]
        hits["target@50"] += goal.target in ids
        hits["satisfying@page"] += any(satisfies(p, goal) for p in found[:PAGE_SIZE])
        hits["satisfying@50"] += any(satisfies(p, goal) for p in found)
    out = {k: v / max(1, len(goals)) for k, v in hits.items()}
    out["query_ms"] = 1000 * (time.perf_counter() - t0) / max(1, len(goals))
    return out
