"""The "needs review" answer and the human-review queue: routing on the review threshold, the queue's
durability (written with the log row, replayed from the spool), its routes and their 4xx answers, the
export of resolved items as training rows and their way into the train split, and the stream consumer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from typer.testing import CliRunner

from api.db.log_store import REVIEW_THRESHOLD
from api.db.migrate import downgrade, upgrade
from api.db.session import make_engine, session_factory
from api.feedback import labelled_predictions
from api.keys import Scope, create_api_key
from api.main import create_app
from api.model_manager import LoadedModel
from api.request_log import RequestLogWriter
from api.settings import APISettings, get_api_settings
from ml.review_rows import REVIEW_ARROW_SCHEMA, add_review_rows, read_review_rows
from ml.settings import MLSettings
from ml.split import read_split
from ml.train import train
from productcat.cli import app as cli
from tests.api_support import api_settings, build_registry, move_alias, wait_for, wait_ready
from tests.conftest import fresh_database, sample_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRODUCTS = [
    {"title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle", "price": "$24.99"},
    {"title": "Fossil Women Black Huarache Weave Belt", "description": ["Woven leather belt", "Gold buckle"]},
    {"title": "Puma Men Grey T-shirt"},
    {"title": "Titan Women Silver Watch"},
    {"title": "Nike Men Running Shoes"},
    {"title": "Lakme Absolute Lip Gloss"},
]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLSettings, str]:
    settings, versions = build_registry(tmp_path_factory.mktemp("registry"), sizes=(300,))
    return settings, versions[0]


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh migrated database and its keys: `reviewer` made as a person would (`productcat api-key
    create --scope review`), `shop` with the default scopes, `ops` admin."""
    with fresh_database() as url:
        monkeypatch.setenv("DATABASE_URL", url)
        get_api_settings.cache_clear()
        try:
            created = CliRunner().invoke(cli, ["api-key", "create", "reviewer", "--scope", "review"])
        finally:
            get_api_settings.cache_clear()
        assert created.exit_code == 0, created.output
        plaintexts = {"reviewer": created.stdout.strip()}
        engine = make_engine(url)
        with session_factory(engine)() as session:
            plaintexts["shop"] = create_api_key(session=session, name="shop")[1]
            plaintexts["ops"] = create_api_key(session=session, name="ops", scopes=[Scope.ADMIN])[1]
        engine.dispose()
        yield url, plaintexts


@contextlib.contextmanager
def service(registry: tuple[MLSettings, str], url: str, root: Path, threshold: float,
            **overrides: Any) -> Iterator[TestClient]:
    move_alias(registry[0], registry[1])
    settings = api_settings(root, url, review_threshold=threshold, **overrides)
    with TestClient(create_app(settings, registry[0])) as client:
        wait_ready(client)
        yield client


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def rows(url: str, query: str) -> list[dict[str, Any]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(row) for row in connection.execute(sa.text(query)).mappings()]
    finally:
        engine.dispose()


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([\d.e+]+)$", text, re.MULTILINE))


