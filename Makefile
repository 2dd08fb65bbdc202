# The two ways in (see README): `make demo` and `make test`. Each creates the
# virtual environment and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch 2.13.0 (the project accepts any torch 2.3+; an
# unpinned install would pull a multi-GB CUDA build).
TORCH ?= torch==2.13.0

.PHONY: install system-deps demo test lint

# Real Prometheus and Alertmanager for the alerting tests, and a real headless
# browser for the live page's test (Debian packages).
SYSTEM_TOOLS := promtool amtool prometheus prometheus-alertmanager chromium

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing=yes; done; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager chromium >/dev/null; \
	fi

demo: install
	$(BIN)/gradwatch demo

test: install system-deps
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/pip install --quiet ruff mypy types-PyYAML
	$(BIN)/ruff check gradwatch tests
	$(BIN)/mypy gradwatch
