"""The tiny Qwen2 model, and one loading function for it and for real Qwen2 checkpoints.

`load_policy(path)` is the only way the repo loads a model: the shipped tiny checkpoints, a
directory a user trained, or a real `Qwen/Qwen2.5-0.5B-Instruct` downloaded by the user into a
local folder all go through `AutoModelForCausalLM.from_pretrained(..., local_files_only=True)`.
Nothing is ever fetched from a hub.

The tiny config (about 1.6 M parameters, 0.64 M of them the tied 5k-token embedding) follows what
the prototypes measured on 2 CPU cores (docs/DESIGN.md): width 128, 4 layers, 4 query heads sharing
2 key/value heads, MLP 512, tied embeddings. A 6.7 M model was 4.4x slower per token and worse at
equal wall-clock time.

Model presets (`--model` of `mem1 sft` / `mem1 ppo`, `resolve_model`):

- `tiny`: the from-scratch model above, float32 everywhere, no activation checkpointing.
- `qwen2.5-0.5b`: `Qwen/Qwen2.5-0.5B-Instruct` from a local directory, never downloaded: `$MEM1_QWEN_DIR`,
  else `data/models/Qwen2.5-0.5B-Instruct`, else the Hugging Face cache of a user who fetched it with
  `huggingface-cli download Qwen/Qwen2.5-0.5B-Instruct`. bfloat16 on a GPU (float32 on CPU),
  activation checkpointing where the trajectory layout allows it, LoRA on every linear map of a
  Qwen2 block. Its tokenizer has no tag tokens: the tags are plain text (generate.stop_checker and
  trajectory.token_kinds read text, not ids).
- any local directory (a checkpoint `mem1 sft` wrote, or another Qwen2 model): the real-model
  settings when its width is `REAL_MODEL_WIDTH` or more, else the tiny ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TINY_DIR = DATA_DIR / "tiny"
"""the shipped tokenizer and untrained config (`mem1 tokenizer` rebuilds them)"""


@dataclass
class TinyConfig:
    """Size of the from-scratch Qwen2 model."""

    hidden_size: int = 128
    """model width"""
    intermediate_size: int = 512
    """MLP width"""
    num_hidden_layers: int = 4
    """transformer blocks"""
    num_attention_heads: int = 4
    """query heads"""
    num_key_value_heads: int = 2
    """key/value heads (grouped-query attention, as in Qwen2)"""
    max_position_embeddings: int = 8192
    """longest context (RoPE): a 16-objective full-context episode stays far below it"""
    rope_theta: float = 10_000.0
    """RoPE base; the tiny model never sees contexts past a few thousand tokens"""


def tiny_qwen2_config(tokenizer, cfg: TinyConfig | None = None):
    from transformers import Qwen2Config

    cfg = cfg or TinyConfig()
    vocab = (len(tokenizer) + 63) // 64 * 64  # padded like Qwen's own vocabulary
    return Qwen2Config(
        vocab_size=vocab,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        rms_norm_eps=1e-6,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        use_cache=True,
        **asdict(cfg),
    )


def build_tiny_model(config=None, seed: int = 0, dtype=torch.float32, tiny_dir=None):
    """A freshly initialised tiny Qwen2 (seeded), from the shipped config unless one is given."""
    from transformers import AutoConfig, Qwen2ForCausalLM

    if config is None:
        read_json_file(Path(tiny_dir or TINY_DIR) / "config.json")  # missing or damaged: one line naming it
        config = AutoConfig.from_pretrained(tiny_dir or TINY_DIR, local_files_only=True)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).to(dtype)


class ModelLoadError(RuntimeError):
    """A model directory is missing or incomplete (message is one line)."""


def rebuild_hint(folder: Path) -> str:
    """What makes a model folder again: the shipped tiny assets' command, the command its card
    recorded, or (a copied-in model) a fresh copy."""
    if folder.resolve() == TINY_DIR.resolve():
        return "rebuild it with `mem1 tokenizer --force`"
    try:
        command = json.loads((folder / "card.json").read_text()).get("command")
    except (OSError, ValueError, AttributeError):  # no card, not JSON, not an object
        command = None
    if isinstance(command, str) and command:
        return f"restore the folder or train it again with `{command}`"
    return "copy the model folder again (or train it again)"


def _unreadable(file: Path, exc: BaseException, rebuild: str | None = None) -> ModelLoadError:
    why = "not a JSON object" if str(exc) == "not a JSON object" else type(exc).__name__
    return ModelLoadError(f"{file} cannot be read ({why}); {rebuild or rebuild_hint(file.parent)}")


def read_json_file(file: Path, rebuild: str | None = None) -> dict:
    """A model folder's JSON file (config, adapter config, card) as a dict, or one line naming it."""
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError (a binary file) is a ValueError
        raise _unreadable(file, exc, rebuild) from None
    if not isinstance(data, dict):
        raise _unreadable(file, ValueError("not a JSON object"), rebuild)
    return data


