"""The real-Qwen path without a real Qwen: model presets, tags as plain text, and the
real Qwen2.5-0.5B architecture through every trajectory layout.

Nothing can be downloaded here, so:
- the tokenizer is a stand-in built in the test: byte-level BPE with Qwen2's pre-tokenizer split,
  Qwen's special tokens (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`) and none for the tags,
  so `<think>` is several ordinary tokens, as with Qwen's own tokenizer (and `</answer>` after a
  full stop starts with a `.</` token, `</search>` then a newline ends with `>\\n`);
- the model is the real Qwen2.5-0.5B config (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP
  4864, tied embeddings: model.QWEN2_5_0_5B, written by hand), randomly initialised, with the
  vocabulary shrunk from 151,936 to the stand-in's 1,024 ids (the embedding alone would be 136 M
  parameters of a 494 M model), saved to a temporary directory in bfloat16 and found through
  `$MEM1_QWEN_DIR` by the `qwen2.5-0.5b` preset.
"""

import json
import types

import pytest
import torch

from mem1lite.generate import GenerationConfig, ModelPolicy, TeacherPolicy, stop_checker, stop_sequences
from mem1lite.model import (
    MODEL_PRESETS,
    QWEN2_5_0_5B,
    ModelLoadError,
    load_tokenizer,
    qwen2_5_0_5b_config,
    resolve_model,
)
from mem1lite.protocol import INSTRUCTION, STOP_STRINGS, parse_response
from mem1lite.rollout import Mem1Agent, RolloutConfig, run_episodes
from mem1lite.trajectory import Trajectory, Turn, token_kinds

QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
"""Qwen2's pre-tokenizer split (its tokenizer.json)"""
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def plain_tokenizer(small_world, tmp_path_factory):
    """A Qwen-like tokenizer whose tags are plain text (trained on the small world, 1,024 ids)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from mem1lite.protocol import observation

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    texts = [d.text for d in small_world.documents[:3000]] + [INSTRUCTION] * 20
    texts += [observation("Doc 1(Title: A) text", 3), "<think>Q1: x</think>\n<search> y</search>"] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    path = tmp_path_factory.mktemp("plain-tokenizer")
    fast.save_pretrained(path)
    return load_tokenizer(path)


# ---------------------------------------------------------------------------------------------
# Tags as plain text: stops, kinds, parser


def test_the_stand_in_has_no_tag_tokens(plain_tokenizer):
    for tag in ("<think>", "</think>", "<search>", "</search>", "<answer>", "</answer>"):
        assert len(plain_tokenizer.encode(tag, add_special_tokens=False)) > 1, tag
    assert plain_tokenizer.pad_token_id != plain_tokenizer.eos_token_id
    text = "<think>a</think>\n<answer> 2010.</answer>"
    assert plain_tokenizer.decode(plain_tokenizer.encode(text, add_special_tokens=False)) == text


RESPONSES = [
    "<think>Q1: the founder</think>\n<search> Gevorn Bank</search>",
    "<think>Q1: the founder</think>\n<search> Gevorn Bank</search>\n",  # the stop ends in a `>\n` token
    "<think>answers: 1990</think>\n<answer> 1990.</answer>",  # `.</` starts the stop
    "<think>x</think><answer> Talis Morrow; Gevorn Works</answer>",
]


@pytest.mark.parametrize("text", RESPONSES)
def test_stop_checker_finds_stops_that_span_tokens(plain_tokenizer, text):
    tok = plain_tokenizer
    ids = tok.encode(text + "<think> more text after the stop", add_special_tokens=False)
    stopped = stop_checker(tok, stop_sequences(tok))
    first = next(k for k in range(1, len(ids) + 1) if stopped(ids[:k]))
    decoded = tok.decode(ids[:first])
    assert decoded.rstrip("\n").endswith(STOP_STRINGS) and len(decoded) >= len(text.rstrip("\n"))
    assert not any(s in tok.decode(ids[: first - 1]) for s in STOP_STRINGS)  # not a token too late
    assert parse_response(decoded).kind in ("search", "answer")
    # the end-of-turn token stops too
    assert stopped(
        tok.encode("<think>x", add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    )


def test_stop_checker_compares_ids_when_tags_are_tokens():
    from mem1lite.model import TINY_DIR

    tok = load_tokenizer(TINY_DIR)
    stops = stop_sequences(tok)
    assert all(len(s) == 1 for s in stops)
    stopped = stop_checker(tok, stops)
    ids = tok.encode("<think>a</think><search> b</search>", add_special_tokens=False)
    assert [stopped(ids[:k]) for k in range(1, len(ids) + 1)] == [False] * (len(ids) - 1) + [True]


class Scripted(torch.nn.Module):
    """Greedy-decodes the same script in every row, whatever the context."""

    def __init__(self, script: list[int], vocab: int):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))
        self.script, self.vocab, self.calls = script, vocab, 0

    def forward(self, input_ids, **kw):
        token = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        logits = torch.full((input_ids.shape[0], 1, self.vocab), -1e4)
        logits[:, :, token] = 0.0
        return types.SimpleNamespace(logits=logits + self.bias, cache=None)


@pytest.mark.parametrize("text", RESPONSES[1:3])
def test_model_policy_stops_on_plain_text_tags(plain_tokenizer, text):
    tok = plain_tokenizer
    script = tok.encode(text + " and on and on", add_special_tokens=False)
    policy = ModelPolicy(Scripted(script, len(tok)), tok, GenerationConfig(max_new_tokens=60, temperature=0))
    [resp] = policy.respond([tok.encode("hi", add_special_tokens=False)], [torch.Generator()])
    assert not resp.hit_limit
    assert tok.decode(resp.ids).startswith(text.rstrip("\n")) and "and on" not in tok.decode(resp.ids)


def test_teacher_episodes_with_plain_tags(plain_tokenizer, small_world):
    """The protocol end to end with a tokenizer that has no tag tokens: the teacher's text is
    encoded to ordinary tokens, the parser reads the decoded text, and the token kinds come from
    text regions mapped back to tokens."""
    from mem1lite.protocol import QAEnvironment
    from mem1lite.retrieval import Retriever
    from mem1lite.world import make_tasks

    tok = plain_tokenizer
    tasks = make_tasks(small_world, "dev", 2, 2, seed=0)
    retriever = Retriever(small_world.documents_of("dev"))
    envs = [QAEnvironment.from_task(t, retriever) for t in tasks]
    trajs = run_episodes(TeacherPolicy(tok), tok, envs, RolloutConfig(agent="mem1", progress=False), tasks)
    for t in trajs:
        assert t.em == 2 and t.format_errors == 0
        for turn in t.turns:
            text = tok.decode(turn.output_ids)
            kinds = turn.output_kinds
            assert turn.action in ("search", "answer") and parse_response(text).kind == turn.action
            state = tok.decode([i for i, k in zip(turn.output_ids, kinds) if k == "s"])
            action = tok.decode([i for i, k in zip(turn.output_ids, kinds) if k in "aA"])
            assert state.startswith("<think>") and state.rstrip().endswith("</think>")
            assert action.strip().startswith(("<search>", "<answer>"))
            assert kinds.index("s") < max(kinds.rfind("a"), kinds.rfind("A"))


# ---------------------------------------------------------------------------------------------
# Presets


def test_qwen_preset_without_weights_fails_with_one_line(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    import mem1lite.model as model
    from mem1lite.cli import main

    monkeypatch.delenv("MEM1_QWEN_DIR", raising=False)
    monkeypatch.setattr(model, "QWEN_LOCAL_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "no-cache"))
    with pytest.raises(ModelLoadError, match="put Qwen/Qwen2.5-0.5B-Instruct .* in .*nowhere.*MEM1_QWEN_DIR"):
        resolve_model("qwen2.5-0.5b")
    for argv in (
        ["sft", "--model", "qwen2.5-0.5b", "--out", str(tmp_path / "sft")],
        ["ppo", "--model", "qwen2.5-0.5b", "--out", str(tmp_path / "ppo")],
        ["rollout", "--policy", "qwen2.5-0.5b", "--out", str(tmp_path / "r.jsonl")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "no local weights for qwen2.5-0.5b" in err, err
        assert not (tmp_path / "sft").exists() and not (tmp_path / "ppo").exists()
    monkeypatch.setenv("MEM1_QWEN_DIR", str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match=r"\$MEM1_QWEN_DIR \(.*empty\)"):
        resolve_model("qwen2.5-0.5b")
    assert main(["ppo", "--out", str(tmp_path / "ppo")]) == 2
    assert "--init DIR" in capsys.readouterr().err
    assert main(["ppo", "--init", "a", "--model", "b", "--out", str(tmp_path / "ppo")]) == 2
    assert "disagree" in capsys.readouterr().err


def test_resolve_model_settings(tmp_path):
    assert MODEL_PRESETS == ("tiny", "qwen2.5-0.5b")
    tiny = resolve_model("tiny")
    assert (tiny.path, tiny.real, tiny.gradient_checkpointing) == ("tiny", False, False)
    assert tiny.dtype("cuda") == tiny.dtype("cpu") == torch.float32
    for width, real in ((128, False), (896, True)):
        d = tmp_path / f"w{width}"
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"hidden_size": width}))
        spec = resolve_model(d)
        assert spec.real is real and spec.gradient_checkpointing is real
        assert spec.dtype("cuda") == (torch.bfloat16 if real else torch.float32)
        assert spec.dtype("cpu") == torch.float32
        assert set(spec.lora_targets) == {
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        }
    with pytest.raises(ModelLoadError, match="expected tiny, qwen2.5-0.5b or a local model directory"):
        resolve_model(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------
# The real architecture through every layout


def hand_made(tok, n_turns: int = 3) -> Trajectory:
    """A short mem1 episode in the stand-in's ids: three turns, so `packed` has two blocks."""
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Questions:\n1. Who founded Gevorn Bank?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    traj = Trajectory("t", "dev", ["q"], [["a"]], "mem1", "test", enc(prompt))
    for j in range(n_turns):
        out = enc(f"<think>{j}</think><search> Bank</search>")
        spans = Mem1Agent().spans(traj)
        traj.turns.append(
            Turn(
                spans,
                out,
                [0.0] * len(out),
                token_kinds(tok, out, False),
                enc(f"<information>{j}</information>"),
                "search",
            )
        )
    traj.check()
    return traj


