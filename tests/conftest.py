import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
def small_world():
    """A small generated world for fast tests."""
    return generate_world(SMALL)
