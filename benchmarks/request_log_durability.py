"""What write-ahead request logging costs and what it buys, on this machine; the tables go to
docs/benchmarks.md (section "Request log durability").

    .venv/bin/python benchmarks/request_log_durability.py              # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/request_log_durability.py --requests 100 --trials 1   # smoke run

A tiny baseline (TF-IDF + linear, 300 rows of the bundled fashion sample) is trained into its own
MLflow store (benchmarks/out/durability/) and served by a real uvicorn process logging to a real
Postgres database (`productcat_bench_durability`), once per `log_durability` mode:

1. latency: single-product /predict calls at 1 and 8 concurrent clients, after a warm-up, p50/p95,
   both modes' servers side by side and measured in alternating rounds; and the journal's
   write + fsync alone, in-process;
2. kill trials: 8 clients, SIGKILL (no shutdown) after 2 s of load, a restart on the same spool
   folder, then every answered request's row is looked up in the table;
3. a hung database: a throwaway cluster (initdb) frozen with SIGSTOP; how long /ready takes to
   answer and how long until the writer sets rows aside.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.champion import train_champion  # noqa: E402 (after the path insert)
from benchmarks.doc_section import write_section  # noqa: E402

START, END = "<!-- durability-benchmark:start -->", "<!-- durability-benchmark:end -->"
OUT = REPO_ROOT / "benchmarks" / "out" / "durability"
RESULTS_FILE = REPO_ROOT / "benchmarks" / "out" / "durability_results.json"
ADMIN_URL = os.environ.get("PRODUCTCAT_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
BENCH_DB = "productcat_bench_durability"
MODES = ("buffered", "write-ahead")
KILL_AFTER_S = 2.0  # seconds of load before the SIGKILL
PRODUCT = {"title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle", "price": "$24.99"}


def recreate_database(admin_url: str, name: str) -> str:
    from api.db.migrate import upgrade

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def logged_ids(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return set(connection.scalars(sa.text("SELECT request_id FROM prediction_log")))
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(env: dict[str, str], log_file: Path, timeout: float = 120) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A uvicorn process; yields it and its URL once /ready (or /health) answers."""
    port = free_port()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            cwd=REPO_ROOT, env=os.environ | env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with {server.returncode}; see {log_file}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready after {timeout:.0f}s; see {log_file}")
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield server, url
    finally:
        if server.poll() is None:
            server.terminate()  # graceful: the writer drains before the process exits
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def service_env(mode: str, tracking_uri: str, db_url: str, spool: Path) -> dict[str, str]:
    return {"PRODUCTCAT_PROJECT_ROOT": str(REPO_ROOT), "PRODUCTCAT_MLFLOW_TRACKING_URI": tracking_uri,
            "DATABASE_URL": db_url, "PRODUCTCAT_API_SPOOL_DIR": str(spool), "PRODUCTCAT_API_LOG_DURABILITY": mode,
            "PRODUCTCAT_API_RATE_LIMIT_PREDICT_PER_ADDRESS": "0", "PRODUCTCAT_API_OPEN_READ_ROUTES": "true",
            "PRODUCTCAT_LOG_LEVEL": "WARNING"}


