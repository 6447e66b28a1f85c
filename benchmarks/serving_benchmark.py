"""Serving speed on this machine, four ways, against the same real catalogue rows; the tables go
to docs/benchmarks.md.

    .venv/bin/python benchmarks/serving_benchmark.py            # full run, about 12 minutes on 2 cores
    .venv/bin/python benchmarks/serving_benchmark.py --quick    # smoke run, about 5 minutes
    .venv/bin/python benchmarks/serving_benchmark.py --profile  # also pyinstrument on the int8 server

It fine-tunes a small MiniLM on the bundled fashion sample (exported to ONNX fp32 and int8 by the
training pipeline itself) into its own MLflow store (benchmarks/out/serving/), then serves it four ways,
each from its own process:

1. naive: a plain FastAPI route calling a `transformers.pipeline` per request (`create_naive_app`);
2. ProductCat on torch, micro-batching off;
3. ProductCat on ONNX fp32, micro-batching on;
4. ProductCat on ONNX int8, micro-batching on.

Each gets a fixed number of single-product requests at 1, 8 and 32 concurrent clients from a bounded
asyncio load generator on loopback (it stops when the count is sent), after an unmeasured warm-up; then
every test row once, in lists of 32, whose answers give each server's macro-F1. ProductCat servers log
every answer to a real Postgres database (`productcat_bench`), and the rows are counted after each
stops. The model's own forward rate (tokenise + forward, in this process, no HTTP) is measured at
batch 1, 8 and 32 on the same rows. Raw results: benchmarks/out/serving_results.json.
"""

from __future__ import annotations

import argparse
import asyncio
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Body, FastAPI

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.doc_section import write_section  # noqa: E402

if TYPE_CHECKING:
    from ml.settings import MLSettings

