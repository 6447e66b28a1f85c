"""A real registry for the API tests: small baselines trained on the bundled
fashion sample, and a version whose artifact is broken."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from api.settings import APISettings
from ml import pyfunc_entry
from ml.gate import promote
from ml.models.baseline import PIPELINE_FILE
from ml.pyfunc_model import CLASSIFIER_ARTIFACT, SIGNATURE
from ml.registry import configure_mlflow
from ml.settings import MLSettings
from ml.train import train
from tests.conftest import REPO_ROOT, sample_store


def build_registry(root: Path, sizes: tuple[int, ...] = (300, 900)) -> tuple[MLSettings, list[str]]:
    """One baseline version per training size; the first becomes champion."""
    settings, params = sample_store(root)
    versions = []
    for size in sizes:
        run_params = params.model_copy(deep=True)
        run_params.train.max_train_samples = size
        versions.append(train(settings=settings, params=run_params, family="baseline").version)
    promote(settings=settings, version=versions[0], reason="test fixture", by="tests")
    return settings, versions


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