def read_card(folder: str | Path) -> dict | None:
    """A checkpoint's card.json as a dict (None when it has none), or one line naming it."""
    file = Path(folder) / "card.json"
    return read_json_file(file) if file.is_file() else None


_checked: dict[tuple, str] = {}
"""(file, size, mtime) -> its sha256, so that a checkpoint loaded again is not read twice"""


def check_card(folder: Path) -> None:
    """Trust only what was checked: every file the card records a sha256 of (an SFT checkpoint's
    model.safetensors) has those bytes, or one line names the file that differs (~20 ms for the
    tiny model's 7 MB)."""
    from .store import sha256_file

    card = read_card(folder)
    recorded = (card or {}).get("sha256", {})
    if not isinstance(recorded, dict):
        raise _unreadable(folder / "card.json", TypeError("its sha256 is not a table of files"))
    for name, digest in sorted(recorded.items()):
        file = folder / str(name)
        if not file.is_file():
            continue  # a missing weights file is said by the loader, by name
        stat = file.stat()
        key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _checked:
            _checked[key] = sha256_file(file)
        if _checked[key] != digest:
            raise ModelLoadError(
                f"{file} differs from the sha256 its card.json records (a damaged or replaced file); "
                f"{rebuild_hint(folder)}"
            )


DOMAIN_NAMES = {"qa": "the QA world", "webshop": "WebShop-lite"}


def trained_env(path: str | Path) -> str | None:
    """The domain a checkpoint was trained on, as its card.json says (None: no card says)."""
    card = read_card(path) if Path(path).is_dir() else None
    args = (card or {}).get("args")
    env = args.get("env") if isinstance(args, dict) else None
    return env if isinstance(env, str) else None


def check_domain(path: str | Path, env: str, label: str | None = None) -> None:
    """A checkpoint is played on the domain it was trained on: another would score ~0 with no word
    why (the card's domain against the command's --env)."""
    trained = trained_env(path)
    if trained is not None and trained != env:
        raise ModelLoadError(
            f"{label or path} was trained on {DOMAIN_NAMES.get(trained, trained)} (its card.json), not on "
            f"{DOMAIN_NAMES.get(env, env)}: give a checkpoint trained on {env} (or, where the command has "
            f"it, --env {trained})"
        )


def check_whole_model(path: str, flag: str = "--init") -> None:
    """A base to train from is a whole model: an adapter (a PPO run's output) is refused by name."""
    adapter = Path(path) / "adapter_config.json"
    if path != "tiny" and adapter.is_file():
        base = read_json_file(adapter).get("base_model_name_or_path")
        raise ModelLoadError(
            f"{flag} {path} is a LoRA adapter (a PPO run's output), not a whole model: give the base it "
            f"was trained over ({base}) or an SFT checkpoint"
        )


VOCABULARY_PADDING = 512
"""most rows a model's embedding may hold beyond its tokenizer's tokens (rounded up for speed:
the tiny model pads 5,668 to 5,696, Qwen2.5 151,665 to 151,936); more means another tokenizer"""


def check_vocabulary(model, tokenizer, path: Path) -> None:
    """The tokenizer and the model are a pair: every token id has an embedding row, and the model
    has no more rows than padding explains (a checkpoint beside another run's tokenizer)."""
    tokens, rows = len(tokenizer), model.get_input_embeddings().weight.shape[0]
    if not tokens <= rows <= tokens + VOCABULARY_PADDING:
        raise ModelLoadError(
            f"{path}: the tokenizer has {tokens:,} tokens but the model's vocabulary is {rows:,}: not a "
            f"pair (a tokenizer or config.json from another model); {rebuild_hint(path)}"
        )


