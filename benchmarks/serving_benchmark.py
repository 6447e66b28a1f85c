"""Latency and throughput of the prediction service on this machine, against a naive
FastAPI + `transformers.pipeline` server; the table goes to docs/benchmarks.md.

    .venv/bin/python benchmarks/serving_benchmark.py            # full run, about 6-7 minutes on 2 cores
    .venv/bin/python benchmarks/serving_benchmark.py --quick    # smoke run, about 2 minutes

It trains a small fine-tuned MiniLM and a TF-IDF baseline on the bundled fashion sample into its own
MLflow stores (benchmarks/out/serving/), then serves each from its own process and loads it with
httpx threads from this one:

* ProductCat, MiniLM champion, request log written to a real Postgres database (`productcat_bench`);
* the same with the request log off (`PRODUCTCAT_API_REQUEST_LOGGING=false`): the difference is logging's cost;
* a naive server (`create_naive_app` below): one `pipeline(...)` call per product, on the event loop;
* ProductCat with the TF-IDF champion, for reference.

Each is measured on single products at 1 and 8 concurrent clients, and on batches of 32 products.
After each server with logging on stops, the rows in `prediction_log` are counted against the
products it answered. Raw results: benchmarks/out/serving_results.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Body, FastAPI

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from ml.settings import MLSettings

START, END = "<!-- serving-benchmark:start -->", "<!-- serving-benchmark:end -->"
OUT = REPO_ROOT / "benchmarks" / "out" / "serving"
RESULTS_FILE = REPO_ROOT / "benchmarks" / "out" / "serving_results.json"
ADMIN_URL = os.environ.get("PRODUCTCAT_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
BENCH_DB = "productcat_bench"
CHECKPOINT_ENV = "PRODUCTCAT_BENCH_CHECKPOINT"  # tells the naive server's factory which folder to load
MINILM_TRAIN_ROWS, QUICK_MINILM_TRAIN_ROWS = 1000, 200  # small on purpose: serving speed does not need accuracy


@dataclass(frozen=True)
class Scenario:
    name: str
    batch: int  # products per request (1 = a single product dict, not a list)
    concurrency: int  # client threads sending back to back


SCENARIOS = [
    Scenario("1 product, 1 client", 1, 1),
    Scenario("1 product, 8 clients", 1, 8),
    Scenario("32 products, 1 client", 32, 1),
]


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    logs_to_db: bool  # its prediction_log rows are checked against the products it answered


@dataclass
class WorkerStats:
    latencies_ms: list[float] = field(default_factory=list)
    products: int = 0
    errors: int = 0
    first_error: str | None = None


@dataclass
class Measurement:
    server: str
    scenario: str
    batch: int
    concurrency: int
    requests: int
    errors: int
    products: int
    seconds: float
    products_per_second: float
    p50_ms: float
    p95_ms: float
    first_error: str | None


# ---- the naive server --------------------------------------------------------------------------

def naive_text(product: dict[str, Any]) -> str:
    parts = [product.get("title"), product.get("description"), *product.get("features", [])]
    return ". ".join(p for p in parts if p)


def create_naive_app() -> FastAPI:
    """What people write first: the pipeline called per product inside an `async def` route,
    so the event loop runs one inference at a time; no batching, no thread pool, no logging."""
    from transformers import pipeline

    classifier = pipeline("text-classification", model=os.environ[CHECKPOINT_ENV], top_k=3)
    app = FastAPI(title="naive classifier")

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/predict")
    async def predict(body: Annotated[dict[str, Any] | list[dict[str, Any]], Body()]) -> dict[str, Any]:
        products = body if isinstance(body, list) else [body]
        return {"predictions": [classifier(naive_text(p)) for p in products]}

    return app


# ---- models and data ---------------------------------------------------------------------------

def store_settings(store: Path) -> MLSettings:
    from ml.settings import MLSettings

    data = OUT / "data"
    return MLSettings(
        project_root=REPO_ROOT, interim_dir=data / "interim", processed_dir=data / "processed",
        reports_dir=store / "reports", mlflow_tracking_uri=f"sqlite:///{store / 'mlflow.db'}",
        mlflow_artifact_root=store / "mlartifacts",
    )


def train_champions(quick: bool) -> tuple[dict[str, MLSettings], Path]:
    """A TF-IDF and a MiniLM champion, each in its own store (one `champion` alias per store);
    returns their settings and a local copy of the MiniLM checkpoint folder for the naive server."""
    import mlflow

    from ml.gate import promote
    from ml.ingest import ingest
    from ml.params import load_params
    from ml.pyfunc_model import CLASSIFIER_ARTIFACT
    from ml.registry import configure_mlflow
    from ml.split import split
    from ml.train import train

    stores = {family: store_settings(OUT / family) for family in ("baseline", "transformer")}
    params = load_params(stores["baseline"])
    params.ingest.dataset = "fashion-sample"
    ingest(settings=stores["baseline"], params=params)
    split(settings=stores["baseline"], params=params)  # both stores read this split
    for family, settings in stores.items():
        run_params = params.model_copy(deep=True)
        if family == "transformer":
            run_params.train.max_train_samples = QUICK_MINILM_TRAIN_ROWS if quick else MINILM_TRAIN_ROWS
            run_params.train.max_validation_samples = 50 if quick else 200
            run_params.train.transformer.epochs = 1
        version = train(settings=settings, params=run_params, family=family).version
        promote(settings=settings, version=version, reason="serving benchmark", by="serving_benchmark")
    configure_mlflow(stores["transformer"])
    local = mlflow.artifacts.download_artifacts("models:/product-classifier@champion", dst_path=str(OUT / "naive"))
    return stores, Path(local) / "artifacts" / CLASSIFIER_ARTIFACT


def load_bodies() -> list[dict[str, Any]]:
    """Real catalogue rows (the frozen test split of the fashion sample) as /predict bodies."""
    import pandas as pd

    frame = pd.read_parquet(OUT / "data" / "processed" / "test.parquet")
    bodies = []
    for row in frame.to_dict("records"):
        body = {"title": row["title"], "features": [str(f) for f in row["features"]]}
        if row["description"]:
            body["description"] = row["description"]
        bodies.append(body)
    return bodies


def mean_tokens(bodies: list[dict[str, Any]], checkpoint: Path) -> float:
    """Length of the text the MiniLM reads, in its own tokens (it drives the cost of one product)."""
    from transformers import AutoTokenizer

    from ml.features import product_texts

    encoded = AutoTokenizer.from_pretrained(checkpoint)(product_texts(bodies))["input_ids"]
    return sum(map(len, encoded)) / len(encoded)


# ---- the request-log database ------------------------------------------------------------------

def recreate_database() -> str:
    """An empty `productcat_bench` at the latest migration; returns its URL."""
    import sqlalchemy as sa

    from api.db.migrate import upgrade

    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
            connection.execute(sa.text(f'CREATE DATABASE "{BENCH_DB}"'))
    finally:
        admin.dispose()
    url = sa.make_url(ADMIN_URL).set(database=BENCH_DB).render_as_string(hide_password=False)
    upgrade(url)
    return url


def logged_rows(url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text("SELECT count(*) FROM prediction_log")).scalar_one())
    finally:
        engine.dispose()


# ---- servers -----------------------------------------------------------------------------------

def servers(stores: dict[str, MLSettings], checkpoint: Path, db_url: str) -> list[Server]:
    productcat = [str(Path(sys.executable).parent / "productcat"), "serve", "--host", "127.0.0.1"]
    naive = [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.serving_benchmark:create_naive_app",
             "--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]

    def service_env(family: str, logging_on: bool, spool: str) -> dict[str, str]:
        return {
            "PRODUCTCAT_PROJECT_ROOT": str(REPO_ROOT), "PRODUCTCAT_MLFLOW_TRACKING_URI": stores[family].tracking_uri,
            "DATABASE_URL": db_url, "PRODUCTCAT_API_REQUEST_LOGGING": str(logging_on).lower(),
            "PRODUCTCAT_API_SPOOL_DIR": str(OUT / "spool" / spool),
            "PRODUCTCAT_LOG_LEVEL": "WARNING",  # no access log line per request, as for the naive server
        }

    return [
        Server("ProductCat, MiniLM, logging on", productcat, service_env("transformer", True, "minilm"), True),
        Server("ProductCat, MiniLM, logging off", productcat, service_env("transformer", False, "off"), False),
        Server("naive FastAPI + pipeline, MiniLM", naive, {CHECKPOINT_ENV: str(checkpoint)}, False),
        Server("ProductCat, TF-IDF, logging on", productcat, service_env("baseline", True, "tfidf"), True),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(server: Server, log_file: Path, timeout: float = 300.0) -> Iterator[str]:
    """Start the server in its own process (its own GIL), wait for /ready, yield its URL;
    stop it with SIGTERM so the service drains its request log before exiting."""
    import httpx

    port = free_port()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as log:
        proc = subprocess.Popen([*server.command, "--port", str(port)], cwd=REPO_ROOT, stdout=log,
                                stderr=subprocess.STDOUT, env=os.environ | server.env)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {proc.returncode}; see {log_file}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{server.name} not ready after {timeout:.0f}s; see {log_file}")
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- load --------------------------------------------------------------------------------------

def request_body(bodies: list[dict[str, Any]], i: int, batch: int) -> dict[str, Any] | list[dict[str, Any]]:
    if batch == 1:
        return bodies[i % len(bodies)]
    start = (i * batch) % len(bodies)
    return [bodies[(start + k) % len(bodies)] for k in range(batch)]


def send_until(url: str, bodies: list[dict[str, Any]], scenario: Scenario, deadline: float,
               counter: itertools.count[int], stats: WorkerStats) -> None:
    """One client: requests back to back, each on the next rows, until the deadline."""
    import httpx

    with httpx.Client(base_url=url, timeout=120) as client:
        while time.perf_counter() < deadline:
            body = request_body(bodies, next(counter), scenario.batch)
            started = time.perf_counter()
            try:
                response = client.post("/predict", json=body)
                error = None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if error is None:
                stats.latencies_ms.append((time.perf_counter() - started) * 1000)
                stats.products += scenario.batch
            else:
                stats.errors += 1
                stats.first_error = stats.first_error or error


def run_load(url: str, bodies: list[dict[str, Any]], scenario: Scenario, seconds: float,
             progress: Progress, label: str) -> tuple[list[WorkerStats], float]:
    """`scenario.concurrency` clients for `seconds`; returns their stats and the wall time
    (until the last request in flight at the deadline came back)."""
    stats = [WorkerStats() for _ in range(scenario.concurrency)]
    counter = itertools.count()  # shared: next() is atomic under the GIL, so clients send different rows
    task = progress.add_task(label, total=seconds)
    started = time.perf_counter()
    with ThreadPoolExecutor(scenario.concurrency) as pool:
        futures = [pool.submit(send_until, url, bodies, scenario, started + seconds, counter, s) for s in stats]
        while wait(futures, timeout=0.25).not_done:
            done = sum(len(s.latencies_ms) + s.errors for s in stats)
            progress.update(task, completed=min(seconds, time.perf_counter() - started),
                            description=f"{label} [dim]{done} requests[/]")
    elapsed = time.perf_counter() - started
    for future in futures:
        future.result()  # a bug in a client shows here, not as a silently short run
    progress.remove_task(task)
    return stats, elapsed


def summarize(server: Server, scenario: Scenario, stats: list[WorkerStats], seconds: float) -> Measurement:
    import numpy as np

    latencies = [ms for s in stats for ms in s.latencies_ms]
    products, errors = sum(s.products for s in stats), sum(s.errors for s in stats)
    p50, p95 = (np.percentile(latencies, [50, 95]).tolist() if latencies else [float("nan")] * 2)
    return Measurement(
        server=server.name, scenario=scenario.name, batch=scenario.batch, concurrency=scenario.concurrency,
        requests=len(latencies) + errors, errors=errors, products=products, seconds=seconds,
        products_per_second=products / seconds, p50_ms=p50, p95_ms=p95,
        first_error=next((s.first_error for s in stats if s.first_error), None),
    )


def benchmark_server(
    server: Server, bodies: list[dict[str, Any]], args: argparse.Namespace, progress: Progress, overall: TaskID,
    db_url: str,
) -> tuple[list[Measurement], dict[str, Any] | None]:
    """Every scenario on one server; for a server that logs, the row count check after it stopped."""
    measurements, answered = [], 0
    before = logged_rows(db_url) if server.logs_to_db else 0
    slug = server.name.replace(",", "").replace(" ", "-").replace("+", "").lower()
    with running(server, OUT / "logs" / f"{slug}.log") as url:
        for scenario in SCENARIOS:
            label = f"{server.name} | {scenario.name}"
            # Warm-up on the same load: first calls pay for lazy initialisation and cold caches.
            warm, _ = run_load(url, bodies, scenario, args.warmup_seconds, progress, f"{label} (warm-up)")
            stats, seconds = run_load(url, bodies, scenario, args.seconds, progress, label)
            answered += sum(s.products for s in warm + stats)
            measurements.append(summarize(server, scenario, stats, seconds))
            progress.advance(overall)
    if not server.logs_to_db:
        return measurements, None
    rows = logged_rows(db_url) - before
    check = {"server": server.name, "products_answered": answered, "rows_logged": rows, "match": rows == answered}
    progress.console.log(f"{server.name}: prediction_log gained {rows:,} rows for {answered:,} products answered"
                         f" ({'match' if rows == answered else 'MISMATCH'})")
    return measurements, check


# ---- report ------------------------------------------------------------------------------------

def find(rows: list[Measurement], server: str, scenario: str) -> Measurement:
    return next(r for r in rows if r.server == server and r.scenario == scenario)


def reading(rows: list[Measurement], checks: list[dict[str, Any]]) -> list[str]:
    """The table in words: logging's cost, the gain over the naive server, TF-IDF for scale."""
    on, off = "ProductCat, MiniLM, logging on", "ProductCat, MiniLM, logging off"
    naive, tfidf = "naive FastAPI + pipeline, MiniLM", "ProductCat, TF-IDF, logging on"
    cost = "; ".join(
        f"{s.name}: {1 - find(rows, on, s.name).products_per_second / find(rows, off, s.name).products_per_second:+.1%}"
        f" of throughput, p50 {find(rows, off, s.name).p50_ms:.1f} -> {find(rows, on, s.name).p50_ms:.1f} ms"
        for s in SCENARIOS)
    speedup = ", ".join(
        f"{find(rows, on, s.name).products_per_second / find(rows, naive, s.name).products_per_second:.1f}x"
        f" ({s.name})" for s in SCENARIOS)
    scale = ", ".join(
        f"{find(rows, tfidf, s.name).products_per_second / find(rows, on, s.name).products_per_second:.1f}x"
        f" ({s.name})" for s in SCENARIOS)
    lines = [
        f"- **Cost of the request log** (logging on vs off, same MiniLM model; positive = slower): {cost}. "
        "Differences of a few per cent are within run-to-run noise on a shared machine.",
        f"- **ProductCat vs the naive server** (products/s, both MiniLM, ProductCat with logging on): {speedup}.",
        f"- **TF-IDF vs MiniLM** under ProductCat (products/s): {scale}.",
    ]
    for c in checks:
        verdict = "nothing lost" if c["match"] else "**rows missing or extra**"
        lines.append(f"- **Request log check** ({c['server']}): {c['rows_logged']:,} rows in `prediction_log` for "
                     f"{c['products_answered']:,} products answered, warm-up included: {verdict}.")
    return lines


