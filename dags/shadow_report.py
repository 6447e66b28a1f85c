"""Airflow DAG `shadow_report`: the challenger against the champion on live traffic, daily."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, task

from ml.settings import get_settings

DEFAULT_ARGS = {"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=5)}


@dag(
    dag_id="shadow_report",
    schedule=get_settings().schedule(get_settings().drift_schedule),  # with the drift check (PRODUCTCAT_DRIFT_SCHEDULE)
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["productcat", "monitoring"],
)
def shadow_report() -> None:
    """
    ### Compare the challenger with the champion on live traffic

    **report**: the report `productcat shadow report` prints (agreement, disagreements by class,
    accuracy of each on requests with feedback and the 95% CI of the difference, latency, verdict
    from `shadow:` in `params.yaml`), returned as the task's XCom and logged. It never moves an
    alias: `productcat promote --from-shadow` does, after a person has read it.
    """

    @task
    def report() -> dict[str, Any]:
        import logging

        from api.db.migrate import upgrade
        from api.db.session import make_engine
        from api.settings import get_api_settings
        from ml.params import load_params
        from monitoring.shadow import shadow_report as build_report

        db_url = get_api_settings().db_url
        upgrade(db_url)
        engine = make_engine(db_url)
        try:
            found = build_report(engine=engine, rules=load_params(get_settings()).shadow)
        finally:
            engine.dispose()
        logging.getLogger(__name__).info("shadow report: %s\n  %s", found.verdict, "\n  ".join(found.reasons))
        return found.model_dump(mode="json", exclude={"per_class"})

    report()


shadow_report()
