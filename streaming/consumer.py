"""The stream consumer: products in, predictions out, every answer logged before its ack.

For each micro-batch (``batch_size`` messages, or fewer once the first has waited
``batch_window_ms``):

1. malformed messages (oversized, not JSON, no id, not a valid Product) are set aside;
2. the rest are scored in one forward pass by the champion (``ChampionManager`` follows the
   registry alias, as the API does);
3. one prediction message per product is published (keyed by its request_id);
4. the request-log rows are handed to the writer in write-ahead mode, which returns once they
   are fsync'd to its journal (replayed into the database by the next writer if this process dies);
5. the malformed messages go to the dead-letter subject with their reason;
6. only then is every message of the batch acknowledged.

A crash anywhere before 6 leaves the batch unacknowledged: the broker delivers it again, and the
deterministic request_id makes the second pass a no-op in the log (inserts skip existing ids) and
in the output where the broker de-duplicates (NATS, Redis). A lost broker connection is retried
with backoff; nothing is acknowledged on a connection other than the one that delivered it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from api.code_version import lineage_columns, serving_code_version
from api.db.log_store import REVIEW_THRESHOLD
from api.db.migrate import upgrade
from api.db.session import make_engine
from api.model_manager import ChampionManager
from api.request_log import RequestLogWriter
from api.review import sent_to_review
from api.settings import APISettings
from api.shadow import ShadowScorer
from ml.settings import MLSettings
from streaming.brokers import Broker, Delivery, Subscription, make_broker
from streaming.messages import Accepted, Rejected, dead_letter_message, parse, prediction_message, request_id_for
from streaming.metrics import Health, StreamMetrics, serve
from streaming.settings import StreamSettings

PUBLISH_CONCURRENCY = 32  # prediction messages in flight at once per micro-batch

log = logging.getLogger(__name__)


class StreamConsumer:
    def __init__(self, *, settings: StreamSettings, api_settings: APISettings, ml_settings: MLSettings,
                 broker: Broker | None = None) -> None:
        self.settings = settings
        self.channel = settings.scheme
        # Write-ahead whatever the API runs with: a row is on disk before its message is acknowledged.
        self.api_settings = api_settings.model_copy(update={"log_durability": "write-ahead"})
        self.broker = broker or make_broker(settings)
        self.manager = ChampionManager(ml_settings, intra_op_threads=api_settings.intra_op_threads,
                                       runtime=api_settings.runtime, rollback_window=api_settings.rollback_window,
                                       rollback_max_failure_rate=api_settings.rollback_max_failure_rate,
                                       review_threshold=api_settings.review_threshold)
        self.serving_git_commit = serving_code_version(api_settings)  # once: logged with every answer
        self.ml_settings = ml_settings
        self.shadow: ShadowScorer | None = None  # the challenger alias, once run() has an engine (settings.shadow)
        self.metrics = StreamMetrics()
        self.health = Health(broker=self.channel)
        self.http_port: int | None = None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Consume until ``stop()``; migrations first, as the API's pre-start does."""
        settings = self.api_settings
        await asyncio.to_thread(upgrade, settings.db_url)
        engine = make_engine(settings.db_url, connect_timeout=settings.db_connect_timeout_seconds,
                             statement_timeout=settings.db_statement_timeout_seconds,
                             pool_timeout=settings.db_pool_timeout_seconds)
        writer = RequestLogWriter(settings=settings, engine=engine)
        writer.start()
        server = None
        if self.settings.metrics_port:
            server = serve(host=self.settings.metrics_host, port=self.settings.metrics_port,
                           metrics=self.metrics, health=self.health)
            self.http_port = server.server_address[1]
        followers = [asyncio.create_task(self.manager.follow(settings.poll_interval_seconds))]
        if settings.shadow:  # as the API does: the challenger scores each micro-batch in its own thread
            challenger = ChampionManager(self.ml_settings, intra_op_threads=settings.intra_op_threads,
                                         runtime=settings.runtime, review_threshold=settings.review_threshold,
                                         alias=self.ml_settings.challenger_alias, optional=True)
            self.shadow = ShadowScorer(manager=challenger, engine=engine, metrics=self.metrics,
                                       queue_size=settings.shadow_queue_size)
            self.shadow.start()
            followers.append(asyncio.create_task(challenger.follow(settings.poll_interval_seconds)))
        try:
            if await self._wait_for_model():
                await self._consume(writer)
        finally:
            for follower in followers:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            if self.shadow is not None:
                await asyncio.to_thread(self.shadow.close)
            await self.broker.close()
            await asyncio.to_thread(writer.close)
            engine.dispose()
            if server is not None:
                server.shutdown()
                server.server_close()
            log.info("stream consumer stopped")

    async def _wait_for_model(self) -> bool:
        """Consume nothing until a champion is loaded; False when stopped meanwhile."""
        for attempt in range(10**9):
            if self.manager.current is not None:
                return True
            if self._stop.is_set():
                return False
            if attempt % 50 == 0:  # every ~10 s
                log.info("stream consumer: waiting for %s@%s (%s)", self.manager.name, self.manager.alias,
                         self.manager.last_error or "loading")
            await self._pause(0.2)
        return False

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _consume(self, writer: RequestLogWriter) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                await self.broker.connect()
                subscription = await self.broker.subscribe(self.settings.input)
                self.health.connected, self.health.last_error, delay = True, None, 0.5
                log.info("stream consumer: reading %s on %s as group %s", self.settings.input, self.channel,
                         self.settings.group)
                next_lag = 0.0
                while not self._stop.is_set():
                    current = self.manager.current  # the alias may have moved: /health names who answers
                    self.health.model_version = current.version if current else None
                    if time.monotonic() >= next_lag:
                        next_lag = time.monotonic() + self.settings.lag_interval_seconds
                        if (lag := await subscription.lag()) is not None:
                            self.metrics.lag.set(lag)
                    batch = await self._collect(subscription)
                    if batch:
                        await self._handle(batch, writer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker (or the connection to it) failed: start over
                self.health.connected = False
                self.health.last_error = f"{type(exc).__name__}: {exc}"[:300]
                self.metrics.reconnects.inc()
                log.warning("stream consumer: %s; reconnecting in %.1fs", self.health.last_error, delay)
                await self.broker.close()
                await self._pause(delay)
                delay = min(delay * 2, self.settings.reconnect_max_seconds)

    async def _collect(self, subscription: Subscription) -> list[Delivery]:
        """A micro-batch: up to batch_size, closed batch_window_ms after its first message."""
        size = self.settings.batch_size
        batch = await subscription.fetch(size, self.settings.poll_seconds)
        deadline = time.monotonic() + self.settings.batch_window_ms / 1000
        while batch and len(batch) < size and (left := deadline - time.monotonic()) > 0:
            batch.extend(await subscription.fetch(size - len(batch), left))
        return batch

    async def _handle(self, batch: list[Delivery], writer: RequestLogWriter) -> None:
        started = time.perf_counter()
        s = self.settings
        self.metrics.consumed.inc(len(batch))
        self.metrics.batch_size.observe(len(batch))
        self.metrics.redelivered.inc(sum(d.delivery_count > 1 for d in batch))
        accepted: dict[str, Accepted] = {}  # by request_id: a sender's duplicate within the batch is scored once
        rejected: list[Rejected] = []
        for delivery in batch:
            outcome = parse(delivery, channel=self.channel, subject=s.input, max_bytes=s.max_message_bytes,
                            max_chars=self.api_settings.max_product_chars, max_deliveries=s.max_deliveries)
            if isinstance(outcome, Rejected):
                rejected.append(outcome)
            else:
                accepted.setdefault(outcome.request_id, outcome)
        if accepted and not await self._score(list(accepted.values()), writer):
            # The model failed: the products go back for another try (dead-lettered after max_deliveries).
            scored = {id(a.delivery) for a in accepted.values()}
            batch = [d for d in batch if id(d) not in scored]
            for item in accepted.values():
                await item.delivery.nack()
        for item in rejected:
            key = "dead-" + request_id_for(channel=self.channel, subject=s.input, message_id=item.delivery.position)
            await self.broker.publish(s.dead_letter, dead_letter_message(item, subject=s.input), key=key)
            self.metrics.dead_lettered.labels(kind=item.kind).inc()
            log.info("dead-lettered message %s (%s): %s", item.delivery.position, item.kind, item.reason)
        for delivery in batch:  # in order: Kafka commits offsets
            await delivery.ack()
        self.health.last_batch_at = time.monotonic()
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _score(self, items: list[Accepted], writer: RequestLogWriter) -> bool:
        """Score, publish and log ``items``; False when the model failed (nothing published or logged)."""
        model = self.manager.current
        assert model is not None  # run() waits for a first model
        s = self.settings
        started = time.perf_counter()
        try:
            answers = await asyncio.to_thread(model.predict, [item.product.record() for item in items], s.top_k)
        except Exception as exc:
            failure = f"{type(exc).__name__}: {str(exc)[:200]}"
            self.metrics.model_failures.inc()
            self.manager.observe(model, failure)
            log.warning("model version %s failed a micro-batch of %d: %s", model.version, len(items), failure)
            return False
        self.manager.observe(model, None)
        latency_ms = (time.perf_counter() - started) * 1000
        # The same decision and queue as /predict: the review item is written with the log row.
        review_threshold = model.review_threshold
        reviews = [sent_to_review(probability=answer["probability"], threshold=review_threshold) for answer in answers]
        # Concurrent publishes, but no more at once than a client's connection pool holds (redis-py's
        # default is 100): a larger micro-batch would otherwise fail every time it is published.
        gate = asyncio.Semaphore(PUBLISH_CONCURRENCY)

        async def publish(item: Any, answer: dict[str, Any], review: bool) -> None:
            async with gate:
                message = prediction_message(item, answer, model_name=model.name, model_version=model.version,
                                             low_confidence_threshold=model.low_confidence_threshold,
                                             needs_review=review)
                await self.broker.publish(s.output, message, key=item.request_id)

        await asyncio.gather(*(publish(item, answer, review)
                               for item, answer, review in zip(items, answers, reviews, strict=True)))
        self.metrics.published.inc(len(items))
        batch_id, now = str(uuid.uuid4()), datetime.now(UTC)
        lineage = lineage_columns(model, serving_git_commit=self.serving_git_commit)
        rows: list[dict[str, Any]] = [{
            "request_id": item.request_id, "batch_id": batch_id, "position": position, "created_at": now,
            "product": item.product.record(), "label": answer["label"], "probability": answer["probability"],
            "top_k": [{"label": label, "probability": p}
                      for label, p in zip(answer["top_labels"], answer["top_probabilities"], strict=True)],
            "model_name": model.name, "model_version": model.version, "latency_ms": latency_ms,
            "api_key_id": None, "channel": self.channel, "needs_review": review, **lineage,
            **({REVIEW_THRESHOLD: review_threshold} if review else {}),
        } for position, (item, answer, review) in enumerate(zip(items, answers, reviews, strict=True))]
        unjournaled = writer.unjournaled
        await writer.log_durably(rows)  # fsync'd to the journal before anything is acknowledged
        if writer.unjournaled != unjournaled:  # disk full: the rows are only in memory, so no ack
            raise RuntimeError("the request log could not journal a micro-batch; it will be delivered again")
        if self.shadow is not None:  # O(1), never blocks the ack
            self.shadow.submit(champion_version=model.version, request_ids=[item.request_id for item in items],
                               records=[row["product"] for row in rows], top_k=s.top_k)
        return True
