"""`make demo` (`mem1 demo`): the main job, from checkpoints to the report.

    mem1 demo                     # world check, shipped checkpoints, sweep, report in runs/demo/
    TRAIN=1 mem1 demo             # the same with quick checkpoints trained into runs/demo/

It sits above evaluation and training: it picks the checkpoints (shipped ones, or quick SFT and
PPO runs trained here), runs the sweeps of evaluate.py and writes the report of report.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import ppo, sft
from .evaluate import EvalConfig, EvalRun, evaluate, policy_role, shipped_checkpoint, shown_path
from .report import (
    check_targets,
    per_objective_table,
    reproduction_text,
    results_table,
    to_markdown,
    write_outputs,
)
from .terms import AGENTS


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


def demo_policies(cfg: DemoConfig, log: Callable[[str], None] = print) -> list[str]:
    """teacher + shipped checkpoints; or + quick ones trained now (TRAIN=1); or the teacher alone."""
    if cfg.train:
        return ["teacher", *train_quick(Path(cfg.out), cfg, log)]
    sft = shipped_checkpoint("sft")
    if not sft.is_dir():
        where = shown_path(sft)
        log(f"no shipped checkpoint at {where}: evaluating the teacher only (TRAIN=1 trains quick ones)")
        return ["teacher"]
    shipped = [n for n in ("sft", "ppo") if shipped_checkpoint(n).is_dir()]
    # the full-context baseline: after PPO if shipped, else its SFT
    baseline = next((n for n in ("ppo-full", "sft-full") if shipped_checkpoint(n).is_dir()), None)
    return ["teacher", *shipped] + ([baseline] if baseline else [])


def train_quick(out: Path, cfg: DemoConfig, log: Callable[[str], None] = print) -> list[str]:
    """Quick SFT then quick PPO into out/sft and out/ppo (kept and reused when already complete)."""
    sft_dir, ppo_dir = out / "sft", out / "ppo"
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


def demo_sweeps(policies: Sequence[str], objectives: Sequence[int], episodes: int, **kw) -> list[EvalConfig]:
    """The small sweep of the demo and of notebook 04: four parts, all on the same tasks.

    1. the teacher under every agent: the harness and the memory picture, in seconds;
    2. each mem1-trained model under mem1: EM against N, RL against SFT;
    3. the main model (RL, else the first) under truncate;
    4. the full-context baseline (a *-full checkpoint, else the main model) under full.
    A model's full-context rows cost the most by far (the whole history is prefilled at every turn),
    so only the baseline gets them. `kw` goes to every EvalConfig.
    """
    models = [p for p in dict.fromkeys(policies) if p != "teacher"]
    mem1_models = [p for p in models if not policy_role(p).endswith("-full")]
    main = next((p for p in mem1_models if policy_role(p) == "rl"), mem1_models[0] if mem1_models else None)
    baseline = next((p for p in models if policy_role(p).endswith("-full")), main)
    common = dict(objectives=tuple(objectives), episodes=episodes, **kw)
    plan = [
        (("teacher",) if "teacher" in policies else (), AGENTS),
        (tuple(mem1_models), ("mem1",)),
        ((main,) if main else (), ("truncate",)),
        ((baseline,) if baseline else (), ("full",)),
    ]
    return [EvalConfig(policies=p, agents=a, **common) for p, a in plan if p]


def run_sweeps(configs: Sequence[EvalConfig], log: Callable[[str], None] | None = print) -> EvalRun:
    """`evaluate` each config in turn; one EvalRun with every record."""
    total = EvalRun(records=[], seconds=0.0)
    for cfg in configs:
        run = evaluate(cfg, log)
        total.records += run.records
        total.seconds += run.seconds
        total.trajectories |= run.trajectories
    return total


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
    checks = check_targets(run.records)
    log("\n" + to_markdown(results_table(run.records)))
    log("\nEM per objective:\n" + to_markdown(per_objective_table(run.records)))
    log("\n" + "\n".join(c.line for c in checks))
    log("\n" + reproduction_text(run.records, checks).replace("**", ""))
    written = write_outputs(
        run.records, out / "eval.json", out / "report.md", out / "figures", out / "report.html"
    )
    log(f"\nwrote {', '.join(str(p) for p in written if p.suffix != '.png')} and {out / 'figures'}/*.png")
    log(f"evaluation wall time {run.seconds:.0f} s")
    return run
