# The quick start, two commands that install what is missing first (a virtual environment in .venv
# unless one is active, torch, lit_sft with its dev extras):
#   make demo   train the offline demo (gpt2-tiny on synthetic tasks) and score its answers
#   make test   the whole test suite (what CI runs)
# TORCH=... installs another torch build (any torch >= 2.4 works); PYTHON=... another interpreter.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= $(or $(VIRTUAL_ENV),.venv)
BIN := $(VENV)/bin
DEMO_RUN ?= outputs/demo-sft

# Offline, tiktoken reads GPT-2's encoding from a copy beside the project when there is one.
ifneq ($(wildcard ../shared/tiktoken-cache),)
export TIKTOKEN_CACHE_DIR ?= $(abspath ../shared/tiktoken-cache)
endif

.PHONY: install demo test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: install
	$(BIN)/python train.py experiment=demo hydra.run.dir=$(DEMO_RUN)
	$(BIN)/python evaluate.py run_dir=$(DEMO_RUN) scorer=exact_match limit=300

test: install
	$(BIN)/python -m pytest
