"""Evaluation over 1..16 objectives: policies x agents x N, the paper's numbers beside ours.

    mem1 eval --policy teacher,sft,ppo --agents mem1,full,truncate --objectives 1,2,4,8,16 \\
        --episodes 32 --json runs/eval.json --markdown runs/eval.md --figures runs/eval
    mem1 eval --policy runs/ppo --objectives 2,16 --episodes 8          # any checkpoint directory

Per (policy, agent, N) one flat record (`RECORD_FIELDS`), measured like this:

1. The same tasks everywhere: for each N, task i is `make_tasks(world, split, N, episodes, seed)[i]`,
   drawn once and played by every policy under every agent.
2. Greedy decoding unless a temperature is given: the numbers belong to the policy, not to a draw.
   Each episode still samples from its own seeded generator, so sampled runs repeat too.
3. Batched: the episodes of one (policy, agent, N) are generated together (rollout.run_episodes).
4. The paper's Table 1 columns (metrics.py defines each once): EM and F1 summed over objectives
   (0..N) and per objective (/N: the number that compares across N), peak tokens (largest context
   fed in any turn, prompt included), dependency, turns and seconds per task, format errors.
5. Emergent behaviour, read from the internal states (`state_behaviour`): how many questions a
   state tracks (answers listed + the current question), and how often the agent moves on to
   another question before finishing the current one (the question changes, no answer added).
6. The records are what every report is made of (report.py: tables, targets, the paper beside
   ours, figures, markdown and HTML); `load_records` joins saved runs so a report can be rebuilt
   without playing an episode again. `mem1 demo` (demo.py) runs the sweeps and writes the report.
7. Before any episode, each trained policy's tokenizer is checked against the domain: the tiny
   model writes a QA name part as one token, so on a world of another seed, whose parts its
   tokenizer cuts in pieces, it would score 0 with no word why (`check_tokenizers`: EvalError, one
   line, with the commands that train a tokenizer and a model on that world).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from .domains import fit_default, load_domain
from .files import write_text
from .generate import GenerationConfig, load_engine
from .model import DATA_DIR, TINY_DIR, ModelLoadError, load_tokenizer, read_json_file
from .rollout import RolloutConfig, run_episodes
from .teacher import parse_state
from .terms import AGENTS
from .threads import use_threads
from .trajectory import summarize, write_jsonl
from .world import SPLITS

CHECKPOINT_DIR = DATA_DIR / "checkpoints"
SHIPPED = {
    "sft": ("sft-mem1", "mem1 sft --preset standard --out data/checkpoints/sft-mem1"),
    "ppo": (
        "ppo-mem1",
        "mem1 ppo --preset standard --init data/checkpoints/sft-mem1 --out data/checkpoints/ppo-mem1",
    ),
    "sft-full": ("sft-full", "mem1 sft --preset standard --agent full --out data/checkpoints/sft-full"),
    "ppo-full": (
        "ppo-full",
        "mem1 ppo --preset standard --agent full --init data/checkpoints/sft-full "
        "--out data/checkpoints/ppo-full",
    ),
    "sft-n2": ("sft-mem1-n2", "mem1 sft --preset standard --objectives 2 --out data/checkpoints/sft-mem1-n2"),
    "sft-n8": (
        "sft-mem1-n8",
        "mem1 sft --preset standard --objectives 1,2,3,4,5,6,7,8 --out data/checkpoints/sft-mem1-n8",
    ),
    "sft-n16": (
        "sft-mem1-n16",
        "mem1 sft --preset long --init data/checkpoints/sft-mem1-n8 --pointer number "
        "--out data/checkpoints/sft-mem1-n16",
    ),
    "ppo-n16": (
        "ppo-mem1-n16",
        "mem1 ppo --preset standard --init data/checkpoints/sft-mem1-n16 --objectives 2,4,8,16 "
        "--advantage group --group 4 --episodes-per-step 32 --minutes 20 --out data/checkpoints/ppo-mem1-n16",
    ),
    "sft-text-n16": (
        "sft-mem1-text-n16",
        "mem1 sft --preset long --init data/checkpoints/sft-mem1-n8 --out data/checkpoints/sft-mem1-text-n16",
    ),
    "ppo-n16-n2": (
        "ppo-mem1-n16-n2",
        "mem1 ppo --preset standard --init data/checkpoints/sft-mem1-n16 --minutes 30 "
        "--out data/checkpoints/ppo-mem1-n16-n2",
    ),
    "ppo-n16-mix": (
        "ppo-mem1-n16-mix",
        "mem1 ppo --preset standard --init data/checkpoints/sft-mem1-n16 --objectives 2,4,8 --minutes 45 "
        "--out data/checkpoints/ppo-mem1-n16-mix",
    ),
    "sft-n16-more": (
        "sft-mem1-n16-more",
        "mem1 sft --preset long --init data/checkpoints/sft-mem1-n16 --pointer number --seed 1 "
        "--out data/checkpoints/sft-mem1-n16-more",
    ),
    "sft-n16-hop": (
        "sft-mem1-n16-hop",
        "mem1 sft --preset long --init data/checkpoints/sft-mem1-n16 --pointer hop --seed 1 "
        "--out data/checkpoints/sft-mem1-n16-hop",
    ),
    "sft-n16-hop2": (
        "sft-mem1-n16-hop2",
        "mem1 sft --preset long --init data/checkpoints/sft-mem1-n16-hop --pointer hop --seed 2 "
        "--out data/checkpoints/sft-mem1-n16-hop2",
    ),
    "ppo-n16-hop-mix": (
        "ppo-mem1-n16-hop-mix",
        "mem1 ppo --preset standard --init data/checkpoints/sft-mem1-n16-hop --objectives 2,4,8 --minutes 40 "
        "--out data/checkpoints/ppo-mem1-n16-hop-mix",
    ),
    "ppo-n16-hop2-mix": (
        "ppo-mem1-n16-hop2-mix",
        "mem1 ppo --preset standard --init data/checkpoints/sft-mem1-n16-hop2 --objectives 2,4,8 "
        "--minutes 15 --out data/checkpoints/ppo-mem1-n16-hop2-mix",
    ),
    "sft-n16-recipe": (
        "sft-mem1-n16-recipe",
        "mem1 sft --preset n16 --out data/checkpoints/sft-mem1-n16-recipe",
    ),
    "sft-full-n16": (
        "sft-full-n16",
        "mem1 sft --preset long --init data/checkpoints/sft-full --agent full --tasks 800 "
        "--out data/checkpoints/sft-full-n16",
    ),
}
"""policy names that stand for shipped checkpoints: name -> (folder under data/checkpoints, command)"""

RECORD_FIELDS = (
    "agent",
    "policy",
    "objectives",
    "episodes",
    "em",
    "f1",
    "peak_tokens",
    "dependency",
    "turns",
    "seconds",
    "em_per_objective",
    "f1_per_objective",
    "format_errors",
    "state_questions",
    "state_coverage",
    "early_switches",
)
"""fields every record has (the CLI contract's ten first); records hold more (`_record`)"""


class EvalError(ValueError):
    """Bad input to an evaluation (one line); the CLI prints it and exits non-zero."""


@dataclass
class EvalConfig:
    """One sweep: every policy under every agent at every N, on the same tasks."""

    policies: tuple[str, ...] = ("teacher",)
    """teacher, tiny (untrained), paced (`PacedTeacher`), a shipped name (`SHIPPED`) or a checkpoint dir"""
    agents: tuple[str, ...] = AGENTS
    """memory policies: mem1, full, truncate"""
    objectives: tuple[int, ...] = (1, 2, 4, 8, 16)
    """task sizes N"""
    episodes: int = 32
    """tasks per N (the same tasks for every policy and agent)"""
    split: str = "test"
    """pool the tasks come from"""
    seed: int = 0
    """draws the tasks and seeds each episode's sampling generator"""
    temperature: float = 0.0
    """0: greedy decoding"""
    top_p: float = 1.0
    """nucleus sampling threshold (with a temperature)"""
    max_new_tokens: int = 192
    """longest response (longer ones are format errors)"""
    batch_size: int = 64
    """episodes generated together"""
    truncate_tokens: int = 512
    """history kept by the truncate agent (the prompt is always kept)"""
    threads: int | None = None
    """torch CPU threads (None: the thread policy, threads.py)"""
    data: str | None = None
    """the domain's data folder: the world (default data/qa), for webshop the catalogue (data/webshop)"""
    env: str = "qa"
    """the domain, qa or webshop (domains.py); the default N values are fitted to its task sizes"""
    trajectories: str | None = None
    """write each (policy, agent, N)'s trajectories as jsonl under this folder"""
    keep_trajectories: bool = False
    """keep them in memory too (`EvalRun.trajectories`), e.g. for a notebook"""
    progress: bool = True
    """tqdm bars"""
    roles: dict[str, str] = field(default_factory=dict)
    """policy label -> the part it plays in the records' comparisons (report.pick_roles), where its
    name would say otherwise (`policy_role`); e.g. the demo's N <= 4 model is a `contrast`"""


@dataclass
class EvalRun:
    records: list[dict]
    seconds: float
    """wall time of the whole sweep (loading included)"""
    trajectories: dict = field(default_factory=dict)
    """(policy, agent, N) -> list of trajectory.Trajectory, when `keep_trajectories`"""


# ---------------------------------------------------------------------------------------------
# Input


def shipped_checkpoint(name: str) -> Path:
    """Where the shipped checkpoint of policy `name` (a key of SHIPPED) lives."""
    return CHECKPOINT_DIR / SHIPPED[name][0]


def resolve_policy(name: str) -> str:
    """A policy name -> 'teacher', 'tiny' or an existing checkpoint directory (EvalError if missing)."""
    if name in ("teacher", "tiny", "paced"):
        return name
    if name in SHIPPED:
        folder, command = SHIPPED[name]
        path = CHECKPOINT_DIR / folder
        if not path.is_dir():
            where = shown_path(path)
            raise EvalError(f"no checkpoint at {where} for policy {name!r}: train it with `{command}`")
        return str(path)
    if Path(name).is_dir():
        return name
    raise EvalError(
        f"unknown policy {name!r}: expected teacher, tiny, paced, {', '.join(SHIPPED)} "
        "or a checkpoint directory"
    )


def repo_path(path: str) -> str:
    """A checkpoint path as records keep it: relative to the repository when inside it, so that a
    committed record names no machine's folders ('teacher' and other names pass unchanged)."""
    if not Path(path).is_absolute():
        return path
    try:
        return str(Path(path).resolve().relative_to(DATA_DIR.parent.resolve()))
    except ValueError:
        return path


def shown_path(path: Path) -> str:
    """A path as a user would type it: relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def policy_role(label: str) -> str:
    """What a policy is, from its name: teacher, untrained, rl, sft (+ '-full' or a data-size
    suffix such as '-n2' / '-n8', so that a study run never stands in for the main model), or model."""
    if label in ("teacher", "tiny", "paced"):
        return {"teacher": "teacher", "tiny": "untrained", "paced": "paced"}[label]
    base = Path(label.rstrip("/")).name.lower()
    kind = "rl" if base.startswith("ppo") else "sft" if base.startswith("sft") else "model"
    size = re.search(r"-(n\d+)$", base)
    if kind != "model" and "full" in base:
        kind += "-full"
    elif kind != "model" and size:
        kind += f"-{size.group(1)}"
    return kind


def validate(cfg: EvalConfig) -> dict[str, str]:
    """Check everything that can be checked before any work; returns policy label -> path."""
    if not cfg.policies:
        raise EvalError("no policy given")
    bad = [a for a in cfg.agents if a not in AGENTS]
    if bad:
        raise EvalError(f"unknown agent {', '.join(bad)}: expected some of {', '.join(AGENTS)}")
    if not cfg.agents:
        raise EvalError("no agent given")
    if not cfg.objectives or min(cfg.objectives) < 1:
        raise EvalError(f"objectives must be >= 1, got {cfg.objectives}")
    if cfg.episodes < 1:
        raise EvalError(f"episodes must be >= 1, got {cfg.episodes}")
    if cfg.split not in SPLITS:
        raise EvalError(f"unknown split {cfg.split!r}: expected one of {', '.join(SPLITS)}")
    if cfg.temperature < 0 or not 0 < cfg.top_p <= 1:
        raise EvalError(f"need temperature >= 0 and 0 < top-p <= 1, got {cfg.temperature}, {cfg.top_p}")
    return {name: resolve_policy(name) for name in dict.fromkeys(cfg.policies)}


SCRIPTED = ("teacher", "tiny", "paced")
"""policies whose words no trained weights choose: the teacher, the untrained model, the paced teacher"""


def check_tokenizers(domain, policies: dict[str, tuple[str, object]]) -> None:
    """[7] Each trained policy (label -> (resolved path, its tokenizer)) can write `domain`'s text
    (domains.Domain.check_tokenizer), or EvalError (one line) before any episode is played."""
    for label, (path, tokenizer) in policies.items():
        if path not in SCRIPTED:
            try:
                domain.check_tokenizer(tokenizer, label)
            except ValueError as exc:
                raise EvalError(str(exc)) from None


def policy_tokenizer(path: str):
    """The tokenizer a resolved policy plays with, its weights left unread: a checkpoint's own, or a
    PPO adapter's base's (as model.load_policy finds it; ModelLoadError when it cannot)."""
    folder = Path(path)
    adapter = folder / "adapter_config.json"
    if adapter.is_file() and not (folder / "tokenizer.json").is_file():
        base = read_json_file(adapter).get("base_model_name_or_path")
        if base == "tiny":
            return load_tokenizer(TINY_DIR)
        if isinstance(base, str) and base:
            return policy_tokenizer(str(folder / base if not Path(base).is_absolute() else base))
    return load_tokenizer(folder)


def check_sweeps(configs: Sequence[EvalConfig]) -> None:
    """Every sweep's input and its trained policies' tokenizers (`check_tokenizers`), checked before
    the first sweep plays an episode: `demo.run_sweeps` plays the teacher's sweep first."""
    domains: dict = {}
    for cfg in configs:
        trained = {label: path for label, path in validate(cfg).items() if path not in SCRIPTED}
        if not trained:
            continue
        key = (cfg.env, cfg.data)
        if key not in domains:
            domains[key] = load_domain(*key)
        try:
            tokenizers = {label: (path, policy_tokenizer(path)) for label, path in trained.items()}
        except ModelLoadError as exc:
            raise EvalError(str(exc)) from None
        check_tokenizers(domains[key], tokenizers)


# ---------------------------------------------------------------------------------------------
# The sweep


def load_eval_policy(label: str, path: str, cfg: EvalConfig, respond_text=None):
    """(engine, tokenizer) for a resolved policy; `respond_text`: the domain's teacher (default QA)."""
    generation = GenerationConfig(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        batch_size=cfg.batch_size,
    )
    return load_engine(path, generation, respond_text, label=label)


def evaluate(cfg: EvalConfig, log: Callable[[str], None] | None = print) -> EvalRun:
    """Run the sweep; one record per (policy, agent, N). Bad input raises EvalError before any work."""

    t_start = time.perf_counter()
    log = log or (lambda s: None)
    paths = validate(cfg)
    use_threads(cfg.threads, *paths.values())
    domain = load_domain(cfg.env, cfg.data)
    cfg = replace(cfg, objectives=fit_default(cfg.objectives, EvalConfig.objectives, domain))
    tasks = {n: domain.tasks(cfg.split, n, cfg.episodes, seed=cfg.seed) for n in cfg.objectives}  # [1]
    # Load every policy first: a broken checkpoint fails before anything runs or is written.

    try:
        loaded = {
            label: load_eval_policy(label, path, cfg, domain.teacher()) for label, path in paths.items()
        }
    except ModelLoadError as exc:
        raise EvalError(str(exc)) from None
    check_tokenizers(domain, {label: (path, loaded[label][1]) for label, path in paths.items()})  # [7]

    run = EvalRun(records=[], seconds=0.0)
    combos = [(p, n, a) for p in loaded for n in cfg.objectives for a in cfg.agents]
    bar = tqdm(combos, desc="eval", disable=not cfg.progress)
    for label, n, agent in bar:
        bar.set_postfix_str(f"{label} {agent} N={n}")
        policy, tokenizer = loaded[label]
        envs = [domain.environment(t) for t in tasks[n]]
        t0 = time.perf_counter()
        trajs = run_episodes(  # [3]
            policy,
            tokenizer,
            envs,
            RolloutConfig(
                agent=agent, truncate_tokens=cfg.truncate_tokens, seed=cfg.seed, progress=cfg.progress
            ),
            tasks[n],
        )
        wall = time.perf_counter() - t0
        rec = _record(trajs, tokenizer, label, paths[label], agent, n, cfg) | {"wall_seconds": wall}
        run.records.append(rec)
        if cfg.trajectories:
            write_jsonl(trajs, Path(cfg.trajectories) / f"{_slug(label)}_{agent}_n{n}.jsonl")
        if cfg.keep_trajectories:
            run.trajectories[label, agent, n] = trajs
        msg = (
            f"{label:>12s} {agent:8s} N={n:<2d} EM {rec['em']:6.3f} (/N {rec['em_per_objective']:.3f})  "
            f"peak {rec['peak_tokens']:7.1f}  turns {rec['turns']:5.2f}  {wall:6.1f} s"
        )
        if cfg.progress:
            tqdm.write(msg)
        else:
            log(msg)
    bar.close()
    run.seconds = time.perf_counter() - t_start
    log(f"total wall time {run.seconds:.1f} s ({len(combos)} rows x {cfg.episodes} episodes)")
    return run


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label.strip("/")).strip("-") or "policy"


