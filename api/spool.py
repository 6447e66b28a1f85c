"""Append-only JSON-lines files that hold request-log rows while the database is unreachable.

Each writer appends to a file of its own and holds an exclusive ``flock`` on it
until its rows are in the database; a file nobody holds (its writer crashed or
exited during an outage) is an orphan that any writer adopts. Files are only
deleted after every row in them was inserted, and inserts ignore rows already
there, so a crash at any point neither loses nor doubles a row. Linux/macOS only
(``fcntl``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


def _json_default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # the new file's name survives a power cut, not only its contents
    finally:
        os.close(fd)


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.spooled = 0  # rows appended by this process
        self._lock = threading.Lock()
        self._active: IO[str] | None = None  # the file new rows go to
        self._held: dict[Path, IO[str]] = {}  # every file this process holds the lock of, active one included
        self._ids: dict[Path, set[str]] = {}  # request_ids per held file, for is_pending()

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Write rows durably (flushed and fsync'd) before returning."""
        rows = list(rows)
        text = "".join(json.dumps(row, default=_json_default, ensure_ascii=False) + "\n" for row in rows)
        with self._lock:
            if self._active is None:
                self._active = self._open_new()
            try:
                self._active.write(text)
                self._active.flush()
                os.fsync(self._active.fileno())
            except OSError:
                self._active = None  # a torn line may end that file: never append after it
                raise
            self._ids[Path(self._active.name)].update(str(row.get("request_id")) for row in rows)
            self.spooled += len(rows)

    def _open_new(self) -> IO[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"spool-{time.time_ns()}-{uuid.uuid4().hex[:8]}.jsonl"
        handle = path.open("a", encoding="utf-8")
        fcntl.flock(handle, fcntl.LOCK_EX)
        _fsync_dir(self.directory)
        self._held[path], self._ids[path] = handle, set()
        return handle

    def claim(self) -> list[Path]:
        """Files to replay, oldest first: this process's (new rows then start a fresh file) and any orphans."""
        with self._lock:
            self._active = None
            for path in sorted(self.directory.glob("spool-*.jsonl")) if self.directory.is_dir() else []:
                if path not in self._held:
                    self._adopt(path)
            return sorted(self._held)

    def _adopt(self, path: Path) -> None:
        try:
            handle = path.open("a", encoding="utf-8")
        except FileNotFoundError:
            return  # replayed and deleted by another writer meanwhile
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()  # a live writer's file
            return
        if os.fstat(handle.fileno()).st_nlink == 0:
            handle.close()  # we locked it just after its replayer deleted it
            return
        log.info("adopting request-log spool %s left by an earlier writer", path.name)
        self._held[path] = handle
        self._ids[path] = {str(row.get("request_id")) for row in self.read(path)}

    def read(self, path: Path) -> Iterator[dict[str, Any]]:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    # Only the last line of a file whose writer died mid-write can be torn.
                    log.warning("skipping unreadable line %d of %s", number, path.name)

    def done(self, path: Path) -> None:
        """Every row of ``path`` is in the database: delete it, then let go of its lock."""
        with self._lock:
            path.unlink(missing_ok=True)
            self._held.pop(path).close()
            self._ids.pop(path, None)

    def reject(self, row: dict[str, Any]) -> None:
        """Keep a row the database refused for its content (never replayed; for a person to look at)."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with (self.directory / "rejected.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, default=_json_default, ensure_ascii=False) + "\n")

    def release(self) -> None:
        """Let go of every file without deleting it (the writer is closing): the next writer adopts them."""
        with self._lock:
            for handle in self._held.values():
                handle.close()
            self._active = None
            self._held.clear()
            self._ids.clear()

    def has_rows(self) -> bool:
        return bool(self._held)

    def __contains__(self, request_id: object) -> bool:
        with self._lock:
            return any(request_id in ids for ids in self._ids.values())
