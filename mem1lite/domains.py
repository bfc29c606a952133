"""Domains: the task suites an agent can be trained and evaluated on, behind one small interface.

A domain gives tasks, an environment per task, and a scripted teacher. QA (world.py +
protocol.py + teacher.py) is one; WebShop-lite is the other. Rollouts, SFT, PPO and evaluation
only ever talk to this interface, so a new domain needs no change to them.

An environment (protocol.QAEnvironment is the reference) has:
- `prompt() -> str`: the user message of the task;
- `step(response_text, hit_length_limit) -> StepOutcome`: parse the agent's response, act, and
  return the observation text (None once the episode ended); it never raises;
- `done: bool` and `result() -> EpisodeResult` (answer, em = the reward, f1, per-slot em, turns,
  format errors, searches);
- `questions` and `golds`: what the trajectory records keep about the task;
- optionally `env_name`, the domain's name, which the trajectory records keep (default "qa").

A domain may cap its task size with `max_objectives` (WebShop-lite: `webshop.MAX_ITEMS` = 4), and
the sizes its defaults use with `default_max_objectives` (WebShop-lite: 1, what the shipped
checkpoints and cached data were made at); `fit_default` brings the QA-shaped defaults of sft.py /
ppo.py / evaluate.py (N = 1..4, N = 2, N = 1..16) within the latter. A size the user chose goes to
the domain as it is, which refuses one above `max_objectives`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from . import webshop
from .protocol import QAEnvironment
from .retrieval import PoolRetrievers
from .teacher import teacher_for
from .tokenizer import require_name_parts
from .webshop_env import Shop, WebShopEnvironment
from .webshop_teacher import teacher_response as shop_teacher_response
from .world import DEFAULT_WORLD_DIR, SPLITS, load_world, make_tasks


class Domain(Protocol):
    name: str
    splits: tuple[str, ...]
    score_name: str
    """what an episode's `em` means here, for labels ("EM per objective", "reward")"""

    def tasks(self, split: str, objectives: int, count: int, seed: int = 0) -> list: ...

    def environment(self, task): ...

    def teacher(self) -> Callable[[str], str]: ...

    def fingerprint(self) -> str:
        """Changes whenever the data the tasks come from change (keys caches)."""
        ...

    def check_tokenizer(self, tokenizer, policy: str) -> None:
        """Before a trained model (`policy`, its label) plays: raise ValueError (one line) when its
        tokenizer cannot write this domain's text as it was trained to."""
        ...


def fit_objectives(sizes, domain) -> tuple[int, ...]:
    """The task sizes among `sizes` that `domain`'s defaults use (all of them unless it sets
    `default_max_objectives` or `max_objectives`); that largest size when none is left."""
    limit = getattr(domain, "default_max_objectives", getattr(domain, "max_objectives", None))
    if limit is None:
        return tuple(sizes)
    return tuple(n for n in sizes if n <= limit) or (limit,)


def fit_default(sizes, default, domain) -> tuple[int, ...]:
    """The one rule for a command's task sizes: as the user chose them, but when left at the
    QA-shaped `default`, fitted to the domain (`fit_objectives`). "Left at the default" is the very
    default object (`sizes is default`: a config field never overridden), so a user's choice that
    happens to equal it (`--objectives 1,2,3,4` for WebShop's multi-item tasks) is still theirs. A
    size a user chose is never changed: the domain then says what is wrong with it."""
    return fit_objectives(sizes, domain) if sizes is default else tuple(sizes)


class QADomain:
    """Multi-objective multi-hop QA over the generated world."""

    name = "qa"
    score_name = "EM per objective"
    max_objectives = None

    def __init__(self, world=None, data=None, pointer: str = "text"):
        self.pointer = pointer
        self._teacher = teacher_for(pointer)  # checks the name before the world loads
        self.world = world if world is not None else load_world(data)
        self.path = Path(data) if data is not None else DEFAULT_WORLD_DIR if world is None else None
        """the world's folder (None: a world made in memory)"""
        self.retrievers = PoolRetrievers(self.world)
        self.splits = SPLITS

    def tasks(self, split: str, objectives: int, count: int, seed: int = 0) -> list:
        return make_tasks(self.world, split, objectives, count, seed=seed)

    def environment(self, task):
        return QAEnvironment.from_task(task, self.retrievers[task.split])

    def teacher(self) -> Callable[[str], str]:
        return self._teacher

    def fingerprint(self) -> str:
        pointer = "" if self.pointer == "text" else f"-pointer-{self.pointer}"
        return f"qa-seed{self.world.config.seed}-docs{len(self.world.documents)}{pointer}"

    def check_tokenizer(self, tokenizer, policy: str) -> None:
        """Every name part of the world must be one token of `tokenizer` (tokenizer.require_name_parts)."""
        require_name_parts(tokenizer, self.world.parts.all_parts(), policy, self.path)


class WebShopDomain:
    """WebShop-lite (webshop.py, webshop_env.py, webshop_teacher.py) behind the `Domain` interface."""

    name = "webshop"
    splits = webshop.SPLITS
    score_name = "reward"
    max_objectives = webshop.MAX_ITEMS
    """a task is N goals bought in order, N = 1..MAX_ITEMS (webshop.make_tasks refuses others)"""
    default_max_objectives = 1
    """default task sizes stay one goal, as the shipped checkpoints and cached data (sft.py /
    ppo.py / evaluate.py fit their defaults to this); `--objectives` asks for more"""

    def __init__(self, data: str | Path | None = None, catalogue: webshop.Catalogue | None = None):
        self.catalogue = catalogue if catalogue is not None else webshop.load_catalogue(data)
        self.shop = Shop(self.catalogue)

    def tasks(self, split: str, objectives: int = 1, count: int = 1, seed: int = 0) -> list:
        return webshop.make_tasks(self.catalogue, split, objectives, count, seed=seed)

    def environment(self, task):
        return WebShopEnvironment(task.goals, self.shop)

    def teacher(self) -> Callable[[str], str]:
        return shop_teacher_response

    def fingerprint(self) -> str:
        """Changes with the stored files (their sha256), or with the config of an in-memory store."""
        cat = self.catalogue
        digest = cat.digest or hashlib.sha256(json.dumps(asdict(cat.config)).encode()).hexdigest()
        return f"webshop-v{webshop.WEBSHOP_VERSION}-{digest[:16]}"

    def check_tokenizer(self, tokenizer, policy: str) -> None:
        """Nothing to check: a store of any seed is written in the same words (webshop.py's fixed
        vocabulary of brands, types, attributes and options; a test keeps it so), which the shared
        tokenizer was extended on, and ids and prices are cut into single digits whatever the seed."""


DOMAINS = ("qa", "webshop")


def load_domain(name: str = "qa", data=None, pointer: str = "text") -> Domain:
    """The domain called `name`; `data` is its data folder (default: the shipped one); `pointer`:
    how the QA teacher's state points at the current question (teacher.POINTERS)."""
    if name == "qa":
        return QADomain(data=data, pointer=pointer)
    if pointer != "text":
        raise ValueError(f"--pointer {pointer} is a QA teacher option; the {name} teacher has one state form")
    if name == "webshop":
        return WebShopDomain(data)
    raise ValueError(f"unknown environment {name!r}: expected one of {', '.join(DOMAINS)}")
