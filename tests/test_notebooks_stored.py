"""Notebooks are stored with cleared outputs, and each .ipynb matches its jupytext .py source."""

import json
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_cleared(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_matches_its_py_source(path):
    source = path.with_suffix(".py")
    assert source.exists(), f"{path.name} has no jupytext source {source.name}"
    a = [(c.cell_type, c.source.strip()) for c in jupytext.read(path).cells]
    b = [(c.cell_type, c.source.strip()) for c in jupytext.read(source).cells]
    assert a == b, f"{path.name} and {source.name} differ: run `make notebooks`"
