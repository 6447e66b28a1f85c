"""A version records the catalogue it was trained on as ingest saw it (the dataset key and the
source file's SHA-256), whatever params.yaml names: ingest -> split -> train carry it."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from ml.ingest import ingest
from ml.io import file_sha256
from ml.params import load_params
from ml.settings import MLSettings
from ml.split import split
from ml.train import train
from tests.conftest import REPO_ROOT, SAMPLE_DIR

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize(("dataset", "source"), [
    ("fashion-sample", "fashion_styles.csv.gz"),
    ("flipkart-sample", "flipkart_products.csv.gz"),
])
def test_the_version_names_the_ingested_catalogue_and_its_bytes(tmp_path: Path, dataset: str, source: str) -> None:
    settings = MLSettings(
        project_root=REPO_ROOT, interim_dir=tmp_path / "interim", processed_dir=tmp_path / "processed",
        reports_dir=tmp_path / "reports", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        mlflow_artifact_root=tmp_path / "artifacts",
    )
    params = load_params(settings)
    assert params.ingest.dataset == "fashion-sample"  # what params.yaml says; ingest is told `dataset`
    summary = ingest(settings=settings, params=params, dataset=dataset)
    assert summary["source_sha256"] == file_sha256(SAMPLE_DIR / source)
    assert split(settings=settings, params=params)["ingest"]["dataset"] == dataset
    params.train.max_train_samples = 300
    version = train(settings=settings, params=params, family="baseline").version

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    tags = client.get_model_version(settings.registered_model, version).tags
    assert tags["dataset"] == dataset and tags["source_sha256"] == summary["source_sha256"]
    run = client.get_run(client.get_model_version(settings.registered_model, version).run_id)
    assert run.data.params["dataset"] == dataset and run.data.tags["source_sha256"] == summary["source_sha256"]
    assert run.info.run_name == f"baseline-{dataset}"
