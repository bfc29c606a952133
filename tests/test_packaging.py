"""pyproject.toml and environment.yml pin the same packages at the same versions."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    out = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==([^\s;]+)\s*", line)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for ds in project["optional-dependencies"].values() for d in ds]
    py_pins = _pins(declared)
    yml_lines = [
        line.strip().removeprefix("- ") for line in (ROOT / "environment.yml").read_text().splitlines()
    ]
    env_pins = _pins(yml_lines)
    assert py_pins, "pyproject.toml declares no pinned dependency"
    assert py_pins == env_pins


def test_makefile_installs_cpu_torch_first_and_ci_calls_make_test():
    make = (ROOT / "Makefile").read_text()
    assert make.index("torch==2.13.0") < make.index("-e '.[dev]'")
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    pinned = _pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert pinned["torch"] == "2.13.0"
