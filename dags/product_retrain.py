"""Airflow DAG `product_retrain`: thin orchestration over the `ml` package."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

DEFAULT_ARGS = {"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=5)}


def _job() -> tuple[Any, Any, dict[str, Any]]:
    """Settings, params.yaml with this run's overrides, and the run's Params.
    Heavy imports stay here, inside tasks: the DAG processor parses this file often."""
    from ml.params import load_params
    from ml.settings import get_settings

    settings = get_settings()
    params = load_params(settings)
    conf = get_current_context()["params"]
    if conf.get("dataset"):
        params.ingest.dataset = conf["dataset"]
    if conf.get("max_train_samples"):
        params.train.max_train_samples = int(conf["max_train_samples"])
    if conf.get("epochs"):
        params.train.transformer.epochs = int(conf["epochs"])
    return settings, params, conf


@dag(
    dag_id="product_retrain",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["productcat", "training"],
    params={
        "dataset": Param(None, type=["null", "string"],
                         description="Dataset key in params.yaml; empty = `ingest.dataset`."),
        "family": Param("baseline", enum=["baseline", "transformer"], description="Model family to train."),
        "epochs": Param(None, type=["null", "integer"], minimum=1,
                        description="Transformer epochs; empty = params.yaml."),
        "max_train_samples": Param(None, type=["null", "integer"], minimum=1,
                                   description="Cap on training rows for a quick run; empty = all."),
        "promote": Param(True, type="boolean", description="Move `champion` when the gate passes."),
    },
)
def product_retrain() -> None:
    """
    ### Retrain the product classifier

    Trigger from the UI with the form (dataset, model family, epochs, sample size,
    promote or not), or let the weekly schedule run it with `params.yaml` as is.

    1. **ingest**: raw catalogue -> canonical Product rows; bad rows quarantined with their reason.
    2. **split**: dedupe, then a stable hash split by product id (frozen test set).
    3. **train**: the chosen family, logged to MLflow and registered as a new version of `product-classifier`.
    4. **evaluate**: frozen test set -> metrics, confusion matrix, calibration, `model_report.md` in the run.
    5. **gate**: candidate vs `champion` on the same test set; the decision and reasons become version tags,
       and a pass moves the `champion` alias (the API follows it).
    6. **notify**: logs the outcome in one line (the task log is the notification).

    Each task calls the same function as the matching `productcat` command.
    """

    @task
    def ingest() -> dict[str, Any]:
        from ml.ingest import ingest as run_ingest

        settings, params, _ = _job()
        summary = run_ingest(settings=settings, params=params)
        return {k: summary[k] for k in ("dataset", "read", "kept", "quarantined", "quarantine_reasons")}

    @task
    def split(ingested: dict[str, Any]) -> dict[str, Any]:
        from ml.split import split as run_split

        settings, params, _ = _job()
        summary = run_split(settings=settings, params=params)
        return {"dataset": ingested["dataset"]} | {
            k: summary[k] for k in ("read", "kept", "duplicates", "rows", "test_fingerprint")
        }

    @task
    def train(_: dict[str, Any]) -> dict[str, Any]:
        from dataclasses import asdict

        from ml.train import train as run_train

        settings, params, conf = _job()
        return asdict(run_train(settings=settings, params=params, family=conf["family"]))

    @task
    def evaluate(trained: dict[str, Any]) -> dict[str, Any]:
        from ml.evaluate import evaluate as run_evaluate

        settings, params, _ = _job()
        summary = run_evaluate(settings=settings, params=params, version=trained["version"])
        return {k: summary[k] for k in ("version", "accuracy", "macro_f1", "weighted_f1", "top3_accuracy", "ece")}

    @task
    def gate(evaluated: dict[str, Any]) -> dict[str, Any]:
        from dataclasses import asdict

        from ml.gate import gate as run_gate

        settings, params, conf = _job()
        decision = run_gate(settings=settings, params=params, version=evaluated["version"], promote=conf["promote"])
        return asdict(decision)

    @task
    def notify(decision: dict[str, Any]) -> str:
        import logging

        verdict = "promoted to champion" if decision["promoted"] else (
            "passed the gate (not promoted)" if decision["passed"] else "rejected by the gate")
        message = f"product-classifier v{decision['candidate']} {verdict}; " + "; ".join(decision["reasons"])
        logging.getLogger("product_retrain").info(message)
        return message

    notify(gate(evaluate(train(split(ingest())))))


product_retrain()
