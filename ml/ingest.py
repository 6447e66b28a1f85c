"""Stage 1: stream a raw catalogue into canonical Product rows (Parquet),
quarantining every rejected row with its reason.

Memory is bounded by ``chunk_rows``, not by the file: each chunk is read,
validated and written before the next one is read.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.io import ParquetSink, append_jsonl, peak_rss_mb, write_json
from ml.params import Params
from ml.readers import open_reader
from ml.schema import PRODUCT_ARROW_SCHEMA, Product, products_to_table
from ml.settings import MLSettings
from ml.validate import Rejection, Validator

log = logging.getLogger(__name__)

PRODUCTS_FILE = "products.parquet"
QUARANTINE_FILE = "quarantine.jsonl"
SUMMARY_FILE = "ingest_summary.json"


@dataclass(frozen=True, slots=True)
class IngestOutputs:
    products: Path
    quarantine: Path
    summary: Path

    @classmethod
    def for_settings(cls, settings: MLSettings) -> IngestOutputs:
        folder = settings.resolve(settings.interim_dir)
        summary = settings.resolve(settings.reports_dir) / SUMMARY_FILE
        return cls(folder / PRODUCTS_FILE, folder / QUARANTINE_FILE, summary)


def ingest(*, settings: MLSettings, params: Params, dataset: str | None = None) -> dict[str, Any]:
    """Read the dataset named in params (or ``dataset``); write products and
    quarantine under ``settings.interim_dir`` and the summary under
    ``settings.reports_dir``. Returns the summary."""
    name, spec = params.dataset(dataset)
    out = IngestOutputs.for_settings(settings)
    validator = Validator(source=name, spec=spec, rules=params.ingest)
    reasons: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    read = 0
    started = time.perf_counter()
    log.info("ingesting %s from %s", name, spec.resolved_path(settings))
    out.quarantine.parent.mkdir(parents=True, exist_ok=True)
    with ParquetSink(out.products, PRODUCT_ARROW_SCHEMA) as sink, out.quarantine.open("w", encoding="utf-8") as bad:
        for chunk in open_reader(spec, settings, params.ingest.chunk_rows):
            read += len(chunk)
            kept: list[Product] = []
            rejected: list[Rejection] = []
            for record in chunk:
                outcome = validator.check(record)
                (kept if isinstance(outcome, Product) else rejected).append(outcome)
            sink.write(products_to_table(kept))
            labels.update(p.label for p in kept if p.label)
            reasons.update(str(r.reason) for r in rejected)
            append_jsonl(bad, (r.to_dict(name) for r in rejected))
    seconds = time.perf_counter() - started
    quarantined = sum(reasons.values())
    summary = {
        "dataset": name,
        "source_path": str(spec.resolved_path(settings)),
        "read": read,
        "kept": sink.rows,
        "quarantined": quarantined,
        "reconciles": read == sink.rows + quarantined,
        "quarantine_reasons": dict(reasons.most_common()),
        "unparsed_prices": validator.unparsed_prices,
        "classes": len(labels),
        "label_counts": dict(labels.most_common()),
        "seconds": round(seconds, 2),
        "rows_per_second": round(read / seconds, 1) if seconds else None,
        "peak_rss_mb": peak_rss_mb(),
        "outputs": {"products": str(out.products), "quarantine": str(out.quarantine)},
    }
    if not summary["reconciles"]:  # cannot happen unless a code path loses rows: fail loudly
        raise RuntimeError(f"ingest lost rows: read {read} != kept {sink.rows} + quarantined {quarantined}")
    write_json(out.summary, summary)
    log.info(
        "read %d = kept %d + quarantined %d %s", read, sink.rows, quarantined, dict(reasons) or ""
    )
    return summary