@pytest.mark.slow
def test_real_size_qwen2_forward_backward_each_layout(plain_tokenizer, tmp_path, monkeypatch):
    from transformers import Qwen2ForCausalLM

    from mem1lite.masks import layout_forward
    from mem1lite.ppo import PPOArgs, build_policy
    from mem1lite.terms import EXACT_LAYOUTS, LAYOUTS

    tok = plain_tokenizer
    config = qwen2_5_0_5b_config(
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None
    )
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (896, 24, 14)
    assert (config.num_key_value_heads, config.intermediate_size, config.tie_word_embeddings) == (
        2,
        4864,
        True,
    )
    assert QWEN2_5_0_5B["vocab_size"] == 151936
    qwen = tmp_path / "Qwen2.5-0.5B-Instruct"
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(qwen)  # as shipped: bfloat16, tied
    tok.save_pretrained(qwen)
    monkeypatch.setenv("MEM1_QWEN_DIR", str(qwen))
    spec = resolve_model("qwen2.5-0.5b")
    assert spec.path == str(qwen) and spec.real and spec.gradient_checkpointing

    # per_turn allows checkpointing, so the preset turns it on (float32 on CPU)
    model, head, _ = build_policy("qwen2.5-0.5b", PPOArgs(layout="per_turn", seed=0), device="cpu")
    base = model.get_base_model()
    assert base.is_activation_checkpointing and model.training
    assert next(base.parameters()).dtype == torch.float32 and head.summary.weight.dtype == torch.float32
    n_params = sum(p.numel() for p in base.parameters() if not getattr(p, "_is_lora", False))
    assert n_params > 350e6  # 24 full-size blocks (the shrunk vocabulary saves 135 M)
    lora = [p for p in model.parameters() if p.requires_grad]
    trajs = [hand_made(tok)]
    logprobs = {}
    for layout in LAYOUTS:
        if layout == "packed":  # it reuses the prompt's KV cache, which checkpointing drops
            with pytest.raises(RuntimeError, match="gradient checkpointing"):
                layout_forward(model, trajs, layout, value_head=head)
            base.activation_checkpointing_disable()
        for p in lora + list(head.parameters()):
            p.grad = None
        out = layout_forward(model, trajs, layout, value_head=head)
        loss = -(out.logprobs * out.mask).sum() + (out.values * out.mask).pow(2).sum()
        loss.backward()
        grads = [p.grad for p in lora if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), layout
        assert any(g.abs().max() > 0 for g in grads), layout
        logprobs[layout] = out.logprobs.detach()
        if layout == "packed":
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    for layout in EXACT_LAYOUTS:
        assert torch.allclose(logprobs[layout], logprobs["per_turn"], atol=1e-3), layout
