# Two commands: `make demo` runs the whole system, `make test` runs the whole suite.
# Both set up what is missing first (virtualenv, Python packages, system packages).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install system-deps objstore-deps hub-deps demo down status test test-fast lint typecheck lab clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
	  { echo "error: Python >= 3.11 is required ($(PYTHON) is $$($(PYTHON) --version 2>&1)); run 'make PYTHON=python3.11 ...'" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[notebooks,spark,test]'
	$(BIN)/workbench broker fetch
	$(BIN)/workbench spark fetch
	@touch $@

install: $(STAMP)  ## create .venv and install the workbench with all extras

system-deps:  ## install system packages the tests need (Chromium, ChromeDriver, kcat, mosquitto-clients)
	@scripts/install-system-deps.sh

objstore-deps: install  ## install Azurite (npm), the Azure Blob emulator the object-store tests run
	$(BIN)/python -m proving.objstore install

hub-deps: install  ## install configurable-http-proxy (npm), the proxy of the analysts' JupyterHub
	$(BIN)/python -m workbench.hub install

demo: install hub-deps  ## start the whole system in the background and print URLs and logins
	$(BIN)/workbench up
	@echo
	@echo "The workbench is running. 'make down' stops it; '$(BIN)/workbench status' checks it."

down:  ## stop everything 'make demo' started
	@if [ -x $(BIN)/workbench ]; then $(BIN)/workbench down; else echo "nothing to stop: no .venv here"; fi

status: install  ## health of each component
	$(BIN)/workbench status

lint: install  ## ruff, and the import contracts (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install  ## mypy (strict) on the packages
	$(BIN)/mypy

test: install system-deps objstore-deps hub-deps lint typecheck  ## set up, lint, type-check and run the whole test suite
	$(BIN)/python -m pytest -n 2

test-fast: install  ## the suite without tests marked slow
	$(BIN)/python -m pytest -n 2 -m "not slow"

lab: install  ## single-user JupyterLab for the platform's own developers (analysts: the hub)
	@echo "make lab: ONE unscoped JupyterLab as $$(id -un), for the platform's developers:" >&2
	@echo "  its kernels read every tenant's data. Analysts use the hub (docs/hub.md)." >&2
	$(BIN)/jupyter lab --no-browser --ip "$${WORKBENCH_HOST:-127.0.0.1}" --port "$${WORKBENCH_LAB_PORT:-8888}" \
	  --notebook-dir . $$([ "$$(id -u)" = 0 ] && echo --allow-root)

clean: down  ## remove .venv and the local state (.workbench)
	rm -rf $(VENV) .workbench .pytest_cache .mypy_cache .ruff_cache
