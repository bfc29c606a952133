"""Agents (memory policies), batched generation, and token-in/token-out trajectory records.

An episode is a list of *pieces*: response 0, observation 0, response 1, observation 1, ... and the
prompt before them. An agent decides which of them the model sees at turn j:

- `mem1`: the prompt, the previous response (its internal state and action) and the previous
  observation. Everything older is gone: memory stays constant however long the task.
- `full`: the prompt and every piece so far (ReAct-style).
- `truncate`: the prompt and the last `K` tokens of the history (the oldest piece may be cut).

A turn records the *spans* it saw (`[piece, start, end]`, piece -1 is the prompt), the exact output
ids, their sampling log-probs and the kind of each output token. Context ids are rebuilt from the
spans (`context_ids`), never by decoding and re-tokenising, and the rollout checks that what it
rebuilds is what it fed. Masked-trajectory layouts (masks.py) read the same spans.

Schema of a jsonl line (`SCHEMA` = "mem1lite.trajectory/1"): the fields of `Trajectory` and `Turn`
below, JSON-encoded; `output_kinds` is a string with one letter per output token (`KIND_LETTERS`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .metrics import dependency, peak_tokens
from .protocol import STOP_STRINGS

SCHEMA = "mem1lite.trajectory/1"
PROMPT = -1
KIND_LETTERS = {
    "prompt": "p",
    "state": "s",
    "action": "a",
    "info": "i",
    "answer": "A",
    "error": "e",
    "other": "o",
}
LETTER_KINDS = {v: k for k, v in KIND_LETTERS.items()}


# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class Turn:
    spans: list[list[int]]
    """visible context: [piece, start, end]; piece -1 is the prompt, 2j response j, 2j+1 observation j"""
    output_ids: list[int]
    """the exact ids the policy produced"""
    logprobs: list[float]
    """sampling log-prob of each output id (log-softmax of logits / temperature; 0 for the teacher)"""
    output_kinds: str
    """one letter per output id: s state, a action, A answer, e format error, o other"""
    observation_ids: list[int]
    """the environment's reply (empty when the episode ended at this turn)"""
    action: str
    """'search', 'answer' or 'error'"""
    argument: str = ""
    error: str = ""
    hit_limit: bool = False
    """the response reached the token limit without a stop tag"""
    seconds: float = 0.0


@dataclass
class Trajectory:
    task_id: str
    split: str
    questions: list[str]
    golds: list
    agent: str
    policy: str
    prompt_ids: list[int]
    turns: list[Turn] = field(default_factory=list)
    env: str = "qa"
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    episode: int = 0
    answer: str | None = None
    em: float = 0.0
    f1: float = 0.0
    per_slot_em: list[float] = field(default_factory=list)
    format_errors: int = 0
    seconds: float = 0.0
    schema: str = SCHEMA

    @property
    def objectives(self) -> int:
        return len(self.questions)

    @property
    def reward(self) -> float:
        return self.em

    def piece(self, index: int) -> list[int]:
        if index == PROMPT:
            return self.prompt_ids
        turn = self.turns[index // 2]
        return turn.output_ids if index % 2 == 0 else turn.observation_ids

    def context_ids(self, j: int) -> list[int]:
        """The exact ids fed to the model at turn j, rebuilt from its spans."""
        return self.ids_of(self.turns[j].spans)

    def ids_of(self, spans: Sequence[Sequence[int]]) -> list[int]:
        return [t for p, a, b in spans for t in self.piece(p)[a:b]]

    def context_lengths(self) -> list[int]:
        return [sum(b - a for _, a, b in t.spans) for t in self.turns]

    @property
    def peak_tokens(self) -> int:
        return peak_tokens(self.context_lengths())

    @property
    def dependency(self) -> float:
        return dependency(self.context_lengths(), [len(t.output_ids) for t in self.turns])

    def to_json(self) -> str:
        d = asdict(self)
        d.update(
            objectives=self.objectives,
            reward=self.reward,
            peak_tokens=self.peak_tokens,
            dependency=self.dependency,
            n_turns=len(self.turns),
        )
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> Trajectory:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"unknown trajectory schema {d.get('schema')!r} (expected {SCHEMA})")
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["turns"] = [Turn(**t) for t in d["turns"]]
        return cls(**d)


