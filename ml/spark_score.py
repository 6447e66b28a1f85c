"""Batch scoring on Spark (``productcat score --engine spark``): the pandas engine's reading,
counting and predicting, with the predicting spread over Spark executors.

1. The driver streams the raw catalogue with the same readers, counts unreadable rows by the
   same rule (``ml.score.unreadable``) and stages the readable rows' fields, one Parquet file
   per chunk, so the executors can read them in parallel.
2. ``mapInPandas`` scores each partition batch by batch with ``ml.score.score_columns`` (the
   API's ``predict_records``). Each executor's Python worker loads the version the driver
   resolved once, from the same tracking URI, and keeps it for every later batch and task.
3. Spark writes part files; the driver appends them to one Parquet file with pyarrow, a row
   group at a time (never every row at once), so both engines leave the same kind of output.
   Rows come in partition order, not the source file's.

On a cluster the staging folder (beside ``output``) and ``output`` must be on storage the
driver and every executor see at the same path, and the executors need the project installed
and the MLflow tracking URI reachable. Local mode (``local[*]``) needs nothing of the sort.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.entities.model_registry import ModelVersion

from ml.io import ParquetSink
from ml.params import DatasetSpec
from ml.pyfunc_model import RUNTIME_TAG, ProductClassifierModel
from ml.readers import open_reader
from ml.score import SCORE_SCHEMA, score_columns, unreadable
from ml.settings import MLSettings

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

STAGE_SCHEMA = pa.schema([("fields", pa.string())])  # a readable raw record's fields, as JSON
SPARK_SCHEMA = (
    "id string, title string, label string, probability double, top_labels array<string>, "
    "top_probabilities array<double>, label_path array<string>, model_name string, model_version string, "
    "scored_at timestamp"
)


@dataclass(frozen=True)
class ModelRef:
    """What an executor needs to load the version the driver chose (pickled into the task)."""

    tracking_uri: str
    name: str
    version: str
    runtime: str | None  # the gate's choice, resolved by the driver so executors need not ask

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


# One loaded model per executor Python worker (Spark reuses workers across tasks): loading is
# seconds, a batch is milliseconds.
_LOADED: dict[tuple[str, str, str | None], ProductClassifierModel] = {}


def executor_model(ref: ModelRef) -> ProductClassifierModel:
    key = (ref.tracking_uri, ref.uri, ref.runtime)
    if key not in _LOADED:
        import mlflow

        from ml.pyfunc_model import load_registered

        mlflow.set_tracking_uri(ref.tracking_uri)
        mlflow.set_registry_uri(ref.tracking_uri)
        # One thread per worker: Spark already runs one task per core.
        _, _LOADED[key] = load_registered(ref.name, ref.version, threads=1, runtime=ref.runtime)
        log.info("executor loaded %s", ref.uri)
    return _LOADED[key]


def _score_batches(batches: Iterator[pd.DataFrame], *, ref: ModelRef, top_k: int) -> Iterator[pd.DataFrame]:
    import pandas as pd

    model = executor_model(ref)
    for batch in batches:
        fields = [json.loads(text) for text in batch["fields"]]
        if fields:
            yield pd.DataFrame(score_columns(model, fields, model_name=ref.name, model_version=ref.version,
                                             top_k=top_k))


def _stage(*, settings: MLSettings, spec: DatasetSpec, chunk_rows: int, folder: Path) -> tuple[int, Counter[str]]:
    """Read the catalogue once on the driver: count rows and unreadable reasons, stage the readable ones."""
    folder.mkdir(parents=True)
    reasons: Counter[str] = Counter()
    read = 0
    for number, chunk in enumerate(open_reader(spec, settings, chunk_rows)):
        read += len(chunk)
        staged = []
        for record in chunk:
            if (why := unreadable(record)) is not None:
                reasons[why] += 1
            elif record.fields is not None:
                staged.append(json.dumps(record.fields, ensure_ascii=False, default=str))
        if staged:
            pq.write_table(pa.table({"fields": staged}, schema=STAGE_SCHEMA), folder / f"chunk-{number:06d}.parquet")
    return read, reasons


def _merge(parts: Path, output: Path) -> int:
    """Spark's part files -> one Parquet file with SCORE_SCHEMA, one row group in memory at a time."""
    with ParquetSink(output, SCORE_SCHEMA) as sink:
        for part in sorted(parts.glob("part-*.parquet")):
            source = pq.ParquetFile(part)
            for group in range(source.num_row_groups):
                sink.write(source.read_row_group(group).select(SCORE_SCHEMA.names).cast(SCORE_SCHEMA))
    return sink.rows


def score_on_spark(*, settings: MLSettings, spec: DatasetSpec, version: ModelVersion, output: Path,
                   chunk_rows: int, top_k: int, spark: SparkSession | None = None) -> tuple[int, int, Counter[str]]:
    """Score ``spec``'s catalogue into ``output`` on Spark; returns (read, scored, unreadable reasons)."""
    if spark is None:
        from pyspark import SparkContext

        from ml.spark_session import spark_session

        # Stop the session afterwards only if this call started it (not a caller's running one).
        owned = SparkContext._active_spark_context is None
        spark = spark_session(settings, app_name="productcat-score")
    else:
        owned = False
    ref = ModelRef(tracking_uri=settings.tracking_uri, name=version.name, version=str(version.version),
                   runtime=version.tags.get(RUNTIME_TAG))
    output = output.resolve()
    work = output.parent / f".{output.name}.spark-{uuid.uuid4().hex[:8]}"
    try:
        started = time.perf_counter()
        read, reasons = _stage(settings=settings, spec=spec, chunk_rows=chunk_rows, folder=work / "staged")
        log.info("staged %d rows on the driver in %.1f s", read, time.perf_counter() - started)
        scored = 0
        if read > sum(reasons.values()):
            # Micros, not INT96: pyarrow then reads the column as the UTC timestamp SCORE_SCHEMA declares.
            spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
            staged = spark.read.parquet((work / "staged").as_uri())
            scores = staged.mapInPandas(functools.partial(_score_batches, ref=ref, top_k=top_k), SPARK_SCHEMA)
            scores.write.mode("overwrite").parquet((work / "scored").as_uri())
            scored = _merge(work / "scored", output)
        else:  # nothing readable: still a valid, empty file, as the pandas engine leaves
            scored = _merge(work, output)
        log.info("spark (%s) scored %d of %d rows", spark.sparkContext.master, scored, read)
        return read, scored, reasons
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if owned:
            spark.stop()
