"""The tokenizer (tags as special tokens, single-token name parts, chat template, determinism) and the
tiny Qwen2 model (save/load round trip, one-line load errors, peft adapters through `load_policy`)."""

import filecmp
import json
import re
import shutil
import time

import pytest
import torch

from mem1lite.assets import build_tiny_assets
from mem1lite.model import (
    TINY_DIR,
    ModelLoadError,
    build_tiny_model,
    count_parameters,
    load_policy,
    load_tokenizer,
)
from mem1lite.protocol import TAG_TOKENS
from mem1lite.tokenizer import (
    CHAT_TEMPLATE,
    EOS,
    IM_END,
    IM_START,
    PAD,
    NamePartsError,
    check_name_parts,
    require_name_parts,
    split_name_parts,
)
from mem1lite.world import DEFAULT_WORLD_DIR

# ---------------------------------------------------------------------------------------------
# Tokenizer


def test_tags_are_single_special_ids(tokenizer):
    special = set(tokenizer.all_special_ids)
    ids = {}
    for tag in TAG_TOKENS + [PAD, EOS, IM_START, IM_END]:
        enc = tokenizer.encode(tag, add_special_tokens=False)
        assert len(enc) == 1 and enc[0] in special, tag
        ids[tag] = enc[0]
    assert len(set(ids.values())) == len(ids)
    # inside text too: a tag is never split or merged with its neighbours
    enc = tokenizer.encode("<think> x</think><search> Gevorn</search>", add_special_tokens=False)
    assert enc[0] == ids["<think>"] and enc[-1] == ids["</search>"]
    assert ids["</think>"] in enc and ids["<search>"] in enc


def test_pad_is_not_eos(tokenizer):
    assert tokenizer.pad_token == PAD and tokenizer.eos_token == EOS
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.padding_side == "left"


def test_every_world_name_part_is_one_token_after_a_space(world, tokenizer):
    parts = world.parts.all_parts()
    assert len(parts) > 100
    assert check_name_parts(tokenizer, parts) == []
    name = world.entities[0].name
    assert len(tokenizer.encode(" " + name, add_special_tokens=False)) == len(name.split())


def test_chat_template(tokenizer):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Questions:\n1. Who?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nQuestions:\n1. Who?<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_byte_level_round_trip(tokenizer):
    for text in ["Gevorn Bank", "naïve — 東京 🙂", "\x00\x07 tabs\tand\nnewlines", "<think>x</think>  "]:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_rebuilding_from_the_same_world_gives_identical_files(world, tmp_path):
    """`mem1 tokenizer` is deterministic: it reproduces the shipped data/tiny byte for byte."""
    out = build_tiny_assets(world, tmp_path / "tiny")
    shipped = sorted(p.name for p in TINY_DIR.iterdir())
    assert sorted(p.name for p in out.iterdir()) == shipped
    for name in shipped:
        assert filecmp.cmp(out / name, TINY_DIR / name, shallow=False), name
    with pytest.raises(FileExistsError):
        build_tiny_assets(world, out)


# ---------------------------------------------------------------------------------------------
# The world check: a trained model plays only a world whose name parts its tokenizer holds whole


def test_the_shipped_world_passes_the_check_for_shipped_checkpoints_in_well_under_a_second(world):
    """An SFT checkpoint and a PPO adapter (its tokenizer is its base's), the way every command loads them."""
    from mem1lite.evaluate import policy_tokenizer

    parts = world.parts.all_parts()
    assert len(parts) == 1_928
    for name in ("sft-mem1-n16-hop2", "ppo-mem1-n16-hop2-mix"):
        tokenizer = policy_tokenizer(f"data/checkpoints/{name}")
        t0 = time.perf_counter()
        require_name_parts(tokenizer, parts, name, DEFAULT_WORLD_DIR)  # raises on a single split part
        assert time.perf_counter() - t0 < 1.0  # ~15-25 ms measured on 2 busy cores
        assert split_name_parts(tokenizer, parts) == {}


def test_one_split_part_is_refused_with_its_pieces_and_the_commands(tokenizer, world):
    parts = world.parts.all_parts() + ["Zyxwq"]  # a word no world was trained on
    pieces = [tokenizer.decode([i]).strip() for i in tokenizer.encode(" Zyxwq", add_special_tokens=False)]
    assert len(pieces) > 1 and "".join(pieces) == "Zyxwq"
    with pytest.raises(NamePartsError) as info:
        require_name_parts(tokenizer, parts, "sft-x", "/some/w9")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(
        "1 of 1,929 name parts of /some/w9 are not single tokens of sft-x's tokenizer (e.g. 'Zyxwq' -> "
        + " ".join(repr(p) for p in pieces)
        + ")"
    )
    assert "`mem1 tokenizer --world /some/w9 --out runs/w9-tokenizer`" in msg
    assert "`mem1 sft --preset n16 --model runs/w9-tokenizer --data /some/w9 --out runs/w9-sft`" in msg