def write_jsonl(trajectories: Iterable[Trajectory], path: str | Path) -> Path:
    """Write atomically: a temporary file renamed into place once complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for t in trajectories:
            f.write(t.to_json() + "\n")
    tmp.replace(path)
    return path


@dataclass
class LoadReport:
    trajectories: list[Trajectory]
    errors: list[str]
    """one message per bad line: 'file:line: why'"""


def read_jsonl(path: str | Path, strict: bool = False) -> LoadReport:
    """Read trajectories; a malformed line is reported with its file and line and skipped."""
    path = Path(path)
    out, errors = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(Trajectory.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, ValueError, KeyError) as exc:
                msg = f"{path}:{lineno}: {type(exc).__name__}: {str(exc)[:120]}"
                if strict:
                    raise ValueError(msg) from exc
                errors.append(msg)
    return LoadReport(out, errors)


# ---------------------------------------------------------------------------------------------
# Token kinds


def token_kinds(tokenizer, ids: Sequence[int], is_error: bool) -> str:
    """One letter per output token: the tag region its text falls in (the tags themselves included).

    Works whether the tags are single special tokens (our tokenizer) or several ordinary tokens (a
    real Qwen tokenizer): regions are found in the text, then mapped back to tokens by offsets.
    """
    if is_error:
        return KIND_LETTERS["error"] * len(ids)
    texts = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    full = "".join(texts)
    region = ["o"] * len(full)
    for pattern, letter in _KIND_REGIONS:
        for m in pattern.finditer(full):
            region[m.start() : m.end()] = letter * (m.end() - m.start())
    out, pos = [], 0
    for t in texts:
        seg = [c for c in region[pos : pos + len(t)] if c != "o"]
        out.append(seg[0] if seg else "o")
        pos += len(t)
    return "".join(out)


_KIND_REGIONS = [
    (re.compile(r"<think>.*?</think>", re.S), "s"),
    (re.compile(r"<search>.*?</search>", re.S), "a"),
    (re.compile(r"<answer>.*?</answer>", re.S), "A"),
]


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


AGENTS = ("mem1", "full", "truncate")


def make_agent(name: str, truncate_tokens: int = 512) -> Agent:
    if name == "mem1":
        return Mem1Agent()
    if name == "full":
        return FullAgent()
    if name == "truncate":
        return TruncateAgent(truncate_tokens)
    raise ValueError(f"unknown agent {name!r}: expected one of {', '.join(AGENTS)}")


# ---------------------------------------------------------------------------------------------
# Policies


@dataclass
class Response:
    ids: list[int]
    logprobs: list[float]
    hit_limit: bool


class TeacherPolicy:
    """The scripted teacher (teacher.py) behind the same interface as a model."""

    name = "teacher"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def respond(self, contexts: list[list[int]], generators: list[torch.Generator]) -> list[Response]:
        from .teacher import teacher_response

        out = []
        for ids in contexts:
            text = teacher_response(self.tokenizer.decode(ids, skip_special_tokens=False))
            resp = self.tokenizer.encode(text, add_special_tokens=False)
            out.append(Response(resp, [0.0] * len(resp), False))
        return out


@dataclass
class GenerationConfig:
    """How a model policy samples its responses."""

    max_new_tokens: int = 192
    """longest response; longer ones become format errors"""
    temperature: float = 1.0
    """0 decodes greedily"""
    top_p: float = 1.0
    """nucleus sampling threshold"""
    batch_size: int = 64
    """episodes generated together"""


def stop_sequences(tokenizer) -> list[list[int]]:
    seqs = [tokenizer.encode(s, add_special_tokens=False) for s in STOP_STRINGS]
    for special in ("<|im_end|>", tokenizer.eos_token):
        if special and special in tokenizer.get_vocab():
            seqs.append([tokenizer.convert_tokens_to_ids(special)])
    return seqs


def _sample(logits: torch.Tensor, cfg: GenerationConfig, generators: list[torch.Generator]):
    """One token per row and its log-prob under softmax(logits / T). logits: (B, V), float."""
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if cfg.temperature <= 0:
        tokens = logits.argmax(-1)
        logp = torch.log_softmax(logits, -1)
        return tokens, logp.gather(-1, tokens[:, None])[:, 0]
    logp = torch.log_softmax(logits / cfg.temperature, -1)
    probs = logp.exp()
    sorted_p, order = probs.sort(-1, descending=True)
    if cfg.top_p < 1.0:
        keep = (sorted_p.cumsum(-1) - sorted_p) < cfg.top_p  # always keeps the first
        sorted_p = sorted_p * keep
    cdf = sorted_p.cumsum(-1)
    # One uniform per row from that episode's own generator: samples do not depend on batching.
    u = torch.stack([torch.rand((), generator=g, dtype=cdf.dtype) for g in generators]) * cdf[:, -1]
    pick = torch.searchsorted(cdf, u[:, None]).clamp(max=cdf.shape[-1] - 1)
    tokens = order.gather(-1, pick)[:, 0]
    return tokens, logp.gather(-1, tokens[:, None])[:, 0]


class ModelPolicy:
    """A causal LM generating a batch of responses with a KV cache."""

    def __init__(self, model, tokenizer, config: GenerationConfig | None = None, name: str = "model"):
        self.model, self.tokenizer = model, tokenizer
        self.config = config or GenerationConfig()
        self.name = name
        self.stops = stop_sequences(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @torch.no_grad()
    def respond(self, contexts: list[list[int]], generators: list[torch.Generator]) -> list[Response]:
        out: list[Response | None] = [None] * len(contexts)
        order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
        bs = self.config.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            for i, r in zip(idx, self._generate([contexts[i] for i in idx], [generators[i] for i in idx])):
                out[i] = r
        return out

    def _generate(self, contexts, generators) -> list[Response]:
        model, cfg = self.model, self.config
        device = next(model.parameters()).device
        B, L = len(contexts), max(len(c) for c in contexts)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, L), dtype=torch.long)
        for b, c in enumerate(contexts):
            ids[b, L - len(c) :] = torch.tensor(c)
            mask[b, L - len(c) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # generation-true positions: 0 at each row's start
        was_training = model.training
        model.eval()
        try:
            result = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
            cache = result.cache
            logits = result.logits[:, -1, :]
            next_pos = positions[:, -1] + 1
            outputs = [[] for _ in range(B)]
            logps = [[] for _ in range(B)]
            done = [False] * B
            hit = [False] * B
            for _step in range(cfg.max_new_tokens):
                tokens, lp = _sample(logits, cfg, generators)
                for b in range(B):
                    if done[b]:
                        continue
                    outputs[b].append(int(tokens[b]))
                    logps[b].append(float(lp[b]))
                    if any(outputs[b][-len(s) :] == s for s in self.stops):
                        done[b] = True
                    elif len(outputs[b]) >= cfg.max_new_tokens:
                        done[b], hit[b] = True, True
                if all(done):
                    break
                alive = torch.tensor([0 if d else 1 for d in done], dtype=mask.dtype, device=device)
                mask = torch.cat([mask, alive[:, None]], dim=1)
                result = model(
                    input_ids=tokens[:, None].to(device),
                    attention_mask=mask,
                    position_ids=next_pos[:, None],
                    cache=cache,
                    use_cache=True,
                )
                cache, logits = result.cache, result.logits[:, -1, :]
                next_pos = next_pos + 1
        finally:
            model.train(was_training)
        return [Response(outputs[b], logps[b], hit[b]) for b in range(B)]


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


def episode_generator(seed: int, episode: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + episode) % (2**63 - 1))
    return g


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
    from tqdm.auto import tqdm

    cfg = config or RolloutConfig()
    agent = make_agent(cfg.agent, cfg.truncate_tokens)
    gen = getattr(policy, "config", None)
    trajs = []
    for i, env in enumerate(envs):
        prompt_text = tokenizer.apply_chat_template(
            [{"role": "user", "content": env.prompt()}], tokenize=False, add_generation_prompt=True
        )
        task = tasks[i] if tasks is not None else None
        trajs.append(
            Trajectory(
                task_id=getattr(task, "id", f"episode-{i}"),
                split=getattr(task, "split", ""),
                questions=list(getattr(env, "questions", [])),
                golds=[list(g) if isinstance(g, tuple) else g for g in getattr(env, "golds", [])],
                agent=agent.name,
                policy=getattr(policy, "name", "model"),
                prompt_ids=tokenizer.encode(prompt_text, add_special_tokens=False),
                seed=cfg.seed,
                temperature=getattr(gen, "temperature", 0.0) if gen else 0.0,
                top_p=getattr(gen, "top_p", 1.0) if gen else 1.0,
                episode=i,
            )
        )
    generators = [episode_generator(cfg.seed, i) for i in range(len(envs))]
    bar = tqdm(total=len(envs), desc=f"rollout {agent.name}", disable=not cfg.progress, leave=False)
    active = [i for i, e in enumerate(envs) if not e.done]
    while active:
        spans = [agent.spans(trajs[i]) for i in active]
        contexts = [trajs[i].ids_of(sp) for i, sp in zip(active, spans)]
        t0 = time.perf_counter()
        responses = policy.respond(contexts, [generators[i] for i in active])
        per_episode = (time.perf_counter() - t0) / len(active)
        still = []
        for i, sp, resp in zip(active, spans, responses):
            t1 = time.perf_counter()
            env = envs[i]
            text = tokenizer.decode(resp.ids, skip_special_tokens=False)
            outcome = env.step(text, resp.hit_limit)
            obs_ids = (
                tokenizer.encode(outcome.observation, add_special_tokens=False) if outcome.observation else []
            )
            parsed = outcome.parsed
            kinds = token_kinds(tokenizer, resp.ids, parsed.kind == "error")
            turn = Turn(
                spans=sp,
                output_ids=list(resp.ids),
                logprobs=list(resp.logprobs),
                output_kinds=kinds,
                observation_ids=obs_ids,
                action=parsed.kind,
                argument=parsed.argument,
                error=parsed.error,
                hit_limit=resp.hit_limit,
                seconds=per_episode + time.perf_counter() - t1,
            )
            trajs[i].turns.append(turn)
            if env.done:
                r = env.result()
                t = trajs[i]
                t.answer, t.em, t.f1, t.per_slot_em = r.answer, r.em, r.f1, list(r.per_slot_em)
                t.format_errors = r.format_errors
                t.seconds = sum(x.seconds for x in t.turns)
                bar.update(1)
            else:
                still.append(i)
        if on_turn:
            on_turn(len(still))
        active = still
    bar.close()
    return trajs


def summarize(trajs: Sequence[Trajectory]) -> dict:
    """Mean episode metrics (the CLI contract's record fields)."""
    n = max(1, len(trajs))
    return {
        "episodes": len(trajs),
        "em": sum(t.em for t in trajs) / n,
        "f1": sum(t.f1 for t in trajs) / n,
        "em_per_objective": sum(t.em / max(1, t.objectives) for t in trajs) / n,
        "peak_tokens": sum(t.peak_tokens for t in trajs) / n,
        "dependency": sum(t.dependency for t in trajs) / n,
        "turns": sum(len(t.turns) for t in trajs) / n,
        "format_errors": sum(t.format_errors for t in trajs) / n,
        "seconds": sum(t.seconds for t in trajs) / n,
    }
