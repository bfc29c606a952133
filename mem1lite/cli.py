"""`mem1`: the command line. A thin layer: every command calls a function of the package.

Errors the user can fix (bad flags, missing or corrupted data, an existing output, a refused
write, another run on the same output) print one line, `mem1: error: ...`, and exit with status 2;
nothing half-written is left behind (`error_line` says which line each error gets). An unexpected
exception is a bug: one line says so and names a file holding its traceback (MEM1_TRACEBACK=1
raises it instead). Every size is bounded by the parser and flags that do nothing in the chosen
mode are refused (`_refuse_unused`), before any work.

Imports: only light modules (files, store, terms, world: no torch, no numpy) at the top, so that
`mem1 --help` and argument errors answer at once; each command imports what it runs inside its
function (torch, transformers and the training stack take seconds to import). A test checks that
importing this module leaves torch unimported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .files import check_output, lock, lock_path, save_figure, write_failure_line, write_text
from .teacher import POINTERS
from .terms import AGENTS, LAYOUTS
from .world import DEFAULT_WORLD_DIR, SPLITS


class UserError(Exception):
    """An error caused by the command's input; printed as one line."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


MAX_OBJECTIVES = 64
"""largest task size N the command line takes: 4x the paper's largest (16). A mem1 context stays
~19 N + 300 tokens (1.5 k at N = 64, within the tiny model's 8,192 positions) and an episode has
2 N + 2 turns; a size past this is a typo more likely than a study, and would play for hours first"""
MAX_EPISODES = 100_000
"""most episodes (or tasks) one command plays: 100x the test split's 1,000 questions, and hours of
play even for the teacher"""


def _at_most(limit: int, why: str):
    """An argparse type: a whole number in 1..limit; `why` says where the limit comes from."""

    def parse(text: str) -> int:
        value = _positive_int(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"expected at most {limit:,} ({why}), got {value:,}")
        return value

    return parse


_objectives = _at_most(MAX_OBJECTIVES, "4x the paper's largest N; MAX_OBJECTIVES in mem1lite/cli.py")
_episodes = _at_most(MAX_EPISODES, "hours of play already; MAX_EPISODES in mem1lite/cli.py")
MAX_SEED = 2**32 - 1
"""the largest seed numpy's generators take (a larger or negative one is refused by them, later)"""
MAX_TOKENS = 8192
"""longest response or kept history the command line takes: the tiny model's 8,192 positions (a
KV cache of 1e9 tokens asked for 256 GB before this bound)"""
MAX_STEPS = 100_000
"""most PPO steps: ~70 days at the quick preset's minute a step"""
MAX_BATCH = 4096
"""most episodes generated together or played a step (64x the default batch)"""
MAX_BENCH_TASKS = 40_000
"""most teacher tasks `mem1 bench data` builds: the largest measured (36,000) took 258 s"""
MAX_MINUTES = 10_080.0
"""the longest time budget: a week"""
MAX_SCALE = 100.0
"""the largest factor on a preset's time budgets"""


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..{MAX_SEED:,} (numpy's range), got {value:,}")
    return value


def _threads(text: str) -> int:
    """An argparse type: torch threads in 1..threads.max_threads() (4x the cores: more only waits)."""
    from .threads import max_threads

    return _at_most(max_threads(), "4x this machine's cores; more threads only wait")(text)


def _workers(text: str) -> int:
    """An argparse type: data worker processes in 1..threads.max_threads() (4x the cores)."""
    from .threads import max_threads

    return _at_most(max_threads(), "4x this machine's cores; more processes only wait")(text)


def _at_most_float(limit: float, why: str):
    def parse(text: str) -> float:
        value = _positive(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"expected at most {limit:,g} ({why}), got {value:,g}")
        return value

    return parse


def _name_list(text: str) -> str:
    """An argparse type: a comma-separated list of at least one name (kept as text; `_names` splits it)."""
    if not _names(text):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return text


_tokens = _at_most(MAX_TOKENS, "the tiny model's positions; MAX_TOKENS in mem1lite/cli.py")
_steps = _at_most(MAX_STEPS, "MAX_STEPS in mem1lite/cli.py")
_batch = _at_most(MAX_BATCH, "64x the default batch; MAX_BATCH in mem1lite/cli.py")
_bench_tasks = _at_most(
    MAX_BENCH_TASKS, "4 min of building on two workers; MAX_BENCH_TASKS in mem1lite/cli.py"
)
_repeats = _at_most(100, "a median of 100 rounds is exact enough")
_minutes = _at_most_float(MAX_MINUTES, "a week; MAX_MINUTES in mem1lite/cli.py")
_scale = _at_most_float(MAX_SCALE, "MAX_SCALE in mem1lite/cli.py")


def _given(args: argparse.Namespace, dest: str) -> bool:
    """Whether the command line set `dest` to other than its default."""
    for action in args._parser._actions:
        if action.dest == dest:
            default = action.default
            if isinstance(default, str) and action.type is not None:
                default = action.type(default)
            return getattr(args, dest) != default
    raise KeyError(dest)


def _refuse_unused(args: argparse.Namespace, dests, why: str) -> None:
    """Flags that do nothing in the chosen mode are refused in one line, never silently ignored."""
    given = [d for d in dests if _given(args, d)]
    if given:
        flags = ", ".join("--" + d.replace("_", "-") for d in given)
        one = len(given) == 1
        raise UserError(f"{flags} {'does' if one else 'do'} nothing {why}: drop {'it' if one else 'them'}")


def _objective_list(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated task sizes, each in 1..MAX_OBJECTIVES, in the order given
    (the one parser of a list of numbers; `_sizes` sorts it for the commands that sweep)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated task sizes, got {text!r}")
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers >= 1, got {text!r}")
    return tuple(_objectives(str(v)) for v in values)


def _sizes(values: tuple[int, ...]) -> tuple[int, ...]:
    """A sweep's task sizes: sorted, without repeats."""
    return tuple(sorted(set(values)))


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):  # nan or inf
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def _probability(text: str) -> float:
    value = _finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected 0 < p <= 1, got {value}")
    return value


# ---------------------------------------------------------------------------------------------
# mem1 world


def cmd_world(args: argparse.Namespace) -> None:
    from .world import WorldConfig, generate_world, save_world

    if args.check:
        _refuse_unused(args, ("seed", "force"), "with --check")
        from .data_check import check_world

        check_world(Path(args.data or args.out or DEFAULT_WORLD_DIR))
        return

    def write(out: Path) -> None:
        save_world(generate_world(WorldConfig(seed=args.seed)), out, force=True)

    _build_store(Path(args.out or DEFAULT_WORLD_DIR), "world", args.seed, args.force, write)


def _build_store(out: Path, what: str, seed: int, force: bool, write) -> None:
    """Build a data store (the world, the catalogue) into `out` under its lock; one that is already
    there is kept unless --force."""
    t0 = time.perf_counter()
    check_output(out, folder=True)
    with lock(lock_path(out), f"writing {out}"):  # two builds must not both pass the check below
        if out.exists() and any(out.iterdir()) and not force:
            raise UserError(f"{out} already holds a {what}; pass --force to overwrite it")
        write(out)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {what} seed={seed} to {out} ({size:.1f} MB) in {time.perf_counter() - t0:.1f} s")


# ---------------------------------------------------------------------------------------------
# mem1 tokenizer / mem1 rollout


def cmd_tokenizer(args: argparse.Namespace) -> None:
    from .assets import build_tiny_assets
    from .model import TINY_DIR
    from .webshop import load_catalogue
    from .world import load_world

    folder = args.out or TINY_DIR
    check_output(folder, folder=True)
    world, catalogue = load_world(args.world), load_catalogue(args.webshop)
    with lock(lock_path(folder), f"writing {folder}"):
        out = build_tiny_assets(world, folder, force=args.force, catalogue=catalogue)
    print(f"wrote the tokenizer (QA world + WebShop-lite text) and the untrained tiny Qwen2 config to {out}")


def cmd_rollout(args: argparse.Namespace) -> None:
    import torch

    from .domains import fit_objectives, load_domain
    from .evaluate import SCRIPTED
    from .generate import GenerationConfig, load_engine
    from .rollout import RolloutConfig, run_episodes
    from .trajectory import summarize, write_jsonl

    _check_outputs((args.out,))
    torch.manual_seed(args.seed)
    domain = load_domain(args.env, args.data)
    objectives = args.objectives or fit_objectives((2,), domain)[0]
    tasks = domain.tasks(args.split, objectives, args.episodes, seed=args.seed)
    generation = GenerationConfig(temperature=args.temperature, top_p=args.top_p, batch_size=args.batch_size)
    _check_domains((args.policy,), args.env)
    policy, tokenizer = load_engine(_shipped_path(args.policy), generation, respond_text=domain.teacher())
    if args.policy not in SCRIPTED:  # a trained model can write this world's names (one line if not)
        domain.check_tokenizer(tokenizer, args.policy)
    envs = [domain.environment(t) for t in tasks]
    trajs = run_episodes(
        policy,
        tokenizer,
        envs,
        RolloutConfig(agent=args.agent, seed=args.seed, truncate_tokens=args.truncate_tokens),
        tasks,
    )
    write_jsonl(trajs, args.out)
    s = summarize(trajs)
    print(
        f"wrote {len(trajs)} episodes to {args.out}: "
        + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items())
    )


