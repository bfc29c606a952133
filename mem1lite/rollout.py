"""Agents (memory policies) and the rollout loop: play a batch of episodes to the end.

An episode is a list of *pieces* (trajectory.py): the prompt, then response 0, observation 0,
response 1, ... An agent decides which of them the model sees at turn j:

- `mem1`: the prompt, the previous response (its internal state and action) and the previous
  observation. Everything older is gone: memory stays constant however long the task.
- `full`: the prompt and every piece so far (ReAct-style).
- `truncate`: the prompt and the last `K` tokens of the history (the oldest piece may be cut).

`run_episodes` plays every environment with one engine (generate.py), batched across episodes, and
records each turn as a `trajectory.Turn`; it checks that the context ids it rebuilds from the spans
are exactly what it fed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .codec import codec
from .terms import AGENTS
from .trajectory import PROMPT, Trajectory, Turn, token_kinds

# ---------------------------------------------------------------------------------------------
# Agents


class Agent:
    name = "agent"

    def spans(self, traj: Trajectory) -> list[list[int]]:
        """Visible spans for the next turn of `traj`."""
        raise NotImplementedError


class Mem1Agent(Agent):
    """Prompt + last response + last observation."""

    name = "mem1"

    def spans(self, traj):
        out = [[PROMPT, 0, len(traj.prompt_ids)]]
        if traj.turns:
            j = len(traj.turns) - 1
            out += [
                [2 * j, 0, len(traj.turns[j].output_ids)],
                [2 * j + 1, 0, len(traj.turns[j].observation_ids)],
            ]
        return out


class FullAgent(Agent):
    """Prompt + the whole history."""

    name = "full"

    def spans(self, traj):
        out = [[PROMPT, 0, len(traj.prompt_ids)]]
        for j, t in enumerate(traj.turns):
            out += [[2 * j, 0, len(t.output_ids)], [2 * j + 1, 0, len(t.observation_ids)]]
        return out


class TruncateAgent(Agent):
    """Prompt + the last `keep_tokens` tokens of the history."""

    name = "truncate"

    def __init__(self, keep_tokens: int = 512):
        if keep_tokens < 1:
            raise ValueError(f"keep_tokens must be >= 1, got {keep_tokens}")
        self.keep_tokens = keep_tokens

    def spans(self, traj):
        history = FullAgent().spans(traj)[1:]
        kept, budget = [], self.keep_tokens
        for p, a, b in reversed(history):
            if budget <= 0:
                break
            take = min(b - a, budget)
            kept.append([p, b - take, b])
            budget -= take
        return [[PROMPT, 0, len(traj.prompt_ids)]] + kept[::-1]


def make_agent(name: str, truncate_tokens: int = 512) -> Agent:
    if name == "mem1":
        return Mem1Agent()
    if name == "full":
        return FullAgent()
    if name == "truncate":
        return TruncateAgent(truncate_tokens)
    raise ValueError(f"unknown agent {name!r}: expected one of {', '.join(AGENTS)}")


# ---------------------------------------------------------------------------------------------
# Rollouts


@dataclass
class RolloutConfig:
    """One batch of episodes."""

    agent: str = "mem1"
    """memory policy: mem1, full or truncate"""
    truncate_tokens: int = 512
    """history kept by the truncate agent (the prompt is always kept)"""
    seed: int = 0
    """sampling seed: episode i samples from its own generator seeded (seed, i)"""
    progress: bool = True
    """show a tqdm bar"""
    first_episode: int = 0
    """episode i of this call is recorded and seeded as episode first_episode + i: a shard of a larger
    batch (one process's share under `accelerate launch`) samples exactly what it would in the whole"""


def episode_generator(seed: int, episode: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + episode) % (2**63 - 1))
    return g


PROMPT_BAR_EPISODES = 2000
"""from this many episodes on, the prompts' encoding shows its own progress bar"""


