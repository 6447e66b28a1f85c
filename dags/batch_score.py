"""Airflow DAG `batch_score`: score a whole catalogue file with the champion (thin, calls `ml.score`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

DEFAULT_ARGS = {"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=5)}


@dag(
    dag_id="batch_score",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["productcat", "scoring"],
    params={
        "dataset": Param(None, type=["null", "string"],
                         description="Dataset key in params.yaml whose file is scored; empty = `ingest.dataset`."),
        "output": Param("reports/batch_scores.parquet", type="string",
                        description="Parquet file to write (relative = under the project root)."),
        "top_k": Param(3, type="integer", minimum=1, description="Labels kept per product."),
        "engine": Param(None, type=["null", "string"], enum=[None, "pandas", "spark"],
                        description="pandas: inside the task; spark: on PRODUCTCAT_SPARK_MASTER (local[*] if unset); "
                                    "empty = `score.engine` in params.yaml."),
    },
)
def batch_score() -> None:
    """
    ### Score a whole catalogue with the champion

    On demand only: trigger it from the UI with the dataset to score and the output file, e.g. to
    back-fill categories for a catalogue that has none yet.

    The raw file is read in chunks with the same readers as ingest (memory does not grow with the
    file), each chunk is predicted by `models:/product-classifier@champion` and appended to the
    Parquet output: id, title, label, probability, top-k labels and probabilities, label path, and
    the model name and version. Rows that cannot be read as a product are counted by reason in the
    summary (`<output>.summary.json`), which the task also returns.

    `engine=spark` predicts on Spark instead, with the same readers, counts, model code and output
    schema. The task is the Spark driver (client mode): it builds its session for
    `PRODUCTCAT_SPARK_MASTER`, `local[*]` inside the worker when unset, or a cluster such as the
    compose profile `spark` (`spark://spark-master:7077`). On a cluster the output folder and the
    MLflow store must be reachable from the executors (the compose Spark worker mounts the checkout
    at the same path). Where Airflow workers should not host drivers, submit `productcat score
    --engine spark` with `spark-submit` (or the apache-spark provider's `SparkSubmitOperator`)
    instead; the scoring code does not change.

    The task calls the same function as `productcat score`.
    """

    @task
    def score() -> dict[str, Any]:
        from ml.params import load_params
        from ml.score import score_catalogue
        from ml.settings import get_settings

        settings = get_settings()
        conf = get_current_context()["params"]
        params = load_params(settings)
        return score_catalogue(settings=settings, params=params, dataset=conf["dataset"],
                               output=settings.resolve(Path(conf["output"])), top_k=int(conf["top_k"]),
                               engine=conf.get("engine") or params.score.engine)

    score()


batch_score()