# ---------------------------------------------------------------------------------------------
# mem1 webshop


def cmd_webshop(args: argparse.Namespace) -> None:
    from .webshop import DEFAULT_WEBSHOP_DIR, CatalogueConfig, generate_catalogue, save_catalogue

    if args.eval or args.records:
        _refuse_unused(args, ("force", "out", "check"), "with --eval or --records")
        return webshop_eval(args)
    _refuse_unused(
        args, ("agents", "objectives", "episodes", "split", "threads", "json", "markdown"), "without --eval"
    )
    if args.check:
        _refuse_unused(args, ("seed", "force"), "with --check")
        from .data_check import check_webshop

        check_webshop(Path(args.data or args.out or DEFAULT_WEBSHOP_DIR))
        return

    def write(out: Path) -> None:
        save_catalogue(generate_catalogue(CatalogueConfig(seed=args.seed)), out, force=True)

    _build_store(Path(args.out or DEFAULT_WEBSHOP_DIR), "catalogue", args.seed, args.force, write)


def webshop_eval(args: argparse.Namespace) -> None:
    """--eval plays the policies; --records joins saved --json runs (a baseline trained later)
    and plays nothing. Either way: the table on stdout, --json and --markdown files if asked."""
    from .evaluate import EvalError, load_records
    from .webshop_eval import WebShopEvalConfig, evaluate_webshop, webshop_table

    if args.eval and args.records:
        raise UserError("give --eval (play) or --records (join saved runs), not both")
    _check_outputs((args.json, args.markdown))
    if args.records:
        play = ("agents", "objectives", "episodes", "split", "seed", "threads", "data")
        _refuse_unused(args, play, "with --records (it joins saved runs)")
        try:
            records = load_records(_names(args.records))
        except EvalError as exc:
            raise UserError(str(exc)) from None
        if any(r.get("env") != "webshop" for r in records):
            raise UserError("--records: not webshop records (write them with mem1 webshop --eval --json)")
        _write_webshop_outputs(args, records, webshop_table(records))
        return
    _check_domains(_names(args.eval), "webshop")
    cfg = WebShopEvalConfig(
        policies=_names(args.eval),
        agents=_names(args.agents),
        objectives=_sizes(args.objectives),
        episodes=args.episodes,
        split=args.split,
        seed=args.seed,
        data=args.data,
        threads=args.threads,
    )
    try:
        records = evaluate_webshop(cfg)
    except EvalError as exc:
        raise UserError(str(exc)) from None
    _write_webshop_outputs(args, records, webshop_table(records))


