"""What every catalogue reader yields: chunks of raw records, already keyed by
canonical field names but not yet cleaned or validated."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

RAW_TEXT_LIMIT = 4_000  # keep quarantine files readable when a row is huge
# A CSV record longer than this is a runaway quote, not data: far above the
# longest real record and the text limits in params.yaml, and it bounds the
# lines held while a malformed record is read.
RECORD_CHAR_LIMIT = 1_000_000


@dataclass(slots=True)
class RawRecord:
    row: int  # 1-based line/row number in the source file
    fields: dict[str, Any] | None  # canonical name -> raw value; None when the row did not parse
    # The source text, or the row as parsed (a dict): rendered by ``raw_text`` for the
    # quarantine file, and only when the record is rejected (most never are).
    raw: Any
    error: str | None = None  # parse failure reason, e.g. "bad_json"


RecordChunks = Iterator[list[RawRecord]]


def in_chunks(records: Iterable[RawRecord], chunk_rows: int) -> RecordChunks:
    chunk: list[RawRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def raw_text(value: Any) -> str:
    if isinstance(value, bytes):  # a source line, decoded only now that it is needed
        return value[:RAW_TEXT_LIMIT].rstrip(b"\r\n").decode("utf-8", "replace")
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text[:RAW_TEXT_LIMIT]


class ByteProgress:
    """A tqdm bar over the bytes of the file on disk (compressed bytes for .gz),
    so progress is known before the row count is."""

    def __init__(self, path: Path, desc: str) -> None:
        self._raw: IO[bytes] = path.open("rb")
        self._bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=desc, leave=False)
        self._seen = 0

    @property
    def raw(self) -> IO[bytes]:
        return self._raw

    def update(self) -> None:
        position = self._raw.tell()
        self._bar.update(position - self._seen)
        self._seen = position

    def close(self) -> None:
        self._bar.close()
        self._raw.close()

    def __enter__(self) -> ByteProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_text(progress: ByteProgress, path: Path, newline: str = "") -> IO[str]:
    """Text stream over the progress-tracked file, gunzipping when needed. A BOM is
    dropped; bytes that are not UTF-8 become U+FFFD instead of stopping the read."""
    raw: IO[bytes] = progress.raw
    if path.suffix == ".gz":
        import gzip

        raw = gzip.GzipFile(fileobj=progress.raw)
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline=newline)
