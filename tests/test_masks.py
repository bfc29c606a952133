"""Masked-trajectory layouts (mem1lite.masks): exactness against generation, gradients, the
official bool-mask pitfall, the stitched approximation, mask structure, pictures and the bench.

Trajectories are sampled for real (temperature 1) by `ModelPolicy` from the very model that is
then re-scored, so the recorded log-probs are the generation-time ones. The float64 tests remove
stock Qwen2's two float32 islands (RMSNorm and eager softmax, see DESIGN.md): left in, they limit
agreement to ~1e-8 on average and ~1e-5 at worst, whatever the layout.

Small untrained models barely read their context, which hides the stitched error; the last
section measures it on rollouts of the shipped sft-mem1 checkpoint (mem1lite.layout_check).
"""

import json
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config

from mem1lite.generate import GenerationConfig, ModelPolicy
from mem1lite.masks import (
    ValueHead,
    additive_mask,
    bool_mask_as_float,
    build_layout,
    causal_lm,
    layout_forward,
    logprob_deviation,
    mask_row,
    packed_blocks,
    run_layout,
    without_float32_islands,
)
from mem1lite.model import DATA_DIR, build_tiny_model
from mem1lite.plots import plot_mask
from mem1lite.protocol import QAEnvironment
from mem1lite.retrieval import Retriever
from mem1lite.rollout import RolloutConfig, run_episodes
from mem1lite.terms import DEFAULT_LAYOUT, EXACT_LAYOUTS, LAYOUTS
from mem1lite.world import make_tasks

TRUNCATE_KEEP = 60
"""small enough that truncate cuts from the third turn on (responses 8, observations ~47 tokens)"""


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def float64_exact():
    """Stock Qwen2 computed in the model's dtype throughout (for the float64 tests)."""
    with without_float32_islands():
        yield


@pytest.fixture(scope="module")
def retriever(small_world):
    return Retriever(small_world.documents_of("dev"))


def tiny_config(tok):
    return Qwen2Config(
        vocab_size=(len(tok) + 63) // 64 * 64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        attn_implementation="sdpa",
    )


def with_lora(model):
    from peft import LoraConfig, get_peft_model

    # init_lora_weights=False: B is random, not zero, so the adapter changes every log-prob.
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "up_proj"])
    cfg.init_lora_weights = False
    return get_peft_model(model, cfg)


def sample(model, tok, world, retriever, agent, objectives=(1, 2), per_n=2, max_new_tokens=8):
    """Real sampled trajectories of mixed lengths (N = 1 and 2: different prompts and turn counts)."""
    trajs = []
    for n in objectives:
        tasks = make_tasks(world, "dev", n, per_n, seed=n)
        envs = [QAEnvironment.from_task(t, retriever) for t in tasks]
        policy = ModelPolicy(model, tok, GenerationConfig(max_new_tokens=max_new_tokens, temperature=1.0))
        cfg = RolloutConfig(agent=agent, seed=n, progress=False, truncate_tokens=TRUNCATE_KEEP)
        trajs += run_episodes(policy, tok, envs, cfg, tasks)
    return trajs


@pytest.fixture(scope="module")
def lora64(float64_exact, tokenizer):
    model = with_lora(build_tiny_model(tiny_config(tokenizer), seed=0, dtype=torch.float64))
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    return model


@pytest.fixture(scope="module")
def trajs64(lora64, tokenizer, small_world, retriever):
    """agent -> trajectories sampled by the float64 LoRA model, adapter on."""
    return {a: sample(lora64, tokenizer, small_world, retriever, a) for a in ("mem1", "full", "truncate")}


def set_attention(model, impl):
    causal_lm(model).config._attn_implementation = impl


# ---------------------------------------------------------------------------------------------
# The trajectories are what the tests need them to be


