"""The challenger, scored in the champion's shadow: every answered request is scored again by the
version the ``challenger`` alias names, off the request path, and its answer logged beside the
champion's (table ``shadow_prediction``, keyed by the champion's request_id).

What a caller pays: ``submit`` is one ``queue.put_nowait`` on a bounded queue, called after the
champion's answer is ready; it never blocks, never raises and never waits for the challenger. One
worker thread of its own (not the inference executor) scores the queued requests; when it falls
behind and the queue is full, the shadow work is dropped and counted (``productcat_shadow_dropped``,
reason ``queue_full``), so overload costs evidence, never latency. The challenger competes for CPU
with the champion only through that one thread.

Shadow rows are written by the worker straight to the database, best effort, not through the
request log's journal and spool: they are evidence for a comparison, not answers anyone received,
so fsyncing them on the request path would buy nothing a caller needs. A row the database refuses,
or cannot take during an outage, is counted (reason ``not_logged``) and lost: the report then
rests on fewer requests, and says how many.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Counter
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from api.db.models import ShadowPrediction
from api.model_manager import ChampionManager

log = logging.getLogger(__name__)

_STOP: Any = object()
DRAIN = 64  # queued requests written in one transaction at most


class ShadowCounters(Protocol):
    """The service's metrics (api/metrics.py) or the stream consumer's (streaming/metrics.py)."""

    shadow_scored: Counter  # by version
    shadow_dropped: Counter  # by reason


@dataclass(frozen=True)
class ShadowJob:
    champion_version: str
    request_ids: list[str]
    records: list[dict[str, Any]]
    top_k: int


class ShadowScorer:
    """Scores queued requests with ``manager.current`` (the challenger) in one background thread;
    ``start()`` then ``close()`` around the service's life, ``manager.follow`` keeps the version."""

    def __init__(self, *, manager: ChampionManager, engine: Engine, metrics: ShadowCounters,
                 queue_size: int) -> None:
        self.manager = manager
        self.metrics = metrics
        self._engine = engine
        self._queue: queue.Queue[ShadowJob] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self.scored = self.dropped = 0  # products; also in the Prometheus counters

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the queued work (bounded by ``timeout``: what is left then is dropped unscored)."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("shadow scorer: queue still full at shutdown; leaving its work unscored")
        self._thread.join(timeout=timeout)
        self._thread = None

    def submit(self, *, champion_version: str, request_ids: list[str], records: list[dict[str, Any]],
               top_k: int) -> bool:
        """Queue one answered request for the challenger: O(1), never blocks. False when nothing was
        queued: no challenger loaded, the challenger is the champion's own version, or the queue is full."""
        challenger = self.manager.current
        if challenger is None or challenger.version == champion_version or self._thread is None:
            return False
        try:
            self._queue.put_nowait(ShadowJob(champion_version, request_ids, records, top_k))
            return True
        except queue.Full:
            self._count_dropped("queue_full", len(records))
            return False

    def _count_dropped(self, reason: str, products: int) -> None:
        self.dropped += products
        self.metrics.shadow_dropped.labels(reason=reason).inc(products)

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < DRAIN:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(job is _STOP for job in jobs)
            rows = [row for job in jobs if job is not _STOP for row in self._score(job)]
            if rows:
                self._write(rows)
            if stop:
                return

    def _score(self, job: ShadowJob) -> list[dict[str, Any]]:
        model = self.manager.current  # may have moved since submit: the row names the version that answered
        if model is None or model.version == job.champion_version:
            return []
        started = time.perf_counter()
        try:
            outputs = model.predict(job.records, job.top_k)
        except Exception as exc:  # a failing challenger costs its own evidence, never a caller's answer
            log.warning("shadow: challenger v%s failed: %s: %s", model.version, type(exc).__name__, str(exc)[:200])
            self._count_dropped("failed", len(job.records))
            return []
        latency_ms = (time.perf_counter() - started) * 1000
        now = datetime.now(UTC)
        self.scored += len(outputs)
        self.metrics.shadow_scored.labels(version=model.version).inc(len(outputs))
        return [{"request_id": request_id, "created_at": now, "model_name": model.name,
                 "model_version": model.version, "champion_version": job.champion_version, "label": out["label"],
                 "probability": float(out["probability"]), "latency_ms": latency_ms,
                 "top_k": [{"label": label, "probability": float(p)}
                           for label, p in zip(out["top_labels"], out["top_probabilities"], strict=True)]}
                for request_id, out in zip(job.request_ids, outputs, strict=True)]

    def _write(self, rows: list[dict[str, Any]]) -> None:
        table = ShadowPrediction.__table__
        try:
            with self._engine.begin() as connection:
                module = postgresql if connection.dialect.name == "postgresql" else sqlite
                statement = module.insert(table).on_conflict_do_nothing(
                    index_elements=["request_id", "model_version"])
                connection.execute(statement, rows)
        except Exception as exc:  # best effort (see the module docstring): counted, not retried
            log.warning("shadow: %d rows not logged: %s", len(rows), f"{type(exc).__name__}: {exc}"[:300])
            self._count_dropped("not_logged", len(rows))
