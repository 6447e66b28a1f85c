"""End-to-end products/s and latency through each local broker (the stream consumer) against
/predict over HTTP, on this machine.

    .venv/bin/python benchmarks/stream_benchmark.py                    # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/stream_benchmark.py --burst 200 --paced 50 --brokers nats   # smoke run

A tiny baseline (300 rows of the bundled fashion sample) is trained into benchmarks/out/stream/
and served, with request logging to a real Postgres database (`productcat_bench_stream`,
write-ahead), by:

- one `python -m streaming run` process per broker (batch_size 32, batch_window_ms 20);
- one uvicorn process (/predict, micro-batching on, its defaults).

Two loads each, one product per message / request:

- burst: ``--burst`` products sent as fast as the sender can (a backlog): products/s from the
  first send to the last prediction received, and the latency each product saw (send to receive);
- paced: ``--paced`` products at ``--rate`` a second: the latency when the consumer keeps up.

Over HTTP the burst is 8 concurrent clients; the paced load sends one request every 1/rate s.
A prediction message is "received" when a reader (its own consumer group) has it.

``--memory-run N`` measures instead whether the consumer's memory stays flat (docs/benchmarks.md,
"Streaming: consumer memory"):

    .venv/bin/python benchmarks/stream_benchmark.py --memory-run 100000 --brokers nats   # about 3 minutes
    .venv/bin/python benchmarks/stream_benchmark.py --memory-run 2000 --brokers nats     # smoke run

N product messages (the ingested rows of the bundled sample, cycled, each with an id of its own)
go to one consumer, at most ``MEMORY_WINDOW`` ahead of its predictions: a backlog it always has,
never all N at once in the broker or the publisher. The consumer's RSS (children included) is
sampled every second; the samples go to benchmarks/out/stream_memory.json and a plot to
docs/images/stream_memory.png. Every message must come back as exactly one prediction and one
request-log row.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psutil
import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.champion import train_champion  # noqa: E402 (after the path insert)
from benchmarks.request_log_durability import (  # noqa: E402
    free_port,
    recreate_database,
    service_env,
    serving,
)

OUT = REPO_ROOT / "benchmarks" / "out" / "stream"
RESULTS_FILE = REPO_ROOT / "benchmarks" / "out" / "stream_results.json"
ADMIN_URL = os.environ.get("PRODUCTCAT_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
BENCH_DB = "productcat_bench_stream"
BROKERS = {
    "nats": "nats://127.0.0.1:4222",
    "amqp": "amqp://guest:guest@127.0.0.1:5672/",
    "redis": "redis://127.0.0.1:6379",
}
PRODUCT = {"title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle", "price": "$24.99"}
MEMORY_FILE = REPO_ROOT / "benchmarks" / "out" / "stream_memory.json"
MEMORY_PLOT = REPO_ROOT / "docs" / "images" / "stream_memory.png"
MEMORY_WINDOW = 2000  # messages published ahead of the predictions received
IN_FLIGHT = 50  # broker calls awaited together: redis-py's pool refuses a 101st connection
WARM_UP = 0.05  # of the messages: RSS before this point is start-up, not growth
STALL_SECONDS = 120  # no prediction for this long ends the run as a failure
PRODUCT_FIELDS = ("title", "description", "features", "brand", "price", "image")


def summary(latencies_ms: list[float], seconds: float) -> dict[str, float]:
    p50, p95 = np.percentile(latencies_ms, [50, 95]).tolist()
    return {"products": len(latencies_ms), "rate": len(latencies_ms) / seconds, "p50_ms": p50, "p95_ms": p95}


@contextlib.contextmanager
def consumer(url: str, tracking_uri: str, db_url: str, tag: str
             ) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    """A `python -m streaming run` process on subjects of its own; yields it and its stream settings."""
    stream = {"URL": url, "INPUT": f"bench.{tag}.in", "OUTPUT": f"bench.{tag}.out", "DEAD_LETTER": f"bench.{tag}.dead",
              "GROUP": f"bench-{tag}", "BATCH_SIZE": "32", "BATCH_WINDOW_MS": "20", "POLL_SECONDS": "0.2",
              "METRICS_PORT": str(free_port())}
    env = os.environ | service_env("write-ahead", tracking_uri, db_url, OUT / "spool" / tag) | {
        f"PRODUCTCAT_STREAM_{key}": value for key, value in stream.items()}
    log_file = OUT / f"consumer-{tag}.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "streaming", "run"], cwd=REPO_ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the consumer did not become healthy; see {log_file}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{stream['METRICS_PORT']}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        yield process, stream
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def through_broker(stream: dict[str, str], *, count: int, rate: float | None) -> dict[str, float]:
    """Send ``count`` products (at ``rate``/s, or as fast as possible) and time each prediction."""
    from streaming.brokers import make_broker
    from streaming.settings import StreamSettings

    settings = StreamSettings(url=stream["URL"], input=stream["INPUT"], output=stream["OUTPUT"])
    run = uuid.uuid4().hex[:8]
    sent: dict[str, float] = {}
    received: dict[str, float] = {}

    async def send() -> None:
        broker = make_broker(settings)
        await broker.connect()
        try:
            start = time.perf_counter()
            for i in range(count):
                if rate:
                    await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                message_id = f"{run}-{i}"
                sent[message_id] = time.perf_counter()
                await broker.publish(settings.input, json.dumps(PRODUCT | {"id": message_id}).encode())
        finally:
            await broker.close()

    async def receive() -> None:
        broker = make_broker(settings, group=f"reader-{run}")
        await broker.connect()
        try:
            subscription = await broker.subscribe(settings.output)
            deadline = time.monotonic() + 300
            while len(received) < count and time.monotonic() < deadline:
                for delivery in await subscription.fetch(256, 0.5):
                    message_id = json.loads(delivery.body)["id"]
                    if message_id.startswith(run):
                        received.setdefault(message_id, time.perf_counter())
                    await delivery.ack()
        finally:
            await broker.close()

    reader = asyncio.create_task(receive())
    await asyncio.sleep(0.5)  # the reader's group exists before the first prediction
    await send()
    await reader
    if len(received) < count:
        raise RuntimeError(f"only {len(received)} of {count} predictions arrived")
    latencies = [(received[i] - sent[i]) * 1000 for i in sent]
    return summary(latencies, max(received.values()) - min(sent.values()))


async def through_http(url: str, *, count: int, rate: float | None, clients: int = 8) -> dict[str, float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def one() -> None:
            started = time.perf_counter()
            (await http.post("/predict", json=PRODUCT)).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)

        start = time.perf_counter()
        if rate:
            tasks = []
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
        else:
            remaining = iter(range(count))

            async def client() -> None:
                for _ in remaining:
                    await one()

            await asyncio.gather(*(client() for _ in range(clients)))
        return summary(latencies, time.perf_counter() - start)


def sample_products() -> list[dict[str, Any]]:
    """The ingested rows of the bundled sample as product messages (their fields only: no id, no label)."""
    import pandas as pd

    frame = pd.read_parquet(OUT / "data" / "interim" / "products.parquet", columns=list(PRODUCT_FIELDS))
    products = []
    for row in frame.to_dict("records"):
        product = {}
        for key, value in row.items():
            if isinstance(value, np.ndarray):
                value = value.tolist()
            if value is None or value == [] or (isinstance(value, float) and math.isnan(value)):
                continue
            product[key] = value
        products.append(product)
    return products


class RssSampler:
    """Every ``interval`` s, on a thread of its own (the event loop is busy publishing), the RSS of
    a process and its children, with how many messages had been processed by then."""

    def __init__(self, pid: int, processed: Callable[[], int], interval: float = 1.0) -> None:
        self.process = psutil.Process(pid)
        self.processed = processed
        self.interval = interval
        self.samples: list[dict[str, float]] = []
        self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss(self) -> int:
        rss = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                rss += child.memory_info().rss
        return rss

    def sample(self) -> None:
        self.samples.append({"seconds": round(time.perf_counter() - self._started, 3), "processed": self.processed(),
                             "rss_mib": round(self.rss() / 2**20, 2)})

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


async def memory_run(stream: dict[str, str], *, pid: int, count: int, interval: float) -> dict[str, Any]:
    """Send ``count`` products, at most MEMORY_WINDOW ahead of the predictions, while sampling the
    consumer's RSS; returns the samples, products/s and how many predictions each message got."""
    from streaming.brokers import make_broker
    from streaming.settings import StreamSettings

    settings = StreamSettings(url=stream["URL"], input=stream["INPUT"], output=stream["OUTPUT"])
    products = sample_products()
    run = uuid.uuid4().hex[:8]
    predictions = bytearray(count)  # per message: predictions received (a byte each, not a set of 100k ids)
    progress = {"published": 0, "received": 0, "duplicates": 0}
    times: dict[str, float] = {}

    async def send(reader: asyncio.Task[None]) -> None:
        broker = make_broker(settings)
        await broker.connect()
        try:
            times["first_sent"] = time.perf_counter()
            for begin in range(0, count, IN_FLIGHT):
                while progress["published"] - progress["received"] > MEMORY_WINDOW - IN_FLIGHT:
                    if reader.done():  # it failed or gave up waiting: no more room will come
                        return
                    await asyncio.sleep(0.02)
                end = min(begin + IN_FLIGHT, count)
                await asyncio.gather(*(  # built chunk by chunk: the publisher never holds all N messages
                    broker.publish(settings.input, orjson.dumps(products[i % len(products)] | {"id": f"{run}-{i}"}))
                    for i in range(begin, end)))
                progress["published"] = end
        finally:
            await broker.close()

    async def receive() -> None:
        broker = make_broker(settings, group=f"reader-{run}")
        await broker.connect()
        try:
            subscription = await broker.subscribe(settings.output)
            last_seen = time.monotonic()
            grace_until = math.inf  # after the last one: a little longer, to see any second prediction
            while time.monotonic() < grace_until and time.monotonic() - last_seen < STALL_SECONDS:
                deliveries = await subscription.fetch(256, 0.5)
                for delivery in deliveries:
                    prefix, _, index = orjson.loads(delivery.body)["id"].rpartition("-")
                    if prefix != run:  # the output subject is the consumer's own; a leftover would be older
                        continue
                    i = int(index)
                    if predictions[i]:
                        progress["duplicates"] += 1
                    else:
                        progress["received"] += 1
                    predictions[i] = min(predictions[i] + 1, 255)
                if deliveries:
                    last_seen = time.monotonic()
                    times["last_received"] = time.perf_counter()
                for begin in range(0, len(deliveries), IN_FLIGHT):
                    await asyncio.gather(*(delivery.ack() for delivery in deliveries[begin:begin + IN_FLIGHT]))
                if progress["received"] == count and grace_until == math.inf:
                    grace_until = time.monotonic() + 3
        finally:
            await broker.close()

    with RssSampler(pid, lambda: progress["received"], interval) as sampler:
        reader = asyncio.create_task(receive())
        await asyncio.sleep(0.5)  # the reader's group exists before the first prediction
        await send(reader)
        await reader
    missing = predictions.count(0)
    seconds = times.get("last_received", times["first_sent"]) - times["first_sent"]
    return {"messages": count, "run": run, "products_per_s": progress["received"] / seconds if seconds else 0.0,
            "seconds": seconds, "predictions": progress["received"] + progress["duplicates"],
            "without_prediction": missing, "with_more_than_one": count - missing - predictions.count(1),
            "samples": sampler.samples}


