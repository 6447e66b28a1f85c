"""Any CSV or Parquet catalogue, mapped onto canonical fields by params.yaml."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ml.params import DatasetSpec, LabelSpec
from ml.readers.base import ByteProgress, RawRecord, RecordChunks, in_chunks, open_text
from ml.readers.csv_records import csv_records

CANONICAL_COLUMNS = ("id", "title", "description", "brand", "price", "image")


def label_path_from_row(row: dict[str, Any], spec: LabelSpec) -> list[Any]:
    """The label as a root-first path of non-empty segments. A value that is not
    text is passed on as it is, for the validator to accept (an integer code) or
    refuse (bad_type), never stringified here."""
    if spec.columns is not None:
        cells = [row[c] for c in spec.columns if row.get(c) not in (None, "")]
        return [cell.strip() if isinstance(cell, str) else cell for cell in cells]
    value = row.get(spec.column or "")
    if value in (None, ""):
        return []
    if not isinstance(value, str):
        return [value]
    text = value
    if spec.json_list:
        try:
            items = json.loads(text)
        except ValueError:
            pass  # not JSON after all: treat the cell as the path string itself
        else:
            first = items[0] if isinstance(items, list) and items else ""
            if not isinstance(first, str):
                return [] if first is None else [first]
            text = first
    parts = text.split(spec.separator) if spec.separator else [text]
    return [p.strip() for p in parts if p.strip()]


def first_of_list(value: Any) -> Any:
    """Cells that hold a JSON list (several image URLs) give their first item."""
    if isinstance(value, str) and value.startswith("["):
        try:
            items = json.loads(value)
        except ValueError:
            return value
        return items[0] if isinstance(items, list) and items else None
    return value


class RowMapper:
    """Turns one source row (column -> value) into canonical raw fields."""

    def __init__(self, spec: DatasetSpec) -> None:
        if spec.label is None:
            raise ValueError("a csv/parquet dataset needs a `label` spec in params.yaml")
        self._spec = spec
        self._label = spec.label
        self._id_pattern = re.compile(spec.id_pattern) if spec.id_pattern else None
        self._strip = {name: re.compile(pattern) for name, pattern in spec.strip.items()}

    def _id(self, row: dict[str, Any]) -> Any:
        value = row.get(self._spec.columns.get("id", ""))
        if value in (None, ""):
            return None
        if not isinstance(value, str):
            return value  # an integer id (Parquet) is fine; anything else is bad_type in the validator
        text = value.strip()
        if self._id_pattern is not None:
            match = self._id_pattern.search(text)
            return match.group(1) if match else None
        return text

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {
            name: row.get(column) for name, column in self._spec.columns.items() if name != "id"
        }
        fields["id"] = self._id(row)
        for name, pattern in self._strip.items():
            if isinstance(fields.get(name), str):
                fields[name] = pattern.sub(" ", fields[name])
        fields["image"] = first_of_list(fields.get("image"))
        fields["features"] = [
            f"{column}: {row[column]}" for column in self._spec.feature_columns if row.get(column)
        ]
        fields["label_path"] = label_path_from_row(row, self._label)
        return fields


def _csv_records(path: Path, spec: DatasetSpec, mapper: RowMapper) -> Iterator[RawRecord]:
    """Parsed rows numbered from 1 (the header is not a row); a malformed record
    becomes a bad row numbered by its physical line (the header is line 1)."""
    row_no = 0
    newline = spec.csv_lineterminator or ""
    with ByteProgress(path, desc=path.name) as progress, open_text(progress, path, newline) as text:
        for record in csv_records(text, lineterminator=spec.csv_lineterminator):
            if record.values is None:
                why = f"bad_row: line {record.line}: {record.error}"
                yield RawRecord(record.line, None, record.text, why)
                continue
            row_no += 1
            yield RawRecord(row_no, mapper(record.values), record.values)
            if row_no % 10_000 == 0:
                progress.update()
        progress.update()


def _parquet_records(path: Path, mapper: RowMapper, chunk_rows: int) -> Iterator[RawRecord]:
    rows = (row for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows) for row in batch.to_pylist())
    for row_no, row in enumerate(rows, start=1):
        yield RawRecord(row_no, mapper(row), row)


def read_tabular(path: Path, spec: DatasetSpec, chunk_rows: int) -> RecordChunks:
    mapper = RowMapper(spec)
    records = (
        _parquet_records(path, mapper, chunk_rows) if spec.format == "parquet"
        else _csv_records(path, spec, mapper)
    )
    return in_chunks(records, chunk_rows)