def test_sampled_trajectories_mix_lengths_and_truncate_cuts(trajs64):
    for agent, trajs in trajs64.items():
        assert len({len(t.prompt_ids) for t in trajs}) > 1, agent
        assert len({len(t.turns) for t in trajs}) > 1, agent
        assert all(t.temperature == 1.0 and any(lp != 0 for lp in t.turns[0].logprobs) for t in trajs)
    full_history = [
        sum(len(t.piece(q)) for q in range(2 * j)) for t in trajs64["truncate"] for j in range(len(t.turns))
    ]
    kept = [sum(c - a for p, a, c in turn.spans[1:]) for t in trajs64["truncate"] for turn in t.turns]
    assert any(h > k for h, k in zip(full_history, kept)), "truncate never cut"
    assert max(kept) <= TRUNCATE_KEEP


# ---------------------------------------------------------------------------------------------
# Exactness


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("agent", ["mem1", "full", "truncate"])
def test_exact_layouts_equal_generation_float64_lora(lora64, trajs64, agent, attn):
    set_attention(lora64, attn)
    try:
        for layout in EXACT_LAYOUTS:
            with torch.no_grad():
                out = layout_forward(lora64, trajs64[agent], layout)
            dev = logprob_deviation(out)
            assert dev["max_abs"] <= 1e-9, (layout, dev)
    finally:
        set_attention(lora64, "sdpa")


def test_exact_with_adapter_disabled(lora64, tokenizer, small_world, retriever):
    """The reference policy of PPO is the same PeftModel with its adapter off."""
    with lora64.disable_adapter():
        trajs = sample(lora64, tokenizer, small_world, retriever, "mem1", objectives=(2,), per_n=2)
        with torch.no_grad():
            off = layout_forward(lora64, trajs, "packed")
    assert logprob_deviation(off)["max_abs"] <= 1e-9
    with torch.no_grad():
        on = layout_forward(lora64, trajs, "packed")
    assert logprob_deviation(on)["max_abs"] > 1e-3  # the adapter matters


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_exact_layouts_equal_generation_float32(tokenizer, small_world, retriever, attn):
    model = with_lora(build_tiny_model(tiny_config(tokenizer), seed=1, dtype=torch.float32))
    trajs = sample(model, tokenizer, small_world, retriever, "mem1", objectives=(1, 2), per_n=1)
    set_attention(model, attn)
    for layout in EXACT_LAYOUTS:
        with torch.no_grad():
            out = layout_forward(model, trajs, layout)
        assert out.logprobs.dtype == torch.float32
        assert logprob_deviation(out)["max_abs"] <= 1e-4, layout


def test_output_is_aligned_with_the_records(trajs64):
    trajs = trajs64["truncate"]
    batch = build_layout(trajs, "packed")
    for b, t in enumerate(trajs):
        n = sum(len(turn.output_ids) for turn in t.turns)
        assert batch.counts[b] == n
    assert batch.target_ids.tolist() == [i for t in trajs for turn in t.turns for i in turn.output_ids]
    assert batch.recorded_logprobs.tolist() == [x for t in trajs for turn in t.turns for x in turn.logprobs]


@pytest.mark.parametrize("agent", ["mem1", "full", "truncate"])
def test_packed_gradients_equal_per_turn(lora64, trajs64, agent):
    trajs = trajs64[agent]
    head = ValueHead(causal_lm(lora64).config.hidden_size, dtype=torch.float64)
    params = [p for p in lora64.parameters() if p.requires_grad] + list(head.parameters())
    weights = torch.linspace(
        -1, 1, sum(len(turn.output_ids) for t in trajs for turn in t.turns), dtype=torch.float64
    )

    def grads(layout):
        out = layout_forward(lora64, trajs, layout, value_head=head)
        flat = lambda name: torch.cat(out.per_trajectory(name))  # noqa: E731
        loss = (flat("logprobs") * weights).sum() + flat("entropy").sum() + (flat("values") ** 2).sum()
        return torch.autograd.grad(loss, params)

    ref = grads("per_turn")
    scale = max(g.abs().max() for g in ref)
    assert scale > 0
    for layout in ("packed", "packed_dense"):
        err = max((g - r).abs().max() for g, r in zip(grads(layout), ref)) / scale
        assert err <= 1e-6, (layout, float(err))


