"""The prediction service against a real registry (tiny baselines trained here)
and the real Postgres: answers, bad input, auth, the request log, alias moves."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.db.migrate import upgrade
from api.db.session import make_engine
from api.keys import create_api_key
from api.main import create_app
from api.settings import APISettings
from ml.promotion import alias_history, promote, rollback
from ml.registry import registry_client
from ml.settings import MLSettings
from tests.api_support import api_settings, build_registry, move_alias, register_broken_version, wait_for, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHIRT = {"title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle", "price": "$24.99"}
BELT = {"title": "Fossil Women Black Huarache Weave Belt", "description": ["Woven leather belt", "Gold buckle"]}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLSettings, list[str]]:
    return build_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture
def database(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


@pytest.fixture
def api_key(database: str) -> str:
    engine = make_engine(database)
    with engine.begin() as conn, sa.orm.Session(bind=conn) as session:
        _, plaintext = create_api_key(session=session, name="shop-backend")
        session.commit()
    engine.dispose()
    return plaintext


@contextlib.contextmanager
def _client(settings: APISettings, ml_settings: MLSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, ml_settings)) as client:
        wait_ready(client)
        yield client


@pytest.fixture
def service(registry, database, tmp_path: Path) -> Iterator[TestClient]:
    move_alias(registry[0], registry[1][0])
    with _client(api_settings(tmp_path, database, max_batch_size=3), registry[0]) as client:
        yield client


def _rows(database: str, table: str) -> list[dict[str, Any]]:
    engine = make_engine(database)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]
    engine.dispose()
    return rows


def test_one_product_and_a_batch_are_answered_with_top_k(service: TestClient, registry) -> None:
    one = service.post("/predict", json=SHIRT).json()
    assert one["model"] == {"name": "product-classifier", "version": registry[1][0]}
    (prediction,) = one["predictions"]
    assert prediction["label"] == prediction["top_k"][0]["label"] and len(prediction["top_k"]) == 3
    probabilities = [t["probability"] for t in prediction["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
    assert prediction["label_path"][-1] == prediction["label"] and len(prediction["label_path"]) == 3

    batch = service.post("/predict?top_k=5", json=[SHIRT, BELT]).json()
    assert [len(p["top_k"]) for p in batch["predictions"]] == [5, 5]
    assert batch["predictions"][0]["label"] == prediction["label"]
    assert len({p["request_id"] for p in batch["predictions"]} | {prediction["request_id"]}) == 3


def test_a_product_outside_the_catalogue_is_flagged_low_confidence(service: TestClient) -> None:
    info = service.get("/model").json()
    assert info["dataset"] == "fashion-sample" and "Shirts" in info["labels"]
    threshold = info["low_confidence_threshold"]
    assert threshold == info["card"]["low_confidence"]["threshold"] and 0 < threshold < 1
    phone, shirt = service.post("/predict", json=[{"title": "Samsung Galaxy M31 6GB RAM smartphone"},
                                                   SHIRT]).json()["predictions"]
    assert phone["low_confidence"] is True and phone["probability"] < threshold
    assert shirt["low_confidence"] is (shirt["probability"] < threshold)


def test_category_and_unknown_fields_never_reach_the_model(service: TestClient) -> None:
    clean = service.post("/predict", json=BELT).json()["predictions"][0]
    poisoned = service.post("/predict", json=BELT | {"category": ["Watches"], "main_cat": "Watches"}).json()
    assert poisoned["predictions"][0]["top_k"] == clean["top_k"]


@pytest.mark.parametrize(
    ("body", "query", "loc", "words"),
    [
        ({"title": "  ", "description": ""}, "", ["body"], "title or a description"),
        ({"title": "Shirt", "price": {"amount": 3}}, "", ["body", "price"], ""),
        ({"title": "Shirt", "price": "call us"}, "", ["body", "price"], "cannot read a price"),
        ({"title": "x" * 501}, "", ["body", "title"], "at most 500"),
        ({"title": "Shirt", "features": "not a list"}, "", ["body", "features"], ""),
        ([SHIRT] * 4, "", ["body"], "at most 3 products"),
        ([], "", ["body"], "empty"),
        (SHIRT, "?top_k=0", ["query", "top_k"], ""),
        (SHIRT, "?top_k=21", ["query", "top_k"], "at most 20"),
    ],
)
def test_bad_input_gets_a_422_naming_the_field(service: TestClient, body, query, loc, words) -> None:
    response = service.post(f"/predict{query}", json=body)
    assert response.status_code == 422, response.text
    details = response.json()["detail"]
    assert any([str(x) for x in d["loc"][: len(loc)]] == loc or loc[-1] in map(str, d["loc"]) for d in details)
    assert words in " ".join(d["msg"] for d in details)


def test_every_answer_is_logged_and_feedback_needs_a_key(registry, database, api_key, tmp_path) -> None:
    move_alias(registry[0], registry[1][0])
    with TestClient(create_app(api_settings(tmp_path, database), registry[0])) as client:
        wait_ready(client)
        ids = [p["request_id"] for p in client.post("/predict", json=[SHIRT, BELT]).json()["predictions"]]
        ids += [client.post("/predict", json=SHIRT).json()["predictions"][0]["request_id"]]
        assert client.post("/feedback", json={"request_id": ids[0], "label": "Shirts"}).status_code == 401
        bad = client.post("/feedback", json={"request_id": ids[0], "label": "Shirts"}, headers={"X-API-Key": "pc_x_y"})
        assert bad.status_code == 403
        auth = {"X-API-Key": api_key}
        assert client.post("/feedback", json={"request_id": "nope", "label": "Shirts"}, headers=auth).status_code == 404
        # Postgres cannot store NUL: such input is a 422 naming the field, never a 500.
        for body, field in (({"request_id": "a\u0000b", "label": "Shirts"}, "request_id"),
                            ({"request_id": ids[0], "label": "Shi\u0000rts"}, "label")):
            refused = client.post("/feedback", json=body, headers=auth)
            assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", field], refused.text
        given = client.post("/feedback", json={"request_id": ids[0], "label": "Shirts"}, headers=auth)
        assert given.status_code == 201 and given.json()["known_label"] is True
        novel = client.post("/feedback", json={"request_id": ids[1], "label": "Smart Rings"}, headers=auth).json()
        assert novel["known_label"] is False
    logged = {r["request_id"]: r for r in _rows(database, "prediction_log")}  # the writer drained on shutdown
    assert set(logged) == set(ids)
    row = logged[ids[0]]
    assert row["model_version"] == registry[1][0] and row["product"]["title"] == SHIRT["title"]
    assert row["latency_ms"] > 0 and len(row["top_k"]) == 3 and row["label"] == row["top_k"][0]["label"]
    feedback = {r["request_id"]: r["label"] for r in _rows(database, "feedback")}
    assert feedback == {ids[0]: "Shirts", ids[1]: "Smart Rings"}


def test_predict_can_require_a_key(registry, database, api_key, tmp_path) -> None:
    settings = api_settings(tmp_path, database, require_api_key_for_predict=True)
    with _client(settings, registry[0]) as client:
        assert client.post("/predict", json=SHIRT).status_code == 401
        assert client.post("/predict", json=SHIRT, headers={"X-API-Key": api_key + "x"}).status_code == 403
        assert client.post("/predict", json=SHIRT, headers={"X-API-Key": api_key}).status_code == 200
    assert [r["api_key_id"] is not None for r in _rows(database, "prediction_log")] == [True]


def test_health_model_and_metrics(service: TestClient, registry) -> None:
    assert service.get("/health").json() == {"status": "ok"}
    assert service.get("/ready").json() == {"model_loaded": True, "model_healthy": True, "database": True,
                                            "ready": True}
    info = service.get("/model").json()
    assert info["version"] == registry[1][0] and info["alias"] == "champion"
    assert "Shirts" in info["labels"] and "val_macro_f1" in info["training_metrics"]
    service.post("/predict", json=SHIRT)
    text = service.get("/metrics").text
    assert 'productcat_requests_total{route="/predict",status="200"}' in text
    assert "productcat_request_latency_seconds_bucket" in text and "productcat_predictions_total" in text
    assert f'productcat_model_version{{name="product-classifier",version="{registry[1][0]}"}} 1.0' in text


def test_not_ready_without_a_champion(database, tmp_path) -> None:
    empty = MLSettings(project_root=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}")
    with TestClient(create_app(api_settings(tmp_path, database), empty)) as client:
        wait_for(lambda: client.get("/model").json()["last_error"] is not None, what="the first alias check")
        assert "cannot resolve product-classifier@champion" in client.get("/model").json()["last_error"]
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 503
        assert client.post("/predict", json=SHIRT).status_code == 503


def test_promotion_and_rollback_are_followed_without_a_failed_request(registry, database, tmp_path) -> None:
    """The rollback drill: champion -> candidate -> back, under load, not one failed request."""
    settings, (first, second) = registry
    move_alias(settings, first)
    with _client(api_settings(tmp_path, database), settings) as client:
        answers: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def keep_sending() -> None:
            while not stop.is_set():
                r = client.post("/predict", json=[SHIRT, BELT])
                answers.append((r.status_code, r.json()["model"]["version"] if r.status_code == 200 else None))

        def served(version: str) -> float:
            took = wait_for(lambda: bool(answers) and answers[-1][1] == version, timeout=30, what=f"v{version}")
            wait_for(lambda: answers[-5:] == [(200, version)] * 5, what=f"traffic on v{version}")
            return took

        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            wait_for(lambda: len(answers) >= 5, what="traffic before the move")
            promote(settings=settings, version=second, reason="candidate under load", by="tests")
            took = served(second)
            assert rollback(settings=settings, reason="rollback drill", by="tests") == (second, first)
            served(first)
        finally:
            stop.set()
            sender.join()
        assert {status for status, _ in answers} == {200}
        versions = [v for _, v in answers]
        up, down = versions.index(second), len(versions) - versions[::-1].index(second)
        assert set(versions[:up]) == {first} and set(versions[up:down]) == {second}  # one clean cut-over
        assert set(versions[down:]) == {first}  # and one clean cut-back
        assert took < 10  # poll interval is 0.2 s; loading a small baseline takes a second or two

    moves = alias_history(registry_client(settings), settings)[-2:]
    assert [(m.from_version, m.to_version, m.kind, m.why) for m in moves] == [
        (first, second, "promotion", "candidate under load"), (second, first, "rollback", "rollback drill")]
    tags = registry_client(settings).get_model_version(settings.registered_model, first).tags
    assert tags["promotion_kind"] == "rollback" and tags["promotion_reason"] == "rollback drill"
    assert "replaced_by" not in tags  # it serves again


def test_a_broken_version_is_refused_and_the_champion_keeps_serving(registry, database, tmp_path) -> None:
    settings, (first, _) = registry
    broken = register_broken_version(settings, first, tmp_path)
    move_alias(settings, first)
    try:
        with _client(api_settings(tmp_path, database), settings) as client:
            move_alias(settings, broken)
            wait_for(lambda: broken in client.get("/model").json()["refused_versions"], what="the refusal")
            info = client.get("/model").json()
            assert info["version"] == first and f"version {broken} refused" in info["last_error"]
            answer = client.post("/predict", json=SHIRT)
            assert answer.status_code == 200 and answer.json()["model"]["version"] == first
    finally:
        move_alias(settings, first)