def queue(client: TestClient, key: str, **query: Any) -> dict[str, Any]:
    response = client.get("/review", params=query, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


def test_the_threshold_comes_from_the_card_unless_the_setting_overrides_it() -> None:
    def model(card: dict[str, Any], setting: float | None) -> LoadedModel:
        return LoadedModel(name="m", version="1", run_id="r", python_model=None, labels=["A"], card=card,  # type: ignore[arg-type]
                           training_metrics={}, review_threshold_setting=setting)

    assert model({"review": {"threshold": 0.42}}, None).review_threshold == 0.42
    assert model({"review": {"threshold": None}}, None).review_threshold is None
    assert model({}, None).review_threshold is None  # versions trained before the card had it: nothing routed
    assert model({"review": {"threshold": 0.42}}, 0.9).review_threshold == 0.9
    assert model({"review": {"threshold": 0.42}}, 0.0).review_threshold is None  # 0 turns routing off
    with pytest.raises(ValueError, match="review_threshold"):
        APISettings(review_threshold=1.5)


def test_unsure_answers_get_no_label_and_land_in_the_queue(registry, keys, tmp_path: Path) -> None:
    url, key = keys
    with service(registry, url, tmp_path / "off", threshold=0.0) as client:
        off = client.post("/predict", json=PRODUCTS).json()["predictions"]
        assert client.get("/model").json()["review_threshold"] is None
    assert not any(p["needs_review"] for p in off) and all(p["label"] and p["review_id"] is None for p in off)
    probabilities = [p["probability"] for p in off]
    threshold = statistics.median(probabilities)  # some above it, some below
    assert min(probabilities) < threshold

    with service(registry, url, tmp_path / "on", threshold=threshold) as client:
        assert client.get("/model").json()["review_threshold"] == pytest.approx(threshold)
        answer = client.post("/predict", json=PRODUCTS, params={"top_k": 3}).json()
        predictions = answer["predictions"]
        unsure = [p for p in predictions if p["needs_review"]]
        assert [p["needs_review"] for p in predictions] == [p < threshold for p in probabilities]
        for p in predictions:
            top = p["top_k"]
            assert len(top) == 3 and top[0]["probability"] == p["probability"]
            if p["needs_review"]:
                assert p["label"] is None and p["label_path"] == [] and p["review_id"] == p["request_id"]
            else:
                assert p["label"] == top[0]["label"] and p["label_path"] and p["review_id"] is None
        # The item is written with the log row; a moment after the answer it is in the queue.
        wait_for(lambda: queue(client, key["reviewer"])["total"] == len(unsure), what="the review items")
        listed = queue(client, key["reviewer"])["items"]
        assert {item["id"] for item in listed} == {p["review_id"] for p in unsure}
        item = client.get(f"/review/{unsure[0]['review_id']}", headers=auth(key["reviewer"])).json()
        sent = PRODUCTS[predictions.index(unsure[0])]
        assert item["product"]["title"] == sent["title"] and item["status"] == "open"
        assert item["model_version"] == answer["model"]["version"] and item["threshold"] == pytest.approx(threshold)
        assert item["label"] == unsure[0]["top_k"][0]["label"] and item["top_k"] == unsure[0]["top_k"]
        text = client.get("/metrics").text
        assert metric(text, "productcat_needs_review_total") == len(unsure)

    logged = {r["request_id"]: r for r in rows(url, "SELECT request_id, label, needs_review FROM prediction_log")}
    for p in predictions:  # the log keeps what the model said, and whether the caller got it
        assert logged[p["request_id"]]["needs_review"] is p["needs_review"]
        assert logged[p["request_id"]]["label"] == p["top_k"][0]["label"]


def test_the_queue_filters_and_pages(registry, keys, tmp_path: Path) -> None:
    url, key = keys
    with service(registry, url, tmp_path, threshold=1.0) as client:  # every answer goes to review
        ids = [p["review_id"] for p in client.post("/predict", json=PRODUCTS[:5]).json()["predictions"]]
        assert all(ids)
        wait_for(lambda: queue(client, key["reviewer"])["total"] == 5, what="five review items")
        pages = [queue(client, key["reviewer"], limit=2, offset=offset) for offset in (0, 2, 4)]
        assert [len(page["items"]) for page in pages] == [2, 2, 1] and {page["total"] for page in pages} == {5}
        paged = [item["id"] for page in pages for item in page["items"]]
        assert sorted(paged) == sorted(ids) and len(set(paged)) == 5
        created = [item["created_at"] for page in pages for item in page["items"]]
        assert created == sorted(created)  # the queue's order: oldest first
        version = registry[1]
        assert queue(client, key["reviewer"], model_version=version)["total"] == 5
        assert queue(client, key["reviewer"], model_version="no-such-version")["total"] == 0
        guessed = pages[0]["items"][0]["label"]
        by_label = queue(client, key["reviewer"], label=guessed)["items"]
        assert by_label and all(item["label"] == guessed for item in by_label)
        assert queue(client, key["reviewer"], status="resolved")["total"] == 0
        assert queue(client, key["ops"], status="all")["total"] == 5  # admin holds every scope
        for query, field in (({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"offset": -1}, "offset"),
                             ({"status": "closed"}, "status")):
            refused = client.get("/review", params=query, headers=auth(key["reviewer"]))
            assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", field]


def test_an_item_still_on_its_way_to_the_table_says_retry(registry, keys, tmp_path: Path) -> None:
    url, key = keys
    # The writer waits up to log_flush_seconds to fill a batch: the item is journaled but not in the table yet.
    with service(registry, url, tmp_path, threshold=1.0, log_flush_seconds=5.0, log_batch_size=1000) as client:
        (prediction,) = client.post("/predict", json=PRODUCTS[0]).json()["predictions"]
        early = client.get(f"/review/{prediction['review_id']}", headers=auth(key["reviewer"]))
        assert early.status_code == 404 and early.headers["Retry-After"] == "1" and "retry" in early.text
        wait_for(lambda: client.get(f"/review/{prediction['review_id']}",
                                    headers=auth(key["reviewer"])).status_code == 200, what="the item")
    unknown = "00000000-0000-0000-0000-000000000000"
    with service(registry, url, tmp_path, threshold=1.0) as client:
        missing = client.get(f"/review/{unknown}", headers=auth(key["reviewer"]))
        assert missing.status_code == 404 and "Retry-After" not in missing.headers


def test_resolving_records_feedback_and_closes_the_item(registry, keys, tmp_path: Path) -> None:
    url, key = keys
    with service(registry, url, tmp_path, threshold=1.0) as client:
        first, second = client.post("/predict", json=PRODUCTS[:2]).json()["predictions"]
        review_id = first["review_id"]
        wait_for(lambda: queue(client, key["reviewer"])["total"] == 2, what="two review items")
        labels = client.get("/labels").json()
        assert labels["model_version"] == registry[1] and labels["labels"] == sorted(labels["labels"])
        truth = next(label for label in labels["labels"] if label != first["top_k"][0]["label"])
        assert labels["label_paths"][truth][-1] == truth

        resolve = f"/review/{review_id}/resolve"
        assert client.post(resolve, json={"label": truth}).status_code == 401
        assert client.post(resolve, json={"label": truth}, headers=auth(key["shop"])).status_code == 403
        assert client.get("/review", headers=auth(key["shop"])).status_code == 403
        assert client.get("/review").status_code == 401
        assert client.post(resolve, json={"label": truth}, headers=auth("pc_nope_nope")).status_code == 403
        unknown = client.post("/review/no-such-item/resolve", json={"label": truth}, headers=auth(key["reviewer"]))
        assert unknown.status_code == 404
        assert client.get("/review/no-such-item", headers=auth(key["reviewer"])).status_code == 404
        for body in ({"label": "Not A Category"}, {"label": ""}, {"label": "x" * 201}, {}):
            bad = client.post(resolve, json=body, headers=auth(key["reviewer"]))
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "label"], bad.text
            assert "x" * 50 not in bad.text  # the input is never echoed back

        done = client.post(resolve, json={"label": f" {truth} "}, headers=auth(key["reviewer"]))
        assert done.status_code == 200, done.text
        item = done.json()
        assert (item["status"], item["resolved_label"], item["id"]) == ("resolved", truth, review_id)
        assert item["resolved_label_path"] == labels["label_paths"][truth] and item["resolved_at"]
        again = client.post(resolve, json={"label": truth}, headers=auth(key["ops"]))
        assert again.status_code == 200 and again.json()["resolved_at"] == item["resolved_at"]  # nothing changed
        other = next(label for label in labels["labels"] if label != truth)
        conflict = client.post(resolve, json={"label": other}, headers=auth(key["ops"]))
        assert conflict.status_code == 409, conflict.text

        open_ids = [i["id"] for i in queue(client, key["reviewer"])["items"]]
        assert open_ids == [second["review_id"]]  # it left the open queue
        assert [i["id"] for i in queue(client, key["reviewer"], status="resolved")["items"]] == [review_id]

    reviewer_id = rows(url, "SELECT id FROM api_keys WHERE name = 'reviewer'")[0]["id"]
    (stored,) = rows(url, f"SELECT * FROM review_item WHERE request_id = '{review_id}'")
    assert stored["resolved_by"] == reviewer_id and stored["model_version"] == registry[1]
    feedback = rows(url, f"SELECT id, label, api_key_id FROM feedback WHERE request_id = '{review_id}'")
    assert [(f["id"], f["label"], f["api_key_id"]) for f in feedback] == [(stored["feedback_id"], truth, reviewer_id)]
    engine = make_engine(url)
    with session_factory(engine)() as session:  # what live accuracy is computed from
        labelled = labelled_predictions(session=session)
    engine.dispose()
    assert [(row.prediction.request_id, row.label) for row in labelled] == [(review_id, truth)]
    assert labelled[0].prediction.label == first["top_k"][0]["label"]  # the model's guess, traced to its version


