"""The reading probe: cheap measurements of whether a model copies and extracts names.

Teacher-forced on teacher trajectories of the `dev` pool (entities the model never trained on), it
reads the model's greedy prediction at every name token of the teacher's responses, and splits
them four ways:

- part 1 / part 2: the first and second token of a two-part name (`Talis` / `Morrow`);
- copy / fact: the name already stands in the visible prompt or previous internal state (a copy), or
  it appears only in the retrieved passages (a fact the model must extract: a bridge entity or an
  answer). `fact` accuracy is the one that says the model reads.

`greedy_em` plays whole tasks greedily with the mem1 agent: the end-to-end number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .generate import GenerationConfig, ModelPolicy, TeacherPolicy
from .rollout import RolloutConfig, run_episodes
from .trajectory import Trajectory, summarize
from .world import World

_INFO = re.compile(r"<information>.*?</information>", re.S)


@dataclass
class ProbeSample:
    ids: list[int]
    """context + response"""
    start: int
    """index of the first response token"""
    name_positions: list[tuple[int, int, str]]
    """(position in ids, part 1 or 2, 'copy' or 'fact') of each name token of the response"""


def name_token_ids(tokenizer, world: World) -> set[int]:
    ids = set()
    for part in world.parts.all_parts():
        enc = tokenizer.encode(" " + part, add_special_tokens=False)
        if len(enc) == 1:
            ids.add(enc[0])
    return ids


def probe_samples(trajectories: list[Trajectory], tokenizer, name_ids: set[int]) -> list[ProbeSample]:
    """One sample per turn, with the response's name tokens located and classified."""
    out = []
    for traj in trajectories:
        for j, turn in enumerate(traj.turns):
            context = traj.context_ids(j)
            visible_text = _INFO.sub(" ", tokenizer.decode(context, skip_special_tokens=False))
            ids = context + turn.output_ids
            positions = []
            k = 0
            out_ids = turn.output_ids
            while k < len(out_ids) - 1:
                if out_ids[k] in name_ids and out_ids[k + 1] in name_ids:
                    name = tokenizer.decode(out_ids[k : k + 2]).strip()
                    kind = "copy" if name in visible_text else "fact"
                    positions += [(len(context) + k, 1, kind), (len(context) + k + 1, 2, kind)]
                    k += 2
                else:
                    k += 1
            out.append(ProbeSample(ids, len(context), positions))
    return out


@torch.no_grad()
def teacher_forced_accuracy(model, samples: list[ProbeSample], batch_size: int = 16, pad_id: int = 0) -> dict:
    """Greedy accuracy at name tokens (by part and by copy/fact) and on all response tokens."""
    was_training = model.training
    model.eval()
    hits: dict[str, list[int]] = {}
    resp_hit = resp_n = 0
    nll, nll_n = 0.0, 0
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].ids))
    try:
        for s in range(0, len(order), batch_size):
            batch = [samples[i] for i in order[s : s + batch_size]]
            L = max(len(b.ids) for b in batch)
            ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), L), dtype=torch.long)
            for r, b in enumerate(batch):  # right padding: positions start at 0 for every row
                ids[r, : len(b.ids)] = torch.tensor(b.ids)
                mask[r, : len(b.ids)] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            pred = logits.argmax(-1)
            logp = torch.log_softmax(logits, -1)
            for r, b in enumerate(batch):
                target = torch.tensor(b.ids[b.start :])
                p = pred[r, b.start - 1 : len(b.ids) - 1]
                resp_hit += int((p == target).sum())
                resp_n += len(target)
                nll -= float(logp[r, b.start - 1 : len(b.ids) - 1].gather(-1, target[:, None]).sum())
                nll_n += len(target)
                for pos, part, kind in b.name_positions:
                    ok = int(pred[r, pos - 1] == b.ids[pos])
                    for key in (f"part{part}", f"{kind}_part{part}"):
                        hits.setdefault(key, []).append(ok)
    finally:
        model.train(was_training)
    out = {f"name_acc_{k}": sum(v) / len(v) for k, v in sorted(hits.items())}
    out["response_token_acc"] = resp_hit / max(1, resp_n)
    out["response_nll"] = nll / max(1, nll_n)
    return out


def teacher_trajectories(
    domain, tokenizer, split: str, objectives: int, count: int, seed: int = 0, agent: str = "mem1"
) -> list[Trajectory]:
    """The domain's scripted teacher on `count` tasks of `split` (domains.py)."""
    return play_teacher(domain, tokenizer, domain.tasks(split, objectives, count, seed=seed), agent)


def play_teacher(domain, tokenizer, tasks, agent: str = "mem1", first_episode: int = 0) -> list[Trajectory]:
    """The domain's scripted teacher on `tasks`, numbered from `first_episode` (a slice of a longer
    list plays as it would in the whole list)."""
    envs = [domain.environment(t) for t in tasks]
    policy = TeacherPolicy(tokenizer, domain.teacher())
    config = RolloutConfig(agent=agent, progress=False, first_episode=first_episode)
    return run_episodes(policy, tokenizer, envs, config, tasks)


def greedy_em(
    model,
    tokenizer,
    domain,
    split: str,
    objectives: int,
    count: int,
    seed: int = 0,
    agent: str = "mem1",
    max_new_tokens: int = 192,
    batch_size: int = 64,
) -> dict:
    """Greedy rollouts of `count` tasks; returns `trajectory.summarize` plus the trajectories."""
    tasks = domain.tasks(split, objectives, count, seed=seed)
    envs = [domain.environment(t) for t in tasks]
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size)
    policy = ModelPolicy(model, tokenizer, config)
    trajs = run_episodes(
        policy, tokenizer, envs, RolloutConfig(agent=agent, seed=seed, progress=False), tasks
    )
    return summarize(trajs) | {"trajectories": trajs}


def compare_with_teacher(
    model,
    tokenizer,
    domain,
    objectives: int = 2,
    count: int = 2,
    seed: int = 1,
    split: str = "dev",
    max_new_tokens: int = 192,
) -> list[dict]:
    """For each turn of teacher episodes, what the model writes (greedily) in the teacher's context.

    Returns one row per turn: the task, the turn, the teacher's response and the model's, and
    whether they match exactly. Shows where a model goes wrong before errors compound.
    """
    trajs = teacher_trajectories(domain, tokenizer, split, objectives, count, seed=seed)
    contexts = [(t, j) for t in trajs for j in range(len(t.turns))]
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=64)
    policy = ModelPolicy(model, tokenizer, config)
    responses = policy.respond([t.context_ids(j) for t, j in contexts], [torch.Generator() for _ in contexts])
    rows = []
    for (t, j), r in zip(contexts, responses):
        teacher = tokenizer.decode(t.turns[j].output_ids, skip_special_tokens=False)
        mine = tokenizer.decode(r.ids, skip_special_tokens=False)
        rows.append(
            {"task": t.task_id, "turn": j, "teacher": teacher, "model": mine, "match": teacher == mine}
        )
    return rows
