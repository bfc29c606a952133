"""The WebShop-lite environment: pages, actions on the MEM1 tags, the turn budget and the reward.

The agent speaks the MEM1 protocol unchanged (protocol.py): `<think>` its internal state, then one
action tag. WebShop's actions are carried in the two action tags, so the same parser, agents,
models and masks serve both domains:

- `search[query]`: `<search> red cotton t-shirt</search>` (or `<search> search[red cotton t-shirt]</search>`)
- `click[item]`: `<search> click[B1234]</search>` opens an item listed on the results page
- `click[option]`: `<search> click[red]</search>` selects an option value on the item page
- `click[< Prev]`: `<search> click[< prev]</search>` goes from an item back to its results page, or
  to the previous results page
- `click[Next >]`: `<search> click[next >]</search>` shows the next results page
- `click[Back to Search]`: `<search> click[back to search]</search>` shows the empty search page
- `click[Buy Now]`: `<answer> buy now</answer>` (or `<search> click[buy now]</search>`) on an item
  page buys the item with the options selected, and ends the episode (with items left to buy, a
  task of N goals goes back to the search page instead, rule 5)

Clicks match the bracketed text on the page, case-insensitively. Observations are text pages in
`<information>[HINT]You have k turns left.[/HINT] page</information>` (protocol.observation).

Rules written down here and tested:

1. The search box is on every page (WebShop shows it on the search page only): a search from an
   item page is one action, not two. Results are bm25s over title, type, category, attributes,
   description and option values (retrieval.Retriever), at most `MAX_RESULTS`, `PAGE_SIZE` a page.
2. Turn budget: `TURN_LIMIT` = 10 = 5 for the shortest purchase (search, open an item, select two
   options, buy) + 4 to look at two more items (open, back) + 1 spare; `TURN_LIMIT` x N for a task
   of N goals (rule 5), shared by its items as the agent spends them.
3. Invalid actions (a click on something not on the page, `buy now` off an item page, an empty
   query) and malformed responses (protocol.parse_response) get an error line followed by the
   current page again, and cost a turn; nothing raises. Out of turns without buying: reward 0.
4. Reward at buy time, WebShop's formula (Yao et al. 2022, `get_reward` of web_agent_site) with
   exact matching in place of its fuzzy text matching:

       reward = r_type * (|A_goal ∩ A_item| + |O_goal ∩ O_selected| + 1[price <= bound])
                       / (|A_goal| + |O_goal| + 1)

   where A are attributes, O option values (matched per option type), and r_type is 1 when the
   bought product has the goal's type, 0.5 when it is of the same category but another type, 0.1
   when it is of another category but its title shares a word with the goal's type (WebShop's weak
   title match), 0 otherwise. `EpisodeResult.em` carries this reward (for webshop, "em" means
   reward, in [0, 1]); `f1` carries the match share without the type factor (the fraction of the
   goal's attribute, option and price clauses met); `per_slot_em` is `(reward,)`. A reward of 1
   is a WebShop "success".
5. Multi-item goals (N >= 2, webshop.make_tasks): the prompt lists `Instruction 1: ...` to
   `Instruction N: ...` and asks for one item per instruction, in order. A purchase with items
   left is recorded and answered with `You bought B1234 (color red, size medium).` and the search
   page; it does not say which instruction is next or how many are left: keeping track is the
   agent's memory's job, as the QA agent's list of answers. The k-th purchase is scored against
   instruction k (rule 4), whatever it was meant for; the episode ends with the N-th purchase or
   the last turn. `em` is the sum of the items' rewards (so `em / N` is the mean reward per item,
   as QA's em counts the objectives answered right), `f1` the sum of their shares, `per_slot_em`
   the rewards per instruction (0 for an item not bought), `answer` the purchases joined by "; ".
   At N = 1 every page, reward and field is what it was before multi-item goals.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .protocol import ANSWER, EpisodeResult, Parsed, StepOutcome, observation, parse_response
from .retrieval import Retriever
from .webshop import Catalogue, Goal, Product

PAGE_SIZE = 5
"""results per page (WebShop shows 10; 5 keeps a page near 100 tokens for the tiny model)"""
MAX_RESULTS = 50
"""results a search returns at most (WebShop's number)"""
TURN_LIMIT = 10
"""[2] turns per episode"""

INSTRUCTION = (
    "You are shopping in a web store. Each turn, first write your notes inside <think> and </think>: "
    "what you want, the items you rejected, and your next step. Only your last notes and the last "
    "page stay visible. Then act: <search> words</search> searches the store, <search> click[x]"
    "</search> clicks a button or an item shown in [brackets], and <answer> buy now</answer> buys "
    "the item on the page with the options you selected."
)


MULTI_ITEM = (
    "Buy one item per instruction, in the order given; after each purchase the search page comes back."
)
"""[5] the sentence a task of N >= 2 goals adds to `INSTRUCTION`"""


def task_prompt(instructions: str | Sequence[str]) -> str:
    """The user message: one instruction (`Instruction: ...`) or N >= 2 numbered ones [5]."""
    if isinstance(instructions, str):
        instructions = (instructions,)
    if len(instructions) == 1:
        return f"{INSTRUCTION}\nInstruction: {instructions[0]}"
    lines = "\n".join(f"Instruction {i}: {q}" for i, q in enumerate(instructions, 1))
    return f"{INSTRUCTION} {MULTI_ITEM}\n{lines}"


def parse_prompt_instruction(text: str) -> str | None:
    """The instruction of a one-goal task prompt (inverse of `task_prompt` at N = 1)."""
    m = re.search(r"\nInstruction: (.+)", text)
    return m.group(1).strip() if m else None


def parse_prompt_instructions(text: str) -> list[str]:
    """The instructions of a task prompt, in order (inverse of `task_prompt`; [] if none)."""
    one = parse_prompt_instruction(text)
    if one is not None:
        return [one]
    return [m.group(1).strip() for m in re.finditer(r"\nInstruction \d+: (.+)", text)]


# ---------------------------------------------------------------------------------------------
# Reward


@dataclass(frozen=True)
class Reward:
    reward: float
    """r_type * share, in [0, 1]"""
    r_type: float
    """1 same type, 0.5 same category, 0.1 a title word shared with the goal type, else 0"""
    attributes: int
    """goal attributes the product has"""
    options: int
    """goal option values selected"""
    price: bool
    """price within the bound"""
    share: float
    """(attributes + options + price) / (goal attributes + goal options + 1)"""


def type_reward(goal: Goal, product: Product) -> float:
    if product.type == goal.type:
        return 1.0
    if product.category == goal.category:
        return 0.5
    if set(goal.type.split()) & set(product.title.lower().split()):
        return 0.1
    return 0.0


def purchase_reward(goal: Goal, product: Product, selected: dict[str, str]) -> Reward:
    """[4] WebShop's reward for buying `product` with the option values `selected` (type -> value)."""
    r_type = type_reward(goal, product)
    attrs = sum(a in product.attributes for a in goal.attributes)
    opts = sum(selected.get(t) == v for t, v in goal.options.items())
    price = product.price <= goal.price_bound
    share = (attrs + opts + int(price)) / (len(goal.attributes) + len(goal.options) + 1)
    return Reward(r_type * share, r_type, attrs, opts, price, share)


# ---------------------------------------------------------------------------------------------
# The shop: search over the catalogue (shared by every environment of a domain)


@dataclass
class _Doc:
    title: str
    text: str
    product: Product


class Shop:
    """bm25s over the whole catalogue, with a small cache (queries repeat a lot in a batch)."""

    def __init__(self, catalogue: Catalogue, cache_size: int = 4096):
        self.catalogue = catalogue
        docs = [
            _Doc(
                p.title,
                " ".join(
                    [
                        p.type,
                        p.category,
                        *p.attributes,
                        p.description,
                        *(v for vs in p.options.values() for v in vs),
                    ]
                ),
                p,
            )
            for p in catalogue.products
        ]
        self.retriever = Retriever(docs)
        self._cache: OrderedDict[str, list[Product]] = OrderedDict()
        self.cache_size = cache_size

    def search(self, query: str) -> list[Product]:
        key = " ".join(query.lower().split())
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        hits = [h.doc.product for h in self.retriever.search(key, k=MAX_RESULTS)]
        self._cache[key] = hits
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return hits


# ---------------------------------------------------------------------------------------------
# Pages


def search_page() -> str:
    return "Search page: nothing to click yet. [Search]"


def results_page(query: str, results: list[Product], page: int) -> str:
    if not results:
        return f'No results for "{query}". [Back to Search]'
    pages = (len(results) + PAGE_SIZE - 1) // PAGE_SIZE
    lines = [f'Results for "{query}", page {page} of {pages}:']
    for p in results[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]:
        lines.append(f"[{p.id}] {p.title} | ${p.price:.2f}")
    buttons = (
        (["[< Prev]"] if page > 1 else []) + (["[Next >]"] if page < pages else []) + ["[Back to Search]"]
    )
    return "\n".join(lines + [" ".join(buttons)])


def item_page(product: Product, selected: dict[str, str]) -> str:
    lines = [
        f"Item [{product.id}] {product.title} | ${product.price:.2f}",
        f"category: {product.category} > {product.type}",
        f"features: {', '.join(product.attributes)}",
        f"description: {product.description}",
    ]
    for otype, values in product.options.items():
        lines.append(f"{otype}: " + " ".join(f"[{v}]" for v in values))
    chosen = ", ".join(f"{t} {v}" for t, v in selected.items()) or "none"
    lines.append(f"selected: {chosen}")
    lines.append("[< Prev] [Back to Search] [Buy Now]")
    return "\n".join(lines)


def format_error_page(reason: str, page: str) -> str:
    return (
        f"Format error: {reason}. Write <think> notes</think> then <search> words</search>, "
        f"<search> click[x]</search> or <answer> buy now</answer>.\n{page}"
    )


def invalid_action_page(reason: str, page: str) -> str:
    return f"Invalid action: {reason}.\n{page}"


def purchase_text(product: Product, selected: dict[str, str]) -> str:
    """`B1234 (color red, size medium)`: a purchase in `answer` and in the page after it [5]."""
    opts = ", ".join(f"{t} {v}" for t, v in selected.items()) or "no options"
    return f"{product.id} ({opts})"


# ---------------------------------------------------------------------------------------------
# Actions


_CLICK = re.compile(r"^click\s*\[(.*)\]$", re.I | re.S)
_SEARCH = re.compile(r"^search\s*\[(.*)\]$", re.I | re.S)
_BUY = ("buy", "buy now", "[buy now]", "click[buy now]")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def parse_action(parsed: Parsed) -> tuple[str, str]:
    """(kind, argument) with kind 'search', 'click', 'buy' or 'invalid' (argument: the reason)."""
    if parsed.kind == ANSWER:
        if _norm(parsed.argument) in _BUY:
            return "buy", ""
        return "invalid", "the only answer is <answer> buy now</answer>"
    text = parsed.argument.strip()
    m = _CLICK.match(text)
    if m:
        target = _norm(m.group(1)).strip("[]").strip()
        return ("click", target) if target else ("invalid", "click[] names nothing")
    m = _SEARCH.match(text)
    if m:
        text = m.group(1).strip()
    return ("search", text) if text else ("invalid", "empty search")


# ---------------------------------------------------------------------------------------------
# The environment


@dataclass
class WebShopEnvironment:
    """N shopping goals, one item to buy for each, in order (WebShop's task: N = 1). `step` takes
    the agent's raw response text and never raises."""

    goals: tuple[Goal, ...]
    """the goals in prompt order (a single `Goal` is taken as a task of one)"""
    shop: Shop
    turn_limit: int | None = None
    """[2] default `TURN_LIMIT` x N"""
    turns: int = 0
    format_errors: int = 0
    invalid_actions: int = 0
    searches: int = 0
    done: bool = False
    page: str = "search"
    """'search', 'results' or 'item'"""
    query: str = ""
    results: list[Product] = field(default_factory=list)
    result_page: int = 1
    item: Product | None = None
    selected: dict[str, str] = field(default_factory=dict)
    purchases: list[tuple[Product, dict[str, str]]] = field(default_factory=list)
    """[5] (product, options selected) of each purchase, in order: the k-th is scored against goal k"""
    started: float = field(default_factory=time.perf_counter)

    env_name = "webshop"

    def __post_init__(self):
        self.goals = (self.goals,) if isinstance(self.goals, Goal) else tuple(self.goals)
        if self.turn_limit is None:
            self.turn_limit = TURN_LIMIT * len(self.goals)

    @property
    def goal(self) -> Goal:
        """The first goal (the only one at N = 1)."""
        return self.goals[0]

    @goal.setter
    def goal(self, goal: Goal) -> None:  # a one-goal task on another goal (the notebook's scripted episode)
        self.goals = (goal,)

    @property
    def bought(self) -> Product | None:
        """The last item bought (None before any purchase)."""
        return self.purchases[-1][0] if self.purchases else None

    @property
    def questions(self) -> tuple[str, ...]:
        return tuple(g.instruction for g in self.goals)

    @property
    def golds(self) -> tuple[str, ...]:
        return tuple(g.summary() for g in self.goals)

    def prompt(self) -> str:
        return task_prompt(self.questions)

    @property
    def turns_left(self) -> int:
        return self.turn_limit - self.turns

    def current_page(self) -> str:
        if self.page == "item" and self.item is not None:
            return item_page(self.item, self.selected)
        if self.page == "results":
            return results_page(self.query, self.results, self.result_page)
        return search_page()

    def step(self, response: str | bytes, hit_length_limit: bool = False) -> StepOutcome:
        if self.done:
            raise RuntimeError("step() called on a finished episode")
        parsed = parse_response(response, hit_length_limit)
        self.turns += 1
        if parsed.kind == "error":
            self.format_errors += 1
            text = format_error_page(parsed.error, self.current_page())
        else:
            kind, arg = parse_action(parsed)
            try:
                text = self._act(kind, arg)
            except Exception as exc:  # belt and braces: an environment bug is an observation
                kind, text = "invalid", invalid_action_page(f"internal error {type(exc).__name__}", "")
            if self.done:  # bought
                return StepOutcome(None, True, parsed)
            if text.startswith("Invalid action:"):
                self.invalid_actions += 1
                parsed = replace(parsed, error=text.split("\n", 1)[0])
        if self.turns >= self.turn_limit:  # [3] out of turns without buying
            self.done = True
            return StepOutcome(None, True, parsed)
        return StepOutcome(observation(text, self.turns_left), False, parsed)

    def _act(self, kind: str, arg: str) -> str:
        if kind == "invalid":
            return invalid_action_page(arg, self.current_page())
        if kind == "search":
            self.searches += 1
            self.page, self.query, self.result_page, self.item = "results", arg, 1, None
            self.results = self.shop.search(arg)
            return self.current_page()
        if kind == "buy":
            if self.page != "item":
                return invalid_action_page("[Buy Now] is on an item page", self.current_page())
            self.purchases.append((self.item, dict(self.selected)))
            if len(self.purchases) == len(self.goals):
                self.done = True
                return ""
            bought = purchase_text(self.item, self.selected)  # [5] items left: back to the search page
            self.page, self.query, self.results, self.result_page = "search", "", [], 1
            self.item, self.selected = None, {}
            return f"You bought {bought}.\n{self.current_page()}"
        return self._click(arg)

    def _click(self, target: str) -> str:
        if target == "back to search":
            self.page, self.item = "search", None
            return self.current_page()
        if self.page == "results":
            shown = self.results[(self.result_page - 1) * PAGE_SIZE : self.result_page * PAGE_SIZE]
            for p in shown:
                if p.id.lower() == target:
                    self.page, self.item, self.selected = "item", p, {}
                    return self.current_page()
            pages = (len(self.results) + PAGE_SIZE - 1) // PAGE_SIZE
            if target in ("next >", "next") and self.result_page < pages:
                self.result_page += 1
                return self.current_page()
            if target in ("< prev", "prev") and self.result_page > 1:
                self.result_page -= 1
                return self.current_page()
        elif self.page == "item" and self.item is not None:
            if target in ("< prev", "prev"):
                self.page, self.item = "results", None
                return self.current_page()
            if target in ("buy now", "buy"):
                return self._act("buy", "")
            for otype, values in self.item.options.items():
                if target in values:
                    self.selected[otype] = target
                    return self.current_page()
        return invalid_action_page(f"there is no [{target}] on this page", self.current_page())

    def rewards(self) -> list[Reward]:
        """[4, 5] The reward of each purchase, the k-th against goal k."""
        return [purchase_reward(g, p, opts) for g, (p, opts) in zip(self.goals, self.purchases)]

    def result(self) -> EpisodeResult:
        rewards = self.rewards()
        per_item = [r.reward for r in rewards] + [0.0] * (len(self.goals) - len(rewards))
        answer = "; ".join(f"bought {purchase_text(p, opts)}" for p, opts in self.purchases) or None
        return EpisodeResult(
            answer=answer,
            em=sum(per_item, 0.0),
            f1=sum((r.share for r in rewards), 0.0),
            per_slot_em=tuple(per_item),
            turns=self.turns,
            format_errors=self.format_errors,
            searches=self.searches,
        )
