# ProductCat — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
STAMP := $(VENV)/.installed

.PHONY: help venv demo serve serve-bg stop drift test test-fast lint repro bench bench-train bench-serve mlflow-ui sample clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## Create or refresh the virtualenv (.venv) from pyproject.toml

demo: $(STAMP) ## Run the platform on embedded defaults: ingest, split, train, evaluate, gate the sample, serve on :8000
	productcat ingest
	productcat split
	productcat train
	productcat evaluate
	productcat gate
	@echo "MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db  (then http://127.0.0.1:5000)"
	@$(MAKE) --no-print-directory serve-bg

serve: $(STAMP) ## Serve the champion on http://127.0.0.1:8000 in the foreground
	productcat serve --port 8000

serve-bg: $(STAMP) ## Serve the champion on :8000 in the background, then run a curl example against it
	@infra/scripts/serve_background.sh

stop: ## Stop the API started by `make demo` / `make serve-bg`
	@if [ -f .run/api.pid ] && kill $$(cat .run/api.pid) 2>/dev/null; then echo "API stopped"; else echo "no API running"; fi
	@rm -f .run/api.pid

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

bench: $(STAMP) ## Streaming-ingest benchmark (1M rows) -> docs/benchmarks.md
	$(BIN)/python benchmarks/ingest_benchmark.py --rows 1000000 --update-doc docs/benchmarks.md

bench-train: $(STAMP) ## Train + evaluate every family on the real catalogues -> docs/benchmarks.md
	$(BIN)/python benchmarks/training_benchmark.py --update-doc docs/benchmarks.md

bench-serve: $(STAMP) ## Serving latency/throughput vs a naive server, with and without request logging -> docs/benchmarks.md
	$(BIN)/python benchmarks/serving_benchmark.py

mlflow-ui: $(STAMP) ## MLflow UI over the local store on http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

sample: $(STAMP) ## Rebuild data/sample/ from the full catalogues (../shared/data)
	$(BIN)/python infra/scripts/build_sample.py

clean: stop ## Stop the API; remove pipeline outputs, the local MLflow store and request log (not the virtualenv)
	rm -rf data/interim data/processed reports .pytest_cache mlflow.db mlartifacts requests.db .run
