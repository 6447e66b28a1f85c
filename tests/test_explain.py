"""Explanations: exact for the TF-IDF baseline (they add up to its logit), integrated gradients for a
transformer, mapped onto the words of each field; bounded in time, reproducible, served by POST /explain
and /predict?explain=true, and logged with the model version in the real Postgres."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import torch
from fastapi.testclient import TestClient

from api.db.migrate import upgrade
from api.db.models import ExplanationLog
from api.db.session import make_engine
from api.main import create_app
from ml.explain import Deadline, ExplanationBudgetExceeded, UnknownLabel, explain_classifier, text_layout
from ml.explain_linear import _char_occurrences, _vectorizers, _word_occurrences, explain_linear
from ml.features import product_text
from ml.pyfunc_model import ProductClassifierModel, load_registered
from ml.registry import configure_mlflow
from ml.settings import MLSettings
from tests.api_support import api_settings, build_registry, move_alias, wait_for, wait_ready

SHIRT = {"title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle", "price": "$24.99",
         "features": ["100% cotton", "Regular  fit"], "description": ["A navy check shirt.", "Machine wash."]}
TITLE_ONLY = {"title": "Fossil Women Black Huarache Weave Belt"}
# Lower-casing that lengthens a character (İ) or depends on context (final Σ), entities, runs of spaces.
ODD = {"title": "İstanbul  T-SHIRT &amp; shirts!! ΟΔΟΣ ΟΔΟΣ.", "description": "x  y   ÀÉÎ straße  a",
       "features": ["a; b"]}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLSettings, list[str]]:
    return build_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def model(registry) -> ProductClassifierModel:
    settings, versions = registry
    configure_mlflow(settings)
    return load_registered(settings.registered_model, versions[0])[1]


def _all_features(model: ProductClassifierModel, record: dict[str, Any], label: str):  # noqa: ANN202
    return explain_linear(model.classifier, record, label_index=model.labels.index(label),
                          deadline=Deadline(60), top_features=10**6)


# ---- the baseline's exact explanation ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("record", [SHIRT, TITLE_ONLY, ODD])
def test_contributions_add_up_to_the_decision_function(model: ProductClassifierModel, record: dict) -> None:
    text = product_text(record)
    decision = model.classifier.pipeline.decision_function([text])[0]
    intercept = model.classifier.pipeline.named_steps["classifier"].intercept_
    for label in (model.predict_records([record])[0]["label"], "Belts", "Lipstick"):
        c = model.labels.index(label)
        explanation = _all_features(model, record, label)
        assert explanation.base_value == intercept[c]
        assert explanation.score == pytest.approx(decision[c], abs=1e-9)
        assert explanation.base_value + sum(f.weight for f in explanation.top_features) == pytest.approx(
            decision[c], abs=1e-9)


@pytest.mark.slow
def test_a_title_alone_puts_every_contribution_on_its_words(model: ProductClassifierModel) -> None:
    explanation = _all_features(model, TITLE_ONLY, "Belts")
    (title,) = explanation.fields
    assert [s.text for s in title.spans] == TITLE_ONLY["title"].split()
    assert explanation.base_value + sum(s.weight for s in title.spans) == pytest.approx(explanation.score, abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("record", [SHIRT, ODD])
def test_n_grams_are_found_where_the_vectorisers_find_them(model: ProductClassifierModel, record: dict) -> None:
    text, deadline = product_text(record), Deadline(60)
    for vectorizer, _ in _vectorizers(model.classifier.pipeline):
        locate = _word_occurrences if vectorizer.analyzer == "word" else _char_occurrences
        found = {gram: len(places) for gram, places in locate(vectorizer, text, deadline).items()}
        assert found == Counter(vectorizer.build_analyzer()(text))


@pytest.mark.slow
def test_spans_are_the_words_of_each_field(model: ProductClassifierModel) -> None:
    explanation = model.explain(SHIRT, budget_seconds=10)["explanation"]
    fields = {f["field"]: f for f in explanation["fields"]}
    assert list(fields) == ["title", "brand", "price", "features", "description"]
    assert fields["features"]["text"] == "100% cotton; Regular fit"
    assert fields["description"]["text"] == "A navy check shirt. Machine wash."
    layout = text_layout(SHIRT)
    for field in fields.values():
        for span in field["spans"]:
            assert field["text"][span["start"]:span["end"]] == span["text"]
        assert " ".join(s["text"] for s in field["spans"]) == field["text"]
    assert [name for name, _, _ in layout.fields] == list(fields)


@pytest.mark.slow
def test_the_words_of_the_class_push_towards_it(model: ProductClassifierModel) -> None:
    answer = model.explain(SHIRT, budget_seconds=10)
    assert answer["label"] == "Shirts" and answer["method"] == "linear-exact"
    title = answer["explanation"]["fields"][0]["spans"]
    weights = {s["text"]: s["weight"] for s in title}
    assert weights["Shirt"] > 0 and weights["Shirt"] == max(weights.values())
    against = model.explain(SHIRT, label="Lipstick", budget_seconds=10)["explanation"]
    assert {s["text"]: s["weight"] for s in against["fields"][0]["spans"]}["Shirt"] < 0


@pytest.mark.slow
def test_a_named_label_is_explained_with_its_served_probability(model: ProductClassifierModel) -> None:
    answer = model.explain(SHIRT, label="Tshirts", budget_seconds=10)
    served = model.predict_records([SHIRT], top_k=len(model.labels))[0]
    assert answer["label"] == answer["explanation"]["label"] == "Tshirts"
    assert answer["probability"] == served["top_probabilities"][served["top_labels"].index("Tshirts")]
    assert answer["top_k"][0] == {"label": served["label"], "probability": served["probability"]}
    with pytest.raises(UnknownLabel):
        model.explain(SHIRT, label="Spaceships", budget_seconds=10)


@pytest.mark.slow
def test_one_input_gives_one_answer(model: ProductClassifierModel) -> None:
    first, second = (model.explain(SHIRT, budget_seconds=10) for _ in range(2))
    first["explanation"].pop("duration_ms"), second["explanation"].pop("duration_ms")
    assert first == second


@pytest.mark.slow
def test_the_budget_stops_the_work(model: ProductClassifierModel) -> None:
    with pytest.raises(ExplanationBudgetExceeded, match="budget"):
        model.explain(SHIRT, budget_seconds=1e-6)


# ---- a transformer: integrated gradients ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_transformer():  # noqa: ANN201
    """A randomly initialised two-layer BERT with the bundled MiniLM tokenizer: no download, no training."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from ml.models.transformer import TransformerClassifier, default_base_model

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(default_base_model())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=3, max_position_embeddings=128)
    return TransformerClassifier(BertForSequenceClassification(config), tokenizer, ["Belts", "Shirts", "Ties"], 64)


