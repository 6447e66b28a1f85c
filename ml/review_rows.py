"""Human review answers as training rows: the file `productcat review export` writes and
``train(include_reviews=...)`` reads.

Each row is a product in the processed-split schema (``ml/schema.py``: cleaned as ingest cleans, the
reviewer's label and its path) plus its provenance: the review item, the prediction it corrects and the
model version that made it, when and by whom (API key id) it was resolved. Review rows only ever join
the TRAIN split; one that is also a validation or test product (the same normalised title, the key the
split dedupes on) is dropped, so a reviewed copy of a held-out product can never leak into training.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ml.features import clean_record, product_text
from ml.schema import PRODUCT_ARROW_SCHEMA, PRODUCT_COLUMNS
from ml.text import clean_text, normalise_title

log = logging.getLogger(__name__)

SOURCE = "review"  # the `source` of every review row (the catalogue's rows carry their dataset's)
PROVENANCE_FIELDS = (
    pa.field("review_id", pa.string(), nullable=False),
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),
    pa.field("resolved_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("resolved_by", pa.int64()),
)
REVIEW_ARROW_SCHEMA = pa.schema([*PRODUCT_ARROW_SCHEMA, *PROVENANCE_FIELDS])


@dataclass(frozen=True)
class ResolvedReview:
    """One resolved review item as the database holds it (the product as the caller sent it)."""

    review_id: str
    request_id: str
    model_version: str
    product: Mapping[str, Any]
    label: str
    label_path: list[str]
    resolved_at: datetime
    resolved_by: int | None


def review_table(items: Iterable[ResolvedReview]) -> pa.Table:
    """Resolved reviews -> training rows (REVIEW_ARROW_SCHEMA)."""
    rows = []
    for item in items:
        fields = clean_record(item.product)
        rows.append({
            "id": f"{SOURCE}:{item.review_id}", "source": SOURCE, **fields,
            "image": clean_text(item.product.get("image")), "label": item.label,
            "label_path": list(item.label_path) or [item.label],
            "review_id": item.review_id, "request_id": item.request_id, "model_version": item.model_version,
            "resolved_at": item.resolved_at, "resolved_by": item.resolved_by,
        })
    return pa.Table.from_pylist(rows, schema=REVIEW_ARROW_SCHEMA)


def write_review_rows(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # a reader never sees half a file
    pq.write_table(table, partial)
    partial.replace(path)
    return path


def read_review_rows(path: Path) -> pd.DataFrame:
    """An export, checked: every column of the review schema must be there (ValueError naming the missing)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: write it with `productcat review export --output {path}`")
    table = pq.read_table(path)
    missing = [name for name in REVIEW_ARROW_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{path} is not a review export: columns {', '.join(missing)} are missing")
    return table.select(REVIEW_ARROW_SCHEMA.names).to_pandas()


@dataclass(frozen=True)
class ReviewRowsAdded:
    rows: int  # appended to the train split
    dropped_holdout: int  # also a validation/test product: left out
    path: str


def add_review_rows(
    train: pd.DataFrame, *, path: Path, holdout: Iterable[pd.DataFrame]
) -> tuple[pd.DataFrame, ReviewRowsAdded]:
    """``train`` with the export's rows appended (product columns only; the provenance stays in the
    file, which the training run keeps as an artifact). Rows that are a held-out product are dropped,
    and so are repeats of a review id."""
    reviews = read_review_rows(path).drop_duplicates("review_id")
    held = set().union(*({_same_product_key(row) for row in frame.to_dict("records")} for frame in holdout))
    leaking = pd.Series([_same_product_key(row) in held for row in reviews.to_dict("records")], index=reviews.index,
                        dtype=bool)
    kept = reviews.loc[~leaking, list(PRODUCT_COLUMNS)]
    if leaking.any():
        log.warning("review rows: %d of %s are validation/test products; left out of training", int(leaking.sum()),
                    path)
    combined = pd.concat([train, kept], ignore_index=True) if len(kept) else train
    return combined, ReviewRowsAdded(rows=len(kept), dropped_holdout=int(leaking.sum()), path=str(path))


def _same_product_key(row: Mapping[str, Any]) -> str:
    """The split's notion of one product: its normalised title (the whole text when it has no title)."""
    return normalise_title(row.get("title")) or "\x1f" + product_text(row)


def log_review_rows(added: ReviewRowsAdded) -> None:
    """On the active MLflow run: how many human-review rows joined the train split (param and tag, so runs
    can be filtered on it) and the export itself, which holds each row's provenance."""
    import mlflow

    mlflow.log_param("review_rows", added.rows)
    mlflow.set_tags({"review_rows": str(added.rows), "review_rows_dropped_holdout": str(added.dropped_holdout)})
    mlflow.log_artifact(added.path, artifact_path="data")
