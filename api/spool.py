"""Append-only JSON-lines files that hold request-log rows the database does not have yet.

Two kinds of rows go in: rows the database could not take (``append``: an outage, a full
queue; they must be replayed) and, in write-ahead mode, every row before its response is sent
(``journal``: the writer still holds them in memory and ``settle``s them once inserted; a file
whose rows are all settled is deleted, one whose rows were set aside with ``keep`` is replayed).

Each writer appends to a file of its own and holds an exclusive ``flock`` on it
until its rows are in the database; a file nobody holds (its writer crashed or
exited during an outage) is an orphan that any writer adopts and replays whole. Files are only
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
from dataclasses import dataclass, field
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


@dataclass
class _File:
    handle: IO[str]
    ids: set[str] = field(default_factory=set)  # request_ids in the file, for is_pending()
    rows: int = 0  # lines written by this process
    owed: int = 0  # journaled rows the writer still holds in memory, not yet settled or kept
    replay: bool = False  # some rows are only here: the whole file must be replayed before it goes


class Spool:
    def __init__(self, directory: Path, *, rotate_rows: int = 2000) -> None:
        self.directory = directory
        self.spooled = 0  # rows this process left on disk for a replay (appended or kept)
        self.journaled = 0  # rows this process wrote ahead of their response
        self._rotate_rows = rotate_rows  # a journal file this long is retired once its rows are settled
        self._lock = threading.Lock()
        self._active: Path | None = None  # the file new rows go to
        self._files: dict[Path, _File] = {}  # every file this process holds the lock of, active one included

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Write rows durably (flushed and fsync'd) before returning; they wait for a replay."""
        rows = list(rows)
        with self._lock:
            path = self._write(rows)
            self._files[path].replay = True
            self.spooled += len(rows)

    def journal(self, rows: list[dict[str, Any]]) -> Path:
        """Write rows durably before returning, as a record of rows the caller still holds and will
        ``settle`` (inserted) or ``keep`` (left for a replay); returns the file they are in."""
        with self._lock:
            path = self._write(rows)
            entry = self._files[path]
            entry.owed += len(rows)
            self.journaled += len(rows)
            if entry.rows >= self._rotate_rows:
                self._active = None  # the next rows start a new file; this one goes once settled
            return path

    def settle(self, path: Path, count: int) -> None:
        """``count`` journaled rows of ``path`` are in the database."""
        with self._lock:
            entry = self._files.get(path)
            if entry is not None:  # None: already replayed whole and deleted
                entry.owed -= count
                self._retire_if_settled(path)

    def keep(self, path: Path, count: int) -> None:
        """``count`` journaled rows of ``path`` did not reach the database: replay the file."""
        with self._lock:
            entry = self._files.get(path)
            if entry is not None:
                entry.owed -= count
                entry.replay = True
                self.spooled += count

    def _retire_if_settled(self, path: Path) -> None:
        entry = self._files[path]
        if entry.owed <= 0 and not entry.replay and path != self._active:
            path.unlink(missing_ok=True)
            self._files.pop(path).handle.close()

    def _write(self, rows: list[dict[str, Any]]) -> Path:
        text = "".join(json.dumps(row, default=_json_default, ensure_ascii=False) + "\n" for row in rows)
        if self._active is None:
            self._active = self._open_new()
        path = self._active
        entry = self._files[path]
        try:
            entry.handle.write(text)
            entry.handle.flush()
            os.fsync(entry.handle.fileno())
        except OSError:
            self._active = None  # a torn line may end that file: never append after it
            entry.replay = True  # whatever part of it did reach the disk
            raise
        entry.ids.update(str(row.get("request_id")) for row in rows)
        entry.rows += len(rows)
        return path

    def _open_new(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"spool-{time.time_ns()}-{uuid.uuid4().hex[:8]}.jsonl"
        handle = path.open("a", encoding="utf-8")
        fcntl.flock(handle, fcntl.LOCK_EX)
        _fsync_dir(self.directory)
        self._files[path] = _File(handle)
        return path

    def claim(self) -> list[Path]:
        """Files to replay, oldest first: this process's (new rows then start a fresh file) and any orphans."""
        with self._lock:
            if self._active is not None and self._files[self._active].replay:
                self._active = None
            for path in sorted(self.directory.glob("spool-*.jsonl")) if self.directory.is_dir() else []:
                if path not in self._files:
                    self._adopt(path)
            return sorted(path for path, entry in self._files.items() if entry.replay)

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
        self._files[path] = _File(handle, ids={str(row.get("request_id")) for row in self.read(path)}, replay=True)

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
            entry = self._files.pop(path, None)
            if entry is not None:
                entry.handle.close()
            if self._active == path:
                self._active = None

    def reject(self, row: dict[str, Any]) -> None:
        """Keep a row the database refused for its content (never replayed; for a person to look at)."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with (self.directory / "rejected.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, default=_json_default, ensure_ascii=False) + "\n")

    def release(self) -> None:
        """The writer is closing: delete journal files whose rows are all in the database, and let go
        of every other file without deleting it (the next writer adopts and replays them)."""
        with self._lock:
            self._active = None
            for path in list(self._files):
                self._retire_if_settled(path)
            for entry in self._files.values():
                entry.handle.close()
            self._files.clear()

    def has_rows(self) -> bool:
        """Rows wait for a replay."""
        with self._lock:
            return any(entry.replay for entry in self._files.values())

    def __contains__(self, request_id: object) -> bool:
        with self._lock:
            return any(request_id in entry.ids for entry in self._files.values())