def test_transformer_attributions_cover_the_words_and_add_up_to_the_logit(tiny_transformer) -> None:
    explanation = explain_classifier(tiny_transformer, SHIRT, label="Shirts", deadline=Deadline(60), ig_steps=64,
                                     top_features=10)
    assert explanation.method == "integrated-gradients"
    encoded = tiny_transformer.tokenizer([product_text(SHIRT)], return_tensors="pt")
    with torch.no_grad():
        logit = float(tiny_transformer.model(**encoded).logits[0, 1])
    # Completeness: the attributions span the gap from the baseline's logit to the input's.
    assert explanation.score == pytest.approx(logit, abs=2e-3 + 0.02 * abs(logit - explanation.base_value))
    title = explanation.fields[0]
    assert [s.text for s in title.spans] == SHIRT["title"].split()
    assert all(s.weight != 0 for s in title.spans)
    assert {f.kind for f in explanation.top_features} == {"token"}
    again = explain_classifier(tiny_transformer, SHIRT, label="Shirts", deadline=Deadline(60), ig_steps=64,
                               top_features=10)
    assert (again.fields, again.top_features, again.score) == (explanation.fields, explanation.top_features,
                                                               explanation.score)
    with pytest.raises(ExplanationBudgetExceeded):
        explain_classifier(tiny_transformer, SHIRT, label="Shirts", deadline=Deadline(1e-6), ig_steps=64,
                           top_features=10)


# ---- the service -----------------------------------------------------------------------------------------