START, END = "<!-- serving-benchmark:start -->", "<!-- serving-benchmark:end -->"
OUT = REPO_ROOT / "benchmarks" / "out" / "serving"
RESULTS_FILE = REPO_ROOT / "benchmarks" / "out" / "serving_results.json"
ADMIN_URL = os.environ.get("PRODUCTCAT_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
BENCH_DB = "productcat_bench"
CHECKPOINT_ENV = "PRODUCTCAT_BENCH_CHECKPOINT"  # tells the naive server's factory which folder to load
MINILM_TRAIN_ROWS, QUICK_MINILM_TRAIN_ROWS = 1000, 200  # small on purpose: serving speed does not need accuracy
CONCURRENCY = (1, 8, 32)
REQUESTS = {1: 200, 8: 400, 32: 800}  # per cell: fixed, so every variant answers the same load
QUICK_REQUESTS = {1: 20, 8: 40, 32: 96}
FORWARD_BATCHES = (1, 8, 32)
ACCURACY_CHUNK = 32  # products per request in the macro-F1 pass


@dataclass(frozen=True)
class Variant:
    key: str  # naive | torch | onnx-fp32 | onnx-int8
    name: str
    command: list[str]
    env: dict[str, str]
    logs_to_db: bool  # its prediction_log rows are checked against the products it answered


@dataclass
class Cell:
    variant: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    items_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
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


# ---- model and data ----------------------------------------------------------------------------

def store_settings() -> MLSettings:
    from ml.settings import MLSettings

    data = OUT / "data"
    return MLSettings(
        project_root=REPO_ROOT, interim_dir=data / "interim", processed_dir=data / "processed",
        reports_dir=OUT / "reports", mlflow_tracking_uri=f"sqlite:///{OUT / 'mlflow.db'}",
        mlflow_artifact_root=OUT / "mlartifacts",
    )


def train_champion(quick: bool) -> tuple[MLSettings, Path, int]:
    """A MiniLM fine-tuned by the training pipeline (which exports its ONNX variants), promoted to
    champion; returns the store, a local copy of its artifact folder (the naive server and the forward
    measurements load it) and its max_length."""
    import mlflow

    from ml.gate import promote
    from ml.ingest import ingest
    from ml.params import load_params
    from ml.pyfunc_model import CLASSIFIER_ARTIFACT
    from ml.registry import configure_mlflow
    from ml.split import split
    from ml.train import train

    settings = store_settings()
    params = load_params(settings)
    params.ingest.dataset = "fashion-sample"
    params.train.max_train_samples = QUICK_MINILM_TRAIN_ROWS if quick else MINILM_TRAIN_ROWS
    params.train.max_validation_samples = 50 if quick else 200
    # A higher learning rate than the default so that one or two CPU epochs learn something:
    # the int8-vs-torch macro-F1 comparison needs a model that is not guessing.
    params.train.transformer.epochs = 1 if quick else 2
    params.train.transformer.learning_rate = 2e-4
    ingest(settings=settings, params=params)
    split(settings=settings, params=params)
    version = train(settings=settings, params=params, family="transformer").version
    # Each server is told its runtime (PRODUCTCAT_API_RUNTIME), so the gate's own choice is not needed here.
    promote(settings=settings, version=version, reason="serving benchmark", by="serving_benchmark")
    configure_mlflow(settings)
    local = mlflow.artifacts.download_artifacts("models:/product-classifier@champion", dst_path=str(OUT / "naive"))
    return settings, Path(local) / "artifacts" / CLASSIFIER_ARTIFACT, params.train.transformer.max_length


def load_rows(limit: int | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Real catalogue rows (the frozen test split of the fashion sample) as /predict bodies, and their labels."""
    import pandas as pd

    frame = pd.read_parquet(OUT / "data" / "processed" / "test.parquet")
    frame = frame if limit is None else frame.head(limit)
    bodies = []
    for row in frame.to_dict("records"):
        body = {"title": row["title"], "features": [str(f) for f in row["features"]]}
        if row["description"]:
            body["description"] = row["description"]
        bodies.append(body)
    return bodies, frame["label"].tolist()


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

def variants(settings: MLSettings, checkpoint: Path, db_url: str) -> list[Variant]:
    productcat = [str(Path(sys.executable).parent / "productcat"), "serve", "--host", "127.0.0.1"]
    naive = [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.serving_benchmark:create_naive_app",
             "--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]

    def ours(runtime: str, batching: bool) -> dict[str, str]:
        return {
            "PRODUCTCAT_PROJECT_ROOT": str(REPO_ROOT), "PRODUCTCAT_MLFLOW_TRACKING_URI": settings.tracking_uri,
            "DATABASE_URL": db_url, "PRODUCTCAT_API_RUNTIME": runtime,
            "PRODUCTCAT_API_BATCHING": str(batching).lower(),
            "PRODUCTCAT_API_SPOOL_DIR": str(OUT / "spool" / runtime),
            "PRODUCTCAT_API_RATE_LIMIT_PREDICT_PER_ADDRESS": "0",  # every simulated client is 127.0.0.1
            "PRODUCTCAT_LOG_LEVEL": "WARNING",  # no access log line per request, as for the naive server
        }

    return [
        Variant("naive", "1. naive: FastAPI + pipeline per request", naive, {CHECKPOINT_ENV: str(checkpoint)}, False),
        Variant("torch", "2. ProductCat, torch, no batching", productcat, ours("torch", False), True),
        Variant("onnx-fp32", "3. ProductCat, ONNX fp32 + batching", productcat, ours("onnx-fp32", True), True),
        Variant("onnx-int8", "4. ProductCat, ONNX int8 + batching", productcat, ours("onnx-int8", True), True),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(server: Variant, log_file: Path, timeout: float = 300.0,
            stop: signal.Signals = signal.SIGTERM) -> Iterator[str]:
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
        proc.send_signal(stop)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- load --------------------------------------------------------------------------------------

async def send(url: str, bodies: list[dict[str, Any]], *, concurrency: int, requests: int,
               offset: int) -> tuple[list[float], list[str], float]:
    """``requests`` single-product requests from ``concurrency`` clients, each sending its next one
    as soon as the last is answered; returns the latencies (ms), the errors and the wall time."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    counter = itertools.count()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def client_loop() -> None:
            while (i := next(counter)) < requests:
                started = time.perf_counter()
                try:
                    response = await client.post("/predict", json=bodies[(offset + i) % len(bodies)])
                    ok = response.status_code == 200
                    error = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                if error is None:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors.append(error)

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


def measure_cell(variant: Variant, url: str, bodies: list[dict[str, Any]], concurrency: int, requests: int) -> Cell:
    import numpy as np

    warm = max(10, 2 * concurrency)  # first calls pay lazy initialisation; not measured
    asyncio.run(send(url, bodies, concurrency=concurrency, requests=warm, offset=0))
    latencies, errors, seconds = asyncio.run(send(url, bodies, concurrency=concurrency, requests=requests,
                                                  offset=warm))
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]).tolist() if latencies else [float("nan")] * 3
    return Cell(variant=variant.key, concurrency=concurrency, requests=requests, errors=len(errors),
                seconds=seconds, items_per_second=len(latencies) / seconds, p50_ms=p50, p95_ms=p95, p99_ms=p99,
                first_error=errors[0] if errors else None)


