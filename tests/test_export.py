"""Export of a real (tiny) fine-tuned MiniLM: the ONNX variants travel inside the model version,
reproduce torch on real catalogue rows, are scored on the test set, and the gate picks what serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from api.db.migrate import upgrade
from api.main import create_app
from ml.evaluate import load_evaluation
from ml.gate import choose_runtime, gate
from ml.models import load_classifier
from ml.models.transformer import ONNX_FILES
from ml.params import Params
from ml.pyfunc_model import CARD_FILE, CLASSIFIER_ARTIFACT, RUNTIME_TAG, load_registered, records_frame
from ml.registry import configure_mlflow
from ml.settings import MLSettings
from ml.split import read_split
from ml.train import train
from tests.api_support import api_settings, wait_ready
from tests.conftest import sample_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLSettings, Params, str]:
    """A MiniLM fine-tuned for one epoch on 160 rows of the fashion sample, evaluated and gated."""
    settings, params = sample_store(tmp_path_factory.mktemp("export"))
    params.gate.min_macro_f1, params.gate.min_accuracy = 0.0, 0.0  # a tiny model: the rules under test are others
    params.evaluate.latency_items = 10
    params.train.max_train_samples, params.train.max_validation_samples = 160, 64
    params.train.transformer.epochs, params.train.transformer.max_length = 1, 32
    version = train(settings=settings, params=params, family="transformer").version
    gate(settings=settings, params=params, version=version)
    return settings, params, version


@pytest.fixture(scope="module")
def artifact(trained) -> Path:
    settings, _, version = trained
    configure_mlflow(settings)
    local = mlflow.artifacts.download_artifacts(f"models:/{settings.registered_model}/{version}")
    return Path(local) / "artifacts" / CLASSIFIER_ARTIFACT


@pytest.fixture(scope="module")
def test_rows(trained) -> list[dict[str, Any]]:
    settings, _, _ = trained
    rows = read_split(settings, "test").head(200)
    frame = rows[["title", "description", "features", "brand", "price"]].copy()
    frame["features"] = frame["features"].map(list)
    return frame.replace({np.nan: None}).to_dict("records")


def test_onnx_variants_travel_inside_the_model_version(trained, artifact: Path) -> None:
    settings, _, version = trained
    assert {ONNX_FILES["onnx-fp32"], ONNX_FILES["onnx-int8"]} <= {p.name for p in artifact.iterdir()}
    card = json.loads((artifact / CARD_FILE).read_text())
    assert set(card["export"]["runtimes"]) == {"onnx-fp32", "onnx-int8"} and card["export"]["opset"] == 18
    run = MlflowClient(settings.tracking_uri).get_run(
        MlflowClient(settings.tracking_uri).get_model_version(settings.registered_model, version).run_id)
    for name in ("export_onnx_fp32_max_abs_diff", "test_torch_macro_f1", "test_onnx_fp32_macro_f1",
                 "test_onnx_int8_macro_f1", "test_onnx_int8_accuracy", "test_onnx_int8_latency_p50_ms"):
        assert name in run.data.metrics, name


def test_onnx_reproduces_torch_on_real_rows(artifact: Path, test_rows: list[dict[str, Any]]) -> None:
    from ml.features import product_texts

    clf = load_classifier(artifact)
    texts = product_texts(test_rows)
    assert clf.available_runtimes() == ["torch", "onnx-fp32", "onnx-int8"]
    assert clf.use_runtime("torch") == "torch"
    reference = clf.predict_proba(texts)
    assert clf.use_runtime("onnx-fp32") == "onnx-fp32"
    fp32 = clf.predict_proba(texts)
    np.testing.assert_allclose(fp32, reference, atol=1e-4)
    assert clf.use_runtime("onnx-int8") == "onnx-int8"
    int8 = clf.predict_proba(texts)
    # Quantised: close, not equal. (Top-1 agreement says little here: a one-epoch model's probabilities
    # are nearly flat; the gate judges int8 by its test macro-F1 instead.)
    assert 0 < np.abs(int8 - reference).max() < 0.02


def test_lean_serving_path_equals_the_pyfunc(trained, test_rows: list[dict[str, Any]]) -> None:
    settings, _, version = trained
    configure_mlflow(settings)
    pyfunc, model = load_registered(settings.registered_model, version)
    framed = pyfunc.predict(records_frame(test_rows[:50]), params={"top_k": 3}).to_dict("records")
    lean = model.predict_records(test_rows[:50], 3)
    assert [r["top_labels"] for r in lean] == [list(r["top_labels"]) for r in framed]
    np.testing.assert_allclose([r["probability"] for r in lean], [r["probability"] for r in framed], atol=1e-6)


def test_gate_picks_the_serving_runtime_and_loaders_follow_it(trained) -> None:
    settings, params, version = trained
    client = configure_mlflow(settings)
    mv = client.get_model_version(settings.registered_model, version)
    variants = load_evaluation(client, mv.run_id)["variants"]
    assert set(variants) == {"torch", "onnx-fp32", "onnx-int8"}
    assert abs(variants["onnx-fp32"]["macro_f1"] - variants["torch"]["macro_f1"]) < 0.005
    expected, _ = choose_runtime(variants, max_drop=params.gate.max_int8_macro_f1_drop)
    assert mv.tags[RUNTIME_TAG] == expected and expected in {"onnx-int8", "onnx-fp32"}
    assert "onnx-int8 macro-F1" in mv.tags["gate_reasons"]
    _, model = load_registered(settings.registered_model, version)
    assert model.runtime == expected


def test_the_service_answers_from_the_chosen_runtime(trained, postgres_url: str, tmp_path: Path) -> None:
    settings, _, version = trained
    upgrade(postgres_url)
    expected = MlflowClient(settings.tracking_uri).get_model_version(settings.registered_model, version).tags
    with TestClient(create_app(api_settings(tmp_path, postgres_url, intra_op_threads=1), settings)) as client:
        wait_ready(client)
        info = client.get("/model").json()
        assert info["version"] == version and info["runtime"] == expected[RUNTIME_TAG]
        answer = client.post("/predict", json=[{"title": "Puma Men Grey Running T-shirt"}, {"title": "Fossil Watch"}])
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2
