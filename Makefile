# One command sets up and runs the main job, one sets up and runs the tests.
#   make run    create .venv if missing, install cc-hub, run `cc-bench run --all`
#   make test   create .venv if missing, install cc-hub with test+docs extras (and Chromium), run pytest
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Re-install when the project's metadata changes.
STAMP  := $(VENV)/.cc-hub-installed

.PHONY: setup run test browser validate docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[test,docs]"
	touch $@

setup: $(STAMP)

# Debian's Chromium for the browser test of the docs site (no browser download from the test tool).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

run: setup
	$(BIN)/cc-bench run --all

test: setup browser
	$(BIN)/python -m pytest

validate: setup
	$(BIN)/cc-registry validate

docs: setup
	$(BIN)/cc-registry docs
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist site *.egg-info .pytest_cache