def check_weights(folder: Path) -> None:
    """Open every *.safetensors header of `folder` (a truncated file fails here, by name, rather
    than deep inside transformers or peft)."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                f.keys()
        except Exception as exc:  # safetensors raises its own error type for a damaged file
            raise _unreadable(file, exc) from None


def load_policy(path: str | Path, dtype: torch.dtype | None = None, attn_implementation: str = "sdpa"):
    """Load (model, tokenizer) from a local directory: a full model, or a peft adapter dir whose
    `adapter_config.json` names its base model directory.

    `path` may be `tiny` (a fresh untrained tiny model), `qwen2.5-0.5b` (its local directory, see
    `resolve_model`) or any local directory in the Hugging Face layout, including a real Qwen2.5
    checkpoint.
    """
    from transformers import AutoModelForCausalLM

    if str(path) == "tiny":
        return build_tiny_model(dtype=dtype or torch.float32), load_tokenizer(TINY_DIR)
    if str(path) in MODEL_PRESETS:  # qwen2.5-0.5b: its local directory (resolve_model)
        path = resolve_model(path).path
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(
            f"model directory {path} does not exist (nothing is downloaded: put the files there)"
        )
    adapter_cfg = path / "adapter_config.json"
    if adapter_cfg.is_file():
        base = read_json_file(adapter_cfg).get("base_model_name_or_path")
        if base == "tiny":  # an adapter trained over the untrained tiny model (seed 0)
            model, tokenizer = load_policy("tiny", dtype=dtype)
            return _with_adapter(model, path), tokenizer
        base_path = Path(base) if isinstance(base, str) and base else None
        if base_path is not None and not base_path.is_absolute():
            base_path = (path / base_path).resolve()
        if base_path is None or not base_path.is_dir():
            raise ModelLoadError(f"adapter {path} names base model {base!r}, which is not a local directory")
        model, tokenizer = load_policy(base_path, dtype=dtype, attn_implementation=attn_implementation)
        return _with_adapter(model, path), tokenizer
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json: not a Hugging Face model directory")
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    if not has_weights:
        raise ModelLoadError(f"{path} has a config.json but no weights (*.safetensors)")
    read_json_file(path / "config.json")
    check_weights(path)
    check_card(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype or torch.float32, attn_implementation=attn_implementation, local_files_only=True
        )
    except (OSError, ValueError, KeyError) as exc:  # readable files that do not make a model
        raise ModelLoadError(
            f"{path} does not load as a model ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            f"{rebuild_hint(path)}"
        ) from None
    tokenizer = load_tokenizer(path)
    check_vocabulary(model, tokenizer, path)
    return model, tokenizer


def _with_adapter(model, path: Path):
    """The peft adapter in `path` over `model`, its files checked first."""
    from peft import PeftModel

    if not any((path / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise ModelLoadError(
            f"{path} has an adapter_config.json but no adapter weights (adapter_model.safetensors); "
            f"{rebuild_hint(path)}"
        )
    check_weights(path)
    check_card(path)  # a PPO card records its adapter's and value head's sha256
    return PeftModel.from_pretrained(model, path, is_trainable=False)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    path = Path(path)
    # Both files, always: with tokenizer.json gone, transformers quietly builds a fallback tokenizer
    # of a dozen tokens from the config, and every result made with it is silently wrong.
    missing = [name for name in ("tokenizer.json", "tokenizer_config.json") if not (path / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"{path} has no {' or '.join(missing)}; rebuild the tiny one with `mem1 tokenizer --force`"
        )
    for name in ("tokenizer_config.json", "tokenizer.json"):  # a damaged file is named, not its neighbour
        read_json_file(path / name, rebuild="rebuild the tiny one with `mem1 tokenizer --force`")
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # a truncated or foreign file: name it, never a traceback
        raise ModelLoadError(
            f"{path / 'tokenizer.json'} cannot be read ({type(exc).__name__}); "
            "rebuild the tiny one with `mem1 tokenizer --force`"
        ) from None
    tok.padding_side = "left"  # batched generation pads on the left; masks never read pad ids
    return tok


# ---------------------------------------------------------------------------------------------
# Model presets


QWEN_HUB_ID = "Qwen/Qwen2.5-0.5B-Instruct"
QWEN_ENV = "MEM1_QWEN_DIR"
"""environment variable naming a local Qwen2.5-0.5B-Instruct directory"""
QWEN_LOCAL_DIR = DATA_DIR / "models" / "Qwen2.5-0.5B-Instruct"
"""where the qwen2.5-0.5b preset looks when MEM1_QWEN_DIR is not set (git-ignored)"""
REAL_MODEL_WIDTH = 512
"""a checkpoint directory this wide or wider is trained with the real-model settings"""
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""every linear map of a Qwen2 block: the attention projections and the SwiGLU MLP"""
MODEL_PRESETS = ("tiny", "qwen2.5-0.5b")