def test_values_and_entropy_agree_across_exact_layouts(lora64, trajs64):
    head = ValueHead(causal_lm(lora64).config.hidden_size, dtype=torch.float64)
    with torch.no_grad():
        outs = [layout_forward(lora64, trajs64["mem1"], lay, value_head=head) for lay in EXACT_LAYOUTS]
    for o in outs[1:]:
        assert o.values.shape == outs[0].values.shape == o.logprobs.shape
        assert torch.allclose(o.values[o.mask], outs[0].values[o.mask], atol=1e-10, rtol=0)
        assert torch.allclose(o.entropy[o.mask], outs[0].entropy[o.mask], atol=1e-10, rtol=0)
        assert (o.entropy[o.mask] > 0).all()


# ---------------------------------------------------------------------------------------------
# The official pitfall: a bool mask cast to float hides nothing


def test_bool_mask_cast_to_float_hides_nothing(lora64, trajs64):
    traj = trajs64["mem1"][0]
    batch = build_layout([traj], "packed_dense")
    stage = batch.stages[0]
    # Change the very last token of the trajectory: no earlier token may feel it.
    changed = build_layout([traj], "packed_dense")
    last = stage.lengths[0] - 1
    changed.stages[0].input_ids[0, last] = (stage.input_ids[0, last] + 1) % 100

    def first_logprob(b, mask_fn):
        with torch.no_grad():
            return float(run_layout(lora64, b, mask_fn=mask_fn).logprobs[0, 0])

    ours = first_logprob(batch, additive_mask) - first_logprob(changed, additive_mask)
    official = first_logprob(batch, bool_mask_as_float) - first_logprob(changed, bool_mask_as_float)
    assert ours == 0.0  # hidden keys get weight exp(finfo.min - max) = 0 exactly
    assert abs(official) > 1e-6  # the future leaks into the first response token
    float_bool = bool_mask_as_float(stage.visible, torch.float64)
    assert float_bool.min() >= 0  # nothing is pushed towards -inf: no key is hidden


# ---------------------------------------------------------------------------------------------
# The stitched approximation


def test_stitched_deviation_measured(lora64, trajs64):
    with torch.no_grad():
        mem1 = logprob_deviation(layout_forward(lora64, trajs64["mem1"], "stitched"))
        full = logprob_deviation(layout_forward(lora64, trajs64["full"], "stitched"))
    print(f"stitched vs generation: mem1 {mem1}, full {full}")
    assert mem1["max_abs"] > 1e-6 and mem1["mean_abs"] > 0  # an approximation for pruned rollouts
    assert full["max_abs"] <= 1e-9  # nothing pruned: each token's context is its whole past


# ---------------------------------------------------------------------------------------------
# Mask structure


@pytest.mark.parametrize("agent", ["mem1", "truncate"])
def test_packed_buckets_and_turn_ranges_give_the_per_turn_logprobs(lora64, trajs64, agent):
    """[10] [11] Turn ranges (some from inside an episode) scored alone, and the blocks cut into
    length buckets (several block stages on one prompt stage): the log-probs of those turns under
    per_turn, float64; one bucket is the plain packed layout, stage for stage."""
    from mem1lite.masks import build_packed, length_buckets

    trajs = trajs64[agent]
    turns = [range(j % len(t.turns), len(t.turns)) for j, t in enumerate(trajs)]
    assert any(r.start > 0 for r in turns)
    padded = {}
    with torch.no_grad():
        whole = layout_forward(lora64, trajs, "per_turn").per_trajectory()
        for buckets in (1, 2, 3):
            batch = build_packed(trajs, turns=turns, buckets=buckets)
            assert 2 <= len(batch.stages) <= 1 + buckets
            padded[buckets] = batch.padded_tokens
            part = run_layout(lora64, batch).per_trajectory()
            for t, r, w, got in zip(trajs, turns, whole, part):
                skip = sum(len(t.turns[j].output_ids) for j in range(r.start))
                assert float((got - w[skip:]).abs().max()) <= 1e-12, (buckets, t.task_id)
    assert padded[3] <= padded[2] <= padded[1]
    plain = build_layout(trajs, "packed")
    one = build_packed(trajs, buckets=1)
    assert len(one.stages) == 2 and torch.equal(one.score_index, plain.score_index)
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(one.stages, plain.stages))
    assert length_buckets([1, 1, 1, 9, 9], 2) == [(0, 3), (3, 5)]
    assert length_buckets([5, 5, 5], 3) == [(0, 3)]  # no gain from a cut: one run
    with pytest.raises(ValueError, match="turns"):
        build_layout(trajs, "stitched", turns=turns)