@pytest.fixture
def database(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


@contextlib.contextmanager
def _service(registry, database: str, root: Path, **overrides: object) -> Iterator[TestClient]:
    settings, versions = registry
    move_alias(settings, versions[0])
    with TestClient(create_app(api_settings(root, database, **overrides), settings)) as client:
        wait_ready(client)
        yield client


def _logged(database: str) -> list[dict[str, Any]]:
    engine = make_engine(database)
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(sa.select(ExplanationLog.__table__))]
    finally:
        engine.dispose()


@pytest.mark.integration
@pytest.mark.slow
def test_explain_and_predict_explain_are_served_and_logged(registry, database: str, tmp_path: Path,
                                                            model: ProductClassifierModel) -> None:
    version = registry[1][0]
    with _service(registry, database, tmp_path) as client:
        reply = client.post("/explain?top_k=2", json={"product": SHIRT})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["model"]["version"] == version and body["label"] == "Shirts" == body["top_k"][0]["label"]
        assert len(body["top_k"]) == 2 and body["method"] == "linear-exact"
        assert body["explanation"] | {"duration_ms": 0} == (
            model.explain(SHIRT, budget_seconds=10)["explanation"] | {"duration_ms": 0})

        named = client.post("/explain", json={"product": SHIRT, "label": "Tshirts"}).json()
        assert named["label"] == named["explanation"]["label"] == "Tshirts" and named["top_k"][0]["label"] == "Shirts"

        unknown = client.post("/explain", json={"product": SHIRT, "label": "Spaceships"})
        assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "label"]

        predicted = client.post("/predict?explain=true", json=SHIRT).json()
        (prediction,) = predicted["predictions"]
        assert prediction["explanation"]["label"] == prediction["top_k"][0]["label"]
        assert prediction["explanation"]["fields"][0]["text"] == SHIRT["title"]
        assert client.post("/predict", json=SHIRT).json()["predictions"][0]["explanation"] is None

        refused = client.post("/predict?explain=true", json=[SHIRT, TITLE_ONLY])
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", "explain"]

    wait_for(lambda: len(_logged(database)) == 3, what="three explanations logged")
    rows = {row["request_id"]: row for row in _logged(database)}
    assert {row["model_version"] for row in rows.values()} == {version}
    assert rows[body["request_id"]]["label"] == "Shirts" and rows[named["request_id"]]["label"] == "Tshirts"
    traced = rows[prediction["request_id"]]  # the prediction's own id: the explanation traces to it
    assert traced["method"] == "linear-exact" and traced["summary"]["top_features"][0]["feature"]


@pytest.mark.integration
@pytest.mark.slow
def test_an_explanation_over_its_budget_is_refused_with_the_reason(registry, database: str, tmp_path: Path) -> None:
    with _service(registry, database, tmp_path, explain_time_budget_ms=0.001, max_product_chars=200) as client:
        reply = client.post("/explain", json={"product": SHIRT})
        assert reply.status_code == 422
        (error,) = reply.json()["detail"]
        assert error["loc"] == ["body", "product"] and "budget" in error["msg"]
        too_long = client.post("/explain?top_k=21", json={"product": {"title": "Shirt", "description": "d" * 300}})
        assert [e["loc"] for e in too_long.json()["detail"]] == [["body", "product"], ["query", "top_k"]]
        refused = client.post("/predict?explain=true", json=SHIRT)
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body"]
        assert client.post("/predict", json=SHIRT).status_code == 200  # predictions are not bounded by it
    assert _logged(database) == []


@pytest.mark.integration
@pytest.mark.slow
def test_a_product_sent_to_review_is_explained_for_its_top_guess(registry, database: str, tmp_path: Path) -> None:
    with _service(registry, database, tmp_path, review_threshold=0.9999) as client:
        (prediction,) = client.post("/predict?explain=true", json=SHIRT).json()["predictions"]
    assert prediction["needs_review"] and prediction["label"] is None
    assert prediction["explanation"]["label"] == prediction["top_k"][0]["label"] == "Shirts"
    wait_for(lambda: [r["request_id"] for r in _logged(database)] == [prediction["request_id"]],
             what="the explanation logged under the prediction's request_id")
