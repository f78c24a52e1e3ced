# The two commands of the README: `make study` and `make test`.
# Both bootstrap .venv (torch first, pinned to the CPU build, then the project),
# fetch and verify the data when absent, and run. A second run reinstalls nothing
# unless pyproject.toml changed.

# PYTHON: the interpreter the venv is made from (3.11; e.g. `make PYTHON=python3.11 test`).
# TORCH_INDEX: a pip index for torch, e.g. PyTorch's CPU or a CUDA wheel index; empty: the
# torch==2.13.0 that pip finds by default. LOCKED=1: every other package at the exact
# version of requirements.lock (what the committed study ran on) instead of the ranges.
PYTHON ?= python3
TORCH_INDEX ?=
LOCKED ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= data
PROFILE ?= quick

export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: study test test-fast test-faults data bench lint clean-venv

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || \
	    $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	    echo "error: rnngen needs Python 3.11; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." \
	         "Choose one with PYTHON=, e.g. make PYTHON=python3.11 $(MAKECMDGOALS)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch before anything else: an unpinned resolve would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(if $(LOCKED),$(BIN)/python -m pip install --quiet -r requirements.lock)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

data: $(STAMP)
	$(BIN)/rnngen embed --out $(OUT)

study: $(STAMP)
	$(BIN)/rnngen study --profile $(PROFILE) --out $(OUT)

test: data
	$(BIN)/python -m pytest tests

# The fault-injection suite (~10 min: real processes killed and interrupted), run on purpose.
test-faults: data
	$(BIN)/python -m pytest tests/faults -m faults

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit

# The three CPU benchmarks of the README, one after another, each printing ratios against a
# baseline measured in the same run.
bench: data
	$(BIN)/python -m bench.bench_embed
	$(BIN)/python -m bench.bench_spectrum
	$(BIN)/python -m bench.bench_train

# One formatter and one type checker: CI runs this before the tests.
lint: $(STAMP)
	$(BIN)/ruff check rnngen tasks flows tests bench
	$(BIN)/ruff format --check rnngen tasks flows tests bench
	$(BIN)/mypy

clean-venv:
	rm -rf $(VENV)
