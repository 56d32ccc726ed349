# One command sets up and runs the main job, one sets up and runs the tests; both leave `git status` clean.
#   make run    create .venv if missing, install cc-hub, run `cc-bench run --all` (into .cc-bench/, git-ignored)
#   make test   create .venv if missing, install cc-hub with test+docs+onnx extras (and Chromium), run pytest
#   make publish  copy the local runs into results/ and regenerate docs/ (the only target that changes them)
#   make gpu-wheels     build .gpu-wheels/: our wheel + the runtime deps the GPU image lacks (needs PyPI)
#   make gpu-check      on a CUDA machine (no network): install from .gpu-wheels/, run the GPU check (meant to take < 6 min)
#   make gpu-check-dry  the same steps here without CUDA, in a python that sees only the GPU image's packages
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Re-install when the project's metadata changes.
STAMP  := $(VENV)/.cc-hub-installed

.PHONY: setup run test browser validate publish docs docs-check serve compare gpu-wheels gpu-check gpu-check-dry clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[test,docs,onnx]"
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

publish: setup
	$(BIN)/cc-bench publish

# Regenerate docs/ from the index and results/, then build the site into site/.
docs: setup
	$(BIN)/cc-registry docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Exit 1 when the committed pages are stale.
docs-check: setup
	$(BIN)/cc-registry docs --check

serve: docs
	$(BIN)/python -m http.server -d site -b 127.0.0.1 8000

# Ours against timm, same weights, side by side (several minutes on 2 cores); into .cc-bench/ like `run`.
compare: setup
	$(BIN)/cc-bench compare --against timm

gpu-wheels: setup
	$(BIN)/python scripts/gpu_check.py wheels

# The GPU image's own python3 (torch, timm, triton...); nothing of ours needs to be installed there first.
gpu-check:
	python3 scripts/gpu_check.py

gpu-check-dry: gpu-wheels
	$(BIN)/python scripts/gpu_check.py --dry-run

clean:
	rm -rf $(VENV) build dist site *.egg-info .pytest_cache .cc-bench .gpu-wheels