def to_markdown(rows: list[Measurement], checks: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        START,
        f"{'**Quick smoke run**, not a measurement. ' if meta['quick'] else ''}"
        f"{meta['cpus']} CPUs, Python {meta['python']}, torch {meta['torch']}, load average "
        f"{meta['load_average']:.1f} at the start; {meta['seconds']:g} s per scenario after "
        f"{meta['warmup_seconds']:g} s of warm-up. Bodies are rows of the fashion sample's test split "
        f"(title + 3 features, {meta['mean_tokens']:.0f} tokens on average). Each server runs in its own "
        f"process (ProductCat: {meta['inference_threads']} inference threads); the load comes from httpx threads "
        f"in another process on the same CPUs. MiniLM: fine-tuned 1 epoch on {meta['minilm_train_rows']:,} rows, "
        f"max_length {meta['max_length']}. Latency is per request (32 products for the batch rows).",
        "",
        "| server | scenario | requests | products/s | p50 ms | p95 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.server} | {r.scenario} | {r.requests:,} | {r.products_per_second:,.1f} "
                     f"| {r.p50_ms:,.1f} | {r.p95_ms:,.1f} | {r.errors} |")
    lines += ["", *reading(rows, checks), "",
              f"Reproduce: `{meta['command']}` (raw results in `benchmarks/out/serving_results.json`).", END]
    return "\n".join(lines)


