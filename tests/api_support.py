"""A real registry for the API tests: small baselines trained on the bundled
fashion sample, and a version whose artifact is broken."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import mlflow
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from api.db.migrate import upgrade
from api.db.models import PredictionLog
from api.db.session import make_engine
from api.keys import create_api_key
from api.settings import APISettings
from ml import pyfunc_entry
from ml.gate import promote
from ml.models.baseline import PIPELINE_FILE
from ml.pyfunc_model import CLASSIFIER_ARTIFACT, SIGNATURE
from ml.registry import configure_mlflow
from ml.settings import MLSettings
from ml.train import train
from tests.conftest import REPO_ROOT, fresh_database, sample_store

# Trained registries, built once per test session for each tuple of sizes and copied for each
# caller: ingest + split + training cost tens of seconds on two cores, a copy well under one.
_TEMPLATES: dict[tuple[int, ...], tuple[Path, list[str]]] = {}


def _train_registry(root: Path, sizes: tuple[int, ...]) -> list[str]:
    settings, params = sample_store(root)
    versions = []
    for size in sizes:
        run_params = params.model_copy(deep=True)
        run_params.train.max_train_samples = size
        versions.append(train(settings=settings, params=run_params, family="baseline").version)
    promote(settings=settings, version=versions[0], reason="test fixture", by="tests")
    return versions


def build_registry(root: Path, sizes: tuple[int, ...] = (300, 900)) -> tuple[MLSettings, list[str]]:
    """A registry of its own under ``root``: one baseline version per training size (the first
    is champion) on the bundled fashion sample, ingested and split under ``root``.

    The store, pipeline outputs and reports are copies; the model artifacts stay in the
    session's template (read-only for the versions it holds; new runs add folders beside them).
    """
    if sizes not in _TEMPLATES:
        template = Path(tempfile.mkdtemp(prefix="productcat-registry-"))
        atexit.register(shutil.rmtree, template, ignore_errors=True)
        _TEMPLATES[sizes] = (template, _train_registry(template, sizes))
    template, versions = _TEMPLATES[sizes]
    root.mkdir(parents=True, exist_ok=True)
    for folder in ("interim", "processed", "reports"):
        shutil.copytree(template / folder, root / folder, dirs_exist_ok=True)
    shutil.copy2(template / "mlflow.db", root / "mlflow.db")
    settings = MLSettings(
        project_root=REPO_ROOT, interim_dir=root / "interim", processed_dir=root / "processed",
        reports_dir=root / "reports", mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifact_root=template / "artifacts",
    )
    return settings, list(versions)


def register_broken_version(settings: MLSettings, good_version: str, tmp: Path) -> str:
    """A copy of a good version whose fitted pipeline file is truncated: it cannot load."""
    configure_mlflow(settings)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{settings.registered_model}/{good_version}",
                                                     dst_path=str(tmp / "download")))
    classifier = tmp / CLASSIFIER_ARTIFACT
    shutil.copytree(local / "artifacts" / CLASSIFIER_ARTIFACT, classifier)
    (classifier / PIPELINE_FILE).write_bytes(b"not a pickle")
    example = mlflow.models.Model.load(str(local)).load_input_example(str(local))
    with mlflow.start_run(run_name="broken"):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(Path(pyfunc_entry.__file__)),
            artifacts={CLASSIFIER_ARTIFACT: str(classifier)}, signature=SIGNATURE, input_example=example,
            registered_model_name=settings.registered_model,
        )
    return str(info.registered_model_version)


def move_alias(settings: MLSettings, version: str) -> None:
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    client.set_registered_model_alias(settings.registered_model, "champion", version)


def api_settings(root: Path, database_url: str, **overrides: object) -> APISettings:
    values: dict[str, object] = {
        "project_root": REPO_ROOT, "database_url": database_url, "poll_interval_seconds": 0.2,
        "spool_dir": root / "spool", "log_flush_seconds": 0.05, "inference_threads": 2,
        # As the local demo runs, and no per-address cap for tests that send /predict in a loop from
        # one test client; tests/test_access_control.py closes the routes and sets limits itself.
        "open_read_routes": True, "rate_limit_predict_per_address": 0,
        # Review routing off: the tiny sample-trained versions are unsure of most products, so their card's
        # review threshold would withhold most labels that tests assert on; tests/test_review.py turns it on.
        "review_threshold": 0.0,
    }
    return APISettings(**(values | overrides))


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> float:
    """Poll until true; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def wait_ready(client: TestClient) -> None:
    wait_for(lambda: client.get("/ready").status_code == 200, what="/ready")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def live_server(app: FastAPI, *, ready_path: str = "/ready") -> Iterator[str]:
    """The app under a real uvicorn server on a free loopback port; yields its base URL once
    ``ready_path`` answers 200, stops it afterwards."""
    url = f"http://127.0.0.1:{free_port()}"
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(url.rsplit(":", 1)[1]),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def answers() -> bool:
        try:
            return httpx.get(f"{url}{ready_path}", timeout=10).status_code == 200
        except httpx.HTTPError:  # not listening yet, or slow on a busy machine: poll again
            return False

    try:
        wait_for(answers, what=f"{url}{ready_path}")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def database_with_key(name: str, **key_options: object) -> Iterator[tuple[str, str]]:
    """A fresh, migrated Postgres database holding one API key; yields (URL, plaintext key)."""
    with fresh_database() as database:
        upgrade(database)
        engine = make_engine(database)
        with sa.orm.Session(engine) as session:
            _, key = create_api_key(session=session, name=name, **key_options)
            session.commit()
        engine.dispose()
        yield database, key


def logged_ids(url: str) -> list[str]:
    """The request ids in ``prediction_log`` of the database at ``url``."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(sa.select(PredictionLog.request_id)))
    finally:
        engine.dispose()