def test_resolved_items_export_as_training_rows_for_the_train_split_only(
    registry, keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, key = keys
    settings = registry[0]
    held_out = read_split(settings, "validation").iloc[0]  # a validation product: never to be trained on
    novel = [{"title": "Handwoven Jute Storage Basket with Lid", "brand": "Kora", "price": "$24.99"},
             {"title": "Ceramic Pour Over Coffee Dripper"}]  # in no split of the sample
    products = [*novel, {"title": held_out["title"]}]
    with service(registry, url, tmp_path, threshold=1.0) as client:
        predictions = client.post("/predict", json=products).json()["predictions"]
        wait_for(lambda: queue(client, key["reviewer"])["total"] == 3, what="three review items")
        labels = client.get("/labels").json()["labels"]
        for prediction in predictions:
            answer = client.post(f"/review/{prediction['review_id']}/resolve", json={"label": labels[0]},
                                 headers=auth(key["reviewer"]))
            assert answer.status_code == 200, answer.text

    export = tmp_path / "reviews.parquet"
    monkeypatch.setenv("DATABASE_URL", url)
    get_api_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["review", "export", "--output", str(export)])
        later = CliRunner().invoke(cli, ["review", "export", "--output", str(tmp_path / "none.parquet"),
                                         "--since", "2999-01-01"])
    finally:
        get_api_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert later.exit_code == 0 and len(read_review_rows(tmp_path / "none.parquet")) == 0, later.output
    assert pq.read_schema(export).names == REVIEW_ARROW_SCHEMA.names
    exported = read_review_rows(export)
    assert sorted(exported["review_id"]) == sorted(p["review_id"] for p in predictions)
    assert set(exported["label"]) == {labels[0]} and set(exported["model_version"]) == {registry[1]}
    assert (exported["request_id"] == exported["review_id"]).all() and exported["resolved_at"].notna().all()
    assert exported["resolved_by"].notna().all() and set(exported["source"]) == {"review"}
    assert exported.loc[exported["title"] == novel[0]["title"], "price"].item() == 24.99  # cleaned as ingest does

    train_df = read_split(settings, "train")
    combined, added = add_review_rows(train_df, path=export,
                                      holdout=[read_split(settings, "validation"), read_split(settings, "test")])
    assert (added.rows, added.dropped_holdout) == (2, 1)  # the validation product stays out of training
    assert len(combined) == len(train_df) + 2 and list(combined.columns) == list(train_df.columns)
    assert held_out["title"] not in set(combined["title"].iloc[len(train_df):])

    # The whole way: a training run that includes them says so (param and tag) and keeps the export.
    store, params = sample_store(tmp_path / "store")
    params.train.max_train_samples = 200
    trained = train(settings=store, params=params, family="baseline", include_reviews=export)
    run = MlflowClient(tracking_uri=store.tracking_uri).get_run(trained.run_id)
    assert run.data.params["review_rows"] == "2" and run.data.tags["review_rows"] == "2"
    assert run.data.params["train_rows"] == "202"
    artifacts = [a.path for a in MlflowClient(tracking_uri=store.tracking_uri).list_artifacts(trained.run_id, "data")]
    assert "data/reviews.parquet" in artifacts


