# ProductCat — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
STAMP := $(VENV)/.installed

.PHONY: help venv demo demo-reset first-champion serve serve-bg stream-bg status stop drift test test-fast lint repro bench bench-ingest bench-train mlflow-ui sample clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	@echo "==> installing ProductCat into $(VENV): about 3 GB of packages (torch, Airflow, MLflow, DVC, Spark, ...),"
	@echo "    about 10 minutes on 2 cores; pip's progress follows. Later runs skip this step."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)
	@echo "==> $(VENV) is ready"

venv: $(STAMP) ## Create or refresh the virtualenv (.venv) from pyproject.toml

demo: $(STAMP) ## Train a first champion on the sample (reused on later runs), then start MLflow UI (:5000), Airflow (:8080), API (:8000)
	@if { [ -n "$$PRODUCTCAT_MLFLOW_TRACKING_URI" ] || [ -f mlflow.db ]; } && champion=$$(productcat champion 2>/dev/null); then \
	  echo "==> reusing the champion in the local store: $$champion"; \
	  echo "    nothing is retrained; \`make demo-reset\` stops the stack, clears the store and pipeline outputs and starts over"; \
	else \
	  $(MAKE) --no-print-directory first-champion; \
	fi
	@echo "==> starting the MLflow UI, Airflow and the API in the background"
	@$(BIN)/python infra/scripts/local_stack.py up

# The steps `make demo` runs when the store has no champion yet (each prints its own summary).
first-champion: $(STAMP)
	@echo "==> training a first champion on the bundled sample (about 1 minute of CPU; up to 5 minutes on 2 busy cores)"
	@echo "--> [1/5] ingest: raw sample -> data/interim (bad rows quarantined with a reason)"
	productcat ingest
	@echo "--> [2/5] split: dedupe, stable hash split -> data/processed"
	productcat split
	@echo "--> [3/5] train: baseline model, logged to MLflow and registered"
	productcat train --reason "first champion on the bundled sample"
	@echo "--> [4/5] evaluate: frozen test split, plots and report in the MLflow run"
	productcat evaluate
	@echo "--> [5/5] gate: the rules of params.yaml; a pass makes it the champion"
	productcat gate

demo-reset: ## Stop the stack, clear the MLflow store, pipeline outputs, request log and Airflow home, then `make demo`
	@$(MAKE) --no-print-directory clean
	@$(MAKE) --no-print-directory demo

serve: $(STAMP) ## Serve the champion on http://127.0.0.1:8000 in the foreground
	productcat serve --port 8000

serve-bg: $(STAMP) ## Serve the champion on :8000 in the background, then run a curl example against it
	@$(BIN)/python infra/scripts/local_stack.py up api

stream-bg: $(STAMP) ## Start the streaming consumer in the background (NATS by default; PRODUCTCAT_STREAM_URL picks the broker)
	@$(BIN)/python infra/scripts/local_stack.py up stream

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
	$(BIN)/ruff check productcat ml api monitoring dags tests benchmarks infra

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
	rm -rf data/interim data/processed reports .pytest_cache mlflow.db mlartifacts requests.db .run dvc.lock
