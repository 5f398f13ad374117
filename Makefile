# Two commands for a newcomer: `make demo` and `make test`. Both set themselves up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast test-postgres lint demo dev bench clean screenshots

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

test: setup  ## the whole suite, as CI runs it
	$(BIN)/pytest -q

test-fast: setup  ## skip the slow end-to-end tests
	$(BIN)/pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: setup  ## build, import and materialize the demo projects offline
	$(BIN)/vidpipe-dagster demo

dev: setup  ## the Dagster UI over $VIDPIPE_HOME (default ./.vidpipe)
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.vidpipe/dagster} $(BIN)/dagster dev -w workspace.yaml

bench: setup  ## clip concurrency, definitions load for 50 projects, preview render, final cut
	$(BIN)/python bench/clips.py
	$(BIN)/python bench/definitions_load.py
	$(BIN)/python bench/render.py
	$(BIN)/python bench/final_cut.py

test-postgres: setup  ## local PostgreSQL (Debian package) + the postgres-marked tests
	bash .ci/postgres.sh > .ci/pg.env && . .ci/pg.env && $(BIN)/pytest -q -m postgres

clean:
	rm -rf $(VENV) .vidpipe .pytest_cache .ruff_cache

screenshots: setup  ## PNGs of the UI over the demo (needs Debian's chromium: apt-get install chromium)
	$(BIN)/python tools/screenshots.py
