"""What every catalogue reader yields: chunks of raw records, already keyed by
canonical field names but not yet cleaned or validated."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

RAW_TEXT_LIMIT = 4_000  # keep quarantine files readable when a row is huge


@dataclass(slots=True)
class RawRecord:
    row: int  # 1-based line/row number in the source file
    fields: dict[str, Any] | None  # canonical name -> raw value; None when the row did not parse
    raw: str  # the source text (or a JSON dump of a CSV row), for the quarantine file
    error: str | None = None  # parse failure reason, e.g. "bad_json"


RecordChunks = Iterator[list[RawRecord]]


def raw_text(value: Any) -> str:
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


def open_text(progress: ByteProgress, path: Path) -> IO[str]:
    """Text stream over the progress-tracked file, gunzipping when needed."""
    if path.suffix == ".gz":
        import gzip

        return io.TextIOWrapper(gzip.GzipFile(fileobj=progress.raw), encoding="utf-8", newline="")
    return io.TextIOWrapper(progress.raw, encoding="utf-8", newline="")