def test_a_real_models_tokenizer_is_not_checked(world):
    """Qwen's tokenizer holds no protocol tags and never held names whole: no refusal for it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(["the birthplace of"], trainer=trainer)
    plain = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS)
    parts = world.parts.all_parts()
    assert len(split_name_parts(plain, parts)) == len(parts)  # every part in pieces...
    require_name_parts(plain, parts, "qwen", DEFAULT_WORLD_DIR)  # ...and no refusal


def test_a_tokenizer_trained_on_another_world_passes_there_and_sft_can_start_from_it(
    small_world, world, tmp_path
):
    """The fix the refusal names: `mem1 tokenizer --world W --out DIR` (build_tiny_assets), then
    `mem1 sft --model DIR`, a fresh tiny model with that tokenizer (sft.fresh_model_assets)."""
    from mem1lite.sft import fresh_model_assets

    out = build_tiny_assets(small_world, tmp_path / "w7-tokenizer")
    other = load_tokenizer(out)
    assert split_name_parts(other, small_world.parts.all_parts()) == {}
    shipped = world.parts.all_parts()  # and back: the shipped world is refused for it
    split = [p for p in shipped if len(other.encode(" " + p, add_special_tokens=False)) != 1]
    assert len(split) > 1_800
    with pytest.raises(NamePartsError, match=rf"^{len(split):,} of 1,928 name parts of data/qa "):
        require_name_parts(other, shipped, "w7", DEFAULT_WORLD_DIR)
    assert fresh_model_assets(str(out)) == out and fresh_model_assets("tiny") == TINY_DIR
    assert fresh_model_assets("data/checkpoints/sft-mem1-n16-hop2") is None  # weights: loaded, not fresh
    assert fresh_model_assets("data/checkpoints/ppo-mem1-n16-hop2-mix") is None  # an adapter
    model = build_tiny_model(seed=1, tiny_dir=out)
    assert model.config.vocab_size >= len(other) and model.config.pad_token_id == other.pad_token_id


def test_a_webshop_store_of_another_seed_needs_no_check(tokenizer):
    """WebShopDomain.check_tokenizer checks nothing: a store of another seed is written in the
    shipped store's words (webshop.py's fixed vocabulary), and its ids and prices, the only strings
    a seed invents, are cut into single digits by every tokenizer of ours."""
    from mem1lite.webshop import CatalogueConfig, generate_catalogue, load_catalogue

    def words(catalogue):
        texts = [
            p.title + " " + p.description + " " + " ".join(sum(p.options.values(), []))
            for p in catalogue.products
        ]
        texts += [g.instruction for goals in catalogue.goals.values() for g in goals]
        return {w for t in texts for w in re.findall(r"[^\W\d]+", t)}

    shipped, other = load_catalogue(), generate_catalogue(CatalogueConfig(seed=7))
    assert {p.id for p in other.products} - {p.id for p in shipped.products}  # the seed's own ids...
    assert len(words(shipped)) == 228 and words(other) == words(shipped)  # ...in the same words
    for pid in ("B8335", "B9345"):
        assert tokenizer.convert_ids_to_tokens(tokenizer.encode(" " + pid, add_special_tokens=False))[
            1:
        ] == list(pid[1:])


# ---------------------------------------------------------------------------------------------
# Model


def test_tiny_config_matches_the_tokenizer(tokenizer):
    model = build_tiny_model()
    cfg = model.config
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert 1_000_000 < count_parameters(model) < 10_000_000
    assert cfg.vocab_size >= len(tokenizer) and cfg.vocab_size % 64 == 0
    assert cfg.pad_token_id == tokenizer.pad_token_id and cfg.eos_token_id == tokenizer.eos_token_id
    assert cfg.tie_word_embeddings and cfg.attention_dropout == 0.0
    model2, tok2 = load_policy("tiny")
    assert count_parameters(model2) == count_parameters(model) and len(tok2) == len(tokenizer)


def _ids(tokenizer):
    return torch.tensor([tokenizer.encode("<think> answers: none.</think><search> Gevorn Bank</search>")])


def test_save_and_load_policy_round_trip_gives_identical_logits(tokenizer, tmp_path):
    model = build_tiny_model(seed=3).eval()
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded, tok = load_policy(tmp_path / "m")
    ids = _ids(tokenizer)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert tok.encode("Gevorn Bank <answer>") == tokenizer.encode("Gevorn Bank <answer>")
    assert tok.padding_side == "left"
    loaded64, _ = load_policy(tmp_path / "m", dtype=torch.float64)
    assert next(loaded64.parameters()).dtype == torch.float64


def _one_line_error(path, match):
    with pytest.raises(ModelLoadError, match=match) as info:
        load_policy(path)
    assert "\n" not in str(info.value)


def test_load_policy_errors_are_one_clear_line(tokenizer, tmp_path):
    _one_line_error(tmp_path / "missing", "does not exist")
    (tmp_path / "empty").mkdir()
    _one_line_error(tmp_path / "empty", "no config.json")
    shutil.copytree(TINY_DIR, tmp_path / "no-weights")
    _one_line_error(tmp_path / "no-weights", "no weights")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tmp_path / "gone"), "peft_type": "LORA"})
    )
    _one_line_error(tmp_path / "adapter", "names base model .* not a local directory")


def test_load_policy_loads_a_peft_adapter_over_its_base(tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    base_dir = tmp_path / "base"
    build_tiny_model(seed=4).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    base, _ = load_policy(base_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    tuned = get_peft_model(base, lora).eval()
    tuned.save_pretrained(tmp_path / "adapter")
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base_dir)

    loaded, tok = load_policy(tmp_path / "adapter")
    assert type(loaded).__name__.startswith("PeftModel")
    ids = _ids(tokenizer)
    with torch.no_grad():
        got, want = loaded(input_ids=ids).logits, tuned(input_ids=ids).logits
        plain, _ = load_policy(base_dir)
        assert torch.allclose(got, want, atol=1e-6)
        assert not torch.allclose(got, plain(ids).logits, atol=1e-3)  # the adapter does something

    # a base given relative to the adapter directory also works
    cfg["base_model_name_or_path"] = "../base"
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
    again, _ = load_policy(tmp_path / "adapter")
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, want, atol=1e-6)


def test_cli_rollout_smoke_and_one_line_errors(tmp_path, capsys):
    from mem1lite.cli import main

    out = tmp_path / "x.jsonl"
    assert main(["rollout", "--episodes", "2", "--objectives", "2", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert "wrote 2 episodes" in capsys.readouterr().out
    code = main(["rollout", "--policy", str(tmp_path / "nope"), "--out", str(tmp_path / "y.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mem1: error: ") and err.count("\n") == 1
    assert not (tmp_path / "y.jsonl").exists()


@pytest.mark.parametrize(
    "fault", ["delete tokenizer.json", "delete tokenizer_config.json", "truncate tokenizer.json"]
)
def test_a_missing_or_partial_tokenizer_file_is_an_error_never_a_fallback(tmp_path, fault):
    import shutil

    from mem1lite.model import TINY_DIR, ModelLoadError

    copy = tmp_path / "tiny"
    shutil.copytree(TINY_DIR, copy)
    action, name = fault.split(" ", 1)
    if action == "delete":
        (copy / name).unlink()
    else:
        text = (copy / name).read_text()
        (copy / name).write_text(text[: len(text) // 2])
    with pytest.raises(ModelLoadError, match="mem1 tokenizer --force"):
        load_tokenizer(copy)
    assert len(load_tokenizer(TINY_DIR)) > 5000  # the shipped one is whole


@pytest.mark.parametrize(
    "fault",
    [
        "truncate model.safetensors",
        "break config.json",
        "empty config.json",
        "truncate adapter/adapter_model.safetensors",
        "break adapter/adapter_config.json",
    ],
)
def test_a_damaged_model_file_is_one_line_naming_it_and_what_rebuilds_it(tokenizer, tmp_path, fault):
    """Never a traceback from safetensors, transformers or peft: the file, and what makes it again
    (here the command its card recorded)."""
    from peft import LoraConfig, get_peft_model

    from mem1lite.cli import main

    base = tmp_path / "base"
    build_tiny_model(seed=5).save_pretrained(base)
    tokenizer.save_pretrained(base)
    (base / "card.json").write_text(json.dumps({"command": "mem1 sft --preset quick --out base"}))
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"])
    get_peft_model(load_policy(base)[0], lora).save_pretrained(tmp_path / "adapter")
    action, name = fault.split(" ", 1)
    target = (tmp_path / name) if name.startswith("adapter/") else (base / name)
    data = target.read_bytes()
    target.write_bytes({"truncate": data[: len(data) // 2], "break": data[:7], "empty": b"{}"}[action])
    loaded = tmp_path / "adapter" if name.startswith("adapter/") else base
    with pytest.raises(ModelLoadError) as info:
        load_policy(loaded)
    message = str(info.value)
    assert "\n" not in message and (str(target) in message or str(base) in message)
    if not name.startswith("adapter/"):
        assert "mem1 sft --preset quick --out base" in message
    out = tmp_path / "t.jsonl"
    assert main(["rollout", "--policy", str(loaded), "--episodes", "1", "--out", str(out)]) == 2
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Trust only what was checked (issue #32)


def _tiny_checkpoint(tokenizer, folder, card=None):
    from mem1lite.store import sha256_file

    build_tiny_model(seed=6).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    recorded = {
        "command": "mem1 sft --out x",
        "sha256": {"model.safetensors": sha256_file(folder / "model.safetensors")},
    }
    (folder / "card.json").write_text(json.dumps(recorded if card is None else card))
    return folder


def test_a_byte_flipped_in_the_weights_is_caught_by_the_cards_sha256(tokenizer, tmp_path):
    folder = _tiny_checkpoint(tokenizer, tmp_path / "m")
    load_policy(folder)  # whole: loads
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01  # a flipped bit inside a tensor: safetensors itself loads it without a word
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError) as info:
        load_policy(folder)
    message = str(info.value)
    assert message.startswith(f"{weights} differs from the sha256 its card.json records")
    assert "mem1 sft --out x" in message and "\n" not in message


@pytest.mark.parametrize("card", ["[1, 2]", '{"sha256": "abc"}', "\x89PNG\x00\xff garbage"])
def test_a_card_that_is_not_an_object_is_one_line_naming_it(tokenizer, tmp_path, card):
    folder = _tiny_checkpoint(tokenizer, tmp_path / "m")
    (folder / "card.json").write_bytes(card.encode("latin-1"))
    with pytest.raises(ModelLoadError) as info:
        load_policy(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 'card.json'} cannot be read") and "codec" not in message


def test_a_tokenizer_of_another_size_than_the_models_vocabulary_is_refused(tokenizer, tmp_path):
    folder = _tiny_checkpoint(tokenizer, tmp_path / "m", card={})
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 1000  # the model's embedding has fewer rows than the tokenizer has ids
    (folder / "config.json").write_text(json.dumps(config))
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    for name, tensor in weights.items():
        if tensor.shape[0] == tokenizer.vocab_size or tensor.shape[0] > 5000:
            weights[name] = tensor[:1000].clone()
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        ModelLoadError, match=r"the tokenizer has 5,668 tokens but the model's vocabulary is 1,000"
    ):
        load_policy(folder)


def test_a_damaged_tokenizer_config_is_named_itself_and_an_adapter_without_weights_is_said(
    tokenizer, tmp_path
):
    folder = _tiny_checkpoint(tokenizer, tmp_path / "m")
    (folder / "tokenizer_config.json").write_text("{ not json")
    with pytest.raises(ModelLoadError) as info:
        load_tokenizer(folder)
    assert str(info.value).startswith(f"{folder / 'tokenizer_config.json'} cannot be read")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    base = _tiny_checkpoint(tokenizer, tmp_path / "base")
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    with pytest.raises(ModelLoadError, match="has an adapter_config.json but no adapter weights"):
        load_policy(adapter)


def test_a_checkpoint_is_played_on_the_domain_its_card_names(tmp_path, capsys):
    """A WebShop-lite model on the QA world scores ~0 with no word why: refused, naming its domain."""
    from mem1lite.cli import main
    from mem1lite.model import check_domain, check_whole_model, trained_env

    assert trained_env("data/checkpoints/sft-webshop") == "webshop" and trained_env(tmp_path) is None
    check_domain("data/checkpoints/sft-mem1", "qa")  # its own domain: nothing said
    with pytest.raises(ModelLoadError, match="was trained on WebShop-lite .*not on the QA world"):
        check_domain("data/checkpoints/ppo-webshop", "qa")
    out = tmp_path / "x.jsonl"
    assert (
        main(["rollout", "--policy", "data/checkpoints/sft-webshop", "--episodes", "1", "--out", str(out)])
        == 2
    )
    assert "trained on WebShop-lite" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ModelLoadError, match="is a LoRA adapter"):
        check_whole_model("data/checkpoints/ppo-mem1")
