"""The API image installs only `[project] dependencies`: serving must never import a package
that only the `pipeline` extra brings (Airflow, DVC, Evidently, matplotlib, ONNX export)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, sample_store

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
# Import names of the pipeline extra's distributions.
PIPELINE_ONLY = ("airflow", "dvc", "evidently", "matplotlib", "onnx", "onnxscript")

SERVE_WITHOUT_PIPELINE = """
import importlib.abc, sys, time

BLOCKED = set(sys.argv[1].split(","))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} belongs to the pipeline extra, not to serving")
        return None

sys.meta_path.insert(0, Block())

from fastapi.testclient import TestClient

import ml.models.transformer  # the torch runtime of a transformer champion
from api.db.migrate import upgrade
from api.main import create_app
from api.settings import APISettings

settings = APISettings()
upgrade(settings.db_url)  # as `productcat serve` does before serving
with TestClient(create_app(settings)) as client:
    deadline = time.monotonic() + 120  # the champion loads in the background
    while (ready := client.get("/ready")).status_code != 200:
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.5)
    answer = client.post("/predict", json={"title": "Puma Men Black Running Shoes"})
    assert answer.status_code == 200, answer.text
    assert client.get("/reports/drift").status_code == 200
print("served", answer.json()["predictions"][0]["label"])
"""


def test_pipeline_only_packages_sit_in_the_pipeline_extra() -> None:
    base = " ".join(PYPROJECT["project"]["dependencies"]).lower()
    extra = " ".join(PYPROJECT["project"]["optional-dependencies"]["pipeline"]).lower()
    for distribution in ("apache-airflow", "dvc", "evidently", "matplotlib", "onnxscript"):
        assert distribution in extra and distribution not in base, distribution
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(d.startswith("productcat[") and "pipeline" in d.split("[")[1] for d in dev), dev


@pytest.mark.integration
@pytest.mark.slow
def test_the_api_serves_a_champion_without_the_pipeline_extra(tmp_path: Path) -> None:
    from ml.gate import promote
    from ml.train import train

    settings, params = sample_store(tmp_path)
    params.train.max_train_samples = 300
    version = train(settings=settings, params=params, family="baseline").version
    promote(settings=settings, version=version, reason="serving dependency test", by="tests")
    env = os.environ | {
        "PRODUCTCAT_PROJECT_ROOT": str(REPO_ROOT),
        "PRODUCTCAT_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'requests.db'}",
        "PRODUCTCAT_API_SPOOL_DIR": str(tmp_path / "spool"),
        "PRODUCTCAT_API_OPEN_READ_ROUTES": "true",  # it reads /reports/drift without a key
    }
    done = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_PIPELINE, ",".join(PIPELINE_ONLY)],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-8000:]
    assert done.stdout.startswith("served ")