@pytest.mark.parametrize("agent", ["mem1", "truncate"])
def test_packed_in_pieces_gives_the_one_stage_values_and_gradients(lora64, trajs64, agent, monkeypatch):
    """[12] Block stages of at most `stage_tokens` padded tokens, the LM head a few scored tokens
    at a time: the log-probs, entropies, values and gradients of one block stage, float64."""
    from mem1lite import masks

    trajs = trajs64[agent]
    head = ValueHead(causal_lm(lora64).config.hidden_size, dtype=torch.float64)
    params = [p for p in lora64.parameters() if p.requires_grad] + list(head.parameters())
    weights = torch.linspace(
        -1, 1, sum(len(turn.output_ids) for t in trajs for turn in t.turns), dtype=torch.float64
    )

    def run(stage_tokens):
        out = layout_forward(lora64, trajs, "packed", value_head=head, stage_tokens=stage_tokens)
        flat = {k: torch.cat(out.per_trajectory(k)) for k in ("logprobs", "entropy", "values")}
        loss = (
            (flat["logprobs"] * weights.double()).sum() + flat["entropy"].sum() + (flat["values"] ** 2).sum()
        )
        return flat, torch.autograd.grad(loss, params)

    one, one_grads = run(None)
    monkeypatch.setattr(masks, "HEAD_TOKENS", 7)  # several head pieces on these few tokens
    tokens = 2 * max(len(t.turns[0].output_ids) + 30 for t in trajs)
    batch = build_layout(trajs, "packed", stage_tokens=tokens)
    assert len(batch.stages) > 2 and len(batch.target_ids) > 7
    for stage in batch.stages[1:]:
        assert stage.input_ids.numel() <= tokens or len(stage.lengths) == 1
        assert max(stage.lengths) == stage.input_ids.shape[1]  # no column of padding alone
    pieces, grads = run(tokens)
    for k in one:
        assert float((pieces[k] - one[k]).abs().max()) <= 1e-12, k
    scale = max(float(g.abs().max()) for g in one_grads)
    assert scale > 0 and max(float((g - r).abs().max()) for g, r in zip(grads, one_grads)) <= 1e-12 * scale
    assert masks.stage_runs([3, 9, 4, 4, 20], 12) == [[4], [1], [2, 3, 0]]  # longest first, <= 12 each


@pytest.mark.parametrize("layout", LAYOUTS)
def test_masks_are_additive_in_model_dtype_and_rows_see_themselves(trajs64, layout):
    batch = build_layout(trajs64["truncate"], layout)
    for stage in batch.stages:
        vis = stage.visible_matrix()
        R, L = stage.input_ids.shape
        assert vis.shape == (R, L, stage.prefix_length + L)
        assert vis[:, torch.arange(L), stage.prefix_length + torch.arange(L)].all()  # sees itself
        for dtype in (torch.float32, torch.float64):
            m = additive_mask(vis, dtype)
            assert m.dtype == dtype and m.shape == (R, 1, L, stage.prefix_length + L)
            assert set(m.unique().tolist()) <= {0.0, torch.finfo(dtype).min}


def test_full_agent_packs_into_one_plain_causal_block(trajs64):
    for traj in trajs64["full"]:
        assert len(packed_blocks(traj)) == 1
        batch = build_layout([traj], "packed_dense")
        n = batch.stages[0].lengths[0]
        vis = batch.stages[0].visible[0, :n, :n]
        assert torch.equal(vis, torch.ones(n, n, dtype=torch.bool).tril())
        assert batch.stages[0].position_ids[0, :n].tolist() == list(range(n))


