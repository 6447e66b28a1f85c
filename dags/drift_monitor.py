"""Airflow DAG `drift_monitor`: the daily drift check, and a retrain when its advice says so."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from ml.settings import get_settings

DEFAULT_ARGS = {"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=5)}


@dag(
    dag_id="drift_monitor",
    # PRODUCTCAT_DRIFT_SCHEDULE: cron or preset; "none" = trigger only.
    schedule=get_settings().schedule(get_settings().drift_schedule),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["productcat", "monitoring"],
)
def drift_monitor() -> None:
    """
    ### Watch the served model for drift; retrain when it is advised

    Daily, or on demand from the UI.

    1. **check**: the requests logged in the window (`monitor:` in `params.yaml`) against the
       champion's training data: Evidently reports, the verdict stored in the `drift_checks`
       table (and in MLflow), and the retrain advice with its reasons.
    2. **retrain_advised**: goes on only when the advice says retrain; otherwise the run ends
       here and the trigger is skipped (a skipped trigger is the normal, healthy outcome).
    3. **trigger_retrain**: starts `product_retrain` with `reason` (and the check id) in its conf.

    `check` calls the same function as `productcat drift`; the database is the API's request log.
    """

    @task
    def check() -> dict[str, Any]:
        from api.db.migrate import upgrade
        from api.settings import get_api_settings
        from ml.params import load_params
        from ml.settings import get_settings
        from monitoring.service import run_drift_check

        settings = get_settings()
        db_url = get_api_settings().db_url
        upgrade(db_url)
        result = run_drift_check(settings=settings, params=load_params(settings), db_url=db_url)
        return {"check_id": result.check_id, "status": result.decision.status, "drifted": result.decision.drifted,
                "retrain": result.advice.retrain, "reasons": result.advice.reasons}

    @task.short_circuit
    def retrain_advised(checked: dict[str, Any]) -> dict[str, Any] | None:
        """The conf for `product_retrain` when the check advises a retrain; None skips the trigger."""
        if not checked["retrain"]:
            return None
        return {"reason": f"drift check {checked['check_id']}: " + "; ".join(checked["reasons"]),
                "drift_check_id": checked["check_id"]}

    TriggerDagRunOperator(task_id="trigger_retrain", trigger_dag_id="product_retrain",
                          conf=retrain_advised(check()))


drift_monitor()
