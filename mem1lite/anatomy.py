"""Failure anatomy: where a policy first leaves the teacher's path, and which turns it gets wrong.

The QA teacher (teacher.py) is a function of the visible context, so in *any* context it says what a
perfect mem1 policy would write there. That gives two measurements of a trained policy:

1. Free play. The policy plays a task; at each turn the teacher answers the policy's own context.
   The first turn where the two differ (parsed: action, argument and state) is the episode's first
   divergence, classified by what went wrong (`CLASSES`). Errors compound over 2N + 1 turns, so the
   first one is the cause; the later ones are consequences.
2. Teacher-forced. The teacher plays the task; at each turn the policy answers the teacher's
   context (greedy). Each turn is exact or not, and its parts (answers list, question, `now`,
   action) are right or not, by the answers already held (k) and by the turn's kind (`KINDS`).
   This is the per-step error without compounding: where a loop fails as k grows, it shows here.

`mem1 diagnose` runs both and writes tables (markdown, json) and a figure.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .domains import load_domain
from .generate import GenerationConfig, ModelPolicy
from .model import DATA_DIR, load_policy, read_card
from .probe import teacher_trajectories
from .protocol import parse_prompt_questions, parse_response
from .rollout import RolloutConfig, run_episodes
from .teacher import held_state, parse_state, split_context

CLASSES = (
    "premature answer",
    "late answer",
    "answers list corrupted",
    "wrong next question",
    "question miscopied",
    "hop confusion",
    "reading error",
    "wrong query",
    "format error",
    "out of turns",
    "other",
)
"""how an episode first leaves the teacher's path ('none' when it never does):

- premature answer: the policy answers while questions remain (a full list whose last item is the
  bridge entity just read counts as hop confusion); late answer: it searches on after
  the last question is answered;
- answers list corrupted: an answer already held is lost, altered, or an answer is added twice;
- wrong next question: an answer was just added, and the question taken next is not the next one;
- question miscopied: the same question is worked on, but its text (or number) is copied wrongly:
  harmless for now (`now` holds the hop), fatal later with the text pointer, which finds the next
  question by matching this text;
- hop confusion: a bridge entity taken as an answer, an answer taken as a bridge, or the wrong
  relation of the chain looked for;
- reading error: the right hop, but the value read from the passages (a bridge or an answer) is wrong;
- wrong query: the state is right, the search is not;
- format error: the response breaks the protocol, or its state is not in the teacher's form;
- out of turns: the policy never left the teacher's path, yet the turn budget ran out."""

KINDS = ("first search", "bridge hop", "next question", "retry", "final answer")
"""a teacher turn's kind: the first search of task (turn 0); the search of a question's outer hop
after its bridge entity is read; the turn that appends an answer and starts the next question (it
copies the answers list and chooses the question); a search repeated after a retrieval miss; the
final answer (the whole list copied into <answer>)."""


def same_response(a: str, b: str) -> bool:
    """Equal as the protocol and the teacher read them: action, argument and state."""
    pa, pb = parse_response(a), parse_response(b)
    if pa.kind == "error" or pb.kind == "error":
        return False
    sa, sb = parse_state(pa.state), parse_state(pb.state)
    return (pa.kind, pa.argument, sa or pa.state) == (pb.kind, pb.argument, sb or pb.state)


