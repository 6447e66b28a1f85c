"""Amazon-2018 product metadata: gzip'd JSON lines, one product per line.

Only the fields a model may see are copied. ``category`` (the category path,
from which ``main_cat`` is derived) is never read into a record, so it cannot
leak into any feature.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO, Any

import orjson

from ml.readers.base import ByteProgress, RawRecord, RecordChunks


def _first_image(row: dict[str, Any]) -> Any:
    # Returned as found: the validator rejects a non-string (bad_type) instead of stringifying it.
    for key in ("imageURLHighRes", "image", "imageURL"):
        images = row.get(key)
        if isinstance(images, list) and images:
            return images[0]
        if images:
            return images
    return None


def map_amazon_row(row: dict[str, Any]) -> dict[str, Any]:
    main_cat = row.get("main_cat")
    return {
        "id": row.get("asin"),
        "title": row.get("title"),
        "description": row.get("description"),
        "features": row.get("feature"),
        "brand": row.get("brand"),
        "price": row.get("price"),
        "image": _first_image(row),
        "label_path": [main_cat] if main_cat else [],
    }


def _lines(progress: ByteProgress, path: Path) -> IO[bytes]:
    return gzip.GzipFile(fileobj=progress.raw) if path.suffix == ".gz" else progress.raw


def parse_line(line_no: int, line: bytes) -> RawRecord:
    """One non-blank source line as a record (the Spark engine calls this too)."""
    try:
        row = orjson.loads(line)
        if not isinstance(row, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return RawRecord(line_no, None, line, f"bad_json: {exc}")
    return RawRecord(line_no, map_amazon_row(row), line)


def read_amazon2018(path: Path, chunk_rows: int) -> RecordChunks:
    # Bytes straight into orjson: no str decode of lines that parse fine.
    with ByteProgress(path, desc=path.name) as progress, _lines(progress, path) as lines:
        chunk: list[RawRecord] = []
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            chunk.append(parse_line(line_no, line))
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
                progress.update()
        if chunk:
            yield chunk
        progress.update()
