"""How far each masks.py layout is from the exact per-turn forward, on real rollouts of a policy.

    from mem1lite.layout_check import layout_deviation
    rows = layout_deviation(model, trajectories)      # per dtype, layout and turn: max / mean |Δ log-prob|

    mem1 bench masks --deviation --threads 1 --json runs/deviation.json --figure runs/deviation.png

The tests of masks.py check the layouts on small untrained models, where every token's hidden state
depends little on its context. A trained policy reads its context, so the stitched approximation
(a kept token's hidden state computed once, under the context where it first appeared, and reused by
later turns that saw it under another context) is measured here where it matters: on rollouts of the
shipped checkpoints, sampled at temperature 1.

Precisions ("dtype" in the records):

- `float64`: the model cast to float64 with stock Qwen2's float32 islands removed
  (`masks.without_float32_islands`): what is left is the layouts' own error.
- `float64-stock`: stock Qwen2 in float64 under eager attention, both islands left in (RMSNorm
  and the attention softmax in float32): what they alone cost. (Under SDPA only RMSNorm's island
  is left, and its rounding to float32 at every norm tends to snap two computations to the same
  values: packed and per_turn then agree exactly.)
- `float32`: the model as trained and sampled; against a float32 per-turn forward and against the
  log-probs recorded at generation (KV-cached decoding, another order of float operations).

It also measures the official MEM1 code's other mask pitfall (`official_mask_leak`): its actor
passes a 4D mask of ones and zeros in the model dtype, which SDPA reads as additive, so no key is
hidden; and checks that our layouts cannot leak (`layout_leaks`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .generate import GenerationConfig, ModelPolicy
from .masks import (
    LayoutOutput,
    additive_mask,
    bool_mask_as_float,
    causal_lm,
    layout_forward,
    without_float32_islands,
)
from .model import DATA_DIR, build_tiny_model, load_policy
from .protocol import QAEnvironment
from .retrieval import Retriever
from .rollout import RolloutConfig, run_episodes
from .terms import LAYOUTS
from .threads import use_threads
from .trajectory import Trajectory
from .world import load_world, make_tasks

DEFAULT_CHECKPOINTS = tuple(str(DATA_DIR / "checkpoints" / name) for name in ("sft-mem1", "ppo-mem1"))
SETUPS = (("mem1", 4), ("truncate", 2))
"""(agent, N) measured by the bench: mem1 prunes from turn 2 on; truncate (window 512 tokens) cuts
once the history outgrows the window, which N = 2 episodes of the trained policies reach"""
DTYPES = ("float64", "float32")
"""the precisions measured on every layout; `float64-stock` is measured on `packed` only"""
REFERENCE = "per_turn"
MAX_NEW_TOKENS = 160
"""the PPO preset's response limit: the rollouts are the ones PPO trains on"""
FLOOR = 1e-17
"""where the figure draws an exact 0 on its log scale"""


# ---------------------------------------------------------------------------------------------
# Rollouts


@functools.lru_cache(maxsize=2)
def _world_and_retriever(split: str):
    world = load_world()
    return world, Retriever(world.documents_of(split))


