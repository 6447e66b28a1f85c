"""Hostile bodies against a live server: what each costs to refuse, and what a normal client
sees while other clients send them as fast as they can.

    .venv/bin/python benchmarks/hostile_load.py [--seconds 15] [--hostile-clients 2]

A real uvicorn server over a tiny baseline champion (the bundled fashion sample) and a
throwaway database on the local Postgres. Prints one line per figure, as recorded in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.main import create_app  # noqa: E402
from tests.api_support import api_settings, build_registry, database_with_key, live_server  # noqa: E402

JSON = {"Content-Type": "application/json"}
NAN_BODY = b'{"title": "Blue Shirt", "price": NaN}'
SURROGATE_FEEDBACK = b'{"request_id": "a", "label": "\\ud800"}'
SHIRT = {"title": "Turtle Check Men Navy Blue Shirt"}


def _chunked_title(megabytes: int) -> Iterator[bytes]:
    yield b'{"title": "'
    for _ in range(megabytes * 16):
        yield b"x" * 65_536


def _refusals(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        started = time.perf_counter()
        sizes = [len(client.post("/predict", content=NAN_BODY, headers=JSON).content) for _ in range(200)]
        print(f"NaN body: 422 in {(time.perf_counter() - started) / 200 * 1000:.1f} ms, {max(sizes)} bytes")
        started = time.perf_counter()
        reply = client.post("/predict", content=_chunked_title(10), headers=JSON)
        print(f"10 MB chunked title: {reply.status_code} in {(time.perf_counter() - started) * 1000:.0f} ms, "
              f"{len(reply.content)} bytes")


def _normal_client_beside_hostile_ones(url: str, seconds: float, hostile_clients: int) -> None:
    stop = time.monotonic() + seconds
    sent = [0] * hostile_clients

    def hostile(index: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < stop:
                client.post("/predict", content=NAN_BODY, headers=JSON)
                client.post("/feedback", content=SURROGATE_FEEDBACK, headers=JSON)
                sent[index] += 2

    threads = [threading.Thread(target=hostile, args=(i,)) for i in range(hostile_clients)]
    for thread in threads:
        thread.start()
    latencies = []
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() < stop:
            started = time.perf_counter()
            assert client.post("/predict", json=SHIRT).status_code == 200
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)
    for thread in threads:
        thread.join()
    latencies.sort()
    print(f"normal client beside {hostile_clients} hostile clients ({sum(sent)} hostile bodies refused): "
          f"{len(latencies)} calls, p50 {statistics.median(latencies):.0f} ms, "
          f"p95 {latencies[int(len(latencies) * 0.95)]:.0f} ms, max {latencies[-1]:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--hostile-clients", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ml_settings, _ = build_registry(root / "registry", sizes=(300,))
        with database_with_key("bench") as (database, _key), \
                live_server(create_app(api_settings(root, database, open_read_routes=True), ml_settings)) as url:
            _refusals(url)
            _normal_client_beside_hostile_ones(url, args.seconds, args.hostile_clients)


if __name__ == "__main__":
    main()