def served_labels(url: str, bodies: list[dict[str, Any]]) -> list[str]:
    """Each row's top label as the server answers it (lists of ACCURACY_CHUNK products per request)."""
    import httpx

    labels: list[str] = []
    with httpx.Client(base_url=url, timeout=600) as client:
        for start in range(0, len(bodies), ACCURACY_CHUNK):
            response = client.post("/predict", json=bodies[start:start + ACCURACY_CHUNK])
            response.raise_for_status()
            labels += [_top_label(p) for p in response.json()["predictions"]]
    return labels


def _top_label(prediction: dict[str, Any] | list[Any]) -> str:
    # ProductCat answers {"label": ...}; the pipeline (nested) lists of {"label", "score"}, best first.
    while isinstance(prediction, list):
        prediction = prediction[0]
    return prediction["label"]


def benchmark_variant(variant: Variant, bodies: list[dict[str, Any]], labels: list[str],
                      requests: dict[int, int], db_url: str) -> tuple[list[Cell], dict[str, Any]]:
    """Every concurrency on one server, then its macro-F1 pass; for a server that logs, the row
    count after it stopped."""
    from sklearn.metrics import accuracy_score, f1_score

    before = logged_rows(db_url) if variant.logs_to_db else 0
    cells = []
    with running(variant, OUT / "logs" / f"{variant.key}.log") as url:
        for concurrency in CONCURRENCY:
            cell = measure_cell(variant, url, bodies, concurrency, requests[concurrency])
            print(f"  {variant.name} | {concurrency:>2} clients: {cell.items_per_second:6.1f} items/s, "
                  f"p50 {cell.p50_ms:6.1f} ms, p99 {cell.p99_ms:6.1f} ms, {cell.errors} errors", flush=True)
            cells.append(cell)
        predicted = served_labels(url, bodies)
    answered = sum(max(10, 2 * c) + requests[c] for c in CONCURRENCY) + len(bodies)
    quality = {
        "variant": variant.key, "rows": len(labels), "accuracy": float(accuracy_score(labels, predicted)),
        # sklearn's macro average over the labels present in truth or prediction, as ml/metrics.py does
        "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
    }
    if variant.logs_to_db:
        rows = logged_rows(db_url) - before
        quality |= {"products_answered": answered, "rows_logged": rows, "log_match": rows == answered}
    return cells, quality


# ---- the model alone ---------------------------------------------------------------------------

def forward_rates(checkpoint: Path, texts: list[str], items: int) -> list[dict[str, Any]]:
    """Items/s of the model itself (tokenise + forward, in this process, no HTTP) per runtime and
    batch size; plus the naive server's call (a pipeline, one item) and the other thread layout
    (two workers of one intra-op thread each) for int8."""
    from transformers import pipeline

    from ml.models.transformer import TransformerClassifier

    texts = list(itertools.islice(itertools.cycle(texts), items))

    def rate(fn: Any, batch: int) -> float:  # noqa: ANN401 - any scoring callable
        fn(texts[:batch])  # warm-up
        started = time.perf_counter()
        for start in range(0, len(texts), batch):
            fn(texts[start:start + batch])
        return len(texts) / (time.perf_counter() - started)

    rows = []
    clf = TransformerClassifier.load(checkpoint)
    for runtime in clf.available_runtimes():
        clf.use_runtime(runtime)
        rows.append({"runtime": runtime, "layout": "1 worker, default intra-op threads",
                     **{f"batch_{b}": rate(lambda chunk, b=b: clf.predict_proba(chunk, batch_size=b), b)
                        for b in FORWARD_BATCHES}})
    pair = [TransformerClassifier.load(checkpoint) for _ in range(2)]
    for clf in pair:
        clf.use_runtime("onnx-int8", threads=1)

    def two_workers(batch: int) -> float:
        halves = [texts[: len(texts) // 2], texts[len(texts) // 2:]]
        started = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda job: [job[0].predict_proba(job[1][s:s + batch], batch_size=batch)
                                       for s in range(0, len(job[1]), batch)], zip(pair, halves, strict=True)))
        return len(texts) / (time.perf_counter() - started)

    two_workers(8)  # warm-up
    rows.append({"runtime": "onnx-int8", "layout": "2 workers x 1 intra-op thread",
                 **{f"batch_{b}": two_workers(b) for b in FORWARD_BATCHES}})
    naive = pipeline("text-classification", model=str(checkpoint), top_k=3)
    rows.append({"runtime": "transformers pipeline (naive)", "layout": "one item per call",
                 "batch_1": rate(lambda chunk: [naive(t) for t in chunk], 1)})
    return rows


