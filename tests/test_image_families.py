"""The `image` and `fusion` families on the bundled fashion sample and its real photos (1,000 of the
4,999 rows have one): trained at 112 px, registered, evaluated and gated through the pyfunc; answers
say which modalities they used; embeddings are cached per split; a saved model loads identically."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from ml.gate import gate
from ml.models import load_classifier, score_records
from ml.params import Params
from ml.pyfunc_model import ProductClassifierModel
from ml.settings import MLSettings
from ml.split import read_split
from ml.train import train
from tests.conftest import sample_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLSettings, Params]:
    root = tmp_path_factory.mktemp("image-store")
    settings, params = sample_store(root)
    settings = settings.model_copy(update={"cache_dir": root / "cache"})
    params.train.image.size = 112  # a quarter of 224's cost: the whole module stays near a minute on CPU
    params.train.max_train_samples, params.train.max_validation_samples = 2000, 300  # ~400 train photos
    params.train.baseline.max_features = 3000  # fusion's text half is fitted four times (three out-of-fold)
    params.gate.min_macro_f1, params.gate.min_accuracy = 0.01, 0.01
    return settings, params


@pytest.fixture(scope="module")
def trained(store) -> dict[str, str]:
    settings, params = store
    return {family: train(settings=settings, params=params, family=family).version for family in ("image", "fusion")}


def _pyfunc(settings: MLSettings, version: str) -> ProductClassifierModel:
    mlflow.set_tracking_uri(settings.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model}/{version}",
                                     model_config={"image_root": str(settings.resolve(settings.interim_dir))})
    return model.unwrap_python_model()


def _test_records(settings: MLSettings, *, photo: bool, n: int) -> list[dict]:
    test = read_split(settings, "test")
    rows = test[test["image"].notna() == photo].head(n)
    assert len(rows) == n
    return rows.to_dict("records")


def _run(settings: MLSettings, version: str):
    client = MlflowClient(settings.tracking_uri)
    return client.get_run(client.get_model_version(settings.registered_model, version).run_id)


def test_image_family_registers_and_answers_from_the_photo_or_says_it_could_not(store, trained):
    settings, params = store
    mv = MlflowClient(settings.tracking_uri).get_model_version(settings.registered_model, trained["image"])
    assert mv.tags["family"] == "image"
    model = _pyfunc(settings, trained["image"])
    with_photo = _test_records(settings, photo=True, n=150)
    answers = model.predict_records(with_photo, top_k=3)
    assert all(a["modalities"] == ["image"] for a in answers)
    accuracy = np.mean([a["label"] == r["label"] for a, r in zip(answers, with_photo, strict=True)])
    majority = max(np.mean([r["label"] == label for r in with_photo]) for label in {r["label"] for r in with_photo})
    assert accuracy > majority + 0.2, (accuracy, majority)  # the photo is read, not the class prior
    without = model.predict_records(_test_records(settings, photo=False, n=3), top_k=3)
    assert all(a["modalities"] == [] for a in without)  # no photo: the training prior, marked as such
    assert without[0]["top_probabilities"] == without[1]["top_probabilities"] == without[2]["top_probabilities"]


def test_image_version_is_evaluated_and_gated_like_a_text_one(store, trained):
    settings, params = store
    decision = gate(settings=settings, params=params, version=trained["image"], promote=False)
    assert decision.candidate == trained["image"]
    client = MlflowClient(settings.tracking_uri)
    run = _run(settings, trained["image"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/per_class_f1.png", "evaluation/reliability.png",
            "evaluation/model_report.md"} <= artifacts
    assert {"test_accuracy", "test_macro_f1", "test_ece", "val_accuracy"} <= set(run.data.metrics)


def test_fusion_uses_both_where_there_is_a_photo_and_the_text_alone_elsewhere(store, trained):
    settings, _ = store
    model = _pyfunc(settings, trained["fusion"])
    assert model.card["family"] == "fusion"
    without = _test_records(settings, photo=False, n=20)
    answers = model.predict_records(without, top_k=3)
    assert all(a["modalities"] == ["text"] for a in answers)
    text_alone = model._calibrated(model.classifier.text.predict_proba([r["title"] for r in without]))
    fused = model.predict_proba(_frame(without))
    np.testing.assert_allclose(fused, model._calibrated(model.classifier.predict_proba_records(
        without, image_root=model.image_root)[0]))
    assert (fused.argmax(axis=1) == text_alone.argmax(axis=1)).mean() > 0.9  # title alone vs full text
    both = model.predict_records(_test_records(settings, photo=True, n=20), top_k=3)
    assert all(a["modalities"] == ["text", "image"] for a in both)


def _frame(records: list[dict]):
    from ml.pyfunc_model import records_frame

    return records_frame(records)


def test_a_second_training_reuses_the_cached_embeddings(store, trained):
    settings, _ = store
    first, second = (_run(settings, trained[f]).data.metrics for f in ("image", "fusion"))
    assert first["photos_embedded"] > 300  # the train sample's photos, run through the network once
    assert second["photos_embedded"] == 0  # fusion's image half: every embedding read from the cache
    cache = settings.resolve(settings.cache_dir) / "image_embeddings" / "lite0-112px"
    assert {p.name for p in cache.iterdir()} == {"train.npz", "validation.npz"}


@pytest.mark.parametrize("family", ["image", "fusion"])
def test_save_and_load_give_identical_probabilities(store, trained, tmp_path: Path, family: str):
    settings, _ = store
    classifier = _pyfunc(settings, trained[family]).classifier
    records = _test_records(settings, photo=True, n=8) + _test_records(settings, photo=False, n=4)
    root = settings.resolve(settings.interim_dir)
    before, used = score_records(classifier, records, image_root=root)
    classifier.save(tmp_path / family)
    after, used_after = score_records(load_classifier(tmp_path / family), records, image_root=root)
    np.testing.assert_array_equal(before, after)
    assert used == used_after


def test_a_fusion_champion_answers_a_text_only_request_and_says_so(store, trained, postgres_url: str, tmp_path: Path):
    from fastapi.testclient import TestClient

    from api.db.migrate import upgrade
    from api.main import create_app
    from tests.api_support import api_settings, move_alias, wait_ready

    settings, _ = store
    move_alias(settings, trained["fusion"])
    upgrade(postgres_url)
    with TestClient(create_app(api_settings(tmp_path, postgres_url), settings)) as client:
        wait_ready(client)
        reply = client.post("/predict", json={"title": "Turtle Check Men Navy Blue Shirt", "price": "$24.99"})
    assert reply.status_code == 200, reply.text
    (prediction,) = reply.json()["predictions"]
    assert reply.json()["model"]["version"] == trained["fusion"]
    assert prediction["modalities"] == ["text"] and prediction["label"] == "Shirts"


def test_photo_families_explain_with_an_occlusion_map_and_the_share_of_each_modality(store, trained):
    from ml.explain import Unexplainable
    from ml.features import product_texts
    from ml.models.fusion import stack_features

    settings, _ = store
    record = _test_records(settings, photo=True, n=1)[0]
    no_photo = _test_records(settings, photo=False, n=1)[0]
    image = _pyfunc(settings, trained["image"])
    explained = image.explain(record, budget_seconds=60)["explanation"]
    assert explained["method"] == "occlusion" and explained["modality_shares"] == {"text": 0.0, "image": 1.0}
    grid = explained["image_map"]["weights"]
    assert len(grid) == 4 and all(len(row) == 4 for row in grid) and any(w != 0 for row in grid for w in row)
    assert image.explain(record, budget_seconds=60)["explanation"]["image_map"] == explained["image_map"]
    with pytest.raises(Unexplainable):  # no photo: the answer is the prior, nothing to explain
        image.explain(no_photo, budget_seconds=60)

    fusion = _pyfunc(settings, trained["fusion"])
    answer = fusion.explain(record, budget_seconds=60)
    fused = answer["explanation"]
    assert fused["method"] == "late-fusion" and fused["fields"] and fused["image_map"]
    assert set(fused["modality_shares"]) == {"text", "image"}
    assert sum(fused["modality_shares"].values()) == pytest.approx(1.0, abs=1e-3)
    # score is the stacking head's logit of the label: bias + text part + photo part, exactly.
    clf = fusion.classifier
    embedder_vector = clf.image.embedder.embed_files([fusion.image_root / record["image"]])
    x = stack_features(clf.text.predict_proba(product_texts([record])), clf.image.head_proba(embedder_vector))
    column = list(clf.stacker.classes_).index(clf.labels.index(answer["label"]))
    assert fused["score"] == pytest.approx(clf.stacker.decision_function(x)[0, column], abs=1e-6)
    text_only = fusion.explain(no_photo, budget_seconds=60)["explanation"]
    assert text_only["modality_shares"] == {"text": 1.0, "image": 0.0} and text_only["image_map"] is None
