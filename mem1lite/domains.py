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

A domain may cap its task size with `max_objectives` (WebShop-lite: 1); `fit_objectives` brings the
QA-shaped defaults of sft.py / ppo.py (N = 1..4, N = 2) within it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


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


def fit_objectives(sizes, domain) -> tuple[int, ...]:
    """The task sizes among `sizes` that `domain` has (all of them unless it sets `max_objectives`);
    its largest size when none is left."""
    limit = getattr(domain, "max_objectives", None)
    if limit is None:
        return tuple(sizes)
    return tuple(n for n in sizes if n <= limit) or (limit,)


class QADomain:
    """Multi-objective multi-hop QA over the generated world."""

    name = "qa"
    score_name = "EM per objective"
    max_objectives = None

    def __init__(self, world=None, world_dir=None, pointer: str = "text"):
        from .retrieval import PoolRetrievers
        from .teacher import teacher_for
        from .world import SPLITS, load_world

        self.pointer = pointer
        self._teacher = teacher_for(pointer)  # checks the name before the world loads
        self.world = world if world is not None else load_world(world_dir)
        self.retrievers = PoolRetrievers(self.world)
        self.splits = SPLITS

    def tasks(self, split: str, objectives: int, count: int, seed: int = 0) -> list:
        from .world import make_tasks

        return make_tasks(self.world, split, objectives, count, seed=seed)

    def environment(self, task):
        from .protocol import QAEnvironment

        return QAEnvironment.from_task(task, self.retrievers[task.split])

    def teacher(self) -> Callable[[str], str]:
        return self._teacher

    def fingerprint(self) -> str:
        pointer = "" if self.pointer == "text" else f"-pointer-{self.pointer}"
        return f"qa-seed{self.world.config.seed}-docs{len(self.world.documents)}{pointer}"


DOMAINS = ("qa", "webshop")


def load_domain(name: str = "qa", path=None, pointer: str = "text") -> Domain:
    """The domain called `name`; `path` is its data folder (default: the shipped one); `pointer`:
    how the QA teacher's state points at the current question (teacher.POINTERS)."""
    if name == "qa":
        return QADomain(world_dir=path, pointer=pointer)
    if pointer != "text":
        raise ValueError(f"--pointer {pointer} is a QA teacher option; the {name} teacher has one state form")
    if name == "webshop":
        try:
            from .webshop import WebShopDomain
        except ImportError as exc:  # until the module exists
            raise ValueError("the webshop domain is not available in this version") from exc
        return WebShopDomain(path)
    raise ValueError(f"unknown environment {name!r}: expected one of {', '.join(DOMAINS)}")
