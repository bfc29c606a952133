"""`make demo` (`mem1 demo`): the main job, from checkpoints to the report.

    mem1 demo                        # the headline mem1 model against the baseline, report in runs/demo/
    mem1 demo --policy DIR           # another mem1 model (a checkpoint folder or a shipped name)
    TRAIN=1 mem1 demo                # the same with quick checkpoints trained into runs/demo/

It sits above evaluation and training: it picks the checkpoints (checkpoints.py names the
headline model, the full-context baseline and the N <= 4 contrast; or quick SFT and PPO runs
trained here), runs the sweeps of evaluate.py and writes the report of report.py. The PASS / FAIL
lines are about the headline model (`policy`) against the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import ppo, sft
from .checkpoints import BASELINE, CONTRAST, HEADLINE
from .domains import load_domain
from .evaluate import (
    SHIPPED,
    EvalConfig,
    EvalError,
    EvalRun,
    check_sweeps,
    evaluate,
    policy_role,
    shipped_checkpoint,
    shown_path,
)
from .files import write_text
from .model import TINY_DIR, load_tokenizer
from .report import (
    check_targets,
    per_objective_table,
    reproduction_text,
    results_table,
    to_markdown,
    write_outputs,
)
from .terms import AGENTS

FALLBACK_BASELINES = ("ppo-full", "sft-full")
"""full-context checkpoints the demo takes, in order, when the baseline is not shipped"""


@dataclass
class DemoConfig:
    """`mem1 demo`: shipped checkpoints (or quick ones), a small sweep, a report under `out`."""

    out: str = "runs/demo"
    """folder of the report, figures, records (and the quick checkpoints with `train`)"""
    train: bool = False
    """train quick SFT and PPO checkpoints into out/ instead of loading the shipped ones (TRAIN=1)"""
    objectives: tuple[int, ...] = (1, 2, 4, 8, 16)
    """task sizes of the sweep"""
    episodes: int | None = None
    """tasks per N; None: 8, or 4 with `train` (quick models write 192-token garbage every turn, and
    their full-context rows at N = 16 would take most of the demo's time)"""
    threads: int | None = None
    """torch CPU threads (None: the thread policy, threads.py)"""
    data: str | None = None
    """the world folder (default data/qa)"""
    policy: str = HEADLINE
    """the mem1 model the targets are about: a shipped name (`mem1 checkpoints`) or a folder"""
    baseline: str = BASELINE
    """the full-context baseline (a shipped name or a folder); when the default is not shipped, the
    first of FALLBACK_BASELINES that is"""
    contrast: str | None = CONTRAST
    """the N <= 4 model shown beside the headline (why the data go to N = 16); None leaves it out"""


def _available(name: str) -> bool:
    """A shipped name whose folder is there, or an existing checkpoint folder."""
    return shipped_checkpoint(name).is_dir() if name in SHIPPED else Path(name).is_dir()


def demo_policies(cfg: DemoConfig, log: Callable[[str], None] = print) -> dict[str, str]:
    """policy -> its role in the report: teacher + the headline, the baseline and the contrast;
    or + quick ones trained now (TRAIN=1); or the teacher alone when no checkpoint is shipped."""
    if cfg.train:
        return {"teacher": "teacher"} | {p: policy_role(p) for p in train_quick(Path(cfg.out), cfg, log)}
    if not _available(cfg.policy):
        if cfg.policy != HEADLINE:  # a model the user named: say so, do not fall back
            raise EvalError(
                f"no checkpoint {cfg.policy!r}: give a shipped name (mem1 checkpoints) or a folder"
            )
        where = shown_path(shipped_checkpoint(HEADLINE))
        log(f"no shipped checkpoint at {where}: evaluating the teacher only (TRAIN=1 trains quick ones)")
        return {"teacher": "teacher"}
    policies = {"teacher": "teacher", cfg.policy: "rl" if policy_role(cfg.policy) == "rl" else "sft"}
    if cfg.baseline != BASELINE and not _available(cfg.baseline):
        raise EvalError(f"no checkpoint {cfg.baseline!r} for --baseline: give a shipped name or a folder")
    baseline = next((b for b in (cfg.baseline, *FALLBACK_BASELINES) if _available(b)), None)
    if baseline is not None:
        if baseline != cfg.baseline:
            log(f"the baseline {cfg.baseline} is not shipped: {baseline} stands in")
        policies[baseline] = "rl-full" if policy_role(baseline) == "rl-full" else "sft-full"
    if cfg.contrast and cfg.contrast not in policies and _available(cfg.contrast):
        policies[cfg.contrast] = "contrast"  # never the model the targets are about
    return policies


def train_quick(out: Path, cfg: DemoConfig, log: Callable[[str], None] = print) -> list[str]:
    """Quick SFT then quick PPO into out/sft and out/ppo (kept and reused when already complete)."""
    sft_dir, ppo_dir = out / "sft", out / "ppo"
    if not (sft_dir / "card.json").is_file():  # minutes of training for models the world would refuse
        load_domain("qa", cfg.data).check_tokenizer(load_tokenizer(TINY_DIR), "the tiny model")
    if (sft_dir / "card.json").is_file():
        log(f"reusing the quick SFT checkpoint {sft_dir}")
    else:
        log(f"training a quick SFT checkpoint into {sft_dir} (about 2 minutes)")
        sft.train_sft(sft.make_args("quick", out=str(sft_dir), threads=cfg.threads, data=cfg.data))
    if (ppo_dir / "card.json").is_file():
        log(f"reusing the quick PPO adapter {ppo_dir}")
    else:
        log(f"training a quick PPO adapter into {ppo_dir} (about 1 minute)")
        ppo.train_ppo(
            ppo.make_args("quick", out=str(ppo_dir), init=str(sft_dir), threads=cfg.threads, data=cfg.data)
        )
    return [str(sft_dir), str(ppo_dir)]


def demo_sweeps(
    policies: Sequence[str] | Mapping[str, str], objectives: Sequence[int], episodes: int, **kw
) -> list[EvalConfig]:
    """The small sweep of the demo and of notebook 04: three parts, all on the same tasks.

    1. the teacher under every agent: the harness and the memory picture, in seconds;
    2. each mem1-trained model under mem1 (the headline, the contrast): EM against N;
    3. the full-context baseline (a *-full role, else the main model: rl, else sft) under full.
    `policies` is a list of names (roles from the names, `policy_role`) or name -> role. A model's
    full-context rows cost the most by far (the whole history is prefilled at every turn), so
    only the baseline gets them; a trained model under truncate (it plays to the turn budget at
    N = 16: ~40% of the demo's time) is left to `mem1 eval --agents truncate`. `kw` goes to every
    EvalConfig.
    """
    roles = dict(policies) if isinstance(policies, Mapping) else {p: policy_role(p) for p in policies}
    models = [p for p in roles if p != "teacher"]
    mem1_models = [p for p in models if not roles[p].endswith("-full")]
    main = next(
        (p for want in ("rl", "sft") for p in mem1_models if roles[p] == want),
        mem1_models[0] if mem1_models else None,
    )
    baseline = next((p for p in models if roles[p].endswith("-full")), main)
    common = dict(objectives=tuple(objectives), episodes=episodes, roles=roles, **kw)
    plan = [
        (("teacher",) if "teacher" in roles else (), AGENTS),
        (tuple(mem1_models), ("mem1",)),
        ((baseline,) if baseline else (), ("full",)),
    ]
    return [EvalConfig(policies=p, agents=a, **common) for p, a in plan if p]


def run_sweeps(configs: Sequence[EvalConfig], log: Callable[[str], None] | None = print) -> EvalRun:
    """`evaluate` each config in turn; one EvalRun with every record. Every trained policy's
    tokenizer is checked against the world first (evaluate.check_sweeps), before the teacher plays."""
    check_sweeps(configs)
    total = EvalRun(records=[], seconds=0.0)
    for cfg in configs:
        run = evaluate(cfg, log)
        total.records += run.records
        total.seconds += run.seconds
        total.trajectories |= run.trajectories
    return total


def demo_summary(records: Sequence[dict]) -> str:
    """The end of the demo's output: EM per objective by N, the PASS / FAIL / SKIP lines and what
    reproduces, all computed from the records (README's demo block is this text, tests/test_docs.py)."""
    checks = check_targets(records)
    roles = {r["policy"]: r.get("role") for r in records}
    parts = [
        "EM per objective:\n" + to_markdown(per_objective_table(records)),
        "\n".join(c.line for c in checks),
        reproduction_text(records, checks).replace("**", ""),
    ]
    if "rl" not in roles.values():
        parts.append(
            "RL above SFT is not shown: no PPO run from the headline model beats it yet (README, Limits)."
        )
    return "\n\n".join(parts)


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> EvalRun:
    """Policies, the small sweep, then the table, the target lines and the report under cfg.out."""
    out = Path(cfg.out)
    policies = demo_policies(cfg, log)
    episodes = cfg.episodes or (4 if cfg.train else 8)
    configs = demo_sweeps(policies, cfg.objectives, episodes, threads=cfg.threads, data=cfg.data)
    log(
        f"evaluating on {episodes} test tasks per N={','.join(map(str, cfg.objectives))}, greedy: "
        + "; ".join(f"{', '.join(c.policies)} under {', '.join(c.agents)}" for c in configs)
    )
    run = run_sweeps(configs, log)
    log("\n" + to_markdown(results_table(run.records)))
    summary = demo_summary(run.records)
    log("\n" + summary)
    written = write_outputs(
        run.records, out / "eval.json", out / "report.md", out / "figures", out / "report.html"
    )
    written.append(write_text(out / "summary.txt", summary + "\n"))
    log(f"\nwrote {', '.join(str(p) for p in written if p.suffix != '.png')} and {out / 'figures'}/*.png")
    log(f"evaluation wall time {run.seconds:.0f} s")
    return run