@dataclass(frozen=True)
class ModelSpec:
    """A base model and how to train it (`resolve_model`)."""

    name: str
    """the preset name, or the directory as given"""
    path: str
    """what `load_policy` loads: `tiny` or a local directory"""
    real: bool = False
    """real-model settings: bfloat16 on GPU and activation checkpointing"""
    lora_targets: tuple[str, ...] = LORA_TARGETS
    """module names LoRA adapts (PPO)"""

    @property
    def gradient_checkpointing(self) -> bool:
        """recompute activations in the backward pass (the `packed` layout refuses it: masks.py)"""
        return self.real

    def dtype(self, device) -> torch.dtype:
        """Weights' dtype on `device`: bfloat16 for a real model on a GPU, float32 otherwise."""
        cuda = torch.device(device).type == "cuda" if device is not None else False
        return torch.bfloat16 if self.real and cuda else torch.float32


QWEN2_5_0_5B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    tie_word_embeddings=True,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    attention_dropout=0.0,
    use_sliding_window=False,
    bos_token_id=151643,
    eos_token_id=151645,
)
"""The architecture of Qwen/Qwen2.5-0.5B-Instruct (its config.json, written out by hand: nothing is
downloaded), for tests and timings of a randomly initialised model of the real size (494 M
parameters, 136 M of them the tied embedding)"""


def qwen2_5_0_5b_config(**overrides):
    """A Qwen2Config of the real Qwen2.5-0.5B size; `overrides` (e.g. a smaller `vocab_size` for a
    test tokenizer, or its `pad_token_id`) replace fields."""
    from transformers import Qwen2Config

    return Qwen2Config(**(QWEN2_5_0_5B | overrides))


def qwen_dir() -> Path:
    """The local Qwen2.5-0.5B-Instruct directory, or ModelLoadError saying where to put it."""
    candidates = []
    if os.environ.get(QWEN_ENV):
        candidates.append(Path(os.environ[QWEN_ENV]).expanduser())
    else:
        candidates.append(QWEN_LOCAL_DIR)
        try:
            from huggingface_hub.constants import HF_HUB_CACHE

            snapshots = Path(HF_HUB_CACHE) / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots"
            candidates += sorted(snapshots.glob("*"), reverse=True) if snapshots.is_dir() else []
        except ImportError:
            pass
    for path in candidates:
        if (path / "config.json").is_file() and (any(path.glob("*.safetensors")) or any(path.glob("*.bin"))):
            return path
    where = f"${QWEN_ENV} ({candidates[0]})" if os.environ.get(QWEN_ENV) else str(QWEN_LOCAL_DIR)
    raise ModelLoadError(
        f"no local weights for qwen2.5-0.5b: put {QWEN_HUB_ID} (config.json, model.safetensors, tokenizer "
        f"files) in {where} or point ${QWEN_ENV} at a directory holding them (nothing is downloaded)"
    )


def resolve_model(name: str | Path) -> ModelSpec:
    """`tiny`, `qwen2.5-0.5b` or a local model directory -> ModelSpec (ModelLoadError: one line)."""
    name = str(name)
    if name == "tiny":
        return ModelSpec("tiny", "tiny")
    if name == "qwen2.5-0.5b":
        return ModelSpec(name, str(qwen_dir()), real=True)
    path = Path(name)
    config = path / "config.json"
    if not config.is_file() and (path / "adapter_config.json").is_file():  # an adapter: its base decides
        base = read_json_file(path / "adapter_config.json").get("base_model_name_or_path") or ""
        base_path = Path(base) if Path(base).is_absolute() else (path / base).resolve()
        config = base_path / "config.json"
    if not path.is_dir():
        raise ModelLoadError(
            f"--model {name}: expected {', '.join(MODEL_PRESETS)} or a local model directory "
            "(nothing is downloaded)"
        )
    width = read_json_file(config).get("hidden_size", 0) if config.is_file() else 0
    return ModelSpec(name, str(path), real=width >= REAL_MODEL_WIDTH)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
