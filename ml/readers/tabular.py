"""Any CSV or Parquet catalogue, mapped onto canonical fields by params.yaml."""

from __future__ import annotations

import gzip
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from ml.params import DatasetSpec, LabelSpec
from ml.readers.base import ByteProgress, RawRecord, RecordChunks, raw_text

CANONICAL_COLUMNS = ("id", "title", "description", "brand", "price", "image")


def label_path_from_row(row: dict[str, Any], spec: LabelSpec) -> list[str]:
    """The label as a root-first path of non-empty segments."""
    if spec.columns is not None:
        return [str(row[c]).strip() for c in spec.columns if row.get(c) not in (None, "")]
    value = row.get(spec.column or "")
    if value in (None, ""):
        return []
    text = str(value)
    if spec.json_list:
        try:
            items = json.loads(text)
            text = str(items[0]) if isinstance(items, list) and items else ""
        except ValueError:
            pass  # not JSON after all: treat the cell as the path string itself
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

    def _id(self, row: dict[str, Any]) -> str | None:
        value = row.get(self._spec.columns.get("id", ""))
        if value in (None, ""):
            return None
        text = str(value).strip()
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


_SKIPPED_LINE = re.compile(r"Skipping line (\d+): ([^\n]*)")


def _csv_frames(
    path: Path, spec: DatasetSpec, chunk_rows: int, bad_lines: list[tuple[int, str]]
) -> Iterator[pd.DataFrame]:
    """CSV chunks. The parser skips a line with the wrong number of fields and
    warns; each warning is turned into (line number, why) in ``bad_lines``."""
    with ByteProgress(path, desc=path.name) as progress:
        reader = pd.read_csv(
            progress.raw,
            dtype=str,
            keep_default_na=False,
            chunksize=chunk_rows,
            compression="gzip" if path.suffix == ".gz" else None,
            lineterminator=spec.csv_lineterminator,
            on_bad_lines="warn",
        )
        while True:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                frame = next(reader, None)
            for warning in caught:
                bad_lines.extend((int(m[1]), m[2]) for m in _SKIPPED_LINE.finditer(str(warning.message)))
            if frame is None:
                return
            yield frame
            progress.update()


def _physical_lines(path: Path, numbers: set[int]) -> dict[int, str]:
    """The text of the given 1-based lines, for the quarantine file (one extra pass, only when needed)."""
    opener = gzip.open if path.suffix == ".gz" else open
    found: dict[int, str] = {}
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            if number in numbers:
                found[number] = line.rstrip("\r\n")
                if len(found) == len(numbers):
                    break
    return found


def _parquet_frames(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
        yield batch.to_pandas()


def read_tabular(path: Path, spec: DatasetSpec, chunk_rows: int) -> RecordChunks:
    mapper = RowMapper(spec)
    bad_lines: list[tuple[int, str]] = []
    frames = (
        _parquet_frames(path, chunk_rows) if spec.format == "parquet"
        else _csv_frames(path, spec, chunk_rows, bad_lines)
    )
    # Row numbers count parsed data rows from 1 (the header is not a row).
    row_no = 0
    for frame in frames:
        chunk = []
        for row in frame.to_dict(orient="records"):
            row_no += 1
            chunk.append(RawRecord(row_no, mapper(row), raw_text(row)))
        yield chunk
    if bad_lines:  # malformed lines, with their own text, numbered by file line
        text = _physical_lines(path, {number for number, _ in bad_lines})
        yield [
            RawRecord(number, None, raw_text(text.get(number, "")), f"bad_row: line {number}: {why}")
            for number, why in bad_lines
        ]
