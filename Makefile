# One command sets up and runs each job; the virtual environment lives in .venv.
#   make run    - set up, then train the main job (vgg-att3-concat-pc on the offline synthetic data)
#   make test   - set up (with dev tools), then lint and run every test, notebooks included
#   make bench  - set up, then print the training-speed benchmark
#   make notebooks - sync the notebook pairs, then execute 01, 02 and 04 (real mode, CPU) and
#                 write their outputs into the .ipynb files
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build to install when the venv has none. Override on other machines, e.g.
#   make test TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup setup-dev run test lint bench notebooks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install $(TORCH_SPEC)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

run: setup
	$(BIN)/python -m attn_lib

lint: setup-dev
	$(BIN)/ruff check .

test: setup-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/bench_train.py

notebooks: setup-dev
	$(BIN)/jupytext --sync notebooks/*.py
	$(BIN)/python tests/test_notebooks.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
