# rootml: the two set-up commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test run lint sample bench clean test-deps images

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# What the tests need beyond pip: XRootD from Debian's xrootd-server (a loopback server the
# tests start) and a Docker engine for the image and Docker end-to-end tests (Debian's
# docker.io, started with dockerd --bridge=none --iptables=false). Both are installed when
# missing and possible; the tests that need them skip themselves otherwise.
test-deps:
	bash scripts/install-test-deps.sh
	bash scripts/start-docker.sh

# Two processes: the XRootD client library segfaults once TensorFlow is loaded beside it.
test: venv test-deps
	$(BIN)/python -m pytest -m "not tensorflow"
	$(BIN)/python -m pytest -m tensorflow

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

sample: venv
	$(BIN)/rootml sample --out example --events 20000 --seed 1

bench: venv
	$(BIN)/python benchmarks/bench_preprocess.py

run: venv
	bash scripts/run-example.sh

clean:
	rm -rf example _run bench-out .pytest_cache

# The workflow's Docker images rootml/{data,train,publish,serve}:<VERSION>, built offline and verified.
images: venv
	VENV=$(VENV) bash scripts/build-images.sh
