# Two commands: `make lab` and `make test`. Both set everything up first and are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(wildcard notebooks/*.ipynb)

.PHONY: setup system-deps lab test lint typecheck unit notebooks-test browser-test bench serve clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Chromium for the browser tests comes from Debian; installed only when missing (needs root).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core; }

lab: setup
	@echo "Starting JupyterLab on notebooks/ (the URL with its token is printed below)"
	$(BIN)/jupyter lab --notebook-dir=notebooks

lint: setup
	$(BIN)/ruff check nbtoolkit tests benchmarks
	$(BIN)/ruff format --check nbtoolkit tests benchmarks

typecheck: setup
	$(BIN)/mypy

notebooks-clean: setup
	$(BIN)/python tests/check_notebooks_clean.py $(NOTEBOOKS)

unit: setup
	$(BIN)/python -m pytest -q -m "not browser" tests

notebooks-test: setup
	NBTOOLKIT_HEADLESS=1 $(BIN)/python -m pytest -q --nbmake --nbmake-timeout=120 notebooks

browser-test: setup system-deps
	$(BIN)/python -m pytest -q -m browser tests/browser --ignore=tests/browser/test_voice_chat_browser.py
	$(BIN)/python -m pytest -q -m browser tests/browser/test_voice_chat_browser.py
	$(BIN)/python -m pytest -q -m browser tests --ignore=tests/browser

# Separate pytest runs: Playwright's sync API marks the main thread's event loop as running while a
# browser is open, so browser tests that open their own Playwright must not share a process with
# another open one or with tests that call asyncio.run().
test: setup system-deps lint typecheck notebooks-clean
	NBTOOLKIT_HEADLESS=1 $(BIN)/python -m pytest -q -m "not browser" tests --nbmake --nbmake-timeout=120 notebooks
	$(BIN)/python -m pytest -q -m browser tests/browser --ignore=tests/browser/test_voice_chat_browser.py
	$(BIN)/python -m pytest -q -m browser tests/browser/test_voice_chat_browser.py
	$(BIN)/python -m pytest -q -m browser tests --ignore=tests/browser

bench: setup
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

serve: setup
	$(BIN)/nbtoolkit serve

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