def _record(trajs, tokenizer, label: str, path: str, agent: str, n: int, cfg: EvalConfig) -> dict:
    """The flat record of one (policy, agent, N): `trajectory.summarize` plus the rest of `RECORD_FIELDS`."""
    s = summarize(trajs)  # [4]
    turns = sum(len(t.turns) for t in trajs)
    states = [[state_text(tokenizer, turn.output_ids) for turn in t.turns] for t in trajs]
    return (
        {
            "agent": agent,
            "policy": label,
            "role": cfg.roles.get(label) or policy_role(label),
            "path": repo_path(path),
            "objectives": n,
            "split": cfg.split,
            "seed": cfg.seed,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
        }
        | s
        | {
            "f1_per_objective": sum(t.f1 / n for t in trajs) / max(1, len(trajs)),
            "peak_tokens_max": max((t.peak_tokens for t in trajs), default=0),
            "answered": sum(t.answer is not None for t in trajs) / max(1, len(trajs)),
            "format_error_rate": sum(t.format_errors for t in trajs) / max(1, turns),
            "tokens_generated": sum(len(x.output_ids) for t in trajs for x in t.turns) / max(1, len(trajs)),
            # per task, in task order: every policy plays the same tasks, so two policies' lists
            # pair up for a paired bootstrap interval (study.py)
            "task_ids": [t.task_id for t in trajs],
            "em_by_task": [t.em / n for t in trajs],
        }
        | state_behaviour(states, [t.questions for t in trajs])  # [5]
    )