def test_the_queue_is_as_durable_as_the_log(tmp_path: Path) -> None:
    """Rows answered needs_review during an outage are spooled with their items; a later writer replays
    both, once, however often the rows are replayed."""
    url = f"sqlite:///{tmp_path / 'requests.db'}"  # not migrated yet: every insert fails like an outage
    engine = make_engine(url)
    settings = APISettings(spool_dir=tmp_path / "spool", log_flush_seconds=0.05)

    def row(i: int, review: bool) -> dict[str, Any]:
        return {"request_id": f"r-{i}", "batch_id": "b", "position": i, "product": {"title": f"shirt {i}"},
                "label": "Shirts", "probability": 0.3, "top_k": [{"label": "Shirts", "probability": 0.3}],
                "model_name": "product-classifier", "model_version": "3", "latency_ms": 1.0, "api_key_id": None,
                "needs_review": review, **({REVIEW_THRESHOLD: 0.5} if review else {})}

    batch = [row(i, review=i % 2 == 0) for i in range(6)]
    first = RequestLogWriter(settings=settings, engine=engine)
    first.start()
    asyncio.run(first.log_durably([dict(r) for r in batch]))  # write-ahead: journaled before the answer
    first.close()
    assert first.written == 0 and first.spooled == 6

    upgrade(url)
    for _ in range(2):  # the second replays the same rows again (a crash after the commit): no doubles
        (tmp_path / "spool").mkdir(exist_ok=True)
        (tmp_path / "spool" / "spool-0-again.jsonl").write_text(
            "".join(json.dumps(r | {"created_at": "2026-01-01T00:00:00+00:00"}) + "\n" for r in batch))
        second = RequestLogWriter(settings=settings, engine=engine)
        second.start()
        wait_for(lambda: not list((tmp_path / "spool").glob("spool-*.jsonl")), what="the spool's replay")
        second.close()
    engine.dispose()
    items = rows(url, "SELECT request_id, status, threshold, label FROM review_item ORDER BY request_id")
    assert [(i["request_id"], i["status"], i["threshold"]) for i in items] == [
        ("r-0", "open", 0.5), ("r-2", "open", 0.5), ("r-4", "open", 0.5)]
    flags = {r["request_id"]: bool(r["needs_review"]) for r in rows(url, "SELECT * FROM prediction_log")}
    assert flags == {f"r-{i}": i % 2 == 0 for i in range(6)}


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres")])
def test_0006_adds_the_queue_and_keeps_earlier_rows(database: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'r.db'}" if database == "sqlite" else stack.enter_context(fresh_database()))
        upgrade(url, "0005")
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO prediction_log (request_id, batch_id, position, created_at, product, label, probability, "
                "top_k, model_name, model_version, latency_ms) VALUES "
                "('old', 'b1', 0, CURRENT_TIMESTAMP, '{\"title\": \"Shirt\"}', 'Shirts', 0.9, '[]', 'm', '1', 3.0)"))
        upgrade(url, "0006")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT needs_review FROM prediction_log")).scalar_one() in (False, 0)
            indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("review_item")}
        assert indexes >= {"ix_review_item_status", "ix_review_item_created_at", "ix_review_item_model_version"}
        downgrade(url, "0005")
        with engine.connect() as conn:
            assert "review_item" not in sa.inspect(conn).get_table_names()
            assert conn.execute(sa.text("SELECT count(*) FROM prediction_log")).scalar_one() == 1
        engine.dispose()