def classify(context: str, policy: str, teacher: str) -> str:
    """Why the policy's response in `context` is not the teacher's (one of CLASSES but the last two)."""
    p, t = parse_response(policy), parse_response(teacher)
    if p.kind == "error":
        return "format error"
    held = held_state(context)
    before = held.answers if held else []
    given = [a.strip() for a in p.argument.split(";")] if p.kind == "answer" else []
    if p.kind == "answer" and t.kind == "search":
        complete = len(given) == len(parse_prompt_questions(split_context(context)[0])) == len(before) + 1
        # a full list whose last item is the bridge just read: the hop was taken for the answer
        return "hop confusion" if complete and given[:-1] == before else "premature answer"
    if p.kind == "search" and t.kind == "answer":
        return "late answer"
    ps, ts = parse_state(p.state), parse_state(t.state)
    if ps is None:
        return "format error"
    if p.kind == "answer":  # both answer: the list copied into the answer, or its last item read
        if given[: len(before)] != before or len(given) != len(ts.answers):
            return "answers list corrupted"
        return "reading error"
    if ps.answers[: len(before)] != before or len(ps.answers) > len(before) + 1:
        return "answers list corrupted"
    added, expected = len(ps.answers) > len(before), len(ts.answers) > len(before)
    if added != expected:
        return "hop confusion"  # a bridge taken as the answer, or the answer taken as a bridge
    if added and ps.answers[-1] != ts.answers[-1]:
        return "reading error"
    if ps.question != ts.question or ps.number != ts.number:
        return "wrong next question" if expected else "question miscopied"
    if ps.now != ts.now:
        p_rel, t_rel = (s.split(" of ", 1)[0] if s else "" for s in (ps.now, ts.now))
        return "hop confusion" if p_rel != t_rel else "reading error"
    if ps.hop != ts.hop:  # the right fact, the wrong hop marker (pointer "hop")
        return "hop confusion"
    if p.argument != t.argument:
        return "wrong query"
    return "other"


def turn_kind(context: str, teacher: str) -> str:
    """The kind (KINDS) of the teacher's turn in `context`."""
    t = parse_response(teacher)
    if t.kind == "answer":
        return "final answer"
    held = held_state(context)
    if held is None:
        return "first search"
    ts = parse_state(t.state)
    if ts is not None and len(ts.answers) > len(held.answers):
        return "next question"
    if ts is not None and ts.now == held.now:
        return "retry"
    return "bridge hop"


def parts_right(policy: str, teacher: str) -> dict[str, bool]:
    """Which parts of the policy's response are the teacher's: answers list, question, now, action."""
    p, t = parse_response(policy), parse_response(teacher)
    ps = parse_state(p.state) if p.kind != "error" else None
    ts = parse_state(t.state)
    return {
        "answers": ps is not None and ps.answers == ts.answers,
        "question": ps is not None and (ps.question, ps.number) == (ts.question, ts.number),
        "now": ps is not None and (ps.now, ps.hop) == (ts.now, ts.hop),
        "action": (p.kind, p.argument) == (t.kind, t.argument),
    }


# ---------------------------------------------------------------------------------------------
# Over trajectories


@dataclass
class Divergence:
    """An episode's first turn off the teacher's path."""

    objectives: int
    episode: int
    kind: str
    """one of CLASSES, or 'none' (the episode followed the teacher throughout)"""
    turn: int | None = None
    """the turn (0-based); None for 'none' and 'out of turns'"""
    k: int = 0
    """answers held at that turn (in the context's last state)"""
    em: float = 0.0
    """the episode's EM (per-slot mean over its N questions)"""
    policy: str = ""
    teacher: str = ""


def first_divergence(traj, tokenizer, teacher: Callable[[str], str]) -> Divergence:
    """Walk a policy's trajectory and find where it first writes what the teacher would not."""
    n, em = traj.objectives, traj.em / max(1, traj.objectives)
    for j, turn in enumerate(traj.turns):
        context = tokenizer.decode(traj.context_ids(j), skip_special_tokens=False)
        mine = tokenizer.decode(turn.output_ids, skip_special_tokens=False)
        theirs = teacher(context)
        if not same_response(mine, theirs):
            held = held_state(context)
            kind = classify(context, mine, theirs)
            return Divergence(n, traj.episode, kind, j, len(held.answers) if held else 0, em, mine, theirs)
    if traj.answer is None:
        return Divergence(n, traj.episode, "out of turns", None, 0, em)
    return Divergence(n, traj.episode, "none", None, 0, em)