# ---------------------------------------------------------------------------------------------
# Emergent behaviour: what the internal states hold


_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_LOOSE_ANSWERS = re.compile(r"answers:\s*(.*?)\s*(?=question:|now:|$)", re.S)
_LOOSE_QUESTION = re.compile(r"question:\s*(.*?)\s*(?=now:|answers:|$)", re.S)


def state_text(tokenizer, output_ids: Sequence[int]) -> str | None:
    """The internal state of one response (the text inside its first <think>...</think>), or None."""
    m = _THINK.search(tokenizer.decode(list(output_ids), skip_special_tokens=False))
    return m.group(1).strip() if m else None


def read_state(text: str | None) -> tuple[list[str], str | None] | None:
    """(answers listed, current question or None) of a state; None when nothing can be read.

    The teacher's format (teacher.parse_state) first; a malformed state is read loosely, field by
    field, so a state with a broken `now:` still says which answers and question it holds.
    """
    if not text:
        return None
    parsed = parse_state(text)
    if parsed is not None:
        return parsed.answers, parsed.question
    a, q = _LOOSE_ANSWERS.search(text), _LOOSE_QUESTION.search(text)
    if a is None and q is None:
        return None
    answers_text = a.group(1).rstrip(". ") if a else "none"
    answers = (
        [] if answers_text in ("", "none") else [x.strip() for x in answers_text.split(";") if x.strip()]
    )
    question = q.group(1).strip() if q else None
    if question in ("", "none", "none."):
        question = None
    return answers, question


