# Two commands: `make lab` and `make test`. Both set everything up first and are idempotent.
# Every stage of `make test` prints a banner saying what it does and, when done, its elapsed seconds.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
STAGE := .ci/stage
PIP := $(BIN)/python -m pip -q --disable-pip-version-check

# `make lab PORT=8890` serves on another port; the server only listens on 127.0.0.1.
PORT ?= 8888
# Jupyter refuses to start as root without --allow-root, and containers, CI images and many cloud
# notebooks run as root; a normal user does not need it.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup system-deps lab test lint typecheck notebooks-clean unit notebooks-test browser-test \
	compat bench serve clean soak

$(STAMP): pyproject.toml
	@$(STAGE) "setup: $(VENV) with nbtoolkit[dev] (pip, quiet)" sh -c '\
	  test -d $(VENV) || $(PYTHON) -m venv $(VENV); \
	  $(PIP) install -U pip && $(PIP) install -e ".[dev]"'
	@touch $(STAMP)

setup: $(STAMP)

# Chromium for the browser tests comes from Debian, without recommended packages (the headless
# browser needs none of them); installed only when missing, as root. apt's output goes to a log that
# is shown only when it fails.
APT_LOG := $(or $(TMPDIR),/tmp)/nbtoolkit-apt.log
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  [ "$$(id -u)" = 0 ] || { echo "chromium is missing: run 'sudo make system-deps' once"; exit 1; }; \
	  $(STAGE) "system-deps: apt-get install --no-install-recommends chromium fonts-dejavu-core (log: $(APT_LOG))" \
	    sh -c 'export DEBIAN_FRONTEND=noninteractive; \
	      { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } \
	        >$(APT_LOG) 2>&1 || { tail -n 30 $(APT_LOG); exit 1; }'; }

lab: setup
	@echo "Starting JupyterLab on notebooks/ at http://127.0.0.1:$(PORT) (open the URL with the token printed below; Ctrl-C stops it)"
	$(BIN)/jupyter lab --ip=127.0.0.1 --port=$(PORT) --ServerApp.port_retries=0 $(ALLOW_ROOT) --notebook-dir=notebooks

lint: setup
	@$(STAGE) "lint: ruff check nbtoolkit tests benchmarks" $(BIN)/ruff check -q nbtoolkit tests benchmarks
	@$(STAGE) "lint: ruff format --check nbtoolkit tests benchmarks" $(BIN)/ruff format -q --check nbtoolkit tests benchmarks

typecheck: setup
	@$(STAGE) "typecheck: mypy nbtoolkit" $(BIN)/mypy

notebooks-clean: setup
	@$(STAGE) "notebooks-clean: notebooks are committed without outputs" \
	  $(BIN)/python tests/check_notebooks_clean.py $(NOTEBOOKS)

unit: setup
	@$(STAGE) "unit: pytest, every test but the browser ones" $(BIN)/python -m pytest -q -m "not browser" tests

notebooks-test: setup
	@$(STAGE) "notebooks: nbmake runs every notebook headless" \
	  env NBTOOLKIT_HEADLESS=1 $(BIN)/python -m pytest -q --nbmake --nbmake-timeout=120 notebooks

# Separate pytest runs: Playwright's sync API marks the main thread's event loop as running while a
# browser is open, so browser tests that open their own Playwright must not share a process with
# another open one or with tests that call asyncio.run().
browser-test: setup system-deps
	@$(STAGE) "browser: widget tests in headless Chromium with a fake microphone" \
	  $(BIN)/python -m pytest -q -m browser tests/browser --ignore=tests/browser/test_voice_chat_browser.py \
	  --ignore=tests/browser/test_notebooks_run_all.py
	@$(STAGE) "browser: the voice-chat test" \
	  $(BIN)/python -m pytest -q -m browser tests/browser/test_voice_chat_browser.py
	@$(STAGE) "browser: Run All of every notebook in JupyterLab 4 and Notebook 7" \
	  $(BIN)/python -m pytest -q -m browser tests/browser/test_notebooks_run_all.py
	@$(STAGE) "browser: browser-marked tests outside tests/browser" \
	  $(BIN)/python -m pytest -q -m browser tests --ignore=tests/browser

test: setup system-deps lint typecheck notebooks-clean
	@$(STAGE) "tests: unit, protocol and server tests, then every notebook with nbmake (headless)" \
	  env NBTOOLKIT_HEADLESS=1 $(BIN)/python -m pytest -q -m "not browser" tests --nbmake --nbmake-timeout=120 notebooks
	@$(MAKE) --no-print-directory browser-test

# The SDK-facing tests against the oldest and the newest dashscope that pyproject.toml allows, each
# installed into a throwaway directory put first on PYTHONPATH (the venv is not touched).
compat: setup
	@$(BIN)/python tests/dashscope_compat.py

# The browser Run All of every notebook, SOAK times over; prints a pass table notebook x frontend.
SOAK ?= 5
soak: setup system-deps
	$(BIN)/python tests/browser/soak.py --runs $(SOAK)

bench: setup
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

serve: setup
	$(BIN)/nbtoolkit serve

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
