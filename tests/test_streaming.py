"""The stream consumer against the real local brokers (NATS JetStream, RabbitMQ, Redis Streams):
round trip with micro-batches, dead letters, a consumer killed mid-batch, a connection cut.

Each test uses subjects, queues and groups of its own, a real registry (tests/api_support) and a
fresh Postgres database for the request log. Kafka has no broker here and is not tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from ml.settings import MLSettings
from streaming.brokers import make_broker
from streaming.cli import app
from streaming.consumer import StreamConsumer
from streaming.messages import EXCERPT_BYTES, request_id_for
from streaming.settings import StreamSettings
from tests.api_support import api_settings, build_registry, free_port, wait_for
from tests.conftest import REPO_ROOT, SAMPLE_DIR, fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROKERS = {
    "nats": "nats://127.0.0.1:4222",
    "amqp": "amqp://guest:guest@127.0.0.1:5672/",
    "redis": "redis://127.0.0.1:6379",
}
DEDUPLICATING = {"nats", "redis"}  # brokers that drop a republished prediction (same key)


@dataclass(frozen=True)
class Registry:
    settings: MLSettings
    champion: str


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    settings, versions = build_registry(tmp_path_factory.mktemp("registry"), sizes=(300,))
    return Registry(settings, versions[0])


@pytest.fixture(params=list(BROKERS))
def broker_url(request: pytest.FixtureRequest) -> str:
    url = BROKERS[request.param]
    host, port = re.search(r"@?([\d.]+):(\d+)", url.split("://", 1)[1]).groups()  # type: ignore[union-attr]
    with socket.socket() as probe:
        probe.settimeout(2)
        if probe.connect_ex((host, int(port))) != 0:
            pytest.skip(f"no {request.param} broker on {host}:{port} (.ci/run starts one)")
    return url


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


_CREATED: list[StreamSettings] = []  # the current test's subjects, removed from the broker afterwards


async def remove_subjects(settings: StreamSettings) -> None:
    subjects = (settings.input, settings.output, settings.dead_letter)
    if settings.scheme == "nats":
        import nats
        from nats.js.errors import NotFoundError

        from streaming.brokers.nats_jetstream import stream_name

        nc = await nats.connect(settings.url)
        for subject in subjects:
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_stream(stream_name(subject))
        await nc.close()
    elif settings.scheme == "redis":
        import redis.asyncio as aioredis

        client = aioredis.from_url(settings.url)
        await client.delete(*subjects)
        await client.aclose()
    else:
        import aio_pika

        connection = await aio_pika.connect(settings.url)
        channel = await connection.channel()
        for subject in subjects:
            await channel.queue_delete(subject)
        await connection.close()


@pytest.fixture(autouse=True)
def _remove_test_subjects() -> Iterator[None]:
    yield
    while _CREATED:
        asyncio.run(remove_subjects(_CREATED.pop()))


def stream_settings(url: str, **overrides: Any) -> StreamSettings:
    tag = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "url": url, "input": f"test.{tag}.in", "output": f"test.{tag}.out", "dead_letter": f"test.{tag}.dead",
        "group": f"scorer-{tag}", "consumer_name": f"consumer-{tag}", "batch_size": 8, "batch_window_ms": 200,
        "poll_seconds": 0.2, "redeliver_after_seconds": 2.0, "metrics_port": free_port(), "lag_interval_seconds": 0.5,
        "reconnect_max_seconds": 1.0,
    }
    settings = StreamSettings(**(values | overrides))
    _CREATED.append(settings)
    return settings


def titles(count: int) -> list[str]:
    with gzip.open(SAMPLE_DIR / "fashion_styles.csv.gz", "rt", encoding="utf-8") as handle:
        rows = csv.DictReader(handle)
        return [row["productDisplayName"] for row, _ in zip(rows, range(count), strict=False)]


def product_messages(count: int) -> list[tuple[str, bytes]]:
    return [(f"p-{i}", json.dumps({"id": f"p-{i}", "title": title}).encode())
            for i, title in enumerate(titles(count))]


async def publish_all(settings: StreamSettings, bodies: list[bytes], *, every: float = 0.0) -> None:
    broker = make_broker(settings)
    await broker.connect()
    try:
        for body in bodies:
            await broker.publish(settings.input, body)
            if every:
                await asyncio.sleep(every)
    finally:
        await broker.close()


async def read(settings: StreamSettings, subject: str, *, into: list[dict[str, Any]], until: Callable[[], bool],
               timeout: float, alive: Callable[[], bool] = lambda: True, grace: float = 0.0,
               group: str | None = None) -> None:
    """Read (and ack) ``subject`` as a group of its own (or ``group``, to go on where an earlier read
    stopped) into ``into`` until ``until()``; then read ``grace`` seconds more, so duplicates would show."""
    broker = make_broker(settings, group=group or f"verify-{uuid.uuid4().hex[:8]}")
    await broker.connect()
    try:
        subscription = await broker.subscribe(subject)
        deadline, done_at = time.monotonic() + timeout, None
        while done_at is None or time.monotonic() < done_at + grace:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {subject}: {len(into)} messages")
            if not alive():
                raise AssertionError("the consumer stopped")
            for delivery in await subscription.fetch(100, 0.2):
                into.append(json.loads(delivery.body))
                await delivery.ack()
            if done_at is None and until():
                done_at = time.monotonic()
    finally:
        await broker.close()


async def unfinished(settings: StreamSettings) -> int:
    """Input messages of the consumer's group the broker still holds (not acknowledged)."""
    scheme, url = settings.scheme, settings.url
    if scheme == "nats":
        import nats

        from streaming.brokers.nats_jetstream import stream_name

        nc = await nats.connect(url)
        info = await nc.jetstream().consumer_info(stream_name(settings.input), settings.group)
        await nc.close()
        return int(info.num_pending + info.num_ack_pending)
    if scheme == "redis":
        import redis.asyncio as aioredis

        client = aioredis.from_url(url)
        pending = (await client.xpending(settings.input, settings.group))["pending"]
        group = next(g for g in await client.xinfo_groups(settings.input) if g["name"] == settings.group.encode())
        await client.aclose()
        return int(pending) + int(group["lag"] or 0)
    import aio_pika

    connection = await aio_pika.connect(url)  # a closed consumer's unacked messages are back in the queue
    queue = await (await connection.channel()).declare_queue(settings.input, passive=True)
    await connection.close()
    return int(queue.declaration_result.message_count or 0)