def _from_dict(cls, d: dict):
    """A saved record, its types and ranges checked (a diagnosis edited by hand or by a bug is
    refused, never drawn): counts whole numbers >= 0 (N >= 1), EM in 0..1, kinds and texts strings."""
    if not isinstance(d, dict):
        raise TypeError(f"a {cls.__name__} is not an object")
    record = cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
    for name, f in cls.__dataclass_fields__.items():
        v, kind = getattr(record, name), str(f.type)
        count = isinstance(v, int) and not isinstance(v, bool) and v >= (1 if name == "objectives" else 0)
        ok = {
            "int": count,
            "int | None": v is None or count,
            "float": isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1,
            "str": isinstance(v, str),
            "bool": isinstance(v, bool),
        }.get(kind, True)
        if not ok:
            raise ValueError(f"{cls.__name__}.{name} = {v!r} is not a valid {kind}")
    return record


@dataclass
class TurnCheck:
    """One teacher-forced turn: the policy's response in the teacher's context."""

    objectives: int
    turn: int
    k: int
    """answers held before the turn"""
    kind: str
    """one of KINDS"""
    exact: bool
    parts: dict[str, bool] = field(default_factory=dict)


def teacher_forced_checks(teacher_trajs, responses: list[str], tokenizer) -> list[TurnCheck]:
    """`responses[i]` is the policy's text for the i-th (trajectory, turn) of `teacher_trajs`, in order."""
    out, i = [], 0
    for traj in teacher_trajs:
        for j, turn in enumerate(traj.turns):
            context = tokenizer.decode(traj.context_ids(j), skip_special_tokens=False)
            theirs = tokenizer.decode(turn.output_ids, skip_special_tokens=False)
            held = held_state(context)
            mine = responses[i]
            i += 1
            out.append(
                TurnCheck(
                    traj.objectives,
                    j,
                    len(held.answers) if held else 0,
                    turn_kind(context, theirs),
                    same_response(mine, theirs),
                    parts_right(mine, theirs),
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
# Tables


@dataclass
class Anatomy:
    """Everything `mem1 diagnose` measured for one policy."""

    policy: str
    split: str
    divergences: list[Divergence]
    checks: list[TurnCheck]

    def class_table(self) -> dict[int, dict[str, int]]:
        """N -> {class: episodes}, every class present (zeros included), plus 'none'."""
        table = {}
        for n in sorted({d.objectives for d in self.divergences}):
            counts = Counter(d.kind for d in self.divergences if d.objectives == n)
            table[n] = {c: counts.get(c, 0) for c in (*CLASSES, "none")}
        return table

    def exactness_by(self, key: str) -> dict:
        """'k' or 'kind' -> {value: {'turns', 'exact', and each part's share right}}."""
        groups: dict = {}
        for c in self.checks:
            groups.setdefault(getattr(c, key), []).append(c)
        order = sorted(groups) if key == "k" else [k for k in KINDS if k in groups]
        out = {}
        for value in order:
            rows = groups[value]
            out[value] = {"turns": len(rows), "exact": sum(r.exact for r in rows) / len(rows)}
            for part in ("answers", "question", "now", "action"):
                out[value][part] = sum(r.parts[part] for r in rows) / len(rows)
        return out

    def exact_grid(self) -> dict[int, dict[int, float]]:
        """N -> {k: share of teacher-forced turns exact}: a loop is flat in k at every N; a count
        falls to 0 at the largest k its data had; a long prompt breaks every k at once."""
        grid: dict[int, dict[int, list[bool]]] = {}
        for c in self.checks:
            grid.setdefault(c.objectives, {}).setdefault(c.k, []).append(c.exact)
        return {n: {k: sum(v) / len(v) for k, v in sorted(row.items())} for n, row in sorted(grid.items())}

    def to_json(self) -> str:
        return json.dumps(
            {
                "policy": self.policy,
                "split": self.split,
                "classes": {str(n): row for n, row in self.class_table().items()},
                "exact_by_k": {str(k): v for k, v in self.exactness_by("k").items()},
                "exact_by_kind": self.exactness_by("kind"),
                "divergences": [asdict(d) for d in self.divergences],
                "checks": [asdict(c) for c in self.checks],
            },
            indent=None,
        )

    @classmethod
    def from_json(cls, text: str) -> Anatomy:
        """The Anatomy that `to_json` wrote (tables and figures rebuild without replaying)."""
        d = json.loads(text)
        divergences = [_from_dict(Divergence, x) for x in d["divergences"]]
        return cls(d["policy"], d["split"], divergences, [_from_dict(TurnCheck, x) for x in d["checks"]])

    def markdown(self) -> str:
        lines = [f"# Failure anatomy: {self.policy} ({self.split} split)", ""]
        table = self.class_table()
        if table:
            shown = [c for c in (*CLASSES, "none") if any(row[c] for row in table.values())]
            lines += [
                "First divergence from the teacher in free play (greedy), episodes per class:",
                "",
                "| N | " + " | ".join(shown) + " | mean first turn | EM per objective |",
                "|---" * (len(shown) + 3) + "|",
            ]
            for n, row in table.items():
                episodes = [d for d in self.divergences if d.objectives == n]
                turns = [d.turn for d in episodes if d.turn is not None]
                mean = f"{sum(turns) / len(turns):.1f}" if turns else "-"
                em = sum(d.em for d in episodes) / len(episodes)
                cells = " | ".join(str(row[c]) for c in shown)
                lines.append(f"| {n} | {cells} | {mean} | {em:.2f} |")
            lines.append("")
        grid = self.exact_grid()
        if grid:
            ks = sorted({k for row in grid.values() for k in row})
            lines += [
                "Teacher-forced share of turns exact, by answers held (k, rows) and N (columns):",
                "",
                "| k | " + " | ".join(f"N = {n}" for n in grid) + " |",
                "|---" * (len(grid) + 1) + "|",
            ]
            for k in ks:
                cells = [f"{grid[n][k]:.2f}" if k in grid[n] else "" for n in grid]
                lines.append(f"| {k} | " + " | ".join(cells) + " |")
            lines.append("")
        for key, title in (("k", "answers held (k), all N together"), ("kind", "turn kind, all N together")):
            rows = self.exactness_by(key)
            if not rows:
                continue
            lines += [
                f"Teacher-forced per-turn exactness by {title} (share of turns right):",
                "",
                f"| {key} | turns | exact | answers list | question | now | action |",
                "|---|---|---|---|---|---|---|",
            ]
            for value, r in rows.items():
                lines.append(
                    f"| {value} | {r['turns']} | {r['exact']:.2f} | {r['answers']:.2f} | "
                    f"{r['question']:.2f} | {r['now']:.2f} | {r['action']:.2f} |"
                )
            lines.append("")
        return "\n".join(lines)


def anatomy_figure(anatomy: Anatomy):
    """Left: first-divergence classes per N (stacked shares). Right: teacher-forced exactness by k,
    one line per N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    table = anatomy.class_table()
    sizes = list(table)
    bottom = [0.0] * len(sizes)
    colors = plt.get_cmap("tab20").colors
    for i, c in enumerate((*CLASSES, "none")):
        shares = [table[n][c] / max(1, sum(table[n].values())) for n in sizes]
        if any(shares):
            left.bar([str(n) for n in sizes], shares, bottom=bottom, label=c, color=colors[i % len(colors)])
            bottom = [b + s for b, s in zip(bottom, shares)]
    left.set(xlabel="N (questions)", ylabel="share of episodes", title="first divergence (free play)")
    left.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for n, row in anatomy.exact_grid().items():
        right.plot(list(row), list(row.values()), "-o", markersize=3, label=f"N = {n}")
    right.set(
        xlabel="answers held (k)",
        ylabel="share of turns",
        ylim=(-0.02, 1.02),
        title="teacher-forced: share of turns exact",
    )
    right.legend(fontsize=8)
    fig.suptitle(f"failure anatomy: {anatomy.policy}")
    fig.tight_layout()
    return fig


ANATOMY_DIR = DATA_DIR.parent / "docs" / "results" / "anatomy"
"""where the committed diagnoses live: NAME.json (`Anatomy.to_json`), NAME.md, NAME.png"""


def load_anatomy(name: str, folder: Path = ANATOMY_DIR) -> Anatomy:
    """The committed diagnosis of policy `name` (folder/NAME.json), tables and figures without replay."""
    return Anatomy.from_json((Path(folder) / f"{name}.json").read_text())


def exactness_figure(anatomies: list[Anatomy], data_max_n: dict[str, int] | None = None):
    """Teacher-forced share of turns exact against the answers already held (k), one panel per
    policy and one line per N. A loop is flat in k; a count falls at the largest N of its SFT data
    (`data_max_n`: policy -> that N, drawn as a dotted line at k = N, the first list it never saw)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(anatomies), figsize=(5 * len(anatomies), 3.6), squeeze=False)
    for ax, a in zip(axes[0], anatomies):
        for n, row in a.exact_grid().items():
            ax.plot(list(row), list(row.values()), "-o", markersize=3, label=f"N = {n}")
        wall = (data_max_n or {}).get(a.policy)
        if wall is not None:
            ax.axvline(wall, color="grey", ls=":", lw=1)
            ax.text(wall, 0.5, f" k = {wall}: longer than\n any list in its data", fontsize=7)
        ax.set(xlabel="answers held (k)", ylabel="share of turns exact", ylim=(-0.02, 1.02))
        ax.set_title(f"{a.policy}: teacher-forced turns ({a.split})", fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The run


def trained_pointer(path) -> str:
    """The state pointer a checkpoint was trained with (its SFT card; an adapter's card names its
    base): 'text' unless the card says otherwise."""
    data = read_card(path)
    if data is None:
        return "text"
    args = data.get("args", {})
    if not isinstance(args, dict):  # older cards wrote their args as a string
        return "text"
    if "pointer" in args:
        return args["pointer"]
    base = args.get("init")
    if not base:
        return "text"

    base = Path(base) if Path(base).is_dir() else DATA_DIR.parent / base  # cards name it from the repo root
    return trained_pointer(base) if base.is_dir() and base.resolve() != Path(path).resolve() else "text"


def diagnose(
    path: str,
    label: str,
    objectives=(2, 8, 16),
    episodes: int = 32,
    split: str = "dev",
    seed: int = 0,
    data: str | None = None,
    max_new_tokens: int = 192,
    progress: bool = True,
) -> Anatomy:
    """Free play and teacher-forced turns of the checkpoint at `path` beside the teacher (mem1 agent)."""

    model, tokenizer = load_policy(path)
    domain = load_domain("qa", data, pointer=trained_pointer(path))
    domain.check_tokenizer(tokenizer, label)  # a world of names it cannot write: one line, nothing played
    teacher = domain.teacher()
    policy = ModelPolicy(model, tokenizer, GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0))
    divergences, checks = [], []
    for n in tqdm(objectives, desc=f"diagnose {label}", disable=not progress):
        tasks = domain.tasks(split, n, episodes, seed=seed)
        envs = [domain.environment(t) for t in tasks]
        played = run_episodes(policy, tokenizer, envs, RolloutConfig(seed=seed, progress=False), tasks)
        divergences += [first_divergence(t, tokenizer, teacher) for t in played]
        forced = teacher_trajectories(domain, tokenizer, split, n, episodes, seed=seed)
        contexts = [t.context_ids(j) for t in forced for j in range(len(t.turns))]
        policy.clear_prefix_cache()
        responses = policy.respond(contexts, [torch.Generator() for _ in contexts])
        texts = [tokenizer.decode(r.ids, skip_special_tokens=False) for r in responses]
        checks += teacher_forced_checks(forced, texts, tokenizer)
    return Anatomy(label, split, divergences, checks)