def test_packed_blocks_see_prompt_and_themselves_only(trajs64):
    traj = next(t for t in trajs64["mem1"] if len(t.turns) >= 4)
    blocks = packed_blocks(traj)
    assert len(blocks) == len(traj.turns) - 1  # mem1 turns 0 and 1 share a block
    batch = build_layout([traj], "packed_dense")
    p = len(traj.prompt_ids)
    end = p + len(blocks[0].ids) + len(blocks[1].ids)
    row = mask_row(batch, 0, end - 1)  # last token of the second block
    assert row[:p].all()  # the prompt
    assert not row[p : p + len(blocks[0].ids)].any()  # not the first block
    assert row[p + len(blocks[0].ids) : end].all()  # itself, causally
    assert not row[end:].any()


def test_positions_are_generation_positions(trajs64):
    """Every scored token sits at the position it had when sampled, in every layout."""
    for layout in LAYOUTS:
        batch = build_layout(trajs64["truncate"], layout)
        pos = torch.cat([s.position_ids.reshape(-1) for s in batch.stages])
        expected = [
            len(t.context_ids(j)) - 1 + k
            for t in trajs64["truncate"]
            for j, turn in enumerate(t.turns)
            for k in range(len(turn.output_ids))
        ]
        assert pos[batch.score_index].tolist() == expected, layout


def test_default_layout_is_exact():
    assert DEFAULT_LAYOUT in EXACT_LAYOUTS


def test_plot_mask(trajs64):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    for layout in ("packed_dense", "stitched", "packed"):
        fig = plot_mask(trajs64["mem1"][0], layout)
        assert isinstance(fig, Figure)
        matplotlib.pyplot.close(fig)


def test_bench_cli_smoke(tmp_path):
    from mem1lite.cli import main

    out = tmp_path / "bench.json"
    assert (
        main(["bench", "masks", "--objectives", "1", "--episodes", "1", "--repeats", "1", "--json", str(out)])
        == 0
    )
    records = json.loads(out.read_text())
    assert {r["layout"] for r in records} == set(LAYOUTS)
    for r in records:
        assert all(not isinstance(v, (dict, list)) for v in r.values())  # flat records
        assert r["objectives"] == 1 and r["policy_tokens"] > 0 and r["seconds"] > 0
    assert next(r for r in records if r["layout"] == "per_turn")["speedup_vs_per_turn"] == 1.0


def test_without_float32_islands_restores_stock_qwen2():
    from transformers.models.qwen2 import modeling_qwen2 as mq

    saved = mq.Qwen2RMSNorm.forward, mq.eager_attention_forward
    with without_float32_islands():
        assert mq.Qwen2RMSNorm.forward is not saved[0]
    assert (mq.Qwen2RMSNorm.forward, mq.eager_attention_forward) == saved


def test_packed_refuses_gradient_checkpointing_clearly(tokenizer, trajs64):
    model = build_tiny_model(tiny_config(tokenizer), seed=0, dtype=torch.float64)
    model.gradient_checkpointing_enable()
    model.train()
    with pytest.raises(RuntimeError, match="gradient checkpointing"):
        layout_forward(model, trajs64["mem1"], "packed")
    out = layout_forward(model, trajs64["mem1"], "packed_dense")  # the dense form needs no cache
    assert logprob_deviation(out)["max_abs"] > 0  # another model than the sampler: just runs


# ---------------------------------------------------------------------------------------------
# Where it matters: rollouts of the shipped trained checkpoint (mem1lite.layout_check)

SFT_CHECKPOINT = DATA_DIR / "checkpoints" / "sft-mem1"


@pytest.fixture(scope="module")
def sft_policy():
    from mem1lite.model import load_policy

    return load_policy(SFT_CHECKPOINT)


@pytest.fixture(scope="module")
def sft_rollouts(sft_policy):
    """3 dev tasks with N = 4 played by sft-mem1 under the mem1 agent at temperature 1 (seed 0)."""
    from mem1lite.layout_check import sample_rollouts

    model, tok = sft_policy
    trajs = sample_rollouts(model, tok, "mem1", 4, 3, seed=0)
    assert min(len(t.turns) for t in trajs) >= 4  # stitched departs from turn 2 on
    return trajs


@pytest.fixture(scope="module")
def sft_deviation(sft_policy, sft_rollouts):
    from mem1lite.layout_check import layout_deviation

    return layout_deviation(sft_policy[0], sft_rollouts)