def log_rows(database_url: str) -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(
                "SELECT request_id, channel, label, model_version, run_id, data_version, product FROM prediction_log"
            )).mappings()
            return {row["request_id"]: dict(row) for row in rows}
    except sa.exc.ProgrammingError:  # the consumer has not migrated the database yet
        return {}
    finally:
        engine.dispose()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([\d.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def check_prediction(prediction: dict[str, Any], *, settings: StreamSettings, champion: str) -> None:
    assert prediction["request_id"] == request_id_for(channel=settings.scheme, subject=settings.input,
                                                      message_id=prediction["id"])
    probabilities = [item["probability"] for item in prediction["top_k"]]
    assert len(probabilities) == settings.top_k == 3
    assert probabilities == sorted(probabilities, reverse=True) and 0 <= probabilities[-1] <= probabilities[0] <= 1
    assert prediction["label"] == prediction["top_k"][0]["label"]
    assert prediction["model"] == {"name": "product-classifier", "version": champion}


def test_round_trip_in_micro_batches(broker_url: str, registry: Registry, database: str, tmp_path: Path) -> None:
    settings = stream_settings(broker_url)
    messages = product_messages(20)
    catalogue = tmp_path / "catalogue.csv"
    with catalogue.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title"])
        writer.writerows([mid, json.loads(body)["title"]] for mid, body in messages)
    consumer = StreamConsumer(settings=settings, api_settings=api_settings(tmp_path, database),
                              ml_settings=registry.settings)
    predictions: list[dict[str, Any]] = []

    async def scenario() -> tuple[str, httpx.Response]:
        task = asyncio.create_task(consumer.run())
        try:
            # A backlog (full batches), sent by `productcat stream publish` from a catalogue file.
            sent = await asyncio.to_thread(CliRunner().invoke, app, ["publish", "--file", str(catalogue), "--url",
                                                                     broker_url, "--subject", settings.input])
            assert sent.exit_code == 0 and "published 20 products" in sent.output, sent.output
            await read(settings, settings.output, into=predictions, until=lambda: len(predictions) >= 20,
                       timeout=60, alive=lambda: not task.done(), grace=0.5)
            base = f"http://127.0.0.1:{consumer.http_port}"
            return (await asyncio.to_thread(httpx.get, f"{base}/metrics")).text, await asyncio.to_thread(
                httpx.get, f"{base}/health")
        finally:
            consumer.stop()
            await task

    metrics, health = asyncio.run(scenario())

    assert sorted(p["id"] for p in predictions) == sorted(mid for mid, _ in messages)  # each exactly once
    threshold = consumer.manager.current.low_confidence_threshold
    for prediction in predictions:
        check_prediction(prediction, settings=settings, champion=registry.champion)
        assert prediction["low_confidence"] is (prediction["probability"] < threshold)  # as /predict flags it
    assert health.status_code == 200 and health.json()["model_version"] == registry.champion
    assert metric(metrics, "productcat_stream_consumed_total") == 20
    assert metric(metrics, "productcat_stream_published_total") == 20
    assert 3 <= metric(metrics, "productcat_stream_batch_size_count") < 20  # batches of up to 8, not one by one
    rows = log_rows(database)  # the writer flushed on stop
    assert set(rows) == {p["request_id"] for p in predictions}
    for prediction in predictions:
        row = rows[prediction["request_id"]]
        assert (row["channel"], row["label"], row["model_version"]) == (settings.scheme, prediction["label"],
                                                                        registry.champion)
        assert row["run_id"] and row["data_version"]  # the same lineage as an HTTP answer
    assert asyncio.run(unfinished(settings)) == 0


@pytest.mark.parametrize("broker_url", [BROKERS["redis"]], ids=["redis"])
def test_a_micro_batch_larger_than_the_client_pool_is_published_whole(
    broker_url: str, registry: Registry, database: str, tmp_path: Path
) -> None:
    # redis-py opens at most 100 connections; a batch of 150 predictions must not need more at once.
    settings = stream_settings(broker_url, batch_size=150, batch_window_ms=3000)
    messages = product_messages(150)
    consumer = StreamConsumer(settings=settings, api_settings=api_settings(tmp_path, database),
                              ml_settings=registry.settings)
    predictions: list[dict[str, Any]] = []

    async def scenario() -> None:
        task = asyncio.create_task(consumer.run())
        try:
            await publish_all(settings, [body for _, body in messages])
            await read(settings, settings.output, into=predictions, until=lambda: len(predictions) >= 150,
                       timeout=90, alive=lambda: not task.done(), grace=0.5)
        finally:
            consumer.stop()
            await task

    asyncio.run(scenario())
    assert sorted(p["id"] for p in predictions) == sorted(mid for mid, _ in messages)
    assert len(log_rows(database)) == 150


def test_malformed_messages_are_dead_lettered_and_acknowledged(
    broker_url: str, registry: Registry, database: str, tmp_path: Path
) -> None:
    settings = stream_settings(broker_url, max_message_bytes=2048)
    bad = {
        "not_json": b"\xff\xfe{not json",
        "array": b"[1, 2, 3]",
        "no_id": json.dumps({"title": "Navy Blue Shirt"}).encode(),
        "bad_price": json.dumps({"id": "bad-price", "title": "Navy Blue Shirt", "price": "cheap"}).encode(),
        "no_text": json.dumps({"id": "no-text", "title": "  "}).encode(),
        "too_large": json.dumps({"id": "huge", "title": "x" * 5000}).encode(),
    }
    good = product_messages(2)
    consumer = StreamConsumer(settings=settings, api_settings=api_settings(tmp_path, database),
                              ml_settings=registry.settings)
    predictions: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []

    async def scenario() -> None:
        task = asyncio.create_task(consumer.run())
        try:
            await publish_all(settings, [*bad.values(), *(body for _, body in good)])
            await read(settings, settings.dead_letter, into=dead, until=lambda: len(dead) >= len(bad), timeout=60,
                       alive=lambda: not task.done())
            await read(settings, settings.output, into=predictions, until=lambda: len(predictions) >= 2, timeout=30,
                       alive=lambda: not task.done(), grace=0.5)
        finally:
            consumer.stop()
            await task

    asyncio.run(scenario())

    assert sorted(p["id"] for p in predictions) == ["p-0", "p-1"]
    by_id = {d["id"]: d for d in dead}
    assert sorted(d["kind"] for d in dead) == ["invalid", "invalid", "invalid", "no_id", "not_json", "too_large"]
    assert "price" in by_id["bad-price"]["reason"] and by_id["bad-price"]["kind"] == "invalid"
    assert by_id["no-text"]["kind"] == "invalid"
    assert sorted(d["kind"] for d in dead if d["id"] is None) == ["invalid", "no_id", "not_json", "too_large"]
    for letter in dead:
        assert letter["subject"] == settings.input and letter["bytes"] > 0
        assert len(letter["excerpt"]) <= EXCERPT_BYTES + 1  # never the whole payload
        assert len(letter["reason"]) <= 500
    too_large = next(d for d in dead if d["kind"] == "too_large")
    assert too_large["bytes"] > 5000 and "2,048" in too_large["reason"]
    assert set(log_rows(database)) == {p["request_id"] for p in predictions}  # no row for a bad message
    assert asyncio.run(unfinished(settings)) == 0  # bad messages were acknowledged too: no retry loop


def start_consumer(settings: StreamSettings, registry: Registry, database: str, root: Path, log: Path
                   ) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "PRODUCTCAT_PROJECT_ROOT": str(REPO_ROOT),
        "PRODUCTCAT_MLFLOW_TRACKING_URI": registry.settings.tracking_uri,
        "PRODUCTCAT_MLFLOW_ARTIFACT_ROOT": str(registry.settings.mlflow_artifact_root),
        "DATABASE_URL": database,
        "PRODUCTCAT_API_SPOOL_DIR": str(root / "spool"),
        "PRODUCTCAT_API_LOG_FLUSH_SECONDS": "0.05",
        "PRODUCTCAT_API_POLL_INTERVAL_SECONDS": "1",
        "PRODUCTCAT_API_REVIEW_THRESHOLD": "0",  # labels asserted on: no review routing (tests/api_support.py)
    } | {f"PRODUCTCAT_STREAM_{key.upper()}": str(value) for key, value in settings.model_dump().items()}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "streaming", "run"], cwd=REPO_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def wait_healthy(process: subprocess.Popen[bytes], settings: StreamSettings, log: Path) -> None:
    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the consumer exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{settings.metrics_port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=90, what="the consumer's /health")
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{log.read_text()[-3000:]}") from None