def state_behaviour(states: Sequence[Sequence[str | None]], questions: Sequence[Sequence[str]]) -> dict:
    """Emergent-behaviour measures over episodes (one list of state texts per episode).

    - `state_readable`: share of turns whose state could be read (`read_state`).
    - `state_questions`: questions a state tracks, answers listed + 1 for a current question; the
      most over an episode's turns, averaged over episodes. `state_coverage` is that over N (the
      teacher reaches 1.0 at every N: its last state lists all N answers).
    - `question_moves`: times per episode the current question changes to another question.
    - `early_switches`: those moves made before finishing the question (no answer was added to the
      list on that turn), per episode; `early_switch_rate` = early switches / moves (None: no moves).
    A question is identified by its position in the prompt when its text matches one there.
    """
    n_turns = readable = moves = early = 0
    tracked_max = []
    for episode, qs in zip(states, questions):
        index = {q: i for i, q in enumerate(qs)}
        best, prev = 0, None
        for text in episode:
            n_turns += 1
            cur = read_state(text)
            if cur is None:
                prev = None
                continue
            readable += 1
            answers, question = cur
            best = max(best, len(answers) + (question is not None))
            if prev is not None and prev[1] is not None and question is not None:
                key_prev, key = index.get(prev[1], prev[1]), index.get(question, question)
                if key != key_prev:
                    moves += 1
                    early += len(answers) <= len(prev[0])
            prev = cur
        tracked_max.append(best)
    episodes = max(1, len(tracked_max))
    n_mean = sum(len(q) for q in questions) / episodes
    mean_tracked = sum(tracked_max) / episodes
    return {
        "state_readable": readable / max(1, n_turns),
        "state_questions": mean_tracked,
        "state_coverage": mean_tracked / n_mean if n_mean else 0.0,
        "question_moves": moves / episodes,
        "early_switches": early / episodes,
        "early_switch_rate": early / moves if moves else None,
    }


