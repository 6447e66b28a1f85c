"""Airflow DAG `product_retrain`: thin orchestration over the `ml` package."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from ml.settings import get_settings

DEFAULT_ARGS = {"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=5)}


def _triggered_by() -> str:
    """Who or what started this run, for the version's tags and the alias history."""
    context = get_current_context()
    conf, run = context["params"], context["dag_run"]
    if conf.get("drift_check_id") is not None:
        return f"drift_monitor (drift check {conf['drift_check_id']}), product_retrain run {run.run_id}"
    user = getattr(run, "triggering_user_name", None)
    kind = getattr(run.run_type, "value", run.run_type)
    return f"product_retrain {kind} run {run.run_id}" + (f" by {user}" if user else "")


def _review_rows(settings: Any, value: Any) -> Any:
    """The human-review export the run adds to the train split: None, a path, or (true) one written now from
    the service's database (DATABASE_URL) into the reports folder."""
    from pathlib import Path

    if value is None or value is False or str(value).strip().lower() in ("", "false"):
        return None
    if value is True or str(value).strip().lower() == "true":
        from api.review import export_from_database
        from api.settings import get_api_settings

        output = settings.resolve(settings.reports_dir) / "review_rows.parquet"
        export_from_database(url=get_api_settings().db_url, output=output)
        return output
    return Path(str(value))


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
    if conf.get("engine"):
        params.ingest.engine = conf["engine"]
    if conf.get("max_train_samples"):
        params.train.max_train_samples = int(conf["max_train_samples"])
    if conf.get("epochs"):
        params.train.transformer.epochs = int(conf["epochs"])
    return settings, params, conf


@dag(
    dag_id="product_retrain",
    # PRODUCTCAT_RETRAIN_SCHEDULE: "none" (the default) = trigger only, so unpausing the DAG does not start a
    # scheduled run ahead of the one the user triggers; production sets a cron or preset.
    schedule=get_settings().schedule(get_settings().retrain_schedule),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["productcat", "training"],
    params={
        "dataset": Param(None, type=["null", "string"],
                         description="Dataset key in params.yaml; empty = `ingest.dataset`."),
        "engine": Param(None, type=["null", "string"], enum=[None, "pandas", "spark"],
                        description="Ingest engine; spark runs on PRODUCTCAT_SPARK_MASTER. Empty = `ingest.engine`."),
        "family": Param("baseline", enum=["baseline", "transformer"], description="Model family to train."),
        "epochs": Param(None, type=["null", "integer"], minimum=1,
                        description="Transformer epochs; empty = params.yaml."),
        "max_train_samples": Param(None, type=["null", "integer"], minimum=1,
                                   description="Cap on training rows for a quick run; empty = all."),
        "promote": Param(True, type="boolean", description="Move `champion` when the gate passes."),
        "reason": Param(None, type=["null", "string"],
                        description="Why this run was started (drift_monitor fills it in); becomes the version's "
                                    "`train_reason` tag."),
        "drift_check_id": Param(None, type=["null", "integer"],
                                description="The drift check that asked for this run, if any."),
        "include_reviews": Param(None, type=["null", "string", "boolean"],
                                 description="Resolved human-review items to add to the train split: the path of a "
                                             "`productcat review export`, or true to export them now from the "
                                             "service's database. Empty = none."),
    },
)
def product_retrain() -> None:
    """
    ### Retrain the product classifier

    Trigger from the UI with the form (dataset, model family, epochs, sample size,
    promote or not, reason). It has no schedule unless `PRODUCTCAT_RETRAIN_SCHEDULE` sets one
    (a cron or preset in production): unpausing it starts nothing by itself.

    1. **pull_data**: `dvc pull` restores the data versions `dvc.lock` records (unpushed ones are skipped).
    2. **ingest**: raw catalogue -> canonical Product rows; bad rows quarantined with their reason.
    3. **split**: dedupe, then a stable hash split by product id (frozen test set).
    4. **version_data**: `dvc commit` + `dvc push` of the ingest/split outputs, so the model names a data
       version anyone can pull (skipped, with the reason logged, when the form overrides the dataset).
    5. **train**: the chosen family, logged to MLflow and registered as a new version of `product-classifier`;
       the run's `reason` and what triggered it become the version's `train_reason` / `triggered_by` tags.
       `include_reviews` adds resolved human-review items (an export's path, or true: export them now) to the
       train split only; their count is the run's `review_rows` param and tag, the export one of its artifacts.
    6. **evaluate**: frozen test set -> metrics, confusion matrix, calibration, `model_report.md` in the run.
    7. **gate**: candidate vs `champion` on the same test set; the decision and reasons become version tags,
       and a pass moves the `champion` alias (the API follows it). On the champion's own data a candidate
       must be better by more than noise: a tie is recorded as `gate_decision=no_change` and the alias stays.
    8. **notify**: logs the outcome in one line with the run's reason (the task log is the notification).

    Each task calls the same function as the matching `productcat` command.
    """

    @task
    def pull_data() -> dict[str, Any]:
        from ml.data_version import pull_data as run_pull

        settings, _, _ = _job()
        return run_pull(settings)

    @task
    def ingest(_: dict[str, Any]) -> dict[str, Any]:
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
    def version_data(_: dict[str, Any]) -> dict[str, Any]:
        from ml.data_version import version_data as run_version
        from ml.params import load_params

        settings, params, _ = _job()
        configured = load_params(settings).ingest.dataset
        why_not = (None if params.ingest.dataset == configured else
                   f"dataset {params.ingest.dataset!r} overrides params.yaml's {configured!r}")
        return run_version(settings, why_not=why_not)

    @task
    def train(_: dict[str, Any]) -> dict[str, Any]:
        from dataclasses import asdict

        from ml.train import train as run_train

        settings, params, conf = _job()
        reason = conf.get("reason") or (f"drift check {conf['drift_check_id']}"
                                        if conf.get("drift_check_id") is not None else None)
        return asdict(run_train(settings=settings, params=params, family=conf["family"], reason=reason,
                                triggered_by=_triggered_by(),
                                include_reviews=_review_rows(settings, conf.get("include_reviews"))))

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
        decision = run_gate(settings=settings, params=params, version=evaluated["version"], promote=conf["promote"],
                            by=f"gate ({_triggered_by()})")
        return asdict(decision) | {"outcome": decision.outcome}

    @task
    def notify(decision: dict[str, Any]) -> str:
        import logging

        verdict = ("promoted to champion" if decision["promoted"] else
                   "not better than the champion (no change)" if decision["outcome"] == "no_change" else
                   "passed the gate (not promoted): now the shadow challenger" if decision.get("challenger") else
                   "passed the gate (not promoted)" if decision["passed"] else "rejected by the gate")
        reason = get_current_context()["params"].get("reason") or "manual or scheduled run"
        message = (f"product-classifier v{decision['candidate']} {verdict} (started for: {reason}); "
                   + "; ".join(decision["reasons"]))
        logging.getLogger("product_retrain").info(message)
        return message

    notify(gate(evaluate(train(version_data(split(ingest(pull_data())))))))


product_retrain()