def profile_int8(variant: Variant, bodies: list[dict[str, Any]], requests: int) -> Path:
    """The int8 server under pyinstrument (its event-loop thread, wall clock) through one 32-client
    cell: where the service's own time goes, beside the forward pass that runs in its worker thread."""
    report = OUT / "profile_int8.txt"
    uvicorn = ["-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1", "--log-level", "warning"]
    profiled = Variant(variant.key, variant.name, [sys.executable, "-m", "pyinstrument", "-r", "text",
                                                   "--show-all", "-o", str(report), *uvicorn], variant.env, False)
    # SIGINT: uvicorn re-raises the stop signal after its graceful shutdown, and pyinstrument writes
    # its report on the KeyboardInterrupt that SIGINT becomes (SIGTERM would kill it first).
    with running(profiled, OUT / "logs" / "profile.log", stop=signal.SIGINT) as url:
        asyncio.run(send(url, bodies, concurrency=32, requests=requests, offset=0))
    return report


# ---- report ------------------------------------------------------------------------------------

def _cell(cells: list[Cell], variant: str, concurrency: int) -> Cell:
    return next(c for c in cells if c.variant == variant and c.concurrency == concurrency)


def targets(cells: list[Cell], quality: dict[str, dict[str, Any]], forward: list[dict[str, Any]]) -> list[str]:
    """The issue's targets as ratios of this run, each with its verdict."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    speed = _cell(cells, "onnx-int8", 32).items_per_second / _cell(cells, "naive", 32).items_per_second
    p50 = _cell(cells, "onnx-int8", 1).p50_ms / _cell(cells, "naive", 1).p50_ms
    f1_gap = (quality["onnx-int8"]["macro_f1"] - quality["torch"]["macro_f1"]) * 100
    int8 = next(r for r in forward if r["runtime"] == "onnx-int8" and r["layout"].startswith("1 worker"))
    naive_forward = next(r for r in forward if r["runtime"].startswith("transformers"))["batch_1"]
    share = _cell(cells, "onnx-int8", 32).items_per_second / int8["batch_32"]
    return [
        f"- Throughput at 32 clients, (4) vs (1): **{speed:.1f}x** (target >= 5x): {verdict(speed >= 5)}.",
        f"- p50 at 1 client, (4) vs (1): **{p50:.2f}** of the naive p50 (target <= 0.33): {verdict(p50 <= 1 / 3)}.",
        f"- Macro-F1, (4) int8 vs (2) torch: **{f1_gap:+.2f} points** (target within 0.5): "
        f"{verdict(abs(f1_gap) <= 0.5)}.",
        f"- The model alone: int8 at batch 32 runs {int8['batch_32']:,.0f} items/s, "
        f"{int8['batch_32'] / naive_forward:.1f}x the naive server's pipeline call ({naive_forward:,.0f} items/s); "
        f"service (4) at 32 clients reaches {share:.0%} of that forward rate.",
    ]


def to_markdown(cells: list[Cell], quality: dict[str, dict[str, Any]], forward: list[dict[str, Any]],
                names: dict[str, str], meta: dict[str, Any]) -> str:
    lines = [
        START,
        f"{'**Quick smoke run**, not a measurement. ' if meta['quick'] else ''}"
        f"{meta['cpus']} CPUs ({meta['cpu']}), Python {meta['python']}, torch {meta['torch']}, onnxruntime "
        f"{meta['onnxruntime']}, load average {meta['load_average']:.1f} at the start. One product per request, "
        f"rows of the fashion sample's test split ({meta['mean_tokens']:.0f} tokens on average); requests per "
        f"cell: {', '.join(f'{n} at {c} clients' for c, n in meta['requests'].items())}, after a warm-up. Each "
        "server is its own process; the load comes from an asyncio httpx client in another process on the "
        f"same CPUs. MiniLM fine-tuned {meta['epochs']} epoch(s) on {meta['minilm_train_rows']:,} rows, max_length "
        f"{meta['max_length']}. ProductCat servers log every answer to Postgres; micro-batching window "
        f"{meta['batch_window_ms']:g} ms, at most {meta['batch_max_size']} products.",
        "",
        "| server | clients | items/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(f"| {names[c.variant]} | {c.concurrency} | {c.items_per_second:,.1f} | {c.p50_ms:,.1f} "
                     f"| {c.p95_ms:,.1f} | {c.p99_ms:,.1f} | {c.errors} |")
    lines += ["", f"Quality of each server's answers on the test split ({next(iter(quality.values()))['rows']:,} rows, "
              "in lists of 32):", "", "| server | macro-F1 | accuracy |", "|---|---:|---:|"]
    lines += [f"| {names[key]} | {q['macro_f1']:.4f} | {q['accuracy']:.4f} |" for key, q in quality.items()]
    lines += ["", "The model alone (tokenise + forward in one process, no HTTP), items/s:", "",
              "| runtime | layout | batch 1 | batch 8 | batch 32 |", "|---|---|---:|---:|---:|"]
    for row in forward:
        values = " | ".join(f"{row[f'batch_{b}']:,.1f}" if f"batch_{b}" in row else "" for b in FORWARD_BATCHES)
        lines.append(f"| {row['runtime']} | {row['layout']} | {values} |")
    lines += ["", *targets(cells, quality, forward)]
    for key, q in quality.items():
        if "log_match" in q:
            verdict = "nothing lost" if q["log_match"] else "**rows missing or extra**"
            lines.append(f"- Request log ({names[key]}): {q['rows_logged']:,} rows in `prediction_log` for "
                         f"{q['products_answered']:,} products answered: {verdict}.")
    lines += ["", f"Reproduce: `{meta['command']}` (raw results in `benchmarks/out/serving_results.json`).", END]
    return "\n".join(lines)


def mean_tokens(texts: list[str], checkpoint: Path) -> float:
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(checkpoint)(texts)["input_ids"]
    return sum(map(len, encoded)) / len(encoded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Smoke run: a tiny MiniLM, few requests, 96 test rows.")
    parser.add_argument("--profile", action="store_true",
                        help="Also profile the int8 server at 32 clients (benchmarks/out/serving/profile_int8.txt).")
    parser.add_argument("--doc", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md",
                        help="Markdown file whose serving section is rewritten.")
    args = parser.parse_args()

    from api.settings import APISettings
    from ml.features import product_texts
    from ml.logging_setup import configure_logging

    configure_logging("WARNING")  # the training stages are chatty
    load_average = os.getloadavg()[0]
    shutil.rmtree(OUT, ignore_errors=True)  # every run starts from nothing: store, checkpoint, spools, logs
    print("fine-tuning and exporting the MiniLM...", flush=True)
    settings, checkpoint, max_length = train_champion(args.quick)
    bodies, labels = load_rows(96 if args.quick else None)
    texts = product_texts(bodies)
    print("measuring the model alone...", flush=True)
    forward = forward_rates(checkpoint, texts, items=64 if args.quick else 256)
    db_url = recreate_database()
    requests = QUICK_REQUESTS if args.quick else REQUESTS
    cells: list[Cell] = []
    quality: dict[str, dict[str, Any]] = {}
    all_variants = variants(settings, checkpoint, db_url)
    for variant in all_variants:
        print(f"serving {variant.name}...", flush=True)
        variant_cells, quality[variant.key] = benchmark_variant(variant, bodies, labels, requests, db_url)
        cells += variant_cells
    if args.profile:
        print(f"profile: {profile_int8(all_variants[-1], bodies, requests[32])}", flush=True)
    api = APISettings(project_root=REPO_ROOT)  # the servers inherit this environment
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick, "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
        "torch": package_version("torch"), "onnxruntime": package_version("onnxruntime"),
        "load_average": load_average, "requests": requests, "max_length": max_length, "epochs": 1 if args.quick else 2,
        "minilm_train_rows": QUICK_MINILM_TRAIN_ROWS if args.quick else MINILM_TRAIN_ROWS,
        "mean_tokens": mean_tokens(texts, checkpoint), "batch_window_ms": api.batch_window_ms,
        "batch_max_size": api.batch_max_size,
        "command": " ".join([".venv/bin/python benchmarks/serving_benchmark.py", *sys.argv[1:]]),
    }
    RESULTS_FILE.write_text(json.dumps({"meta": meta, "cells": [asdict(c) for c in cells], "quality": quality,
                                        "forward": forward}, indent=2))
    section = to_markdown(cells, quality, forward, {v.key: v.name for v in all_variants}, meta)
    print(section)
    write_section(args.doc, section, start=START, end=END, heading="Serving latency and throughput")
    errors = sum(c.errors for c in cells)
    if errors or not all(q.get("log_match", True) for q in quality.values()):
        first = next((c.first_error for c in cells if c.first_error), None)
        sys.exit(f"{errors} failed requests (first: {first}) or a request-log mismatch; see {RESULTS_FILE}")


if __name__ == "__main__":
    main()
