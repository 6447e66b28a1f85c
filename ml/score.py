"""Batch scoring: a whole raw catalogue file -> the champion's categories, in Parquet.

Memory is bounded by ``chunk_rows``, not by the file: the catalogue is read with the
same streaming readers as ingest, and each chunk is predicted and written before the
next one is read. A row the reader cannot read as a product (unparseable, no id, no
title and no description) is counted by reason in the summary, never silently dropped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from ml.io import ParquetSink, peak_rss_mb, write_json
from ml.params import Params
from ml.pyfunc_model import DEFAULT_TOP_K, load_registered, records_frame
from ml.readers import RawRecord, open_reader
from ml.registry import champion, configure_mlflow
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
])


def summary_path(output: Path) -> Path:
    """Where the run's summary lands: beside the Parquet file (scores.parquet -> scores.summary.json)."""
    return output.with_suffix(".summary.json")


def _unreadable(record: RawRecord) -> str | None:
    """Why a raw row cannot be scored as a product, or None when it can (labels are not needed)."""
    if record.fields is None:
        return "bad_row"
    if not clean_text(record.fields.get("id")):
        return "missing_id"
    if not clean_text(record.fields.get("title")) and not clean_text(record.fields.get("description")):
        return "missing_text"
    return None


def score_catalogue(
    *, settings: MLSettings, params: Params, source: str | Path | None = None, output: Path,
    dataset: str | None = None, chunk_rows: int | None = None, top_k: int = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """Score the catalogue of dataset key ``dataset`` (default ``ingest.dataset``) with the champion;
    ``source`` replaces the file path params.yaml gives for it. Writes ``output`` (Parquet) and its
    summary JSON; returns the summary."""
    name, spec = params.dataset(dataset)
    if source is not None:
        spec = spec.model_copy(update={"path": str(source)})
    client = configure_mlflow(settings)
    version = champion(client, settings)
    if version is None:
        raise LookupError(f"no {settings.registered_model}@{settings.champion_alias}: train and promote a model first")
    _, model = load_registered(settings.registered_model, version.version)
    chunk_rows = chunk_rows or params.ingest.chunk_rows
    reasons: Counter[str] = Counter()
    read = 0
    started = time.perf_counter()
    log.info("scoring %s (%s) with %s v%s", name, spec.resolved_path(settings), version.name, version.version)
    with ParquetSink(output, SCORE_SCHEMA) as sink, tqdm(unit="rows", desc=f"score {name}") as bar:
        for chunk in open_reader(spec, settings, chunk_rows):
            read += len(chunk)
            fields: list[dict[str, Any]] = []
            for record in chunk:
                if (why := _unreadable(record)) is not None:
                    reasons[why] += 1
                elif record.fields is not None:
                    fields.append(record.fields)
            if fields:
                out = model.predict(None, records_frame(fields), params={"top_k": top_k})
                columns = out.to_dict(orient="list")
                sink.write(pa.Table.from_pydict({
                    "id": [clean_text(f.get("id")) for f in fields],
                    "title": [clean_text(f.get("title")) for f in fields],
                    **columns,
                    "model_name": [version.name] * len(fields),
                    "model_version": [str(version.version)] * len(fields),
                }, schema=SCORE_SCHEMA))
            bar.update(len(chunk))
            log.info("scored %d of %d rows read so far", sink.rows, read)
    seconds = time.perf_counter() - started
    summary = {
        "dataset": name,
        "source_path": str(spec.resolved_path(settings)),
        "output": str(output),
        "model": version.name,
        "model_version": str(version.version),
        "top_k": top_k,
        "read": read,
        "scored": sink.rows,
        "unreadable": sum(reasons.values()),
        "unreadable_reasons": dict(reasons.most_common()),
        "reconciles": read == sink.rows + sum(reasons.values()),
        "seconds": round(seconds, 2),
        "rows_per_second": round(read / seconds, 1) if seconds else None,
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(summary_path(output), summary)
    log.info("read %d = scored %d + unreadable %d %s", read, sink.rows, summary["unreadable"], dict(reasons) or "")
    return summary
