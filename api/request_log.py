"""The request log: every prediction is written to ``prediction_log`` off the request path.

``RequestLogWriter.log`` only puts the row on a bounded queue; a background
thread inserts batches of rows in one transaction each. While the database is
unreachable, batches go to an fsync'd spool file (``api.spool``) and a periodic
retry replays it once the database answers again. Inserts skip request_ids
already present, so replaying a row twice (after a crash, or a commit whose
acknowledgement was lost) never doubles it. No row is dropped: a full queue
spills to the spool too.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from api.db.log_store import DIALECTS, Row, insert_rows
from api.settings import APISettings
from api.spool import Spool

log = logging.getLogger(__name__)

_STOP: Any = object()  # wakes the thread when close() is called


class RequestLogWriter:
    """``log(row)`` never blocks and never raises; ``start()`` then ``close()`` around the service's life.

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
        self._engine = engine
        self._batch_size = settings.log_batch_size
        self._flush_seconds = settings.log_flush_seconds
        self._retry_seconds = retry_seconds
        self._queue: queue.Queue[Row] = queue.Queue(maxsize=settings.log_queue_size)
        self._spool = Spool(settings.resolve(settings.spool_dir))
        self._pending: set[str] = set()  # queued or being written; spooled ids live in the spool
        self._pending_lock = threading.Lock()
        self._inflight: list[Row] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._outage = False
        self._next_retry = 0.0

    @property
    def spooled(self) -> int:
        return self._spool.spooled

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

    def log(self, row: Row) -> None:
        """Hand a row over (the writer owns it from now on)."""
        if not self.enabled:
            return
        try:
            row.setdefault("created_at", datetime.now(UTC))
            with self._pending_lock:
                self._pending.add(row["request_id"])
            if self._stopping.is_set():
                raise queue.Full  # after close(): straight to disk, the next writer replays it
            self._queue.put_nowait(row)
        except queue.Full:
            self._spool_rows([row])
        except Exception:
            log.exception("request log: could not accept a row")

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (spooling what the database will not take) and stop the thread."""
        if not self.enabled:
            return
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
        self._spool_rows(leftover)
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
                batch = self._take_batch()
                if batch:
                    self._write(batch)
                if self._spool.has_rows() and (not self._outage or time.monotonic() >= self._next_retry):
                    self._replay()
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
                self._spool_rows(rows)  # until a retry succeeds: no connect attempt per batch
                return
            try:
                self.written += self._store(rows)
            except Exception as exc:
                self._enter_outage(exc)
                self._spool_rows(rows)
                return
            self._forget(rows)
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

    def _spool_rows(self, rows: list[Row]) -> None:
        if not rows:
            return
        try:
            self._spool.append(rows)
        except Exception:
            self.lost += len(rows)
            log.exception("request log: could not spool %d rows; they are lost", len(rows))
        self._forget(rows)

    def _reject(self, row: Row, exc: Exception) -> None:
        log.error("request log: database refused row %s (%s); kept in rejected.jsonl", row.get("request_id"), exc)
        self._spool.reject(row)
        self.rejected += 1

    def _forget(self, rows: list[Row]) -> None:
        with self._pending_lock:
            self._pending.difference_update(row.get("request_id") for row in rows)
