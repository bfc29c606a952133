# mem1lite: the two commands are `make demo` and `make test` (README).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-stamp
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-py test-nb lab lint format notebooks clean-runs

# Idempotent: the stamp is newer than pyproject.toml once everything is installed, so a second
# run with nothing changed costs a file-date check. torch goes in first, alone, so that pip takes
# the CPU build rather than a several-GB CUDA one.
setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# `make demo POLICY=runs/my-model` shows another mem1 model against the same baseline.
demo: setup
	$(BIN)/mem1 demo $(if $(POLICY),--policy $(POLICY))

test: setup test-py test-nb

test-py: setup
	$(BIN)/python -m pytest --durations=15 tests/

test-nb: setup
	$(BIN)/python -m pytest --nbval-lax notebooks/

lab: setup
	$(BIN)/jupyter lab notebooks/

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The notebooks' source is the jupytext .py file; this rebuilds the cleared .ipynb from it.
notebooks: setup
	$(BIN)/jupytext --to ipynb --update notebooks/*.py
	$(BIN)/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb

clean-runs:
	rm -rf runs/
