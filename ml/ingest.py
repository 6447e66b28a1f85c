"""Stage 1: stream a raw catalogue into canonical Product rows (Parquet),
quarantining every rejected row with its reason.

Memory is bounded by ``chunk_rows``, not by the file: each chunk is read,
validated and written before the next one is read. A dataset with photos
(params.yaml ``images:``) first has its image archive streamed once
(ml/images.py); each kept row then gets its stored photo's path, or null with
the reason counted in the summary's ``images`` entry.

The outputs (and the ``images`` folder) are written to temporary paths beside them and renamed into
place only once the whole run has succeeded, the summary last: a failed run
leaves the previous run's outputs as they were, and no temporary file.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.images import IMAGES_DIR, ImageResolver
from ml.io import (
    ParquetSink,
    append_jsonl,
    file_sha256,
    peak_rss_mb,
    replace_dir_on_success,
    replace_on_success,
    write_json,
)
from ml.params import DatasetSpec, Params
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
    images: Path  # stored photos, images/<dataset>/..., replaced as a whole by every run

    @classmethod
    def for_settings(cls, settings: MLSettings) -> IngestOutputs:
        folder = settings.resolve(settings.interim_dir)
        summary = settings.resolve(settings.reports_dir) / SUMMARY_FILE
        return cls(folder / PRODUCTS_FILE, folder / QUARANTINE_FILE, summary, folder / IMAGES_DIR)


def ingest(*, settings: MLSettings, params: Params, dataset: str | None = None,
           source: Path | None = None) -> dict[str, Any]:
    """Read the dataset named in params (or ``dataset``); write products and
    quarantine under ``settings.interim_dir`` and the summary under
    ``settings.reports_dir``. Returns the summary.

    ``source`` replaces the file path params.yaml gives for the dataset: another file read with
    the same mapping (format, columns, label spec).

    ``params.ingest.engine == "spark"`` runs the same checks on Spark (ml/spark_ingest.py)."""
    if params.ingest.engine == "spark":
        from ml.spark_ingest import ingest_spark  # pyspark is an optional extra

        return ingest_spark(settings=settings, params=params, dataset=dataset, source=source)
    name, spec = dataset_spec(params, dataset, source)
    out = IngestOutputs.for_settings(settings)
    validator = Validator(source=name, spec=spec, rules=params.ingest)
    reasons: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    read = 0
    started = time.perf_counter()
    log.info("ingesting %s from %s", name, spec.resolved_path(settings))
    chunks = open_reader(spec, settings, params.ingest.chunk_rows)
    with (
        replace_on_success(out.products, out.quarantine, out.summary) as (products_tmp, quarantine_tmp, summary_tmp),
        replace_dir_on_success(out.images) as images_tmp,  # swapped in first (inner), the summary last
    ):
        photos = image_resolver(name=name, spec=spec, params=params, settings=settings, staging=images_tmp)
        with ParquetSink(products_tmp, PRODUCT_ARROW_SCHEMA) as sink, quarantine_tmp.open("w", encoding="utf-8") as bad:
            for chunk in chunks:
                read += len(chunk)
                kept: list[Product] = []
                rejected: list[Rejection] = []
                for record in chunk:
                    outcome = validator.check(record)
                    if isinstance(outcome, Product):
                        if photos is not None:
                            outcome.image = photos.image_for(outcome.id)
                        kept.append(outcome)
                    else:
                        rejected.append(outcome)
                sink.write(products_to_table(kept))
                labels.update(p.label for p in kept if p.label)
                reasons.update(str(r.reason) for r in rejected)
                append_jsonl(bad, (r.to_dict(name) for r in rejected))
        summary = _summary(
            name=name, source=spec.resolved_path(settings), out=out, read=read, kept=sink.rows, reasons=reasons,
            labels=labels, unparsed_prices=validator.unparsed_prices, seconds=time.perf_counter() - started,
            images=photos.finish() if photos is not None else None,
        )
        if not summary["reconciles"]:  # cannot happen unless a code path loses rows: fail loudly
            lost = f"read {read} != kept {sink.rows} + quarantined {summary['quarantined']}"
            raise RuntimeError(f"ingest lost rows: {lost}")
        write_json(summary_tmp, summary)
    log.info(
        "read %d = kept %d + quarantined %d %s", read, sink.rows, summary["quarantined"], dict(reasons) or ""
    )
    return summary


def image_resolver(*, name: str, spec: DatasetSpec, params: Params, settings: MLSettings,
                   staging: Path) -> ImageResolver | None:
    """The dataset's photos, resolved into ``staging`` (None when params.yaml names none)."""
    if spec.images is None:
        return None
    return ImageResolver(dataset=name, spec=spec, source=spec.images, limits=params.ingest.images,
                         settings=settings, staging=staging).resolve()


def dataset_spec(params: Params, dataset: str | None, source: Path | None) -> tuple[str, DatasetSpec]:
    """The dataset's key and spec, its path replaced by ``source`` when one is given."""
    name, spec = params.dataset(dataset)
    if source is not None:
        spec = spec.model_copy(update={"path": str(source)})
    return name, spec


def _summary(
    *, name: str, source: Path, out: IngestOutputs, read: int, kept: int, reasons: Counter[str],
    labels: Counter[str], unparsed_prices: int, seconds: float, images: dict[str, Any] | None = None,
) -> dict[str, Any]:
    quarantined = sum(reasons.values())
    return {
        "dataset": name,
        "source_path": str(source),
        # What training records as the data it saw: the dataset key and these exact bytes.
        "source_sha256": file_sha256(source) if source.is_file() else None,
        "read": read,
        "kept": kept,
        "quarantined": quarantined,
        "reconciles": read == kept + quarantined,
        "quarantine_reasons": dict(reasons.most_common()),
        "unparsed_prices": unparsed_prices,
        "classes": len(labels),
        "label_counts": dict(labels.most_common()),
        # Kept rows with a stored photo, and why the others have none; null: the dataset names no photos.
        "images": images,
        "seconds": round(seconds, 2),
        "rows_per_second": round(read / seconds, 1) if seconds else None,
        "peak_rss_mb": peak_rss_mb(),
        "outputs": {"products": str(out.products), "quarantine": str(out.quarantine), "images": str(out.images)},
    }