@pytest.fixture(scope="module")
def sft64(sft_policy, float64_exact):
    import copy

    return copy.deepcopy(sft_policy[0]).to(torch.float64)


def test_stitched_is_far_off_on_a_trained_checkpoint_while_exact_layouts_hold(sft_deviation):
    from mem1lite.layout_check import pick

    for layout in ("packed", "packed_dense"):
        row = pick(sft_deviation, dtype="float64", layout=layout, reference="per_turn")
        assert row["max_abs"] <= 1e-10, (layout, row)
    for turn in (0, 1):  # their contexts never lost anything
        assert (
            pick(sft_deviation, turn, dtype="float64", layout="stitched", reference="per_turn")["max_abs"]
            <= 1e-10
        )
    later = [
        r
        for r in sft_deviation
        if r["layout"] == "stitched" and r["dtype"] == "float64" and r["turn"] is not None and r["turn"] >= 2
    ]
    assert later and all(r["max_abs"] > 1.0 for r in later)  # nats: e^1 in the importance ratio
    assert max(r["mean_abs"] for r in later) > 0.5


def test_float32_layouts_match_the_recorded_logprobs(sft_deviation):
    from mem1lite.layout_check import pick

    for layout in EXACT_LAYOUTS:
        recorded = pick(sft_deviation, dtype="float32", layout=layout, reference="recorded")
        assert 0 < recorded["max_abs"] <= 1e-4, (layout, recorded)  # float32 rounding, not zero
    stitched = pick(sft_deviation, dtype="float32", layout="stitched", reference="recorded")
    assert stitched["max_abs"] > 1.0


def test_deviation_table_has_a_row_per_turn(sft_deviation, sft_rollouts):
    turns = max(len(t.turns) for t in sft_rollouts)
    tokens = sum(len(turn.output_ids) for t in sft_rollouts for turn in t.turns)
    groups = {}
    for r in sft_deviation:
        groups.setdefault((r["dtype"], r["layout"], r["reference"]), []).append(r)
    # float64 and float32: three layouts against per_turn; float32: all four against the records
    assert len(groups) == 3 + 3 + 4
    for key, rows in groups.items():
        assert [r["turn"] for r in rows] == [None, *range(turns)], key
        assert rows[0]["tokens"] == tokens == sum(r["tokens"] for r in rows[1:]), key
        assert all(r["max_abs"] >= r["mean_abs"] >= 0 for r in rows), key


def test_untrained_model_hides_the_stitched_error(sft_rollouts, sft_deviation):
    """The same records scored by the untrained tiny model: a small error, where small models were tested."""
    from mem1lite.layout_check import layout_deviation, pick

    rows = layout_deviation(
        build_tiny_model(seed=0), sft_rollouts, ("stitched",), ("float64",), recorded=False
    )
    tiny = pick(rows, dtype="float64", layout="stitched")["max_abs"]
    trained = pick(sft_deviation, dtype="float64", layout="stitched", reference="per_turn")["max_abs"]
    assert 1e-3 < tiny < 0.2
    assert trained > 50 * tiny


def test_official_float_mask_leaks_under_our_transformers(sft64, sft_rollouts):
    """The official actor's 4D mask of ones and zeros in the model dtype: SDPA adds it, hides nothing."""
    import transformers

    from mem1lite.layout_check import official_mask_leak

    leak = official_mask_leak(sft64, sft_rollouts[0])
    print(f"transformers {transformers.__version__}: {leak}")
    assert leak["dtype"] == "float64"
    assert leak["future_official"] > 0.1  # a later token moves earlier log-probs
    assert leak["padding_official"] > 1.0  # and so does padding the mask was meant to hide
    assert leak["future_ours"] == 0.0
    assert leak["padding_ours"] <= 1e-12


@pytest.mark.parametrize("layout", LAYOUTS)
def test_our_layouts_cannot_leak(sft64, sft_rollouts, layout):
    from mem1lite.layout_check import layout_leaks

    trajs = sft_rollouts[:2]
    assert len({sum(len(turn.output_ids) for turn in t.turns) for t in trajs}) == 2  # the batch pads
    leaks = layout_leaks(sft64, trajs, layout)
    assert leaks["future"] <= 1e-12 and leaks["batch"] <= 1e-12, leaks
    assert leaks["after"] > 1e-3  # the changed token did reach the model