async def load(url: str, *, clients: int, requests: int) -> list[float]:
    """``requests`` single-product calls from ``clients`` concurrent clients; latencies in ms."""
    latencies: list[float] = []
    counter = itertools.count()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def client() -> None:
            while next(counter) < requests:
                started = time.perf_counter()
                response = await http.post("/predict", json=PRODUCT)
                response.raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def latency_cells(tracking_uri: str, db_url: str, requests: int, rounds: int = 3) -> list[dict[str, Any]]:
    """Both servers run side by side and are measured in turn, round after round, so that a busy
    moment of a shared machine falls on both modes alike; percentiles over the pooled rounds."""
    latencies: dict[tuple[str, int], list[float]] = {}
    seconds: dict[tuple[str, int], float] = {}
    with contextlib.ExitStack() as stack:
        urls = {mode: stack.enter_context(serving(service_env(mode, tracking_uri, db_url, OUT / "spool" / mode),
                                                  OUT / f"{mode}.log"))[1] for mode in MODES}
        for url in urls.values():
            asyncio.run(load(url, clients=8, requests=40))  # warm-up, not measured
        for _ in range(rounds):
            for clients in (1, 8):
                for mode, url in urls.items():
                    started = time.perf_counter()
                    latencies.setdefault((mode, clients), []).extend(
                        asyncio.run(load(url, clients=clients, requests=requests // rounds)))
                    seconds[(mode, clients)] = seconds.get((mode, clients), 0.0) + time.perf_counter() - started
    cells = []
    for (mode, clients), values in sorted(latencies.items(), key=lambda item: (item[0][1], item[0][0])):
        p50, p95 = np.percentile(values, [50, 95]).tolist()
        cells.append({"mode": mode, "clients": clients, "requests": len(values), "p50": p50, "p95": p95,
                      "rate": len(values) / seconds[(mode, clients)]})
        print(f"{mode:12s} {clients} clients: p50 {p50:.1f} ms, p95 {p95:.1f} ms", flush=True)
    return cells


def journal_fsync(samples: int = 300) -> dict[str, float]:
    """The write-ahead step alone, in this process: one row appended and fsync'd to a journal file
    in the spool's folder (the same disk), as a lone request pays it."""
    from api.spool import Spool

    with tempfile.TemporaryDirectory(dir=OUT) as folder:
        spool = Spool(Path(folder))
        row = {"request_id": "", "product": PRODUCT, "label": "Shirts", "probability": 0.9}
        took = []
        for i in range(samples):
            started = time.perf_counter()
            spool.journal([row | {"request_id": str(i)}])
            took.append((time.perf_counter() - started) * 1000)
        spool.release()
    p50, p95 = np.percentile(took, [50, 95]).tolist()
    print(f"journal write + fsync of one row: p50 {p50:.2f} ms, p95 {p95:.2f} ms", flush=True)
    return {"p50": p50, "p95": p95}


def kill_trial(mode: str, tracking_uri: str, db_url: str, trial: int) -> dict[str, Any]:
    """SIGKILL under load, restart on the same spool folder; answered vs logged."""
    spool = OUT / "spool" / f"kill-{mode}-{trial}"
    env = service_env(mode, tracking_uri, db_url, spool)
    answered: list[str] = []
    stop = threading.Event()
    with serving(env, OUT / f"kill-{mode}.log") as (server, url):

        def client() -> None:
            with httpx.Client(base_url=url, timeout=10) as http:
                while not stop.is_set():
                    try:
                        response = http.post("/predict", json=PRODUCT)
                    except httpx.HTTPError:
                        return
                    if response.status_code == 200:
                        answered.append(response.json()["predictions"][0]["request_id"])

        threads = [threading.Thread(target=client) for _ in range(8)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        while time.monotonic() - started < KILL_AFTER_S or len(answered) < 20:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)
        server.wait()
        stop.set()
        for thread in threads:
            thread.join()
    got = set(answered)
    with serving(env, OUT / f"kill-{mode}.log"):
        deadline = time.monotonic() + 20  # the restarted writer replays what the journal holds
        while not got <= logged_ids(db_url) and time.monotonic() < deadline:
            time.sleep(0.2)
    missing = len(got - logged_ids(db_url))
    print(f"kill trial {mode} #{trial}: answered {len(got)}, logged {len(got) - missing}", flush=True)
    return {"mode": mode, "trial": trial, "answered": len(got), "logged": len(got) - missing}


def hung_database(tracking_uri: str) -> dict[str, float]:
    """Freeze a throwaway cluster under a running service: /ready's answer time, time to set aside."""
    from tests.pg_cluster import throwaway_cluster

    with throwaway_cluster() as cluster:
        db_url = recreate_database(cluster.url, BENCH_DB)
        env = service_env("write-ahead", tracking_uri, db_url, OUT / "spool" / "hung")
        with serving(env, OUT / "hung.log") as (_, url), httpx.Client(base_url=url, timeout=120) as http:
            http.post("/predict", json=PRODUCT).raise_for_status()
            cluster.freeze()
            frozen_at = time.perf_counter()
            try:
                ready, refused = [], 0  # an answer younger than a second may still say "up": poll
                while refused < 3 and time.perf_counter() - frozen_at < 60:
                    started = time.perf_counter()
                    refused += http.get("/ready").status_code == 503
                    ready.append(time.perf_counter() - started)
                down_after = time.perf_counter() - frozen_at
                frozen_at = time.perf_counter()
                predict = []
                for _ in range(20):
                    started = time.perf_counter()
                    http.post("/predict", json=PRODUCT).raise_for_status()
                    predict.append((time.perf_counter() - started) * 1000)
                spooled = float("nan")
                while time.perf_counter() - frozen_at < 60:
                    metrics = http.get("/metrics").text
                    line = next((x for x in metrics.splitlines() if x.startswith("productcat_request_log_spooled")), "")
                    if line and float(line.split()[-1]) > 0:
                        spooled = time.perf_counter() - frozen_at
                        break
                    time.sleep(0.1)
            finally:
                cluster.thaw()
    print(f"hung database: /ready {max(ready):.2f} s at most, down after {down_after:.1f} s, predict p95"
          f" {np.percentile(predict, 95):.1f} ms, rows set aside after {spooled:.1f} s", flush=True)
    return {"ready_max_s": max(ready), "down_after_s": down_after, "predict_p95_ms": float(np.percentile(predict, 95)),
            "set_aside_s": spooled}


def to_markdown(cells: list[dict[str, Any]], fsync: dict[str, float], trials: list[dict[str, Any]],
                hung: dict[str, float] | None, command: str) -> str:
    lines = [START, "", f"`{command}` ({os.cpu_count()} cores, Postgres on loopback, tiny baseline model,",
             "single-product requests). Write-ahead fsyncs each row to the journal before the answer leaves;",
             "concurrent requests share one fsync (group commit).", "",
             "| log_durability | clients | p50 ms | p95 ms | requests/s |", "|---|---|---|---|---|"]
    lines += [f"| {c['mode']} | {c['clients']} | {c['p50']:.1f} | {c['p95']:.1f} | {c['rate']:.0f} |" for c in cells]
    lines += ["", f"The journal step alone (one row written and fsync'd, in-process, same disk): "
              f"p50 {fsync['p50']:.2f} ms, p95 {fsync['p95']:.2f} ms."]
    lines += ["", f"Kill trials (8 clients, SIGKILL after {KILL_AFTER_S:g} s of load, restart on the same spool):", "",
              "| log_durability | trial | answered (200) | with a log row |", "|---|---|---|---|"]
    lines += [f"| {t['mode']} | {t['trial']} | {t['answered']} | {t['logged']} |" for t in trials]
    if hung:
        lines += ["", "Postgres frozen with SIGSTOP (postmaster and backends) under a running service "
                  "(defaults: connect 3 s, statement 5 s, /ready 2 s):", "",
                  f"- every `/ready` call answered within {hung['ready_max_s']:.2f} s; it said 503 "
                  f"(`database: false`, with the reason) {hung['down_after_s']:.1f} s after the freeze;",
                  f"- `/predict` p95 meanwhile {hung['predict_p95_ms']:.1f} ms;",
                  f"- the writer set rows aside on disk {hung['set_aside_s']:.1f} s after the freeze "
                  "(its insert hit the 6 s client deadline)."]
    return "\n".join([*lines, "", END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per cell")
    parser.add_argument("--trials", type=int, default=2, help="kill trials per mode")
    parser.add_argument("--parts", default="latency,kill,hung",
                        help="which measurements to (re)run; the others are kept from the last results file")
    parser.add_argument("--no-doc", action="store_true", help="print the tables, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
    tracking_uri = train_champion(OUT, by="request_log_durability")
    db_url = recreate_database(ADMIN_URL, BENCH_DB)
    if "latency" in parts:
        results["latency"] = latency_cells(tracking_uri, db_url, args.requests)
        results["fsync"] = journal_fsync()
    if "kill" in parts:
        results["kill"] = [kill_trial(mode, tracking_uri, db_url, trial)
                           for mode in MODES for trial in range(1, args.trials + 1)]
    if "hung" in parts:
        results["hung"] = hung_database(tracking_uri)
    RESULTS_FILE.write_text(json.dumps(results, indent=2))
    command = f"python benchmarks/request_log_durability.py --requests {args.requests} --trials {args.trials}"
    section = to_markdown(results["latency"], results["fsync"], results["kill"], results.get("hung"), command)
    print(section)
    if not args.no_doc:
        write_section(REPO_ROOT / "docs" / "benchmarks.md", section, start=START, end=END,
                      heading="Request log durability")


if __name__ == "__main__":
    main()
