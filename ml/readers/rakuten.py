"""Rakuten France challenge files: a text CSV and a label CSV (``prdtypecode``)
joined on their first, unnamed column (the row index).

Both files are sorted by that index, so they are merge-joined chunk by chunk:
memory stays flat however long either file is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from ml.readers.base import ByteProgress, RawRecord, RecordChunks, raw_text


def _label_stream(path: Path, chunk_rows: int) -> Iterator[tuple[int, str]]:
    for frame in pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=chunk_rows):
        index_column, label_column = frame.columns[0], "prdtypecode"
        yield from zip(frame[index_column].astype(int), frame[label_column], strict=True)


def image_reference(product_id: str, image_id: str) -> str | None:
    # The challenge names each image file after both ids.
    if not product_id or not image_id:
        return None
    return f"image_{image_id}_product_{product_id}.jpg"


def read_rakuten(path: Path, labels_path: Path, chunk_rows: int) -> RecordChunks:
    labels = _label_stream(labels_path, chunk_rows)
    pending: tuple[int, str] | None = next(labels, None)
    row_no = 0
    with ByteProgress(path, desc=path.name) as progress:
        for frame in pd.read_csv(progress.raw, dtype=str, keep_default_na=False, chunksize=chunk_rows):
            index_column = frame.columns[0]
            chunk = []
            for row in frame.to_dict(orient="records"):
                row_no += 1
                index = int(row[index_column])
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
                chunk.append(RawRecord(row_no, fields, raw_text(row)))
            yield chunk
            progress.update()
