"""Real (tiny) training runs of both families, the registry, the gate and a
fresh-process load of the champion. Uses a throwaway MLflow sqlite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from ml.gate import gate, promote
from ml.params import Params
from ml.pyfunc_model import records_frame
from ml.registry import configure_mlflow
from ml.settings import MLSettings
from ml.train import train
from tests.conftest import REPO_ROOT, sample_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRODUCT = {"title": "Puma Men Grey Running T-shirt", "brand": "Puma", "features": ["gender: Men"],
           "description": None, "price": "$19.99"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLSettings, Params]:
    settings, params = sample_store(tmp_path_factory.mktemp("store"))
    params.gate.min_macro_f1, params.gate.min_accuracy = 0.05, 0.3
    return settings, params


@pytest.fixture(scope="module")
def versions(store) -> dict[str, str]:
    """v1: small baseline (first champion); v2: tiny transformer (worse); v3: full baseline (better)."""
    settings, params = store
    made = {}
    small = params.model_copy(deep=True)
    small.train.max_train_samples = 600
    made["small_baseline"] = train(settings=settings, params=small, family="baseline").version
    made["gate_first"] = gate(settings=settings, params=params, version=made["small_baseline"])
    tiny = params.model_copy(deep=True)
    tiny.train.max_train_samples, tiny.train.max_validation_samples = 160, 64
    tiny.train.transformer.epochs, tiny.train.transformer.max_length = 1, 32
    made["transformer"] = train(settings=settings, params=tiny, family="transformer").version
    made["gate_transformer"] = gate(settings=settings, params=params, version=made["transformer"])
    made["full_baseline"] = train(settings=settings, params=params, family="baseline").version
    made["gate_full"] = gate(settings=settings, params=params, version=made["full_baseline"])
    return made


def _version(settings: MLSettings, version: str):
    return MlflowClient(settings.tracking_uri).get_model_version(settings.registered_model, version)


def test_each_family_registers_a_version_with_its_run_logged(store, versions):
    settings, _ = store
    client = configure_mlflow(settings)
    for key, family in (("small_baseline", "baseline"), ("transformer", "transformer")):
        mv = _version(settings, versions[key])
        assert mv.tags["family"] == family
        run = client.get_run(mv.run_id)
        assert run.data.params["family"] == family and "val_macro_f1" in run.data.metrics
        assert run.data.tags["git_commit"] and run.data.tags["data_content_md5"]
        artifacts = {a.path for a in client.list_artifacts(mv.run_id, "evaluation")}
        assert {"evaluation/confusion_matrix.png", "evaluation/model_report.md"} <= artifacts
    history = client.get_metric_history(_version(settings, versions["transformer"]).run_id, "val_macro_f1")
    assert [m.step for m in history][:1] == [1]  # per-epoch metric


def test_gate_promotes_first_and_better_refuses_worse(store, versions):
    settings, _ = store
    assert versions["gate_first"].promoted and versions["gate_first"].champion is None
    refused = versions["gate_transformer"]
    assert not refused.passed and not refused.promoted
    tags = _version(settings, versions["transformer"]).tags
    assert tags["gate_decision"] == "fail" and "FAIL: macro-F1" in tags["gate_reasons"]
    assert tags["gate_compared_with"] == versions["small_baseline"]
    assert versions["gate_full"].promoted
    champion = MlflowClient(settings.tracking_uri).get_model_version_by_alias(settings.registered_model, "champion")
    assert str(champion.version) == versions["full_baseline"]
    assert champion.tags["promoted_by"] == "gate" and champion.tags["previous_champion"] == versions["small_baseline"]


def test_manual_rollback_records_who_and_why(store, versions):
    settings, _ = store
    previous = promote(settings=settings, version=versions["small_baseline"], reason="bad labels in feed", by="ana")
    try:
        tags = _version(settings, versions["small_baseline"]).tags
        assert previous == versions["full_baseline"]
        assert tags["promoted_by"] == "ana" and tags["promotion_reason"] == "bad labels in feed"
    finally:
        promote(settings=settings, version=versions["full_baseline"], reason="restore", by="test")


def test_champion_loads_in_a_fresh_process_and_predicts_a_product_dict(store, versions):
    settings, _ = store
    code = (
        "import json, sys, mlflow; from ml.pyfunc_model import records_frame\n"
        f"mlflow.set_tracking_uri({settings.tracking_uri!r})\n"
        "model = mlflow.pyfunc.load_model('models:/product-classifier@champion')\n"
        f"out = model.predict(records_frame([{PRODUCT!r}]), params={{'top_k': 3}})\n"
        "print(json.dumps(out.iloc[0].to_dict(), default=list))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                          env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["label"] == row["top_labels"][0] and len(row["top_labels"]) == 3
    assert row["top_probabilities"] == sorted(row["top_probabilities"], reverse=True)
    assert row["label_path"][-1] == row["label"] and len(row["label_path"]) == 3
    assert row["label"] in {"Tshirts", "Tops", "Sweatshirts", "Shirts"}


def test_category_is_ignored_by_the_served_model(store, versions):
    settings, _ = store
    mlflow.set_tracking_uri(settings.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/product-classifier@champion")
    poisoned = records_frame([{**PRODUCT, "category": ["Watches", "Watches"]}])
    assert "category" not in poisoned.columns
    clean = model.predict(records_frame([PRODUCT]))
    assert model.predict(poisoned).equals(clean)


def test_model_card_travels_with_the_artifact(store, versions):
    settings, _ = store
    mlflow.set_tracking_uri(settings.tracking_uri)
    python_model = mlflow.pyfunc.load_model("models:/product-classifier@champion").unwrap_python_model()
    card = python_model.card
    assert card["labels"] == python_model.labels and card["preprocessing_version"]
    assert card["leaf_to_path"]["Tshirts"] == ["Apparel", "Topwear", "Tshirts"]
    assert Path(settings.tracking_uri.removeprefix("sqlite:///")).exists()