def update_doc(doc: Path, section: str) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if START not in text:
        text += f"\n## Serving latency and throughput\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    doc.write_text(head + section + rest.partition(END)[2])


def run_all(all_servers: list[Server], bodies: list[dict[str, Any]], args: argparse.Namespace,
            db_url: str) -> tuple[list[Measurement], list[dict[str, Any]]]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    rows: list[Measurement] = []
    checks: list[dict[str, Any]] = []
    columns = [TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
    with Progress(*columns, refresh_per_second=4) as progress:
        overall = progress.add_task("all scenarios", total=len(all_servers) * len(SCENARIOS))
        for server in all_servers:
            progress.console.log(f"starting {server.name}")
            measurements, check = benchmark_server(server, bodies, args, progress, overall, db_url)
            rows += measurements
            checks += [check] if check else []
    return rows, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="Measured seconds per server and scenario.")
    parser.add_argument("--warmup-seconds", type=float, default=3.0, help="Unmeasured load before each scenario.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 2 s per scenario, a tiny MiniLM.")
    parser.add_argument("--doc", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md",
                        help="Markdown file whose serving section is rewritten.")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup_seconds = 2.0, 1.0

    from api.settings import APISettings
    from ml.logging_setup import configure_logging
    from ml.params import load_params

    configure_logging("WARNING")  # the training stages are chatty; progress shows what runs
    load_average = os.getloadavg()[0]
    shutil.rmtree(OUT, ignore_errors=True)  # every run starts from nothing: stores, checkpoint, spools, logs
    print("training the champions (TF-IDF, then MiniLM)...", flush=True)
    stores, checkpoint = train_champions(args.quick)
    db_url = recreate_database()
    bodies = load_bodies()
    rows, checks = run_all(servers(stores, checkpoint, db_url), bodies, args, db_url)
    command = " ".join([".venv/bin/python benchmarks/serving_benchmark.py", *sys.argv[1:]])
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick, "cpus": os.cpu_count(),
        "python": platform.python_version(), "torch": package_version("torch"), "load_average": load_average,
        "seconds": args.seconds, "warmup_seconds": args.warmup_seconds, "command": command,
        "minilm_train_rows": QUICK_MINILM_TRAIN_ROWS if args.quick else MINILM_TRAIN_ROWS,
        "max_length": load_params(stores["transformer"]).train.transformer.max_length,
        "request_bodies": len(bodies), "mean_tokens": mean_tokens(bodies, checkpoint),
        # The servers inherit this environment, so PRODUCTCAT_API_INFERENCE_THREADS=... changes what is measured.
        "inference_threads": APISettings(project_root=REPO_ROOT).inference_threads,
    }
    RESULTS_FILE.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in rows], "log_checks": checks},
                                       indent=2))
    section = to_markdown(rows, checks, meta)
    print(section)
    update_doc(args.doc, section)
    errors = sum(r.errors for r in rows)
    if errors or not all(c["match"] for c in checks):
        first = next((r.first_error for r in rows if r.first_error), None)
        sys.exit(f"{errors} failed requests (first: {first}) or a request-log mismatch; see {RESULTS_FILE}")


if __name__ == "__main__":
    main()
