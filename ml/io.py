"""Small file helpers shared by the pipeline stages."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replace_on_success(*targets: Path) -> Iterator[tuple[Path, ...]]:
    """Temporary paths beside ``targets`` for the block to write to.

    Only when the block finishes are they synced and renamed onto the targets,
    in the order given (put the summary last: a reader that trusts the summary
    then never sees it beside older outputs). If the block raises, the temporary
    files are removed and the targets keep their previous content.
    """
    token = uuid.uuid4().hex[:8]
    temps = tuple(t.with_name(f".{t.name}.{token}.tmp") for t in targets)
    for temp in temps:
        temp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temps
        for temp in temps:
            if not temp.exists():
                raise FileNotFoundError(f"{temp} was never written")
            _fsync(temp)
        for temp, target in zip(temps, targets, strict=True):
            os.replace(temp, target)
    finally:  # after a failure (or a rename that failed part-way), no temporary file stays behind
        for temp in temps:
            temp.unlink(missing_ok=True)
    for folder in {t.parent for t in targets}:
        _fsync(folder)  # make the renames themselves durable


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON through a temporary file, so ``path`` is never half-written."""
    with replace_on_success(path) as (temp,):
        temp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def append_jsonl(handle: IO[str], rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class ParquetSink:
    """Streams tables into one Parquet file; always leaves a valid (maybe empty) file."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_sha256(path: Path, *, block_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (memory does not grow with the file)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def replace_dir_on_success(target: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``target`` for the block to fill; when the block finishes it
    takes ``target``'s place (the previous folder is removed; left empty, no folder is put there),
    and when it raises it is removed and ``target`` keeps its previous content."""
    token = uuid.uuid4().hex[:8]
    staging = target.with_name(f".{target.name}.{token}.tmp")
    previous = target.with_name(f".{target.name}.{token}.old")
    staging.mkdir(parents=True)
    try:
        yield staging
        if target.exists():
            os.replace(target, previous)
        if any(staging.iterdir()):
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(previous, ignore_errors=True)