def sample_rollouts(
    model,
    tokenizer,
    agent: str,
    objectives: int,
    episodes: int,
    seed: int = 0,
    split: str = "dev",
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[Trajectory]:
    """`episodes` tasks of the shipped world played by `model` at temperature 1 (seeded per episode)."""
    world, retriever = _world_and_retriever(split)
    tasks = make_tasks(world, split, objectives, episodes, seed=seed)
    envs = [QAEnvironment.from_task(t, retriever) for t in tasks]
    policy = ModelPolicy(model, tokenizer, GenerationConfig(max_new_tokens=max_new_tokens, temperature=1.0))
    return run_episodes(policy, tokenizer, envs, RolloutConfig(agent=agent, seed=seed, progress=False), tasks)


# ---------------------------------------------------------------------------------------------
# Deviation from the per-turn forward


def by_turn(out: LayoutOutput, reference: torch.Tensor) -> list[dict]:
    """max and mean |log-prob - reference| over all response tokens (turn None), then per turn index."""
    d = (out.logprobs.detach().double() - reference.detach().double()).abs()[out.mask]
    turn = out.turn_index[out.mask]
    groups = [(None, d)] + [(j, d[turn == j]) for j in range(int(turn.max()) + 1)]
    return [
        {"turn": j, "tokens": int(x.numel()), "max_abs": float(x.max()), "mean_abs": float(x.mean())}
        for j, x in groups
        if x.numel()
    ]


def _in_dtype(model, label: str):
    """`model` itself when it already has the precision `label` names, else a converted copy."""
    dtype = torch.float64 if label.startswith("float64") else torch.float32
    if next(causal_lm(model).parameters()).dtype == dtype and label != "float64-stock":
        return model
    scorer = copy.deepcopy(model).to(dtype)
    if label == "float64-stock":  # eager: its softmax is the second float32 island
        causal_lm(scorer).config._attn_implementation = "eager"
    return scorer


def _precision(label: str):
    """The float64 measurement removes Qwen2's float32 islands; the others run stock Qwen2."""
    return without_float32_islands() if label == "float64" else contextlib.nullcontext()


def layout_deviation(
    model,
    trajs: Sequence[Trajectory],
    layouts: Sequence[str] = LAYOUTS,
    dtypes: Sequence[str] = DTYPES,
    recorded: bool = True,
) -> list[dict]:
    """Per precision, layout and turn: how far each layout's log-probs are from `per_turn`'s.

    `recorded=True` (`model` sampled `trajs`) also compares the float32 log-probs of every layout,
    `per_turn` included, with the ones recorded at generation. Rows are flat dicts: dtype, layout,
    reference (`per_turn` or `recorded`), turn (None: all turns), tokens, max_abs, mean_abs.
    """
    rows = []
    for label in dtypes:
        scorer = _in_dtype(model, label)
        with _precision(label), torch.no_grad():
            outs = {lay: layout_forward(scorer, trajs, lay) for lay in dict.fromkeys([REFERENCE, *layouts])}
        ref = outs[REFERENCE]
        for lay in layouts:
            head = {"dtype": label, "layout": lay}
            if lay != REFERENCE:
                rows += [head | {"reference": REFERENCE} | r for r in by_turn(outs[lay], ref.logprobs)]
            if recorded and label == "float32":
                rows += [
                    head | {"reference": "recorded"} | r for r in by_turn(outs[lay], ref.recorded_logprobs)
                ]
    return rows


def pick(rows: Sequence[dict], turn=None, **match) -> dict:
    """The one row with this turn (None: all turns) whose fields equal `match`."""
    found = [r for r in rows if r["turn"] == turn and all(r.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise KeyError(f"{len(found)} rows match turn={turn} {match}")
    return found[0]


# ---------------------------------------------------------------------------------------------
# Leaks


def _sequence_logprobs(lm, ids: list[int], pad: int, mask_fn, pad_id: int = 0) -> torch.Tensor:
    """Log-probs of ids[1:] given ids, one causal row with `pad` hidden padding tokens in front
    (position ids as without them), the 4D mask made by `mask_fn` from the bool visibility."""
    x = torch.tensor([[pad_id] * pad + list(ids)])
    L = x.shape[1]
    real = torch.arange(L) >= pad
    visible = torch.ones(L, L, dtype=torch.bool).tril() & real[None, :] | torch.eye(L, dtype=torch.bool)
    pos = torch.cat([torch.zeros(pad, dtype=torch.long), torch.arange(len(ids))])[None]
    param = next(lm.parameters())
    mask = mask_fn(visible[None].to(param.device), param.dtype)
    logits = lm(input_ids=x.to(param.device), attention_mask=mask, position_ids=pos.to(param.device)).logits
    logp = torch.log_softmax(logits[0, pad:-1].double(), -1)
    return logp.gather(-1, x[0, pad + 1 :, None].to(param.device))[:, 0]


def official_mask_leak(model, traj: Trajectory, turn: int = -1, pad: int = 8) -> dict:
    """What the official MEM1 actor's mask lets through, on one turn's context + response.

    The official actor hands the model a 4D mask of ones (may attend) and zeros in the model dtype
    (`masks.bool_mask_as_float`); transformers passes a 4D mask to SDPA as it is, and SDPA adds a
    float mask to the scores: +1 or +0, nothing hidden. Measured as max |Δ log-prob| of the
    response's earlier tokens when the last token changes (`future_*`), and of every token when
    `pad` padding tokens, hidden by the mask, are put in front (`padding_*`); `*_ours` with the
    additive mask of masks.py, same model, same call.
    """
    lm = causal_lm(model)
    t = traj.turns[turn]
    ids = traj.ids_of(t.spans) + list(t.output_ids)
    changed = ids[:-1] + [(ids[-1] + 1) % lm.config.vocab_size]
    out = {}
    with torch.no_grad():
        for name, fn in (("official", bool_mask_as_float), ("ours", additive_mask)):
            base = _sequence_logprobs(lm, ids, 0, fn)
            future = _sequence_logprobs(lm, changed, 0, fn)
            padded = _sequence_logprobs(lm, ids, pad, fn)
            # the last log-prob is of the changed token itself: only the ones before it must not move
            out[f"future_{name}"] = float((base[:-1] - future[:-1]).abs().max())
            out[f"padding_{name}"] = float((base - padded).abs().max())
    return out | {"tokens": len(ids), "dtype": str(next(lm.parameters()).dtype).removeprefix("torch.")}


def layout_leaks(model, trajs: Sequence[Trajectory], layout: str) -> dict:
    """Whether a layout lets anything but a token's own context through, as max |Δ log-prob|.

    `future`: the first response token of the last turn of trajectory 0 changes; every earlier
    token of that trajectory must keep its log-prob (`after`: how much the tokens from the change
    on moved, to show the change reached the model). `batch`: trajectory 0 scored alone and in a
    batch with the others (padding, other rows) must get the same log-probs.
    """
    first = trajs[0]
    changed = copy.deepcopy(first)
    last = changed.turns[-1]
    last.output_ids[0] = (last.output_ids[0] + 1) % causal_lm(model).config.vocab_size
    n = scored_tokens(first)
    before = n - len(last.output_ids)
    with torch.no_grad():
        alone = layout_forward(model, [first], layout).logprobs[0]
        moved = layout_forward(model, [changed], layout).logprobs[0]
        batched = layout_forward(model, trajs, layout).logprobs[0]
    return {
        "future": float((alone[:before] - moved[:before]).abs().max()),
        "after": float((alone[before:n] - moved[before:n]).abs().max()),
        "batch": float((alone[:n] - batched[:n]).abs().max()),
    }


def scored_tokens(traj: Trajectory) -> int:
    """Response tokens of a trajectory: the ones every layout scores."""
    return sum(len(t.output_ids) for t in traj.turns)


# ---------------------------------------------------------------------------------------------
# The bench


def bench_layout_deviation(
    checkpoints: Sequence[str] = DEFAULT_CHECKPOINTS,
    setups: Sequence[tuple[str, int]] = SETUPS,
    episodes: int = 4,
    seed: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """Layout deviation on rollouts of each checkpoint, under each (agent, N) of `setups`.

    Each checkpoint plays `episodes` dev tasks at temperature 1 (seed `seed`) and is scored on them
    in every precision of `DTYPES`. The untrained tiny model (seed 0) scores the first checkpoint's
    rollouts too (float64): how much of the stitched error is the training; and the first
    checkpoint scores its rollouts with `packed` in `float64-stock` too. Then the official
    mask's leak on the first rollout, for the first checkpoint and the tiny model. Flat records.
    """
    log = log or (lambda s: None)
    use_threads(threads, *checkpoints)
    tiny = build_tiny_model(seed=0)
    records, leak_traj = [], None
    for ckpt in checkpoints:
        model, tokenizer = load_policy(ckpt)
        name = Path(ckpt).name
        for agent, n in setups:
            trajs = sample_rollouts(model, tokenizer, agent, n, episodes, seed=seed)
            leak_traj = leak_traj or trajs[0]
            meta = {
                "bench": "masks-deviation",
                "sampler": name,
                "agent": agent,
                "objectives": n,
                "episodes": episodes,
                "seed": seed,
                "turns": sum(len(t.turns) for t in trajs),
                "policy_tokens": sum(scored_tokens(t) for t in trajs),
                "threads": torch.get_num_threads(),
            }
            rows = [meta | {"scorer": name} | r for r in layout_deviation(model, trajs)]
            if ckpt == checkpoints[0]:
                stock = layout_deviation(model, trajs, ("packed",), ("float64-stock",), recorded=False)
                rows += [meta | {"scorer": name} | r for r in stock]
                extra = layout_deviation(tiny, trajs, dtypes=("float64",), recorded=False)
                rows += [meta | {"scorer": "tiny"} | r for r in extra]
            records += rows
            for line in summary_lines(rows):
                log(line)
        if ckpt == checkpoints[0]:
            for scorer, m in ((name, model), ("tiny", tiny)):
                leak = official_mask_leak(m, leak_traj)
                records.append({"bench": "masks-official-mask", "sampler": name, "scorer": scorer} | leak)
                log(
                    f"official 4D ones/zeros mask, {scorer}: a later token moves earlier log-probs by "
                    f"{leak['future_official']:.2g} (ours {leak['future_ours']:.2g}), hidden padding by "
                    f"{leak['padding_official']:.2g} (ours {leak['padding_ours']:.2g})"
                )
    return records


def summary_lines(rows: Sequence[dict]) -> list[str]:
    """One line per (scorer, dtype, reference): the exact layouts' worst error, stitched by turn."""
    lines = []
    keys = dict.fromkeys((r["scorer"], r["dtype"], r["reference"]) for r in rows)
    for scorer, dtype, ref in keys:
        sel = [r for r in rows if (r["scorer"], r["dtype"], r["reference"]) == (scorer, dtype, ref)]
        r0 = sel[0]
        exact = max(r["max_abs"] for r in sel if r["turn"] is None and r["layout"] != "stitched")
        line = (
            f"{r0['sampler']:>9s} {r0['agent']:8s} N={r0['objectives']} scored by {scorer:9s} {dtype:13s} "
            f"vs {ref:8s}: exact layouts max {exact:.1e}"
        )
        st = [r for r in sel if r["layout"] == "stitched"]
        if st:
            every = next(r for r in st if r["turn"] is None)
            turns = " ".join(f"{r['mean_abs']:.2g}/{r['max_abs']:.2g}" for r in st if r["turn"] is not None)
            line += f"; stitched max {every['max_abs']:.3g} mean {every['mean_abs']:.3g}"
            line += f"; by turn mean/max {turns}"
        lines.append(line)
    return lines


# ---------------------------------------------------------------------------------------------
# The figure


def plot_stitched_by_turn(records: Sequence[dict], dtype: str = "float64"):
    """Mean (solid) and max (dashed) |Δ log-prob| of `stitched` against `per_turn` by turn, log
    scale, one panel per (agent, N), one colour per (scorer, sampler). Exact zeros sit at `FLOOR`."""
    import matplotlib.pyplot as plt

    rows = [
        r
        for r in records
        if r.get("bench") == "masks-deviation"
        and r["layout"] == "stitched"
        and r["dtype"] == dtype
        and r["reference"] == REFERENCE
        and r["turn"] is not None
    ]
    setups = list(dict.fromkeys((r["agent"], r["objectives"]) for r in rows))
    fig, axes = plt.subplots(1, len(setups), figsize=(5.2 * len(setups), 3.6), squeeze=False)
    for ax, (agent, n) in zip(axes[0], setups):
        mine = [r for r in rows if (r["agent"], r["objectives"]) == (agent, n)]
        for i, (scorer, sampler) in enumerate(dict.fromkeys((r["scorer"], r["sampler"]) for r in mine)):
            line = sorted(
                (r for r in mine if (r["scorer"], r["sampler"]) == (scorer, sampler)), key=lambda r: r["turn"]
            )
            turns = [r["turn"] for r in line]
            label = scorer if scorer == sampler else f"{scorer} (untrained) on {sampler}'s rollouts"
            for key, style in (("mean_abs", "-"), ("max_abs", "--")):
                ys = [max(r[key], FLOOR) for r in line]
                ax.semilogy(
                    turns,
                    ys,
                    style,
                    marker="o" if key == "mean_abs" else ".",
                    color=f"C{i}",
                    label=f"{label}, {key.removesuffix('_abs')}",
                )
        ax.axhline(FLOOR, color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("turn")
        ax.set_ylabel("|Δ log-prob| vs per_turn (nats)")
        ax.set_title(f"stitched, {agent} agent, N = {n} ({dtype}; 0 drawn at {FLOOR:.0e})", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig
