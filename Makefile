# The two ways in (see README): `make demo` and `make test`. Each creates the
# virtual environment and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch 2.13.0 (the project accepts any torch 2.3+; an
# unpinned install would pull a multi-GB CUDA build).
TORCH ?= torch==2.13.0

.PHONY: install demo test lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/gradwatch demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/pip install --quiet ruff
	$(BIN)/ruff check gradwatch tests
