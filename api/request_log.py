"""The request log: every prediction is written to ``prediction_log`` off the request path.

``RequestLogWriter.log`` only puts the row on a bounded queue; a background
thread inserts batches of rows in one transaction each. ``log_durably`` (write-ahead, the
default) first appends the rows to an fsync'd journal file (``api.spool``), one write and one
fsync shared by every request that arrived meanwhile (group commit), and returns only then: a
row whose response was sent survives a killed process, and the next writer replays the journal. While the database is
unreachable, batches go to an fsync'd spool file (``api.spool``) and a periodic
retry replays it once the database answers again. Inserts skip request_ids
already present, so replaying a row twice (after a crash, or a commit whose
acknowledgement was lost) never doubles it. No row is dropped: a full queue
spills to the spool too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future, InvalidStateError
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from api.db.log_store import DIALECTS, Row, insert_rows
from api.settings import APISettings
from api.spool import Spool

log = logging.getLogger(__name__)

_STOP: Any = object()  # wakes the thread when close() is called


class RequestLogWriter:
    """``log(row)`` never blocks and never raises, nor does ``await log_durably(rows)`` (it waits for
    the journal's fsync in a thread, not on the event loop); ``start()`` then ``close()`` around the
    service's life.

    With ``settings.request_logging`` off it discards every row (benchmarks of the bare model).
    """

    def __init__(self, *, settings: APISettings, engine: Engine, retry_seconds: float = 5.0) -> None:
        if engine.dialect.name not in DIALECTS:
            raise ValueError(f"the request log needs Postgres or SQLite, not {engine.dialect.name}")
        self.enabled = settings.request_logging
        self.written = 0  # rows inserted straight from the queue
        self.replayed = 0  # rows inserted from the spool (a retried file counts its rows again)
        self.rejected = 0  # rows the database refused for their content, kept in rejected.jsonl
        self.lost = 0  # rows neither the database nor the disk took (disk full): should stay 0
        self.unjournaled = 0  # write-ahead rows the journal could not take (disk full): only in memory
        self.write_ahead = settings.log_durability == "write-ahead"
        self._engine = engine
        self._batch_size = settings.log_batch_size
        self._flush_seconds = settings.log_flush_seconds
        self._retry_seconds = retry_seconds
        self._queue: queue.Queue[Row] = queue.Queue(maxsize=settings.log_queue_size)
        self._spool = Spool(settings.resolve(settings.spool_dir))
        # Queued or being written, with the journal file holding each (None: only in memory);
        # spooled ids live in the spool.
        self._pending: dict[str, Path | None] = {}
        self._pending_lock = threading.Lock()
        self._inflight: list[Row] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._commits: list[tuple[list[Row], Future[None]]] = []  # waiting for the journal's next fsync
        self._commit_ready = threading.Condition()
        self._committer: threading.Thread | None = None
        self._committing = False  # the committer takes new rows (guarded by _commit_ready)
        self._outage = False
        self._next_retry = 0.0

    @property
    def spooled(self) -> int:
        return self._spool.spooled

    @property
    def journaled(self) -> int:
        return self._spool.journaled

    def pending(self) -> int:
        return self._queue.qsize()

    def is_pending(self, request_id: str) -> bool:
        """Logged but maybe not in the table yet. Ask this before querying the table:
        a row leaves this set only after its insert committed."""
        with self._pending_lock:
            if request_id in self._pending:
                return True
        return request_id in self._spool

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._spool.claim()  # adopt rows a crashed writer left, so is_pending() knows them at once
        self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._thread.start()
        if self.write_ahead:
            self._committing = True
            self._committer = threading.Thread(target=self._commit_loop, name="request-log-journal", daemon=True)
            self._committer.start()

    def log(self, row: Row) -> None:
        """Hand a row over (the writer owns it from now on)."""
        if not self.enabled:
            return
        try:
            row.setdefault("created_at", datetime.now(UTC))
            with self._pending_lock:
                self._pending[row["request_id"]] = None
            self._enqueue(row)
        except Exception:
            log.exception("request log: could not accept a row")

    async def log_durably(self, rows: list[Row]) -> None:
        """Hand rows over; in write-ahead mode, return once they are fsync'd to the journal."""
        if not self.enabled:
            return
        for row in rows:
            row.setdefault("created_at", datetime.now(UTC))
        with self._pending_lock:
            self._pending.update(dict.fromkeys((row["request_id"] for row in rows), None))
        done: Future[None] = Future()
        with self._commit_ready:
            committing = self._committing
            if committing:
                self._commits.append((rows, done))
                self._commit_ready.notify()
        if not committing:  # buffered mode, not started, or closing: the plain path
            for row in rows:
                self._enqueue(row)
            return
        await asyncio.wrap_future(done)

    def _commit_loop(self) -> None:
        """Journal whatever requests handed over since the last fsync, in one write + fsync, then
        queue the rows for the database and let the requests answer."""
        while True:
            with self._commit_ready:
                while not self._commits and self._committing:
                    self._commit_ready.wait()
                commits, self._commits = self._commits, []
            if not commits:
                return  # closing, and nothing is left to journal
            rows = [row for batch, _ in commits for row in batch]
            path: Path | None = None
            try:
                path = self._spool.journal(rows)
            except Exception:
                # Disk full or gone: the rows still reach the database from memory (buffered guarantee).
                self.unjournaled += len(rows)
                log.exception("request log: could not journal %d rows; they are kept in memory only", len(rows))
            try:
                with self._pending_lock:
                    self._pending.update(dict.fromkeys((row["request_id"] for row in rows), path))
                for row in rows:
                    self._enqueue(row)
            except Exception:
                log.exception("request log: could not queue journaled rows")
            for _, done in commits:
                with contextlib.suppress(InvalidStateError):  # the request was cancelled meanwhile
                    done.set_result(None)

    def _enqueue(self, row: Row) -> None:
        try:
            if self._stopping.is_set():
                raise queue.Full  # after close(): straight to disk, the next writer replays it
            self._queue.put_nowait(row)
        except queue.Full:
            self._set_aside([row])

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (spooling what the database will not take) and stop the thread."""
        if not self.enabled:
            return
        with self._commit_ready:
            self._committing = False  # later rows take the plain path (and go to the spool)
            self._commit_ready.notify()
        if self._committer is not None:
            self._committer.join(timeout)  # journals and queues what requests handed over
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
        leftover = self._drain()  # never started, or a log() that raced with the thread's exit
        if self._thread is not None and self._thread.is_alive():
            log.warning("request log: writer still busy after %.0fs; spooling what is left", timeout)
            # Spooling the in-flight batch too is safe: a replay skips rows its insert did commit.
            leftover = self._inflight + leftover
        self._set_aside(leftover)
        self._spool.release()

    def _drain(self) -> list[Row]:
        rows = []
        with contextlib.suppress(queue.Empty):
            while True:
                rows.append(self._queue.get_nowait())
        return [row for row in rows if row is not _STOP]

    def _run(self) -> None:
        while True:
            try:
                # Replay first: rows a dead process left are written at start, not after a flush interval.
                if self._spool.has_rows() and (not self._outage or time.monotonic() >= self._next_retry):
                    self._replay()
                batch = self._take_batch()
                if batch:
                    self._write(batch)
            except Exception:  # a bug must not stop the logging of later requests
                log.exception("request log: unexpected error in the writer thread")
            if self._stopping.is_set() and self._queue.empty():
                if self._outage and self._spool.has_rows():
                    self._replay()  # one last try: a database back since the last retry gets the rows now
                return

    def _take_batch(self, wait: bool = True) -> list[Row]:
        """Up to batch_size rows, or fewer once the first has waited flush_seconds (or at once)."""
        try:
            first = self._queue.get(timeout=self._flush_seconds if wait else 0.0)
        except queue.Empty:
            return []
        batch = [] if first is _STOP else [first]
        deadline = time.monotonic() + self._flush_seconds
        while len(batch) < self._batch_size:
            hurry = self._stopping.is_set() or not wait
            wait_s = 0.0 if hurry else max(0.0, deadline - time.monotonic())
            try:
                row = self._queue.get(timeout=wait_s)
            except queue.Empty:
                break
            if row is not _STOP:
                batch.append(row)
        return batch

    def _write(self, rows: list[Row]) -> None:
        self._inflight = rows
        try:
            if self._outage:
                self._set_aside(rows)  # until a retry succeeds: no connect attempt per batch
                return
            try:
                self.written += self._store(rows)
            except Exception as exc:
                self._enter_outage(exc)
                self._set_aside(rows)
                return
            for path, count in Counter(path for path in self._forget(rows) if path is not None).items():
                self._spool.settle(path, count)
        finally:
            self._inflight = []

    def _store(self, rows: list[Row]) -> int:
        return insert_rows(self._engine, rows, reject=self._reject)

    def _replay(self) -> None:
        try:
            if self._outage:
                with self._engine.connect() as connection:  # probe first: no file rotation while down
                    connection.execute(sa.text("SELECT 1"))
                log.info("request log: database reachable again; replaying the spool")
                self._outage = False  # live rows go straight to the table again, between replayed chunks
            for path in self._spool.claim():
                chunk: list[Row] = []
                for row in self._spool.read(path):
                    chunk.append(row)
                    if len(chunk) == self._batch_size:
                        self.replayed += self._store(chunk)
                        chunk = []
                        self._keep_up()
                if chunk:
                    self.replayed += self._store(chunk)
                self._spool.done(path)
        except Exception as exc:
            self._enter_outage(exc)

    def _keep_up(self) -> None:
        # A long replay must not let the queue fill up (a full queue spools row by row on the request path).
        if self._queue.qsize() >= self._batch_size:
            self._write(self._take_batch(wait=False))
            if self._outage:
                raise ConnectionError("the database went away again during the replay")

    def _enter_outage(self, exc: Exception) -> None:
        if not self._outage:
            log.warning("request log: database unavailable (%s); spooling to %s", getattr(exc, "orig", None) or exc,
                        self._spool.directory)
        self._outage = True
        self._next_retry = time.monotonic() + self._retry_seconds

    def _set_aside(self, rows: list[Row]) -> None:
        """Rows the database did not take: journaled ones are already on disk (their file is marked
        for a replay), the others are spooled now. They stay pending throughout (is_pending)."""
        if not rows:
            return
        with self._pending_lock:
            journals = [self._pending.get(row.get("request_id")) for row in rows]  # type: ignore[arg-type]
        unjournaled = [row for row, path in zip(rows, journals, strict=True) if path is None]
        if unjournaled:
            try:
                self._spool.append(unjournaled)
            except Exception:
                self.lost += len(unjournaled)
                log.exception("request log: could not spool %d rows; they are lost", len(unjournaled))
        for path, count in Counter(path for path in journals if path is not None).items():
            self._spool.keep(path, count)
        self._forget(rows)

    def _reject(self, row: Row, exc: Exception) -> None:
        log.error("request log: database refused row %s (%s); kept in rejected.jsonl", row.get("request_id"), exc)
        self._spool.reject(row)
        self.rejected += 1

    def _forget(self, rows: list[Row]) -> list[Path | None]:
        """Drop rows from the pending set; returns the journal file of each (None: not journaled)."""
        with self._pending_lock:
            return [self._pending.pop(row.get("request_id"), None) for row in rows]  # type: ignore[arg-type]