# ---------------------------------------------------------------------------------------------
# Records files


def load_records(paths: Sequence[str | Path]) -> list[dict]:
    """Records saved by `--json` runs, joined (e.g. a baseline evaluated later than the others),
    so the tables, figures and report can be rebuilt without playing an episode again. A missing
    or malformed file, a record without the contract's fields, or the same (policy, agent, N,
    split) twice is an EvalError."""
    records, seen = [], {}
    for path in paths:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise EvalError(f"no records file {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EvalError(f"{path} is not a records file written by mem1 eval --json: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise EvalError(f"{path} is not a records file written by mem1 eval --json: expected a list")
        for i, r in enumerate(data):
            missing = [f for f in RECORD_FIELDS if f not in r]
            if missing:
                raise EvalError(f"{path}: record {i} lacks {', '.join(missing)}")
            wrong = _wrongly_typed(r)
            if wrong:
                raise EvalError(f"{path}: record {i} has wrong types: {', '.join(wrong)}")
            wrong = _out_of_range(r)
            if wrong:
                raise EvalError(f"{path}: record {i} has values out of range: {', '.join(wrong)}")
            key = (r["policy"], r["agent"], r["objectives"], r.get("split"))
            if key in seen:
                raise EvalError(f"{path}: {key[:3]} is also in {seen[key]}")
            seen[key] = path
            records.append(r)
    if not records:
        raise EvalError("no records in " + ", ".join(map(str, paths)))
    return records


def _wrongly_typed(record: dict) -> list[str]:
    """`field=value` for each contract field of the wrong type: names are strings, sizes integers,
    measures numbers (None allowed where a measure can be undefined, as NaN is saved as null)."""
    wrong = []
    for f in RECORD_FIELDS:
        v = record[f]
        if f in ("agent", "policy"):
            ok = isinstance(v, str)
        elif f in ("objectives", "episodes"):
            ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
        else:
            ok = (v is None and f.startswith(("state_", "early_"))) or (
                isinstance(v, int | float) and not isinstance(v, bool)
            )
        if not ok:
            wrong.append(f"{f}={v!r}")
    return wrong


SHARES = ("em_per_objective", "f1_per_objective", "answered", "format_error_rate", "state_readable")
SHARES += ("early_switch_rate",)
"""record fields that are a share of something: 0..1"""
COUNTS = ("peak_tokens", "peak_tokens_max", "dependency", "turns", "seconds", "format_errors")
COUNTS += ("tokens_generated", "state_questions", "state_coverage", "question_moves", "early_switches")
COUNTS += ("wall_seconds",)
"""record fields that count or time something: finite and >= 0"""


def _out_of_range(record: dict) -> list[str]:
    """`field=value` for each measure a run cannot have given: EM and F1 summed over the N
    objectives in 0..N, shares (per objective, rates) in 0..1, counts and times finite and >= 0,
    each task's EM in 0..1. A record file edited by hand or by a bug is refused, not drawn."""

    def number(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    n = record["objectives"]
    bounds = {"em": (0, n), "f1": (0, n)} | {f: (0, 1) for f in SHARES}
    bounds |= {f: (0, math.inf) for f in COUNTS}
    wrong = []
    for f, (low, high) in bounds.items():
        v = record.get(f)
        if number(v) and not (math.isfinite(v) and low <= v <= high):
            wrong.append(f"{f}={v!r} (expected {low}..{high if math.isfinite(high) else 'any finite'})")
    per_task = record.get("em_by_task")
    if per_task is not None and not (
        isinstance(per_task, list) and all(number(v) and 0 <= v <= 1 for v in per_task)
    ):
        wrong.append("em_by_task (expected a list of numbers in 0..1)")
    return wrong


def jsonable(records) -> list[dict]:
    """The records with NaN and infinities as null (JSON has neither)."""
    return [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in records
    ]


def save_records(records: Sequence[dict], path: str | Path) -> Path:
    """Write the records as the JSON list `load_records` reads (atomically)."""
    return write_text(path, json.dumps(jsonable(records), indent=2) + "\n")
