# ProductCat — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
STAMP := $(VENV)/.installed

.PHONY: help venv demo serve serve-bg status stop drift test test-fast lint repro bench bench-ingest bench-train mlflow-ui sample clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## Create or refresh the virtualenv (.venv) from pyproject.toml

demo: $(STAMP) ## Train a first champion on the sample, then start MLflow UI (:5000), Airflow (:8080) and the API (:8000)
	productcat ingest
	productcat split
	productcat train
	productcat evaluate
	productcat gate
	@$(BIN)/python infra/scripts/local_stack.py up

serve: $(STAMP) ## Serve the champion on http://127.0.0.1:8000 in the foreground
	productcat serve --port 8000

serve-bg: $(STAMP) ## Serve the champion on :8000 in the background, then run a curl example against it
	@$(BIN)/python infra/scripts/local_stack.py up api

status: $(STAMP) ## Which services of the local stack run, and whether each answers on its port
	@$(BIN)/python infra/scripts/local_stack.py status

stop: ## Stop what `make demo` / `make serve-bg` started (MLflow UI, Airflow, API), by pid file
	@if [ -x $(BIN)/python ]; then $(BIN)/python infra/scripts/local_stack.py down; fi

drift: $(STAMP) ## Drift check: request log vs the champion's training data -> reports/drift/ (HTML, JSON)
	productcat drift

test: $(STAMP) ## Run the whole test suite (creates the virtualenv first)
	$(BIN)/python -m pytest

test-fast: $(STAMP) ## Run the tests not marked slow
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP) ## Ruff over the code
	$(BIN)/ruff check ml api monitoring dags tests benchmarks infra

repro: $(STAMP) ## Re-run the DVC pipeline stages whose inputs changed
	$(BIN)/dvc repro

bench: $(STAMP) ## Serving: naive vs ProductCat torch / ONNX fp32 / ONNX int8 at 1, 8, 32 clients -> docs/benchmarks.md (~12 min)
	$(BIN)/python benchmarks/serving_benchmark.py

bench-ingest: $(STAMP) ## Streaming-ingest benchmark (1M rows) -> docs/benchmarks.md
	$(BIN)/python benchmarks/ingest_benchmark.py --rows 1000000 --update-doc docs/benchmarks.md

bench-train: $(STAMP) ## Train + evaluate every family on the real catalogues -> docs/benchmarks.md
	$(BIN)/python benchmarks/training_benchmark.py --update-doc docs/benchmarks.md

mlflow-ui: $(STAMP) ## MLflow UI over the local store on http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

sample: $(STAMP) ## Rebuild data/sample/ from the full catalogues (../shared/data)
	$(BIN)/python infra/scripts/build_sample.py

clean: stop ## Stop the stack; remove pipeline outputs, the MLflow store, request log and Airflow home (not the virtualenv)
	rm -rf data/interim data/processed reports .pytest_cache mlflow.db mlartifacts requests.db .run
