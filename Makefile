# Two commands do all set-up: `make demo` and `make test`. Each creates .venv when missing.
# Torch: a fresh venv gets the light CPU build (torch==2.13.0); if a torch is already importable in the
# venv (e.g. a CUDA build you installed), it is kept, since pyproject only asks for torch>=2.4.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CPU_TORCH ?= torch==2.13.0
STAMP := $(VENV)/.miram-installed

.PHONY: demo test test-fast lint typecheck ci clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(CPU_TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,test,dicom]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/miram demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --runslow

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) miram-demo runs
