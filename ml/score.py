"""Batch scoring: a whole raw catalogue file -> the champion's categories, in Parquet.

Memory is bounded by ``chunk_rows``, not by the file: the catalogue is read with the
same streaming readers as ingest, and each chunk is predicted and written before the
next one is read. A row the reader cannot read as a product (unparseable, no id, no
title and no description) is counted by reason in the summary, never silently dropped.

``engine="spark"`` (``ml.spark_score``) reads and counts the same way but predicts on
Spark executors; both engines write the same schema through ``score_columns`` and the
same summary through ``summarise``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from tqdm import tqdm

from ml.io import ParquetSink, peak_rss_mb, write_json
from ml.params import DatasetSpec, Params
from ml.pyfunc_model import DEFAULT_TOP_K, OUTPUT_COLUMNS, ProductClassifierModel, load_registered, records_frame
from ml.readers import RawRecord, open_reader
from ml.registry import champion, configure_mlflow, model_version
from ml.settings import MLSettings
from ml.text import clean_text

log = logging.getLogger(__name__)

SCORE_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("title", pa.string()),
    ("label", pa.string()),
    ("probability", pa.float64()),
    ("top_labels", pa.list_(pa.string())),
    ("top_probabilities", pa.list_(pa.float64())),
    ("label_path", pa.list_(pa.string())),
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("scored_at", pa.timestamp("us", tz="UTC")),  # when the row's batch was predicted
])
ENGINES = ("pandas", "spark")
Engine = Literal["pandas", "spark"]


def summary_path(output: Path) -> Path:
    """Where the run's summary lands: beside the Parquet file (scores.parquet -> scores.summary.json)."""
    return output.with_suffix(".summary.json")


def unreadable(record: RawRecord) -> str | None:
    """Why a raw row cannot be scored as a product, or None when it can (labels are not needed)."""
    if record.fields is None:
        return "bad_row"
    if not clean_text(record.fields.get("id")):
        return "missing_id"
    if not clean_text(record.fields.get("title")) and not clean_text(record.fields.get("description")):
        return "missing_text"
    return None


def score_columns(model: ProductClassifierModel, fields: list[dict[str, Any]], *, model_name: str,
                  model_version: str, top_k: int) -> dict[str, list[Any]]:
    """Readable raw records -> the SCORE_SCHEMA columns, predicted by ``predict_records`` (the API's
    path) on the records as the model's signature types them. Both engines call this."""
    records = records_frame(fields).replace({np.nan: None}).to_dict(orient="records")
    answers = model.predict_records(records, top_k)
    scored_at = datetime.now(UTC)
    return {
        "id": [clean_text(f.get("id")) for f in fields],
        "title": [clean_text(f.get("title")) for f in fields],
        **{column: [a[column] for a in answers] for column in OUTPUT_COLUMNS},
        "model_name": [model_name] * len(fields),
        "model_version": [model_version] * len(fields),
        "scored_at": [scored_at] * len(fields),
    }


def resolve_version(settings: MLSettings, *, version: str | None = None, alias: str | None = None) -> ModelVersion:
    """The registered version to score with: ``version``, else the one ``alias`` names, else the champion."""
    client = configure_mlflow(settings)
    if version is not None:
        return model_version(client, settings, version)
    if alias is not None:
        try:
            return client.get_model_version_by_alias(settings.registered_model, alias)
        except MlflowException as exc:
            raise LookupError(f"no {settings.registered_model}@{alias[:40]}") from exc
    found = champion(client, settings)
    if found is None:
        raise LookupError(f"no {settings.registered_model}@{settings.champion_alias}: train and promote a model first")
    return found


def summarise(*, output: Path, dataset: str, source: Path, version: ModelVersion, top_k: int, engine: str,
              read: int, scored: int, reasons: Counter[str], seconds: float) -> dict[str, Any]:
    """The run's summary (the same keys for both engines), written beside ``output``."""
    summary = {
        "dataset": dataset,
        "source_path": str(source),
        "output": str(output),
        "engine": engine,
        "model": version.name,
        "model_version": str(version.version),
        "top_k": top_k,
        "read": read,
        "scored": scored,
        "unreadable": sum(reasons.values()),
        "unreadable_reasons": dict(reasons.most_common()),
        "reconciles": read == scored + sum(reasons.values()),
        "seconds": round(seconds, 2),
        "rows_per_second": round(read / seconds, 1) if seconds else None,
        "peak_rss_mb": peak_rss_mb(),  # this process (the Spark driver's Python side for engine=spark)
    }
    write_json(summary_path(output), summary)
    log.info("read %d = scored %d + unreadable %d %s", read, scored, summary["unreadable"], dict(reasons) or "")
    return summary


def score_catalogue(
    *, settings: MLSettings, params: Params, source: str | Path | None = None, output: Path,
    dataset: str | None = None, chunk_rows: int | None = None, top_k: int = DEFAULT_TOP_K,
    engine: Engine = "pandas", version: str | None = None, alias: str | None = None, spark: Any = None,
) -> dict[str, Any]:
    """Score the catalogue of dataset key ``dataset`` (default ``ingest.dataset``) with the champion
    (or ``version`` / the version ``alias`` names); ``source`` replaces the file path params.yaml gives
    for it. ``engine="spark"`` predicts on Spark (``spark``: a session to use, else one from settings).
    Writes ``output`` (Parquet) and its summary JSON; returns the summary."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {str(engine)[:20]!r}")
    name, spec = params.dataset(dataset)
    if source is not None:
        spec = spec.model_copy(update={"path": str(source)})
    chosen = resolve_version(settings, version=version, alias=alias)
    chunk_rows = chunk_rows or params.ingest.chunk_rows
    log.info("scoring %s (%s) with %s v%s on %s", name, spec.resolved_path(settings), chosen.name, chosen.version,
             engine)
    started = time.perf_counter()
    if engine == "spark":
        from ml.spark_score import score_on_spark

        read, scored, reasons = score_on_spark(settings=settings, spec=spec, version=chosen, output=output,
                                               chunk_rows=chunk_rows, top_k=top_k, spark=spark)
    else:
        read, scored, reasons = _score_in_process(settings=settings, spec=spec, version=chosen, output=output,
                                                  chunk_rows=chunk_rows, top_k=top_k, name=name)
    return summarise(output=output, dataset=name, source=spec.resolved_path(settings), version=chosen, top_k=top_k,
                     engine=engine, read=read, scored=scored, reasons=reasons,
                     seconds=time.perf_counter() - started)


def _score_in_process(*, settings: MLSettings, spec: DatasetSpec, version: ModelVersion, output: Path,
                      chunk_rows: int, top_k: int, name: str) -> tuple[int, int, Counter[str]]:
    """The pandas engine: read, predict and write chunk by chunk in this process."""
    _, model = load_registered(version.name, str(version.version))
    reasons: Counter[str] = Counter()
    read = 0
    with ParquetSink(output, SCORE_SCHEMA) as sink, tqdm(unit="rows", desc=f"score {name}") as bar:
        for chunk in open_reader(spec, settings, chunk_rows):
            read += len(chunk)
            fields: list[dict[str, Any]] = []
            for record in chunk:
                if (why := unreadable(record)) is not None:
                    reasons[why] += 1
                elif record.fields is not None:
                    fields.append(record.fields)
            if fields:
                sink.write(pa.Table.from_pydict(
                    score_columns(model, fields, model_name=version.name, model_version=str(version.version),
                                  top_k=top_k),
                    schema=SCORE_SCHEMA))
            bar.update(len(chunk))
            log.info("scored %d of %d rows read so far", sink.rows, read)
    return read, sink.rows, reasons