def test_plot_stitched_by_turn(sft_deviation):
    import matplotlib

    matplotlib.use("Agg")
    from mem1lite.layout_check import FLOOR, plot_stitched_by_turn

    meta = {"bench": "masks-deviation", "agent": "mem1", "objectives": 4, "scorer": "sft", "sampler": "sft"}
    fig = plot_stitched_by_turn([meta | r for r in sft_deviation])
    (ax,) = fig.axes
    rows = [
        r
        for r in sft_deviation
        if r["layout"] == "stitched" and r["dtype"] == "float64" and r["turn"] is not None
    ]
    mean, worst = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
    assert list(mean) == [max(r["mean_abs"], FLOOR) for r in rows]
    assert list(worst) == [max(r["max_abs"], FLOOR) for r in rows]
    assert ax.get_yscale() == "log" and mean[0] == FLOOR  # turn 0 is exact
    matplotlib.pyplot.close(fig)


def test_bench_deviation_cli_writes_records_and_figure(tmp_path, monkeypatch):
    import mem1lite.layout_check as lc
    from mem1lite.cli import main

    row = {"bench": "masks-deviation", "agent": "mem1", "objectives": 4, "scorer": "a", "sampler": "a"}
    rows = [
        row
        | {
            "layout": "stitched",
            "dtype": "float64",
            "reference": "per_turn",
            "turn": j,
            "max_abs": 2.0,
            "mean_abs": 1.0,
        }
        for j in range(3)
    ]
    seen = {}

    def fake(checkpoints, episodes, threads):
        seen.update(checkpoints=checkpoints, episodes=episodes, threads=threads)
        return rows

    monkeypatch.setattr(lc, "bench_layout_deviation", fake)
    js, png = tmp_path / "d.json", tmp_path / "fig" / "d.png"
    argv = ["bench", "masks", "--deviation", "--checkpoints", "a,b", "--episodes", "2", "--threads", "1"]
    assert main(argv + ["--json", str(js), "--figure", str(png)]) == 0
    assert seen == {"checkpoints": ("a", "b"), "episodes": 2, "threads": 1}
    assert json.loads(js.read_text()) == rows and png.stat().st_size > 1000
    assert main(["bench", "masks", "--deviation"]) == 0  # by default the shipped checkpoints, 4 tasks
    assert seen["checkpoints"] == lc.DEFAULT_CHECKPOINTS and seen["episodes"] == 4
    assert [Path(c).name for c in lc.DEFAULT_CHECKPOINTS] == ["sft-mem1", "ppo-mem1"]
    assert all((Path(c) / "card.json").is_file() for c in lc.DEFAULT_CHECKPOINTS)


def test_ppo_layout_comparison_draws_each_run_per_key():
    import matplotlib

    matplotlib.use("Agg")
    from mem1lite.plots import PPO_LAYOUT_PANELS, ppo_layout_comparison

    def history(ratio):
        steps = [{"step": 0, "dev_em_per_objective": 0.5}]  # evaluation only: no training keys
        return steps + [
            {
                "step": s,
                "first_ratio": ratio,
                "max_abs_log_ratio_first": 2 * s,
                "clipfrac": 0.1 * s,
                "kl": 0.01 * s,
                "reward": 0.5 + 0.01 * s,
            }
            for s in (1, 2, 3)
        ]

    fig = ppo_layout_comparison({"packed": history(1.0), "stitched": history(1.7)})
    assert len(fig.axes) == len(PPO_LAYOUT_PANELS)
    ratio_ax = fig.axes[0]
    assert [line.get_label() for line in ratio_ax.lines] == ["packed", "stitched"]
    assert list(ratio_ax.lines[1].get_xdata()) == [1, 2, 3]
    assert list(ratio_ax.lines[1].get_ydata()) == [1.7, 1.7, 1.7]
    assert list(fig.axes[2].lines[0].get_ydata()) == pytest.approx([0.1, 0.2, 0.3])
    matplotlib.pyplot.close(fig)
