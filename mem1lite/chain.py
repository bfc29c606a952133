"""The shipped headline model's four SFT runs as one resumable command.

    mem1 chain --out runs/chain          # ~4.5 h on one thread; after a kill, the same command goes on

`sft-n16-hop2`, the headline model, was made by four runs, each continuing the last: N = 1..8 from
scratch with the text pointer, then N = 1..16 three times (the numbered pointer, then the hop
pointer twice, new tasks each time by seed). Their cards say so one by one; this runs them in
order into OUT/NAME. A stage whose card is there is done and skipped; a stage with an interrupted
run (OUT/NAME.partial) is continued with `--resume` (sft.py [7]: bit-identical to an uninterrupted
run); otherwise it starts from the previous stage's model. The `n16` preset (`mem1 sft --preset
n16`) is the one-run recipe that replaces this chain; the README compares the two.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

N16 = tuple(range(1, 17))

STAGES = (
    ("sft-n8", "standard", {"objectives": tuple(range(1, 9)), "seed": 0}),
    ("sft-n16", "long", {"objectives": N16, "pointer": "number", "seed": 0}),
    ("sft-n16-hop", "long", {"objectives": N16, "pointer": "hop", "seed": 1}),
    ("sft-n16-hop2", "long", {"objectives": N16, "pointer": "hop", "seed": 2}),
)
"""(name, sft preset, options) of each run, in order; each but the first starts from the one before"""


def chain_args(out: Path, threads: int | None = None) -> list:
    """The SFTArgs of every stage, each `--resume` when an interrupted run of it is there."""
    from .sft import make_args

    args, previous = [], None
    for name, preset, options in STAGES:
        folder = out / name
        partial = folder.with_name(folder.name + ".partial")
        model = {"model": str(previous)} if previous is not None else {}
        args.append(
            make_args(preset, out=str(folder), threads=threads, resume=partial.is_dir(), **options, **model)
        )
        previous = folder
    return args


def run_chain(out: str | Path, threads: int | None = None, log: Callable[[str], None] = print) -> Path:
    """Train every stage not yet done; returns the last stage's folder (the headline model)."""
    from .sft import train_sft

    out = Path(out)
    for args in chain_args(out, threads):
        folder = Path(args.out)
        if (folder / "card.json").is_file():
            log(f"chain: {folder} is done")
            continue
        log(f"chain: {'resuming' if args.resume else 'training'} {folder} ({args.preset} preset)")
        train_sft(args)
    return out / STAGES[-1][0]
