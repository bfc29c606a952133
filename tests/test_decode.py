"""The plain-torch Qwen2 decoding step (decode.py) against transformers' forward: the same logits to
float rounding (float64), with and without LoRA adapters, and the same tokens through the `kv`
engine; where it does not apply, transformers' forward stays."""

import pytest
import torch

from mem1lite.decode import PlainStep
from mem1lite.generate import GenerationConfig, make_engine
from mem1lite.model import load_policy
from mem1lite.rollout import RolloutConfig, run_episodes


def _episodes(engine_kind, model, tokenizer, qa, episodes=6, objectives=2, temperature=1.0):
    tasks = qa.tasks("dev", objectives, episodes, seed=3)
    config = GenerationConfig(max_new_tokens=24, temperature=temperature, batch_size=episodes)
    engine = make_engine(engine_kind, model, tokenizer, config, name="m")
    envs = [qa.environment(t) for t in tasks]
    return run_episodes(engine, tokenizer, envs, RolloutConfig("mem1", seed=5, progress=False), tasks)


def _outputs(trajectories):
    ids = [[t.output_ids for t in tr.turns] for tr in trajectories]
    logprobs = torch.tensor(
        [p for tr in trajectories for t in tr.turns for p in t.logprobs], dtype=torch.float64
    )
    return ids, logprobs


@pytest.fixture(scope="module")
def small64(tmp_path_factory, small_qwen):
    model, tokenizer = load_policy(small_qwen(tmp_path_factory.mktemp("m")))
    return model.double().eval(), tokenizer


def test_the_kv_engine_writes_the_same_tokens_and_logprobs_with_the_plain_step(small64, qa):
    """float64: the plain step and transformers' forward sample the same tokens, with log-probs
    equal to 1e-12 (every turn of every episode, sampled at T = 1)."""
    model, tokenizer = small64
    assert PlainStep.of(model) is not None
    plain_ids, plain_lp = _outputs(_episodes("kv", model, tokenizer, qa))
    hf_ids, hf_lp = _outputs(_episodes("kv-hf", model, tokenizer, qa))
    assert plain_ids == hf_ids
    assert sum(len(x) for tr in plain_ids for x in tr) > 100
    torch.testing.assert_close(plain_lp, hf_lp, rtol=0, atol=1e-12)


def test_lora_adapters_count_and_disabling_them_gives_the_base(small64, qa):
    """A peft model with non-zero adapters: the plain step decodes the adapted policy, and under
    `disable_adapter()` the base, as transformers' forward does."""
    from peft import LoraConfig, get_peft_model

    base, tokenizer = small64
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    model = get_peft_model(base, config).double()
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # B starts at zero: make the adapters change the policy
    model.eval()
    assert PlainStep.of(model) is not None
    adapted = _outputs(_episodes("kv", model, tokenizer, qa, temperature=0))
    assert adapted[0] == _outputs(_episodes("kv-hf", model, tokenizer, qa, temperature=0))[0]
    with model.disable_adapter():
        plain_base = _outputs(_episodes("kv", model, tokenizer, qa, temperature=0))
        hf_base = _outputs(_episodes("kv-hf", model, tokenizer, qa, temperature=0))
    assert plain_base[0] == hf_base[0]
    torch.testing.assert_close(plain_base[1], hf_base[1], rtol=0, atol=1e-12)
    assert plain_base[0] != adapted[0]  # the adapters do change the greedy responses
    model.unload()


def test_where_it_does_not_apply_transformers_forward_stays(small64):
    model, _ = small64
    assert PlainStep.of(model.to(torch.bfloat16)) is None  # bfloat16: transformers' kernels
    model.double()
    assert PlainStep.of(torch.nn.Linear(2, 2)) is None  # not a Qwen2


@pytest.mark.slow
def test_a_trained_checkpoint_writes_the_same_tokens_either_way(qa):
    """float32, the shipped sft-mem1-n16-hop2 at N = 4, 16 sampled episodes: every response the
    same under the plain step and transformers' forward."""
    model, tokenizer = load_policy("data/checkpoints/sft-mem1-n16-hop2")
    model.eval()
    plain = _outputs(_episodes("kv", model, tokenizer, qa, episodes=16, objectives=4))
    hf = _outputs(_episodes("kv-hf", model, tokenizer, qa, episodes=16, objectives=4))
    assert plain[0] == hf[0]
    torch.testing.assert_close(plain[1], hf[1], rtol=0, atol=1e-4)
