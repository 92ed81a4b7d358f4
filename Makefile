# One command sets up and runs each job; the virtual environment lives in .venv.
#   make run    - set up, then train the main job (vgg-att3-concat-pc on the offline synthetic data)
#   make test   - set up (with dev tools), then lint and run every test, notebooks included
#   make bench  - set up, then print the training-speed benchmark
#   make mutate - set up (with dev tools), then mutation-test the model, maps, attacks,
#                 evaluation, crop/flip and training step (hours on 2 cores; not part of CI;
#                 a rerun resumes). One module, tested afresh:
#                 make mutate MUTANTS='attn_lib.models.attention.*'
#   make notebooks - sync the notebook pairs, then execute 01, 02 and 04 (real mode, CPU) and
#                 write their outputs into the .ipynb files
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build to install when the venv has none. Override on other machines, e.g.
#   make test TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

# Mutants to (re)test, by mutmut's names: module.x_function__mutmut_N, module.xǁClassǁmethod__mutmut_N.
# Empty = all of [tool.mutmut] in pyproject.toml, resuming where the last run stopped.
MUTANTS ?=

.PHONY: setup setup-dev run test lint bench notebooks mutate clean

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

# Results stay in mutants/; `mutmut results` lists the survivors, `mutmut show NAME` one diff.
# Of the training loop only train_step (training/epoch.py) has fast tests: its other functions
# report "no tests".
mutate: setup-dev
	ATTN_LIB_SKIP_SLOW_TESTS=1 nice -n 19 $(BIN)/mutmut run $(foreach m,$(MUTANTS),'$(m)')
	$(BIN)/mutmut export-cicd-stats && cat mutants/mutmut-cicd-stats.json

notebooks: setup-dev
	$(BIN)/jupytext --sync notebooks/*.py
	$(BIN)/python tests/test_notebooks.py

clean:
	rm -rf $(VENV) runs mutants .pytest_cache .ruff_cache
