"""Generation engines behind rollout.Engine: the same tokens from every engine, and the
`mem1 bench generate` smoke run. The compiled engine is measured by the bench, not here (its
compilation takes ~40 s on the dev machine); its static cache is tested without compilation."""

import json

import pytest

from mem1lite.generate import (
    DEFAULT_ENGINE,
    ENGINES,
    Engine,
    GenerationConfig,
    HFGeneratePolicy,
    ModelPolicy,
    TeacherPolicy,
    make_engine,
)
from mem1lite.model import TINY_DIR, build_tiny_model, load_tokenizer
from mem1lite.protocol import QAEnvironment
from mem1lite.retrieval import PoolRetrievers
from mem1lite.rollout import RolloutConfig, run_episodes
from mem1lite.world import make_tasks


@pytest.fixture(scope="module")
def setup(world):
    tok = load_tokenizer(TINY_DIR)
    model = build_tiny_model(seed=0).eval()  # float32: generate hands processors float32 logits
    retriever = PoolRetrievers(world)["dev"]
    tasks = make_tasks(world, "dev", 2, 3, seed=0)
    return tok, model, retriever, tasks


def play(engine, setup, agent="mem1"):
    tok, _, retriever, tasks = setup
    envs = [QAEnvironment.from_task(t, retriever) for t in tasks]
    return run_episodes(engine, tok, envs, RolloutConfig(agent, seed=3, progress=False), tasks)


def test_engines_satisfy_the_protocol_and_default_is_ours(setup):
    tok, model, _, _ = setup
    assert DEFAULT_ENGINE == "kv" and set(ENGINES) == {"kv", "kv-hf", "hf", "hf-static"}
    assert make_engine("kv-hf", model, tok).config.plain_step is False
    assert isinstance(make_engine("kv", model, tok), ModelPolicy)
    for engine in [make_engine(e, model, tok) for e in ENGINES] + [TeacherPolicy(tok)]:
        assert callable(engine.respond) and isinstance(engine.name, str)
    assert Engine.__doc__ and hasattr(Engine, "respond")
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("vllm", model, tok)


@pytest.mark.parametrize("static", [False, True])
def test_hf_generate_writes_what_our_loop_writes(setup, static):
    """Same sampler, same per-episode generators, same stop check: the same tokens, and log-probs
    equal to float32 rounding (the attention paths differ)."""
    tok, model, _, _ = setup
    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, batch_size=8)
    ours = play(ModelPolicy(model, tok, cfg), setup)
    theirs = play(HFGeneratePolicy(model, tok, cfg, static=static, compile=False), setup)
    for a, b in zip(ours, theirs):
        assert [t.output_ids for t in a.turns] == [t.output_ids for t in b.turns]
        assert [t.hit_limit for t in a.turns] == [t.hit_limit for t in b.turns]
        for ta, tb in zip(a.turns, b.turns):
            assert ta.logprobs == pytest.approx(tb.logprobs, abs=1e-4)


def test_bench_generate_cli_smoke(tmp_path):
    from mem1lite.cli import main

    out = tmp_path / "gen.json"
    argv = ["bench", "generate", "--engines", "kv,hf", "--episodes", "2", "--max-new-tokens", "4"]
    assert main(argv + ["--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [r["engine"] for r in records] == ["kv", "hf"]
    assert records[0]["ratio_vs_kv"] == 1.0 and records[1]["same_responses_as_kv"] == 1.0
    assert all(not isinstance(v, (dict, list)) for r in records for v in r.values())


def test_a_kv_cache_past_the_free_memory_is_refused_before_it_is_allocated(monkeypatch):
    """Issue #32: a huge batch or --max-new-tokens is one line, not an allocation of 256 GB."""
    import torch

    import mem1lite.generate as g
    from mem1lite.model import build_tiny_model

    model = build_tiny_model()
    cpu = torch.device("cpu")
    monkeypatch.setattr(g, "available_memory", lambda device: 1 << 30)  # 1 GiB free
    g.check_cache_fits(model, 64, 2_000, cpu)  # 64 x 2,000 x 2 KiB a position: 250 MiB, fits
    with pytest.raises(
        g.CacheTooLarge, match=r"^the KV cache of 4,096 episodes x 8,342 positions needs 65\.2 GiB, "
    ):
        g.check_cache_fits(model, 4096, 8342, cpu)
    assert g.available_memory(cpu) is None or g.available_memory(cpu) > 0
