# Quick start: `make demo` and `make test` each set up .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TSTAMP  := $(VENV)/.installed-integrations
OUT     ?= runs/demo

.PHONY: demo test test-fast lint docs bench bench-deps auto-suite clean

# torch is pinned here (the CPU build on local disk); the package itself asks torch>=2.10.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The trainers the integration tests run against, at the versions we test; the constraints
# keep pip from replacing the pinned torch (timm is not here: its import needs torchvision).
$(TSTAMP): $(STAMP) .ci/constraints.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check -c .ci/constraints.txt \
		lightning transformers accelerate tensorboard
	touch $(TSTAMP)

demo: $(STAMP)
	$(BIN)/python -m onecycle demo --out $(OUT)

test: $(STAMP) $(TSTAMP)
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# Optional extras for benchmarks/auto_lr (never test dependencies): the learning-rate-free
# optimizers and peers' finders, installed without their dependencies so that none can
# replace the pinned torch; scikit-learn for the diabetes pair.
bench-deps: $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check scikit-learn pyyaml
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps prodigyopt==1.1.2 \
		schedulefree==1.4.1 dadaptation==3.2 torch-lr-finder==0.2.2
	$(BIN)/python -m pip install -q --disable-pip-version-check -c .ci/constraints.txt lightning

# The lr_max="auto" suite, every pair and arm (6-7 hours on a 2-core CPU; benchmarks/README.md).
auto-suite: bench-deps
	$(BIN)/python benchmarks/auto_lr/suite.py run --workers 2 \
		--json docs/results/auto_lr_suite.json --table docs/results/auto_lr_suite.md

# The guides and the API reference (from the docstrings) into site/, warnings as errors;
# tests/test_api_docs.py builds it too, so `make test` (CI) fails on a broken reference.
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict

lint: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache .hypothesis
