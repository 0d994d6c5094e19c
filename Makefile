# Two commands on a fresh machine with only python3; each sets itself up first:
#   make run    fit the Gamma P-STN on MNIST30 with the authors' protocol
#   make test   run the test suite
# The virtualenv is made once (in .venv) and reinstalled when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch is what `pip install torch==2.13.0` gives on the development machines;
# pinning it in the same pip command keeps the resolver from pulling a newer CUDA build.
TORCH_PIN ?= torch==2.13.0
# Data root: $PYRO_PSTN_DATA if set, else ../shared/data where it exists, else ./data.
export PYRO_PSTN_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))

.PHONY: install run lint test test-slow bench notebooks

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)" -e ".[dev]"
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/python -m experiments.fit --model gamma_pstn --data mnist30

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

bench: install
	$(BIN)/python -m experiments.bench

# Fit one small real run per notebook (runs/notebooks/) and save the notebooks with their outputs.
notebooks: install
	$(BIN)/python -m experiments.notebooks