def test_stream_scored_products_join_the_same_queue(registry, tmp_path: Path) -> None:
    from streaming.consumer import StreamConsumer
    from tests.test_streaming import (  # noqa: F401 (the fixture removes the test's subjects)
        BROKERS,
        _remove_test_subjects,
        product_messages,
        publish_all,
        read,
        stream_settings,
    )

    with socket.socket() as probe:
        probe.settimeout(2)
        if probe.connect_ex(("127.0.0.1", 6379)) != 0:
            pytest.skip("no redis broker on 127.0.0.1:6379 (.ci/run starts one)")
    settings = stream_settings(BROKERS["redis"])
    messages = product_messages(4)
    predictions: list[dict[str, Any]] = []
    with fresh_database() as url:
        move_alias(registry[0], registry[1])
        consumer = StreamConsumer(settings=settings, api_settings=api_settings(tmp_path, url, review_threshold=1.0),
                                  ml_settings=registry[0])

        async def scenario() -> None:
            task = asyncio.create_task(consumer.run())
            try:
                await publish_all(settings, [body for _, body in messages])
                await read(settings, settings.output, into=predictions, until=lambda: len(predictions) >= 4,
                           timeout=60, alive=lambda: not task.done())
            finally:
                consumer.stop()
                await task

        asyncio.run(scenario())
        items = {r["request_id"]: r for r in rows(url, "SELECT request_id, channel, status FROM review_item")}
    assert len(predictions) == 4
    for prediction in predictions:
        assert prediction["needs_review"] is True and prediction["label"] is None and prediction["label_path"] == []
        assert prediction["review_id"] == prediction["request_id"] and len(prediction["top_k"]) == 3
        assert items[prediction["request_id"]]["channel"] == "redis"