def _write_webshop_outputs(args: argparse.Namespace, records: list[dict], table: str) -> None:
    print("\n" + table)
    _write_json(args.json, records)
    if args.markdown:
        write_text(args.markdown, table + "\n")
        print(f"wrote {args.markdown}")


# ---------------------------------------------------------------------------------------------
# mem1 sft

SFT_PRESETS = ["quick", "standard", "long", "n16", "n16-quick"]
"""sft.PRESETS' names, typed here so that `mem1 --help` does not import torch (a test keeps them equal)"""


def _base_model(args: argparse.Namespace, default: str | None) -> str | None:
    """--model and --init name the same thing (the base model); both given must agree."""
    if args.model and args.init and args.model != args.init:
        raise UserError(f"--model {args.model} and --init {args.init} disagree: give one of them")
    return args.model or args.init or default


def cmd_sft(args: argparse.Namespace) -> None:
    from .sft import make_args, train_sft

    objectives = args.objectives
    sft_args = make_args(
        args.preset,
        out=args.out,
        seed=args.seed,
        model=_base_model(args, "tiny"),
        objectives=objectives,
        agent=args.agent,
        rows=args.rows,
        env=args.env,
        data=args.data,
        threads=args.threads,
        tasks=args.tasks,
        data_workers=args.data_workers,
        pointer=args.pointer,
        resume=args.resume,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    if args.preset == "long" and not (args.init or args.model):
        raise UserError(
            "--preset long continues a trained model: give --init DIR (e.g. data/checkpoints/sft-mem1-n8)"
        )
    if args.minutes_scale != 1.0 or args.lr_scale != 1.0:
        from dataclasses import replace

        sft_args = replace(
            sft_args,
            stages=tuple(
                replace(s, minutes=s.minutes * args.minutes_scale, lr=s.lr * args.lr_scale)
                for s in sft_args.stages
            ),
        )
    train_sft(sft_args)


# ---------------------------------------------------------------------------------------------
# mem1 ppo


def cmd_ppo(args: argparse.Namespace) -> None:
    from .ppo import PPOError, make_args, train_ppo

    objectives = args.objectives
    init = _base_model(args, None)
    if init is None:
        raise UserError("name the base under the adapter: --init DIR (an SFT checkpoint) or --model PRESET")
    ppo_args = make_args(
        args.preset,
        out=args.out,
        init=init,
        seed=args.seed,
        resume=args.resume,
        steps=args.steps,
        minutes=args.minutes,
        objectives=objectives,
        agent=args.agent,
        threads=args.threads,
        env=args.env,
        data=args.data,
        advantage=args.advantage,
        group=args.group,
        episodes_per_step=args.episodes_per_step,
        layout=args.layout,
        temperature=args.temperature,
        actor_lr=args.actor_lr,
        kl_coef=args.kl_coef,
        max_new_tokens=args.max_new_tokens,
    )
    if args.group is not None and ppo_args.advantage != "group":
        raise UserError(
            f"--group does nothing under the {ppo_args.advantage} advantage (the {args.preset} preset's "
            "unless --advantage says otherwise): add --advantage group or drop --group"
        )
    try:
        train_ppo(ppo_args)
    except PPOError as exc:
        raise UserError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# mem1 eval


def _eval_config(args: argparse.Namespace):
    from .evaluate import EvalConfig

    return EvalConfig(
        policies=_names(args.policy),
        agents=_names(args.agents),
        # left unset: the config's own default, which a domain may fit (WebShop-lite: N = 1)
        objectives=_sizes(args.objectives) if args.objectives else EvalConfig.objectives,
        episodes=args.episodes,
        split=args.split,
        seed=args.seed,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        truncate_tokens=args.truncate_tokens,
        threads=args.threads,
        data=args.data,
        env=args.env,
        trajectories=args.trajectories,
    )


def cmd_eval(args: argparse.Namespace) -> None:
    _check_outputs((args.json, args.markdown, args.html), (args.figures, args.trajectories))
    if args.records:
        _refuse_unused(args, EVAL_PLAY_FLAGS, "with --records (it rebuilds the outputs from saved records)")
    with _one_run(args.figures, args.trajectories):
        _eval(args)


EVAL_PLAY_FLAGS = ("policy", "agents", "objectives", "episodes", "split", "seed", "temperature", "top_p")
EVAL_PLAY_FLAGS += (
    "max_new_tokens",
    "batch_size",
    "truncate_tokens",
    "threads",
    "data",
    "env",
    "trajectories",
)
"""the flags of `mem1 eval` that only playing reads"""


def _one_run(*folders):
    """The locks of a command's output folders (files.lock: one run per output folder)."""
    import contextlib

    stack = contextlib.ExitStack()
    for folder in folders:
        if folder:
            stack.enter_context(lock(lock_path(folder), f"writing {folder}"))
    return stack


def _locked(folder, work, *args):
    """`work(*args)` under the lock of its output folder."""
    with _one_run(folder):
        return work(*args)


def _eval(args: argparse.Namespace) -> None:
    from .evaluate import evaluate
    from .report import check_targets, per_objective_table, results_table, to_markdown, write_outputs

    if args.records:  # rebuild the outputs from saved records: nothing is played
        from .evaluate import load_records

        records, seconds = load_records(_names(args.records)), None
    else:
        _check_domains(_names(args.policy), args.env)
        run = evaluate(_eval_config(args))
        records, seconds = run.records, run.seconds
    print("\n" + to_markdown(results_table(records)))
    print("\nEM per objective:\n" + to_markdown(per_objective_table(records)))
    print("\n" + "\n".join(c.line for c in check_targets(records)))
    written = write_outputs(records, args.json, args.markdown, args.figures, args.html)
    for path in written:
        if path.suffix != ".png":
            print(f"wrote {path}")
    if args.figures:
        print(f"wrote figures to {args.figures}")
    if seconds is not None:
        print(f"total wall time {seconds:.1f} s")


# ---------------------------------------------------------------------------------------------
# mem1 diagnose


def cmd_diagnose(args: argparse.Namespace) -> None:
    from .evaluate import resolve_policy

    _check_outputs((args.json, args.markdown, args.figure))
    if (args.policy is None) == (args.records is None):
        raise UserError("give --policy (play and diagnose) or --records (a saved --json: tables again)")
    if args.records:
        _refuse_unused(args, ("objectives", "episodes", "split", "seed", "threads", "data"), "with --records")
    t0 = time.perf_counter()
    if args.records:
        from .anatomy import Anatomy, anatomy_figure

        try:
            anatomy = Anatomy.from_json(Path(args.records).read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"{args.records} is not a saved diagnosis ({type(exc).__name__}: {exc})"
            ) from None
    else:
        objectives = _sizes(args.objectives)
        path = resolve_policy(args.policy)
        if path in ("teacher", "tiny", "paced"):
            raise UserError(f"diagnose compares a trained checkpoint with the teacher, not {path!r}")
        _check_domains((args.policy,), "qa")
        from .anatomy import anatomy_figure, diagnose
        from .threads import use_threads

        use_threads(args.threads, path)
        anatomy = diagnose(path, args.policy, objectives, args.episodes, args.split, args.seed, args.data)
    text = anatomy.markdown()
    print(text)
    if args.markdown:
        write_text(args.markdown, text)
    if args.json:
        write_text(args.json, anatomy.to_json() + "\n")
    if args.figure:
        save_figure(anatomy_figure(anatomy), args.figure)
    print(f"diagnosed {anatomy.policy} in {time.perf_counter() - t0:.1f} s")


# ---------------------------------------------------------------------------------------------
# mem1 demo


def cmd_demo(args: argparse.Namespace) -> None:
    from .data_check import check_world
    from .demo import DemoConfig, run_demo
    from .evaluate import EvalError

    path = Path(args.data or DEFAULT_WORLD_DIR)
    if not (path / "manifest.json").exists():
        print(f"no world at {path}: building it (seed 0)")
        cmd_world(argparse.Namespace(check=False, out=str(path), data=None, seed=0, force=False))
    check_world(path)
    t0 = time.perf_counter()
    cfg = DemoConfig(
        out=args.out,
        train=args.train or os.environ.get("TRAIN", "0") not in ("", "0"),
        objectives=_sizes(args.objectives),
        episodes=args.episodes,
        threads=args.threads,
        data=str(path),
        **{k: v for k, v in (("policy", args.policy), ("baseline", args.baseline)) if v},
    )
    try:
        _locked(args.out, run_demo, cfg)  # one demo per report folder
    except EvalError as exc:
        raise UserError(str(exc)) from None
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min")


# ---------------------------------------------------------------------------------------------
# mem1 checkpoints, mem1 chain


def cmd_chain(args: argparse.Namespace) -> None:
    from .chain import run_chain

    print(f"the headline model is {run_chain(args.out, args.threads)}")


def cmd_checkpoints(args: argparse.Namespace) -> None:
    from .checkpoints import index_markdown, index_rows
    from .files import write_text

    page = index_markdown(index_rows())
    if args.out:
        write_text(Path(args.out), page)
        print(f"wrote {args.out}")
    else:
        print(page, end="")


# ---------------------------------------------------------------------------------------------
# mem1 bench


def cmd_bench(args: argparse.Namespace) -> None:
    used = BENCH_FLAGS[args.what] + (("checkpoints", "figure") if args.deviation else ())
    every = {d for flags in BENCH_FLAGS.values() for d in flags}
    _refuse_unused(args, sorted(every - set(used)), f"in `mem1 bench {args.what}`")
    _check_outputs((args.json, args.figure))
    if args.what == "rollout":
        from .bench import RolloutBenchConfig, bench_rollout

        cfg = RolloutBenchConfig(
            teacher_episodes=args.teacher_episodes,
            policy=args.policy,
            batch_episodes=args.batch_episodes,
            single_episodes=args.single_episodes,
            repeats=args.repeats,
            threads=args.threads,
            data=args.data,
        )
        _write_json(args.json, bench_rollout(cfg))
        return
    if args.what == "generate":
        from .bench import GenerateBenchConfig, bench_generate
        from .generate import ENGINES

        engines = _names(args.engines) if args.engines else tuple(ENGINES)
        unknown = [e for e in engines if e not in ENGINES]
        if unknown:
            raise UserError(f"--engines: unknown {', '.join(unknown)}; expected some of {', '.join(ENGINES)}")
        cfg = GenerateBenchConfig(
            engines=engines,
            episodes=args.episodes or 16,
            max_new_tokens=args.max_new_tokens,
            repeats=args.repeats,
            policy=args.policy,
            threads=args.threads,
            data=args.data,
        )
        _write_json(args.json, bench_generate(cfg))
        return
    if args.what == "masks" and args.deviation:
        from .layout_check import DEFAULT_CHECKPOINTS, bench_layout_deviation, plot_stitched_by_turn

        _check_outputs((args.json, args.figure))
        checkpoints = _names(args.checkpoints) if args.checkpoints else DEFAULT_CHECKPOINTS
        records = bench_layout_deviation(checkpoints, episodes=args.episodes or 4, threads=args.threads)
        _write_json(args.json, records)
        if args.figure:
            save_figure(plot_stitched_by_turn(records), args.figure)
        return
    if args.what == "data":
        from .bench import bench_data

        objectives = args.objectives or tuple(range(1, 17))
        _write_json(args.json, bench_data(args.tasks, objectives, data=args.data))
        return
    if args.what == "sft":
        from .bench import bench_sft

        _check_outputs((args.json,))
        objectives = args.objectives or tuple(range(1, 17))
        records = bench_sft(
            objectives,
            episodes=args.episodes or 64,
            steps=args.steps,
            repeats=args.repeats,
            threads=args.threads,
            data=args.data,
        )
        _write_json(args.json, records)
        return
    if args.what == "ppo":
        from .bench import bench_ppo
        from .evaluate import resolve_policy

        init = resolve_policy("sft-n16" if args.policy == "tiny" else args.policy)
        objectives = args.objectives or (2, 8)
        records = bench_ppo(
            init,
            objectives,
            args.episodes or 8,
            args.threads,
            args.data,
            compare=args.compare,
            repeats=args.repeats,
        )
        _write_json(args.json, records)
        return
    if args.what == "masks":
        from .bench import bench_masks

        objectives = args.objectives or (2, 8)
        records = bench_masks(
            objectives,
            episodes=args.episodes or 4,
            repeats=args.repeats,
            agent=args.agent,
            threads=args.threads,
        )
        _write_json(args.json, records)
        return
    from .bench import bench_retrieval

    records = bench_retrieval(Path(args.data or DEFAULT_WORLD_DIR), limit=args.limit)
    _write_json(args.json, records)


BENCH_FLAGS = {
    "retrieval": ("data", "limit"),
    "masks": ("objectives", "episodes", "repeats", "agent", "threads", "deviation", "checkpoints", "figure"),
    "rollout": (
        "teacher_episodes",
        "policy",
        "batch_episodes",
        "single_episodes",
        "repeats",
        "threads",
        "data",
    ),
    "generate": ("engines", "episodes", "max_new_tokens", "repeats", "policy", "threads", "data"),
    "data": ("tasks", "objectives", "data"),
    "ppo": ("policy", "objectives", "episodes", "threads", "data", "compare", "repeats"),
    "sft": ("objectives", "episodes", "steps", "repeats", "threads", "data"),
}
"""the flags each `mem1 bench WHAT` reads (--json: all); any other given is refused"""


def _shipped_path(name: str) -> str:
    """A shipped checkpoint's name (`mem1 checkpoints`) -> its folder, as `mem1 eval` takes it;
    any other name (teacher, a folder, a model preset) unchanged."""
    from .evaluate import SHIPPED, shipped_checkpoint

    return str(shipped_checkpoint(name)) if name in SHIPPED else name


def _check_domains(policies, env: str) -> None:
    """Each trained policy is played on the domain its card says it was trained on (model.check_domain)."""
    from .evaluate import EvalError, resolve_policy
    from .model import check_domain

    for name in policies:
        try:
            path = resolve_policy(name)
        except EvalError:  # a model preset (qwen2.5-0.5b) or a bad name: loading says which, in one line
            continue
        if path not in ("teacher", "tiny", "paced"):
            check_domain(path, env, name)


def _names(text: str) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c'): a comma-separated option, blanks dropped."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _check_outputs(files=(), folders=()) -> None:
    """Before any work: every output file and folder can be written (files.check_output), so a long
    run never ends in a lost write."""
    for path in files:
        if path:
            check_output(path)
    for path in folders:
        if path:
            check_output(path, folder=True)


def _write_json(path: str | None, payload) -> None:
    if path:
        write_text(path, json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# mem1 inspect


def cmd_inspect(args: argparse.Namespace) -> None:
    from .inspector import InspectorError
    from .inspector_html import export_html

    warn = lambda msg: print(f"mem1: warning: {msg} (line skipped)", file=sys.stderr)  # noqa: E731
    try:
        traj = export_html(
            args.path, args.episode, args.html, turn=args.turn, layout=args.layout, token=args.token,
            tokenizer=args.tokenizer, compare=args.compare or (), warn=warn,
        )  # fmt: skip
    except InspectorError as exc:
        raise UserError(str(exc)) from None
    print(
        f"wrote {args.html}: {traj.task_id} ({traj.agent}, {traj.policy}, N={traj.objectives}, "
        f"{len(traj.turns)} turns, reward {traj.reward:g})"
    )


# ---------------------------------------------------------------------------------------------


def _data_flag(p: argparse.ArgumentParser, help: str) -> None:
    """The domain's data folder, `args.data`; --world and --path are older spellings, still accepted."""
    p.add_argument("--data", "--world", "--path", dest="data", metavar="FOLDER", help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mem1", description="mem1lite: MEM1 reproduced on a laptop CPU")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("world", help="build (or --check) the QA world")
    p.add_argument("--out", help=f"folder to write (default {DEFAULT_WORLD_DIR})")
    p.add_argument("--seed", type=_seed, default=0, help="world seed (same seed, same bytes)")
    p.add_argument("--force", action="store_true", help="overwrite an existing world")
    p.add_argument("--check", action="store_true", help="verify a world and print its figures")
    _data_flag(p, "world folder for --check (default: --out or the shipped one)")
    p.set_defaults(func=cmd_world, _parser=p)

    p = sub.add_parser("tokenizer", help="train the tokenizer and write the untrained tiny config")
    p.add_argument("--out", help="folder (default data/tiny)")
    p.add_argument("--world", help="world folder (default data/qa)")
    p.add_argument("--webshop", help="WebShop-lite catalogue folder (default data/webshop)")
    p.add_argument("--force", action="store_true", help="overwrite")
    p.set_defaults(func=cmd_tokenizer, _parser=p)

    p = sub.add_parser("rollout", help="play episodes with a policy and an agent, write jsonl trajectories")
    p.add_argument("--policy", default="teacher", help="teacher, tiny (untrained) or a checkpoint directory")
    p.add_argument("--agent", default="mem1", choices=AGENTS)
    p.add_argument("--env", default="qa", choices=["qa", "webshop"], help="the domain")
    p.add_argument(
        "--objectives",
        type=_objectives,
        default=None,
        help="questions (webshop: goals) per task (N; default 2, webshop 1)",
    )
    p.add_argument("--episodes", type=_episodes, default=8)
    p.add_argument("--split", default="dev", choices=list(SPLITS))
    p.add_argument("--seed", type=_seed, default=0, help="draws the tasks and the sampling")
    p.add_argument("--temperature", type=_non_negative, default=1.0, help="0 for greedy decoding")
    p.add_argument("--top-p", type=_probability, default=1.0)
    p.add_argument("--batch-size", type=_batch, default=64)
    p.add_argument("--truncate-tokens", type=_tokens, default=512, help="history kept by truncate")
    _data_flag(p, "the domain's data folder (default data/qa or data/webshop)")
    p.add_argument("--out", required=True, help="jsonl file to write")
    p.set_defaults(func=cmd_rollout, _parser=p)

    p = sub.add_parser("webshop", help="build (or --check) the WebShop-lite catalogue; --eval its table")
    p.add_argument("--out", help="folder to write (default data/webshop)")
    p.add_argument("--seed", type=_seed, default=0, help="catalogue seed (same bytes); --eval: tasks")
    p.add_argument("--force", action="store_true", help="overwrite an existing catalogue")
    p.add_argument("--check", action="store_true", help="verify a catalogue and print its figures")
    _data_flag(p, "catalogue folder for --check and --eval (default: the shipped one)")
    p.add_argument(
        "--eval", type=_name_list, metavar="POLICIES", help="teacher, tiny or checkpoints, comma-separated"
    )
    p.add_argument(
        "--agents", type=_name_list, default="mem1,full", help="--eval: comma-separated memory policies"
    )
    p.add_argument(
        "--objectives",
        type=_objective_list,
        default="1",
        help="--eval: comma-separated task sizes N, goals bought per task (1 to 4; default 1)",
    )
    p.add_argument("--episodes", type=_episodes, default=100, help="--eval: tasks per N (the same for all)")
    p.add_argument("--split", default="test", choices=list(SPLITS), help="--eval: goal split")
    p.add_argument("--threads", type=_threads, default=None, help="--eval: torch CPU threads")
    p.add_argument("--json", help="--eval / --records: write the records here")
    p.add_argument(
        "--records", type=_name_list, help="join saved --eval --json files (comma-separated); plays nothing"
    )
    p.add_argument("--markdown", help="--eval / --records: write the table here")
    p.set_defaults(func=cmd_webshop, _parser=p)

    p = sub.add_parser("sft", help="supervised warm start on teacher trajectories (TRL SFTTrainer)")
    p.add_argument(
        "--preset",
        default="quick",
        choices=SFT_PRESETS,
        help="n16: the headline recipe from scratch (N = 1..16, ~2 h); n16-quick: its mechanics in a "
        "minute; long: continue --init on N = 1..16",
    )
    p.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--init", help="start from this checkpoint directory (the same as --model DIR)")
    p.add_argument(
        "--model",
        help="base model: tiny (default, from scratch), qwen2.5-0.5b (a local copy) or a directory "
        "(a `mem1 tokenizer --out` folder: from scratch with that tokenizer)",
    )
    p.add_argument(
        "--objectives", type=_objective_list, help="comma-separated task sizes of the data, e.g. 2 or 1,2,3,4"
    )
    p.add_argument("--agent", default=None, choices=["mem1", "full"], help="whose view the samples take")
    p.add_argument(
        "--rows",
        default=None,
        choices=["turn", "episode"],
        help="a sample per turn (default) or per episode (--agent full: one row, ~1/3 the tokens fed; mem1: "
        "the packed layout, the prompt once an episode, stages with the loss on responses only)",
    )
    p.add_argument("--threads", type=_threads, default=None, help="torch CPU threads")
    p.add_argument("--minutes-scale", type=_scale, default=1.0, help="scale every stage's time budget")
    p.add_argument(
        "--lr-scale",
        type=_positive,
        default=1.0,
        help="scale every stage's learning rate (a gentler continuation)",
    )
    p.add_argument("--env", default="qa", choices=["qa", "webshop"], help="the domain")
    _data_flag(p, "the domain's data folder (default data/qa or data/webshop)")
    p.add_argument("--tasks", type=_episodes, default=None, help="teacher tasks played for the data")
    p.add_argument(
        "--data-workers",
        type=_workers,
        default=None,
        help="processes playing the teacher for the data (default min(2, cores); the same rows)",
    )
    p.add_argument(
        "--pointer",
        default=None,
        choices=POINTERS,
        help="the teacher's state names its question by text, by number and text, or (hop) also "
        "says which hop of the question `now` is",
    )
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in OUT.partial")
    p.add_argument(
        "--checkpoint-minutes",
        type=_non_negative,
        default=None,
        help="minutes between checkpoints in OUT.partial (default 10; 0: at stage ends only)",
    )
    p.set_defaults(func=cmd_sft, _parser=p)

    p = sub.add_parser("ppo", help="LoRA PPO on masked trajectories, from an SFT checkpoint")
    p.add_argument("--preset", default="quick", choices=["quick", "standard"])
    p.add_argument("--init", help="SFT checkpoint directory: the frozen base under the adapter")
    p.add_argument("--model", help="or a model preset as the base: qwen2.5-0.5b (a local copy), tiny")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--steps", type=_steps, default=None, help="override the preset's step count")
    p.add_argument("--minutes", type=_minutes, default=None, help="override the preset's time budget")
    p.add_argument(
        "--objectives", type=_objective_list, help="comma-separated task sizes, cycled over steps (default 2)"
    )
    p.add_argument(
        "--advantage", default=None, choices=["gae", "group"], help="baseline: the critic, or a group's mean"
    )
    p.add_argument("--group", type=_batch, default=None, help="episodes per task (--advantage group)")
    p.add_argument("--episodes-per-step", type=_batch, default=None, help="override the preset's")
    p.add_argument("--temperature", type=_positive, default=None, help="sampling temperature (default 1)")
    p.add_argument("--actor-lr", type=_positive, default=None, help="LoRA learning rate (default 2e-4)")
    p.add_argument(
        "--kl-coef", type=_non_negative, default=None, help="per-token KL penalty to the reference (1e-3)"
    )
    p.add_argument("--max-new-tokens", type=_tokens, default=None, help="longest response (the preset's)")
    p.add_argument(
        "--layout",
        default=None,
        choices=LAYOUTS,
        help="how training scores a trajectory (masks.py): packed (exact, default) or stitched (the paper's)",
    )
    p.add_argument("--agent", default=None, choices=["mem1", "full"], help="memory policy of the rollouts")
    p.add_argument("--threads", type=_threads, default=None)
    p.add_argument("--env", default="qa", choices=["qa", "webshop"], help="the domain")
    _data_flag(p, "the domain's data folder (default data/qa or data/webshop)")
    p.set_defaults(func=cmd_ppo, _parser=p)

    p = sub.add_parser("eval", help="policies x agents x N on the same test tasks: table, figures, targets")
    p.add_argument(
        "--policy",
        "--policies",
        type=_name_list,
        default="teacher",
        help="comma-separated: teacher, tiny, paced, a shipped name (sft, ppo, sft-full, ppo-full, sft-n2, "
        "sft-n8, sft-n16, sft-text-n16, ...) or model dirs",
    )
    p.add_argument(
        "--agents", type=_name_list, default="mem1,full,truncate", help="comma-separated memory policies"
    )
    p.add_argument(
        "--objectives",
        type=_objective_list,
        default=None,
        help="comma-separated task sizes N (default 1,2,4,8,16; webshop 1)",
    )
    p.add_argument("--episodes", type=_episodes, default=32, help="tasks per N (the same for all)")
    p.add_argument("--split", default="test", choices=list(SPLITS))
    p.add_argument("--seed", type=_seed, default=0, help="draws the tasks and seeds the sampling")
    p.add_argument("--temperature", type=_non_negative, default=0.0, help="0 (default): greedy decoding")
    p.add_argument("--top-p", type=float, default=1.0, help="0 < p <= 1 (checked with the other inputs)")
    p.add_argument("--max-new-tokens", type=_tokens, default=192, help="longest response")
    p.add_argument("--batch-size", type=_batch, default=64, help="episodes generated together")
    p.add_argument("--truncate-tokens", type=_tokens, default=512, help="history kept by truncate")
    p.add_argument("--threads", type=_threads, default=None, help="torch CPU threads")
    _data_flag(p, "the domain's data folder (default data/qa or data/webshop)")
    p.add_argument(
        "--env",
        default="qa",
        choices=["qa", "webshop"],
        help="the domain (webshop: N = 1 unless --objectives asks for up to 4)",
    )
    p.add_argument("--json", help="write the records (one per agent x policy x N) here")
    p.add_argument(
        "--records",
        help="comma-separated --json files of earlier runs: join them, rebuild the outputs (plays nothing)",
    )
    p.add_argument("--markdown", help="write the tables, target lines and text here")
    p.add_argument("--figures", help="write the figures (PNG) into this folder")
    p.add_argument("--html", help="write a self-contained HTML report here")
    p.add_argument("--trajectories", help="write every row's trajectories (jsonl) into this folder")
    p.set_defaults(func=cmd_eval, _parser=p)

    p = sub.add_parser(
        "diagnose", help="failure anatomy: a checkpoint beside the teacher (free play, forced)"
    )
    p.add_argument("--policy", help="a shipped name (sft, ppo, sft-n8, ...) or checkpoint dir")
    p.add_argument(
        "--records", type=_name_list, help="a saved --json: write its tables and figure again, play nothing"
    )
    p.add_argument(
        "--objectives", type=_objective_list, default="2,8,16", help="comma-separated task sizes N"
    )
    p.add_argument("--episodes", type=_episodes, default=32, help="tasks per N")
    p.add_argument("--split", default="dev", choices=list(SPLITS))
    p.add_argument("--seed", type=_seed, default=0, help="draws the tasks")
    p.add_argument("--threads", type=_threads, default=None, help="torch CPU threads")
    _data_flag(p, "the QA world folder (default data/qa)")
    p.add_argument("--markdown", help="write the tables here")
    p.add_argument("--json", help="write the tables and every episode's first divergence here")
    p.add_argument("--figure", help="write the figure (PNG) here")
    p.set_defaults(func=cmd_diagnose, _parser=p)

    p = sub.add_parser("demo", help="the main job: world check, checkpoints, a small sweep, a report")
    _data_flag(p, "world folder (default data/qa)")
    p.add_argument("--out", default="runs/demo", help="report folder (and quick checkpoints with --train)")
    p.add_argument("--train", action="store_true", help="train quick checkpoints first (or TRAIN=1)")
    p.add_argument("--policy", help="the mem1 model shown (default the headline; a shipped name or a folder)")
    p.add_argument(
        "--baseline", help="the full-context baseline (default the shipped one; a name or a folder)"
    )
    p.add_argument(
        "--objectives", type=_objective_list, default="1,2,4,8,16", help="comma-separated task sizes N"
    )
    p.add_argument("--episodes", type=_episodes, default=None, help="tasks per N (default 8, 4 with --train)")
    p.add_argument("--threads", type=_threads, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_demo, _parser=p)

    p = sub.add_parser("chain", help="the shipped headline model's four SFT runs, resumable (~4.5 h)")
    p.add_argument("--out", required=True, help="folder of the four runs (rerun the command to go on)")
    p.add_argument("--threads", type=_threads, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_chain, _parser=p)

    p = sub.add_parser("checkpoints", help="the shipped checkpoints: role, minutes, command, test figures")
    p.add_argument("--out", help="write the index here (e.g. docs/checkpoints.md) instead of printing it")
    p.set_defaults(func=cmd_checkpoints, _parser=p)

    p = sub.add_parser("bench", help="benchmarks that print ratios measured in one run")
    p.add_argument(
        "what",
        choices=["retrieval", "masks", "rollout", "generate", "data", "ppo", "sft"],
        help="what to measure",
    )
    _data_flag(p, "world folder (retrieval, rollout, generate, data; default data/qa)")
    p.add_argument("--limit", type=_episodes, default=None, help="questions per split (retrieval)")
    p.add_argument(
        "--objectives",
        type=_objective_list,
        default=None,
        help="N values, comma-separated (masks, ppo: default 2,8; data, sft: default 1..16)",
    )
    p.add_argument(
        "--tasks", type=_bench_tasks, default=200, help="teacher tasks of the data, all N together (data)"
    )
    p.add_argument(
        "--episodes",
        type=_batch,
        default=None,
        help="teacher trajectories per batch (masks, default 4); episodes batched (generate, default 16); "
        "episodes a step (ppo, default 8); teacher tasks of the data, the long preset's size mix (sft, "
        "default 64)",
    )
    p.add_argument(
        "--steps", type=_repeats, default=4, help="optimizer steps of each way per timed round (sft)"
    )
    p.add_argument(
        "--engines",
        type=_name_list,
        help="comma-separated generation engines, the first the reference (generate; default all)",
    )
    p.add_argument("--max-new-tokens", type=_tokens, default=64, help="response limit (generate)")
    p.add_argument(
        "--repeats",
        type=_repeats,
        default=3,
        help="timed rounds, median reported (masks, rollout, generate, sft, ppo --compare)",
    )
    p.add_argument("--agent", default="mem1", choices=AGENTS, help="memory policy (masks)")
    p.add_argument("--threads", type=_threads, default=None, help="torch CPU threads (masks, rollout, sft)")
    p.add_argument("--teacher-episodes", type=_episodes, default=100, help="tasks per agent and N (rollout)")
    p.add_argument(
        "--policy",
        default="tiny",
        help="tiny (untrained) or a checkpoint, for tokens/s (rollout, generate); "
        "the start (ppo: default sft-n16)",
    )
    p.add_argument("--batch-episodes", type=_batch, default=64, help="episodes batched together (rollout)")
    p.add_argument("--single-episodes", type=_repeats, default=8, help="episodes one at a time (rollout)")
    p.add_argument(
        "--deviation",
        action="store_true",
        help="masks: log-prob error of each layout vs per_turn on checkpoint rollouts, not speed",
    )
    p.add_argument(
        "--checkpoints",
        type=_name_list,
        help="comma-separated policies whose rollouts --deviation scores (default: sft-mem1, ppo-mem1)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="ppo: the step before and after ppo.py [11] side by side on the same episodes, --repeats rounds",
    )
    p.add_argument("--figure", help="write the figure (PNG) here (masks --deviation)")
    p.add_argument("--json", help="write the records here")
    p.set_defaults(func=cmd_bench, _parser=p)

    p = sub.add_parser("inspect", help="write a static HTML page of one episode of a trajectory jsonl")
    p.add_argument("path", help="trajectory jsonl file (mem1 rollout --out)")
    p.add_argument("--episode", type=int, required=True, help="0-based index among the file's valid records")
    p.add_argument("--html", required=True, help="HTML file to write (self-contained)")
    p.add_argument("--turn", type=int, default=None, help="turn shown on top (default: the last)")
    p.add_argument("--token", type=int, default=None, help="its token whose mask row is shown (-1: last)")
    p.add_argument("--layout", default="packed", choices=LAYOUTS, help="layout of the mask row")
    p.add_argument("--compare", nargs="*", help="more jsonl files holding the task under another agent")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the shipped data/tiny)")
    p.set_defaults(func=cmd_inspect, _parser=p)
    return parser


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def error_line(exc: BaseException) -> str:
    """The one line `main` prints for an error: the package's own errors (one line by design), a
    refused write (files.write_failure_line: the path and the cause), a bad value, an OS error
    naming its file; anything else is a bug, said as one and its traceback kept in a file."""
    mine = isinstance(exc, UserError) or type(exc).__module__.startswith("mem1lite")  # `python -m`: __main__
    mine = mine or (isinstance(exc, FileExistsError) and not exc.errno)
    if mine and not isinstance(exc, (KeyError, TypeError)):
        return _one_line(exc)
    line = write_failure_line(exc)
    if line is not None:
        return line
    if isinstance(exc, ValueError):
        return _one_line(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, MemoryError):
        return "out of memory: ask for less (fewer episodes, tokens or a smaller batch)"
    import tempfile
    import traceback

    where = "not kept"
    try:
        fd, where = tempfile.mkstemp(prefix="mem1-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write("".join(traceback.format_exception(exc)))
    except OSError:
        pass
    return (
        f"unexpected {type(exc).__name__}: {_one_line(exc)[:300]} (a bug in mem1lite: the traceback is "
        f"in {where}; MEM1_TRACEBACK=1 shows it)"
    )


def main(argv: list[str] | None = None) -> int:
    # read by OpenMP once, when torch loads (threads.py): idle threads sleep instead of spinning
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("mem1: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("MEM1_TRACEBACK", "") not in ("", "0"):
            raise
        print(f"mem1: error: {error_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
