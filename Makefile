# Two commands on a fresh machine:  make run   |   make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup migrate run test lint bench screenshot clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

migrate: setup
	$(BIN)/python manage.py migrate --noinput

run: migrate
	$(BIN)/python -m project.devstack

lint: setup
	$(BIN)/ruff check .

# The suite in two runs: first every test not marked serial, on PYTEST_WORKERS processes
# (pytest-xdist, a test file per worker at a time, so the servers a module asks for start
# once; each worker has its own Redis, test database and servers, and the tests marked
# faults stop only Redis and servers of their own), then those marked serial, one at a
# time: they drop every UDP packet on the machine with nftables, which would break a
# call test running beside them, or measure a CPU-bound spread neighbours would distort.
# Three workers on two cores: most tests wait on sockets, browsers and workers.
# PYTEST_MARKS narrows both runs (a marker expression); PYTEST_ARGS goes to both.
PYTEST_WORKERS ?= 3
only = $(if $(PYTEST_MARKS), and ($(PYTEST_MARKS)))
test: setup lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not serial$(only)" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m "serial$(only)" $(PYTEST_ARGS) || [ $$? -eq 5 ]

# docs/chat-page.png, the README's picture of the chat page, taken by the test that checks it.
screenshot: setup
	CHAT_SCREENSHOT=docs/chat-page.png $(BIN)/python -m pytest -q tests/e2e/test_chat_screenshot.py

# Every benchmark at full size (minutes; each starts and stops its own stack):
# bench/results/results.jsonl, summary.md and PNG plots. Not part of make test.
bench: setup
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .run *.egg-info .pytest_cache .ruff_cache