def test_a_consumer_killed_mid_batch_loses_and_doubles_nothing(
    broker_url: str, registry: Registry, database: str, tmp_path: Path
) -> None:
    # Batches fill slowly (one product every 50 ms, a 500 ms window): the kill lands while the
    # consumer holds messages it has fetched but not acknowledged.
    settings = stream_settings(broker_url, batch_size=64, batch_window_ms=500)
    messages = product_messages(60)
    log = tmp_path / "consumer.log"
    predictions: list[dict[str, Any]] = []

    async def scenario() -> str:
        first = start_consumer(settings, registry, database, tmp_path, log)
        second = None
        try:
            await asyncio.to_thread(wait_healthy, first, settings, log)
            reader = asyncio.create_task(read(settings, settings.output, into=predictions, timeout=150, grace=1.0,
                                              until=lambda: len({p["id"] for p in predictions}) >= len(messages)))
            publisher = asyncio.create_task(publish_all(settings, [body for _, body in messages], every=0.05))
            await asyncio.to_thread(wait_for, lambda: len(predictions) >= 5, 60, "the first predictions")
            seen = len(predictions)
            await asyncio.to_thread(wait_for, lambda: len(predictions) > seen, 30, "a second batch")
            await asyncio.sleep(0.2)  # inside the next batch's window
            first.send_signal(signal.SIGKILL)
            first.wait()
            assert not publisher.done(), "every product was published before the kill"
            second = start_consumer(settings, registry, database, tmp_path, log)
            await asyncio.to_thread(wait_healthy, second, settings, log)
            await publisher
            await reader
            return (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{settings.metrics_port}/metrics")).text
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(30)

    metrics = asyncio.run(scenario())

    ids = sorted(mid for mid, _ in messages)
    assert sorted({p["id"] for p in predictions}) == ids
    if settings.scheme in DEDUPLICATING:
        assert len(predictions) == len(messages)  # the republished ones were dropped by the broker
    by_id: dict[str, set[str]] = {}
    for prediction in predictions:  # RabbitMQ may carry a second copy: the same request_id
        check_prediction(prediction, settings=settings, champion=registry.champion)
        by_id.setdefault(prediction["id"], set()).add(prediction["request_id"])
    assert all(len(request_ids) == 1 for request_ids in by_id.values())
    assert metric(metrics, "productcat_stream_redelivered_total") >= 1, "the kill left nothing unacknowledged"
    expected = {request_id_for(channel=settings.scheme, subject=settings.input, message_id=mid) for mid in ids}
    wait_for(lambda: set(log_rows(database)) == expected, timeout=30, what="one log row per product")
    assert asyncio.run(unfinished(settings)) == 0


class Proxy:
    """A TCP hop between the consumer and its broker that the test can cut and restore: the
    broker stays up for everyone else, the consumer sees its connection drop and refused."""

    def __init__(self, url: str) -> None:
        self.host, port = re.search(r"@?([\d.]+):(\d+)", url.split("://", 1)[1]).groups()  # type: ignore[union-attr]
        self.target = int(port)
        self.port = free_port()
        self.url = url.replace(f"{self.host}:{port}", f"127.0.0.1:{self.port}")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, RuntimeError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


def test_the_consumer_reconnects_after_its_connection_is_cut(
    broker_url: str, registry: Registry, database: str, tmp_path: Path
) -> None:
    settings = stream_settings(broker_url)
    messages = product_messages(20)
    predictions: list[dict[str, Any]] = []
    health_during_cut: list[int] = []

    async def scenario() -> str:
        proxy = Proxy(broker_url)
        await proxy.start()
        consumer = StreamConsumer(settings=settings.model_copy(update={"url": proxy.url}),
                                  api_settings=api_settings(tmp_path, database), ml_settings=registry.settings)
        task = asyncio.create_task(consumer.run())
        base = f"http://127.0.0.1:{settings.metrics_port}"
        try:
            await publish_all(settings, [body for _, body in messages[:10]])  # straight to the broker
            await read(settings, settings.output, into=predictions, until=lambda: len(predictions) >= 10,
                       timeout=60, alive=lambda: not task.done(), group="verify")
            await proxy.cut()
            await asyncio.to_thread(wait_for, lambda: not consumer.health.connected, 30, "the consumer to notice")
            health_during_cut.append((await asyncio.to_thread(httpx.get, f"{base}/health")).status_code)
            await publish_all(settings, [body for _, body in messages[10:]])
            await asyncio.sleep(1.0)  # a reconnection attempt or two is refused meanwhile
            await proxy.start()
            await read(settings, settings.output, into=predictions, timeout=60, alive=lambda: not task.done(),
                       until=lambda: len({p["id"] for p in predictions}) >= 20, grace=0.5, group="verify")
            # An ack the cut swallowed comes back as a redelivery (after redeliver_after_seconds on Redis
            # and NATS): let the consumer finish it before it stops.
            deadline = time.monotonic() + 30
            while settings.scheme != "amqp" and await unfinished(settings) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            return (await asyncio.to_thread(httpx.get, f"{base}/metrics")).text
        finally:
            consumer.stop()
            await task
            await proxy.cut()

    metrics = asyncio.run(scenario())

    assert health_during_cut == [503]
    assert sorted({p["id"] for p in predictions}) == sorted(mid for mid, _ in messages)
    if settings.scheme in DEDUPLICATING:  # RabbitMQ may repeat one whose ack the cut swallowed
        assert len(predictions) == len(messages)
    assert metric(metrics, "productcat_stream_reconnects_total") >= 1
    assert set(log_rows(database)) == {p["request_id"] for p in predictions}
    assert asyncio.run(unfinished(settings)) == 0