def count_logged(db_url: str, *, channel: str, subject: str, run: str, count: int, timeout: float = 60) -> int:
    """Request-log rows of the run's messages (request_ids derived as the consumer does), once the
    count stops short of ``count`` for no longer than ``timeout`` s (the writer may still be draining)."""
    from streaming.messages import request_id_for

    engine = sa.create_engine(db_url)
    query = sa.text("SELECT count(*) FROM prediction_log WHERE request_id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True))
    deadline = time.monotonic() + timeout
    try:
        while True:
            logged = 0
            with engine.connect() as connection:
                for begin in range(0, count, 5000):
                    ids = [request_id_for(channel=channel, subject=subject, message_id=f"{run}-{i}")
                           for i in range(begin, min(begin + 5000, count))]
                    logged += connection.execute(query, {"ids": ids}).scalar_one()
            if logged >= count or time.monotonic() > deadline:
                return logged
            time.sleep(1)
    finally:
        engine.dispose()


def memory_summary(samples: list[dict[str, float]], count: int) -> dict[str, float | None]:
    """RSS after warm-up, at 25/50/75/100 % of the messages, the max, and the growth in MiB per 10k
    messages (least squares over the post-warm-up samples)."""
    processed = np.array([s["processed"] for s in samples], dtype=float)
    rss = np.array([s["rss_mib"] for s in samples])

    def at(fraction: float) -> float | None:
        reached = np.flatnonzero(processed >= fraction * count)
        return float(rss[reached[0]]) if reached.size else None

    after = processed >= WARM_UP * count
    slope = None
    if np.unique(processed[after]).size >= 2:
        slope = float(np.polyfit(processed[after], rss[after], 1)[0] * 10_000)
    return {"idle_mib": float(rss[0]), "warm_mib": at(WARM_UP), "p25_mib": at(0.25), "p50_mib": at(0.5),
            "p75_mib": at(0.75), "p100_mib": at(1.0), "max_mib": float(rss.max()),
            "max_after_warm_up_mib": float(rss[after].max()) if after.any() else None,
            "slope_mib_per_10k": slope}


def plot_memory(results: list[dict[str, Any]], path: Path) -> None:
    """RSS against messages processed: to scale (from 0) on the left, zoomed on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (full, zoom) = plt.subplots(1, 2, figsize=(8.8, 3.2), dpi=110)
    for result in results:
        processed = np.array([s["processed"] for s in result["samples"]])
        rss = np.array([s["rss_mib"] for s in result["samples"]])
        for axes in (full, zoom):
            line, = axes.plot(processed / 1000, rss, linewidth=1.2, label=f"{result['channel']} consumer RSS")
            axes.axvline(WARM_UP * result["messages"] / 1000, color="grey", linewidth=0.8, linestyle=":")
        if (slope := result["summary"]["slope_mib_per_10k"]) is not None:
            after = processed >= WARM_UP * result["messages"]
            fit = np.poly1d(np.polyfit(processed[after], rss[after], 1))
            zoom.plot(processed[after] / 1000, fit(processed[after]), "--", color=line.get_color(), linewidth=1,
                      label=f"fit after warm-up: {slope:+.2f} MiB / 10k")
    full.set_ylim(0, max(max(s["rss_mib"] for s in r["samples"]) for r in results) * 1.15)
    full.set_title("to scale", fontsize=9)
    zoom.set_title("zoomed (dotted: end of warm-up)", fontsize=9)
    for axes in (full, zoom):
        axes.set_xlabel("messages processed (thousands)")
        axes.set_ylabel("RSS incl. children (MiB)")
    zoom.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


async def drop_streams(url: str, subjects: list[str]) -> None:
    """Delete the run's streams so N messages do not stay in the broker (NATS, Redis; RabbitMQ's
    queues are drained by then)."""
    if url.startswith("nats://"):
        import nats

        from streaming.brokers.nats_jetstream import stream_name

        client = await nats.connect(servers=[url])
        try:
            js = client.jetstream()
            for subject in subjects:
                with contextlib.suppress(Exception):  # never created (no dead letters): nothing to drop
                    await js.delete_stream(stream_name(subject))
        finally:
            await client.close()
    elif url.startswith("redis://"):
        import redis.asyncio as aioredis

        client = aioredis.from_url(url)
        try:
            await client.delete(*subjects)
        finally:
            await client.aclose()


def run_memory(args: argparse.Namespace, tracking_uri: str, db_url: str) -> None:
    results: list[dict[str, Any]] = []
    for name in args.brokers.split(","):
        with consumer(BROKERS[name], tracking_uri, db_url, f"{name}-mem-{uuid.uuid4().hex[:6]}") as (process, stream):
            result = asyncio.run(memory_run(stream, pid=process.pid, count=args.memory_run,
                                            interval=args.sample_seconds))
        # Counted after the consumer stopped: its writer drains the journal into the table on the way out.
        result["log_rows"] = count_logged(db_url, channel=name, subject=stream["INPUT"], run=result["run"],
                                          count=args.memory_run)
        result = {"channel": name} | result | {"summary": memory_summary(result["samples"], args.memory_run)}
        results.append(result)
        asyncio.run(drop_streams(stream["URL"], [stream["INPUT"], stream["OUTPUT"], stream["DEAD_LETTER"]]))
        s = {key: "n/a" if value is None else f"{value:.1f}" for key, value in result["summary"].items()}
        print(f"{name}: {args.memory_run:,} messages in {result['seconds']:.0f} s ({result['products_per_s']:.0f}/s); "
              f"RSS idle {s['idle_mib']} MiB, after warm-up {s['warm_mib']} MiB, at 25/50/75/100% "
              f"{s['p25_mib']} / {s['p50_mib']} / {s['p75_mib']} / {s['p100_mib']} MiB, max {s['max_mib']} MiB, "
              f"slope {s['slope_mib_per_10k']} MiB per 10k; predictions {result['predictions']:,} "
              f"({result['without_prediction']} without, {result['with_more_than_one']} with more than one), "
              f"log rows {result['log_rows']:,}", flush=True)
    MEMORY_FILE.write_text(json.dumps({"messages": args.memory_run, "window": MEMORY_WINDOW,
                                       "sample_seconds": args.sample_seconds, "warm_up": WARM_UP,
                                       "cores": os.cpu_count(), "results": results}, indent=2))
    plot_memory(results, MEMORY_PLOT)
    print(f"samples in {MEMORY_FILE}, plot in {MEMORY_PLOT}")
    failed = [r["channel"] for r in results if r["without_prediction"] or r["with_more_than_one"]
              or r["log_rows"] != args.memory_run]
    if failed:
        raise SystemExit(f"not exactly one prediction and one log row per message: {', '.join(failed)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=1000, help="Products in the burst load.")
    parser.add_argument("--paced", type=int, default=200, help="Products in the paced load.")
    parser.add_argument("--rate", type=float, default=100.0, help="Products a second in the paced load.")
    parser.add_argument("--brokers", default=",".join(BROKERS), help="Comma-separated: nats,amqp,redis.")
    parser.add_argument("--memory-run", type=int, default=0, metavar="N",
                        help="Instead: N messages through each broker's consumer, sampling its RSS.")
    parser.add_argument("--sample-seconds", type=float, default=1.0, help="RSS sampling interval (--memory-run).")
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    tracking_uri = train_champion(OUT, by="stream_benchmark")
    db_url = recreate_database(ADMIN_URL, BENCH_DB)
    if args.memory_run:
        run_memory(args, tracking_uri, db_url)
        return
    results: list[dict[str, Any]] = []

    def record(channel: str, load: str, cell: dict[str, float]) -> None:
        results.append({"channel": channel, "load": load} | cell)
        print(f"{channel:6s} {load:6s} {cell['products']:5d} products: {cell['rate']:7.1f}/s  "
              f"p50 {cell['p50_ms']:7.1f} ms  p95 {cell['p95_ms']:7.1f} ms", flush=True)

    for name in args.brokers.split(","):
        with consumer(BROKERS[name], tracking_uri, db_url, f"{name}-{uuid.uuid4().hex[:6]}") as (_, stream):
            asyncio.run(through_broker(stream, count=50, rate=None))  # warm-up, not measured
            record(name, "burst", asyncio.run(through_broker(stream, count=args.burst, rate=None)))
            record(name, "paced", asyncio.run(through_broker(stream, count=args.paced, rate=args.rate)))
    with serving(service_env("write-ahead", tracking_uri, db_url, OUT / "spool" / "http") | {
            "PRODUCTCAT_API_RATE_LIMIT_PREDICT_PER_KEY": "0"}, OUT / "http.log") as (_, url):
        asyncio.run(through_http(url, count=50, rate=None))  # warm-up
        record("http", "burst", asyncio.run(through_http(url, count=args.burst, rate=None)))
        record("http", "paced", asyncio.run(through_http(url, count=args.paced, rate=args.rate)))
    RESULTS_FILE.write_text(json.dumps({"burst": args.burst, "paced": args.paced, "rate": args.rate,
                                        "cores": os.cpu_count(), "results": results}, indent=2))
    print(f"results in {RESULTS_FILE}")


if __name__ == "__main__":
    main()