def run_episodes(
    policy,
    tokenizer,
    envs: Sequence,
    config: RolloutConfig | None = None,
    tasks: Sequence | None = None,
    on_turn: Callable[[int], None] | None = None,
) -> list[Trajectory]:
    """Play every environment to the end with `policy` under `config.agent`; batched across episodes.

    `envs` implement `prompt()`, `step(text, hit_limit)`, `done` and `result()` (protocol.QAEnvironment).
    """

    cfg = config or RolloutConfig()
    agent = make_agent(cfg.agent, cfg.truncate_tokens)
    gen = getattr(policy, "config", None)
    trajs = []
    # thousands of long prompts take minutes to encode: a bar says so (no silent start)
    quiet = not cfg.progress or len(envs) < PROMPT_BAR_EPISODES
    for i, env in enumerate(tqdm(envs, desc="encoding prompts", disable=quiet, leave=False)):
        prompt_text = tokenizer.apply_chat_template(
            [{"role": "user", "content": env.prompt()}], tokenize=False, add_generation_prompt=True
        )
        task = tasks[i] if tasks is not None else None
        trajs.append(
            Trajectory(
                task_id=getattr(task, "id", f"episode-{cfg.first_episode + i}"),
                split=getattr(task, "split", ""),
                questions=list(getattr(env, "questions", [])),
                golds=[list(g) if isinstance(g, tuple) else g for g in getattr(env, "golds", [])],
                agent=agent.name,
                policy=getattr(policy, "name", "model"),
                prompt_ids=tokenizer.encode(prompt_text, add_special_tokens=False),
                env=getattr(env, "env_name", "qa"),
                seed=cfg.seed,
                temperature=getattr(gen, "temperature", 0.0) if gen else 0.0,
                top_p=getattr(gen, "top_p", 1.0) if gen else 1.0,
                episode=cfg.first_episode + i,
            )
        )
    generators = [episode_generator(cfg.seed, cfg.first_episode + i) for i in range(len(envs))]
    bar = tqdm(total=len(envs), desc=f"rollout {agent.name}", disable=not cfg.progress, leave=False)
    active = [i for i, e in enumerate(envs) if not e.done]
    reuse_prompt = getattr(policy, "accepts_prefix_lengths", False)
    if reuse_prompt:
        policy.clear_prefix_cache()  # keys/values from before are stale if the weights changed since
    try:
        while active:
            active = _play_turn(policy, tokenizer, envs, trajs, agent, generators, active, reuse_prompt, bar)
            if on_turn:
                on_turn(len(active))
    finally:
        if reuse_prompt:
            policy.clear_prefix_cache()  # the weights may change before the next rollout
        bar.close()
    return trajs


def _play_turn(policy, tokenizer, envs, trajs, agent, generators, active, reuse_prompt, bar) -> list[int]:
    """One turn of every active episode; returns the episodes still running."""
    spans = [agent.spans(trajs[i]) for i in active]
    contexts = [trajs[i].ids_of(sp) for i, sp in zip(active, spans)]
    t0 = time.perf_counter()
    if reuse_prompt:
        prefix = [
            len(trajs[i].prompt_ids) if sp[0] == [PROMPT, 0, len(trajs[i].prompt_ids)] else 0
            for i, sp in zip(active, spans)
        ]
        responses = policy.respond(contexts, [generators[i] for i in active], prefix_lengths=prefix)
    else:
        responses = policy.respond(contexts, [generators[i] for i in active])
    per_episode = (time.perf_counter() - t0) / len(active)
    encode, decode = codec(tokenizer)
    still = []
    for i, sp, context, resp in zip(active, spans, contexts, responses):
        t1 = time.perf_counter()
        env, traj = envs[i], trajs[i]
        outcome = env.step(decode(resp.ids), resp.hit_limit)
        obs_ids = encode(outcome.observation) if outcome.observation else []
        parsed = outcome.parsed
        traj.turns.append(
            Turn(
                spans=sp,
                output_ids=list(resp.ids),
                logprobs=list(resp.logprobs),
                output_kinds=token_kinds(tokenizer, resp.ids, parsed.kind == "error"),
                observation_ids=obs_ids,
                action=parsed.kind,
                argument=parsed.argument,
                error=parsed.error,
                hit_limit=resp.hit_limit,
                seconds=per_episode + time.perf_counter() - t1,
            )
        )
        # Token-in/token-out: the ids rebuilt from the recorded spans are the ids the policy was fed.
        if traj.context_ids(len(traj.turns) - 1) != context:
            raise RuntimeError(f"episode {i}: context rebuilt from spans differs from the one fed")
        if env.done:
            r = env.result()
            traj.answer, traj.em, traj.f1, traj.per_slot_em = r.answer, r.em, r.f1, list(r.per_slot_em)
            traj.format_errors = r.format_errors
            traj.seconds = sum(x.seconds for x in traj.turns)
            bar.update(1)
        else:
            still.append(i)
    return still
