"""`mem1`: the command line. A thin layer: every command calls a function of the package.

Errors the user can fix (bad flags, missing or corrupted data, an existing output) print one
line, `mem1: error: ...`, and exit with status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .world import DEFAULT_WORLD_DIR, SPLITS, DataError


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


# ---------------------------------------------------------------------------------------------
# mem1 world


def cmd_world(args: argparse.Namespace) -> None:
    from .world import WorldConfig, generate_world, save_world

    if args.check:
        check_world(Path(args.path or args.out or DEFAULT_WORLD_DIR))
        return
    out = Path(args.out or DEFAULT_WORLD_DIR)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise UserError(f"{out} already holds a world; pass --force to overwrite it")
    t0 = time.perf_counter()
    world = generate_world(WorldConfig(seed=args.seed))
    save_world(world, out, force=True)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote world seed={args.seed} to {out} ({size:.1f} MB) in {time.perf_counter() - t0:.1f} s")


def check_world(path: Path, samples: int = 3) -> dict:
    """Load (and verify) the world, print its statistics, retrieval figures and a few tasks."""
    from .retrieval import retrieval_recall
    from .world import load_world, make_tasks, world_statistics

    t0 = time.perf_counter()
    world = load_world(path)
    load_s = time.perf_counter() - t0
    stats = world_statistics(world)
    print(f"world {path} (seed {world.config.seed}), loaded and verified in {load_s:.1f} s")
    for key, value in stats.items():
        print(f"  {key:32s} {value}")
    recall = retrieval_recall(world, "dev")
    print(
        f"retrieval on dev ({recall['hops']} hops, canonical queries): "
        f"recall@1 {recall['recall@1']:.3f}  recall@3 {recall['recall@3']:.3f}  "
        f"index build {recall['index_seconds']:.2f} s  query {recall['query_ms']:.3f} ms"
    )
    for n in (1, 2):
        for task in make_tasks(world, "dev", n, samples, seed=0)[: 1 if n == 1 else samples - 1]:
            print(f"sample task {task.id}:")
            for i, (q, a) in enumerate(zip(task.questions, task.answers), 1):
                print(f"  {i}. {q}  ->  {a}")
    return stats | {f"dev_{k}": v for k, v in recall.items()}


# ---------------------------------------------------------------------------------------------
# mem1 demo


def cmd_demo(args: argparse.Namespace) -> None:
    path = Path(args.path or DEFAULT_WORLD_DIR)
    if not (path / "manifest.json").exists():
        print(f"no world at {path}: building it (seed 0)")
        cmd_world(argparse.Namespace(check=False, out=str(path), path=None, seed=0, force=False))
    check_world(path)


# ---------------------------------------------------------------------------------------------
# mem1 bench


def cmd_bench(args: argparse.Namespace) -> None:
    from .retrieval import retrieval_recall
    from .world import load_world

    world = load_world(Path(args.path or DEFAULT_WORLD_DIR))
    records = []
    for split in SPLITS:
        r = retrieval_recall(world, split, limit=args.limit)
        records.append({"bench": "retrieval", "split": split} | r)
        print(
            f"{split:5s} index {r['index_seconds']:.2f} s  query {r['query_ms']:.3f} ms  "
            f"recall@1 {r['recall@1']:.3f}  recall@3 {r['recall@3']:.3f}"
        )
    _write_json(args.json, records)


def _write_json(path: str | None, payload) -> None:
    """Write JSON atomically (temporary file, then rename), so a crash leaves no partial file."""
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out)


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mem1", description="mem1lite: MEM1 reproduced on a laptop CPU")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("world", help="build (or --check) the QA world")
    p.add_argument("--out", help=f"folder to write (default {DEFAULT_WORLD_DIR})")
    p.add_argument("--seed", type=int, default=0, help="world seed (same seed, same bytes)")
    p.add_argument("--force", action="store_true", help="overwrite an existing world")
    p.add_argument("--check", action="store_true", help="verify a world and print its figures")
    p.add_argument("--path", help="world folder for --check (default: --out or the shipped one)")
    p.set_defaults(func=cmd_world)

    p = sub.add_parser("demo", help="the main job: world check, and later the whole pipeline")
    p.add_argument("--path", help="world folder")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="benchmarks that print ratios measured in one run")
    p.add_argument("what", choices=["retrieval"], help="what to measure")
    p.add_argument("--path", help="world folder")
    p.add_argument("--limit", type=_positive_int, default=None, help="questions per split")
    p.add_argument("--json", help="write the records here")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (UserError, DataError, FileExistsError, ValueError) as exc:
        print(f"mem1: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mem1: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
