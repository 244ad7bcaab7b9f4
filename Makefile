# One entry point for people and CI. `make demo` installs and runs songnet on embedded
# defaults; `make check` installs and runs lint, types and tests.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install demo check lint types test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: an unpinned torch pulls a CUDA build of several GB.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# The daemon on its embedded defaults for one cycle: a synthetic export into demo/exports,
# imported, a short training, a playlist file in demo/data/playlists (no Spotify account).
# `songnet run` (see README) is the same daemon, long-running.
DEMO_DIR ?= demo

demo: install
	SONGNET_DATA_DIR=$(DEMO_DIR)/data SONGNET_EXPORT_DIR=$(DEMO_DIR)/exports $(BIN)/songnet run --demo --once
	@echo "Your first playlist: $(DEMO_DIR)/data/playlists/ (.m3u8, and .json with why each track is there)"

lint: install
	$(BIN)/ruff check .

types: install
	$(BIN)/mypy

test: install
	$(BIN)/pytest -q

check: lint types test

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
