"""Rakuten France challenge files: a text CSV and a label CSV (``prdtypecode``)
joined on their first, unnamed column (the row index).

Both files are sorted by that index, so they are merge-joined record by record:
memory stays flat however long either file is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ml.readers.base import ByteProgress, RawRecord, RecordChunks, in_chunks, open_text
from ml.readers.csv_records import CsvRecord, csv_records


def _rows(path: Path) -> Iterator[CsvRecord]:
    with ByteProgress(path, desc=path.name) as progress, open_text(progress, path) as text:
        for number, record in enumerate(csv_records(text), start=1):
            yield record
            if number % 10_000 == 0:
                progress.update()


def _row_index(values: dict[str, str]) -> int | None:
    """The first, unnamed column: the row index both files are sorted and joined by."""
    cell = next(iter(values.values()), "").strip()
    return int(cell) if cell.isdigit() else None


def _label_stream(path: Path) -> Iterator[tuple[int, str]]:
    # A malformed label line (or one without an index) gives no label: its text row is then missing_label.
    for record in _rows(path):
        if record.values is not None and (index := _row_index(record.values)) is not None:
            yield index, record.values.get("prdtypecode", "")


def image_reference(product_id: str, image_id: str) -> str | None:
    # The challenge names each image file after both ids.
    if not product_id or not image_id:
        return None
    return f"image_{image_id}_product_{product_id}.jpg"


def _records(path: Path, labels_path: Path) -> Iterator[RawRecord]:
    labels = _label_stream(labels_path)
    pending: tuple[int, str] | None = next(labels, None)
    row_no = 0
    for record in _rows(path):
        if record.values is None:
            yield RawRecord(record.line, None, record.text, f"bad_row: line {record.line}: {record.error}")
            continue
        row_no += 1
        row = record.values
        index = _row_index(row)
        if index is None:
            yield RawRecord(row_no, None, row, "bad_row: the first column is not a row index")
            continue
        while pending is not None and pending[0] < index:
            pending = next(labels, None)
        label = pending[1] if pending is not None and pending[0] == index else None
        fields = {
            "id": row.get("productid") or None,
            "title": row.get("designation"),
            "description": row.get("description"),
            "features": [],
            "brand": None,
            "price": None,
            "image": image_reference(row.get("productid", ""), row.get("imageid", "")),
            "label_path": [label] if label else [],
        }
        yield RawRecord(row_no, fields, row)


def read_rakuten(path: Path, labels_path: Path, chunk_rows: int) -> RecordChunks:
    return in_chunks(_records(path, labels_path), chunk_rows)
