import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mem1lite.model import TINY_DIR, TinyConfig, build_tiny_model, load_tokenizer, tiny_qwen2_config  # noqa: E402
from mem1lite.world import DEFAULT_WORLD_DIR, WorldConfig, generate_world, load_world  # noqa: E402

SMALL = WorldConfig(
    seed=7,
    persons=600,
    orgs=240,
    cities=180,
    works=180,
    first_names=60,
    last_names=80,
    cores=120,
    questions=(400, 120, 60, 60),
)


@pytest.fixture(scope="session")
def world():
    """The shipped world (data/qa)."""
    return load_world(DEFAULT_WORLD_DIR)


@pytest.fixture(scope="session")
def qa(world):
    """The QA domain on the shipped world (text pointer), shared by the training tests."""
    from mem1lite.domains import QADomain

    return QADomain(world=world)


@pytest.fixture(scope="session")
def tokenizer():
    """The shipped tokenizer (data/tiny), shared by both domains."""
    return load_tokenizer(TINY_DIR)


@pytest.fixture(scope="session")
def small_world():
    """A small generated world for fast tests."""
    return generate_world(SMALL)


def write_small_qwen(path) -> str:
    """A small random Qwen2 (2 layers, width 32, seed 0) with the shipped tokenizer, saved in `path`
    as an SFT-style checkpoint: the base the training tests start from. Built like the tiny model
    (model.py), only smaller."""
    tok = load_tokenizer(TINY_DIR)
    size = TinyConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
    )
    build_tiny_model(tiny_qwen2_config(tok, size), seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def small_qwen():
    """`write_small_qwen`, for fixtures that make their own folder."""
    return write_small_qwen


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory, small_qwen):
    """A small random Qwen2 with the shipped tokenizer, saved as an SFT-style checkpoint (per module)."""
    return small_qwen(tmp_path_factory.mktemp("init"))
