"""Drift checks on real catalogue rows against real champions (small baselines trained here),
the real Postgres request log and a real MLflow store.

Two champions: one trained on the fashion catalogue (titles only, ~100 article types), one on
the marketplace catalogue (titles, descriptions, prices; 13 categories). Each drift case has a
no-drift control on the same champion, so a signal that fires everywhere cannot pass.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from typer.testing import CliRunner, Result

from api.db.log_store import insert_rows
from api.db.migrate import upgrade
from api.db.models import DriftCheck, PredictionLog
from api.db.session import make_engine, session_factory
from api.feedback import record_feedback
from api.keys import create_api_key
from api.main import create_app
from api.schemas import Product
from api.settings import get_api_settings
from ml.gate import promote
from ml.ingest import IngestOutputs, ingest
from ml.params import Params, load_params
from ml.pyfunc_model import records_frame
from ml.settings import MLSettings, get_settings
from ml.split import read_split, split
from ml.train import train
from monitoring.champion import find_champion, load_champion_model
from monitoring.service import DriftCheckResult, retrain_advice, run_drift_check
from productcat.cli import app
from tests.api_support import api_settings, wait_for, wait_ready
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
log = logging.getLogger(__name__)

@dataclass
class Env:
    settings: MLSettings
    params: Params
    test: pd.DataFrame  # the frozen test split: rows the champion never saw


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Canonical rows as a shop sends them to /predict (empty fields left out)."""
    out = []
    for row in frame.to_dict("records"):
        record = {k: row[k] for k in ("title", "description", "brand", "price") if pd.notna(row[k]) and row[k] != ""}
        if len(row["features"]):
            record["features"] = list(row["features"])
        out.append(record)
    return out


def champion_env(root: Path, dataset: str, max_train_samples: int, max_features: int = 20_000) -> Env:
    settings = MLSettings(
        project_root=REPO_ROOT, interim_dir=root / "interim", processed_dir=root / "processed",
        reports_dir=root / "reports", mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifact_root=root / "artifacts",
    )
    params = load_params(settings)
    params.ingest.dataset = dataset
    params.train.max_train_samples = max_train_samples  # small champions: the test is about their inputs
    params.train.baseline.max_features = max_features
    ingest(settings=settings, params=params)
    split(settings=settings, params=params)
    version = train(settings=settings, params=params, family="baseline").version
    promote(settings=settings, version=version, reason="monitoring tests", by="tests")
    return Env(settings, params, read_split(settings, "test"))


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return champion_env(tmp_path_factory.mktemp("fashion"), "fashion-sample", 900)


@pytest.fixture(scope="module")
def marketplace(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return champion_env(tmp_path_factory.mktemp("marketplace"), "marketplace-sample", 300)


@pytest.fixture
def database(postgres_url: str) -> str:
    upgrade(postgres_url)
    return postgres_url


def log_requests(env: Env, database: str, products: list[dict[str, Any]], labels: list[str] | None = None) -> None:
    """Write requests the way the API writes them: its validation, the champion's predict, the
    writer's insert; ``labels`` become feedback on the first of them."""
    champion, _ = find_champion(env.settings)
    model = load_champion_model(champion)
    validated = [Product.model_validate(p).record() for p in products]  # what the API would accept and store
    out = model.predict(None, records_frame(validated), params={"top_k": 3})
    now, batch = datetime.now(UTC), str(uuid.uuid4())
    rows = [{
        "request_id": str(uuid.uuid4()), "batch_id": batch, "position": i, "created_at": now, "product": record,
        "label": answer["label"], "probability": answer["probability"],
        "top_k": [{"label": label, "probability": p}
                  for label, p in zip(answer["top_labels"], answer["top_probabilities"], strict=True)],
        "model_name": champion.name, "model_version": champion.version, "latency_ms": 1.0, "api_key_id": None,
    } for i, (record, answer) in enumerate(zip(validated, out.to_dict("records"), strict=True))]
    engine = make_engine(database)
    try:
        assert insert_rows(engine, rows, reject=lambda row, exc: pytest.fail(f"row refused: {exc}")) == len(rows)
        with session_factory(engine)() as session:
            for row, label in zip(rows, labels or [], strict=False):
                record_feedback(session=session, request_id=row["request_id"], label=label, api_key_id=None)
    finally:
        engine.dispose()


def check(env: Env, database: str, case: str) -> DriftCheckResult:
    result = run_drift_check(settings=env.settings, params=env.params, db_url=database)
    measured = {s.name: (None if s.value is None else round(s.value, 3), s.threshold)
                for s in result.decision.signals if s.value is not None}
    log.info("%s: drifted=%s fired=%s retrain=%s measured=%s reasons=%s", case, result.decision.drifted,
             [s.name for s in result.decision.fired], result.advice.retrain, measured, result.advice.reasons)
    return result


def fired(result: DriftCheckResult) -> set[str]:
    return {s.name for s in result.decision.fired}


@pytest.fixture
def fashion_api(fashion: Env, database: str, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    engine = make_engine(database)
    with session_factory(engine)() as session:
        _, key = create_api_key(session=session, name="shop")
    engine.dispose()
    with TestClient(create_app(api_settings(tmp_path, database), fashion.settings)) as client:
        wait_ready(client)
        yield client, key


def test_held_back_fashion_rows_sent_through_the_api_are_not_drift(fashion: Env, fashion_api, database) -> None:
    client, key = fashion_api
    window = fashion.test.sample(n=300, random_state=1)
    ids: list[str] = []
    for start in range(0, len(window), 100):
        answer = client.post("/predict", json=records(window.iloc[start:start + 100]))
        assert answer.status_code == 200, answer.text
        ids += [p["request_id"] for p in answer.json()["predictions"]]
    for request_id, label in list(zip(ids, window["label"], strict=True))[:60]:  # the shop confirms 60 labels
        assert client.post("/feedback", json={"request_id": request_id, "label": label},
                           headers={"X-API-Key": key}).status_code == 201
    engine = make_engine(database)
    wait_for(lambda: _count(engine) == 300, what="the request log")
    engine.dispose()

    result = check(fashion, database, "fashion held-back via API")
    assert result.decision.status == "ok" and result.decision.current_rows == 300
    assert result.decision.labelled_rows == 60
    assert not result.decision.drifted, result.summary
    advice = retrain_advice(db_url=database)
    assert not result.advice.retrain and not advice.retrain and f"drift check {result.check_id}" in advice.reasons[0]

    listed = client.get("/reports/drift").json()
    assert [c["id"] for c in listed] == [result.check_id] and listed[0]["drifted"] is False
    html = client.get("/reports/drift/latest")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "drawDashboard" in html.text and "title_chars" in html.text  # Evidently's page, our descriptors
    assert f"v{result.summary['model_version']}: no drift; retrain: no" in html.text  # the verdict on top
    assert client.get(listed[0]["quality_url"]).status_code == 200  # 60 labelled rows: a quality report
    assert client.get(f"/reports/drift/{result.check_id + 1}").status_code == 404


def _count(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(PredictionLog)).scalar_one()


def test_one_category_flooding_in_is_prediction_drift_only(fashion: Env, database: str) -> None:
    flood = fashion.test[fashion.test["label"] == "Tshirts"]  # 9% of the reference's labels
    others = fashion.test[fashion.test["label"] != "Tshirts"].sample(n=100, random_state=2)
    log_requests(fashion, database, records(pd.concat([flood, others])))
    result = check(fashion, database, f"fashion flood: {len(flood)} T-shirts + 100 others")
    assert result.decision.drifted
    # The products are ordinary fashion products: only the mix of what the model answers moved.
    assert fired(result) == {"predicted_label"}, result.summary
    assert not result.advice.retrain and "watch" in result.advice.reasons[0]


def test_french_rakuten_listings_against_the_english_fashion_champion(
    fashion: Env, database: str, tmp_path: Path
) -> None:
    rakuten_settings = fashion.settings.model_copy(update={"interim_dir": tmp_path / "rakuten",
                                                           "reports_dir": tmp_path / "rakuten-reports"})
    ingest(settings=rakuten_settings, params=fashion.params, dataset="rakuten-sample")
    listings = pd.read_parquet(IngestOutputs.for_settings(rakuten_settings).products).sample(n=300, random_state=3)
    log_requests(fashion, database, records(listings), labels=listings["label"].tolist()[:60])
    result = check(fashion, database, "Rakuten (French) vs fashion champion")
    assert result.decision.drifted
    assert {"non_ascii", "oov_rate", "title_length", "title_text", "confidence_drop", "accuracy_drop"} <= fired(
        result), result.summary
    # Rakuten rows carry descriptions the fashion catalogue lacks: more input, not a broken feed.
    signals = {s.name: s for s in result.decision.signals}
    assert signals["description_empty"].fired and signals["description_empty"].kind == "input"
    assert not fired(result) & {"brand_empty", "price_missing"}, result.summary
    assert result.advice.retrain and "measurably worse" in result.advice.reasons[0]


@pytest.fixture
def cli(marketplace: Env, database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Result]]:
    """`productcat` with the environment pointing at the marketplace champion and the test database."""
    s = marketplace.settings
    for name, value in {"INTERIM_DIR": s.interim_dir, "PROCESSED_DIR": s.processed_dir, "REPORTS_DIR": s.reports_dir,
                        "MLFLOW_TRACKING_URI": s.tracking_uri, "MLFLOW_ARTIFACT_ROOT": s.mlflow_artifact_root}.items():
        monkeypatch.setenv(f"PRODUCTCAT_{name}", str(value))
    monkeypatch.setenv("DATABASE_URL", database)
    get_settings.cache_clear()
    get_api_settings.cache_clear()
    yield lambda *args: CliRunner().invoke(app, ["drift", *args])
    get_settings.cache_clear()
    get_api_settings.cache_clear()


def test_held_back_marketplace_rows_are_not_drift(marketplace: Env, database: str, cli) -> None:
    log_requests(marketplace, database, records(marketplace.test.sample(n=250, random_state=4)))
    ran = cli("--json")
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.stdout)
    log.info("marketplace held-back: %s", {k: (v["value"], v["threshold"]) for k, v in summary["signals"].items()})
    assert summary["status"] == "ok" and summary["current_rows"] == 250
    assert summary["drifted"] is False and summary["fired"] == [], summary
    assert summary["retrain"] is False and summary["reference_matches_champion"] is True


def test_a_handful_of_requests_gets_no_verdict(marketplace: Env, database: str, cli) -> None:
    log_requests(marketplace, database, corrupt(marketplace.test.head(20)))
    ran = cli()
    assert ran.exit_code == 0, ran.output
    assert "insufficient_data" in ran.output and "retrain: no" in ran.output
    assert _stored(database).report_html is None  # nothing to report on: no Evidently run


def corrupt(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """An export gone wrong: titles cut at 20 characters, descriptions blank, prices as text
    (formatted, and blank on every second row). All of it passes the API's validation."""
    out = []
    for i, record in enumerate(records(frame)):
        price = record.get("price")
        record |= {"title": record["title"][:20], "description": "",
                   "price": "" if i % 2 or price is None else f"£{price:,.2f}"}
        out.append(record)
    return out


def test_a_corrupted_feed_is_drift_of_its_fields_and_asks_to_fix_the_feed(
    marketplace: Env, database: str
) -> None:
    log_requests(marketplace, database, corrupt(marketplace.test.sample(n=250, random_state=4)))
    result = check(marketplace, database, "marketplace corrupted feed")
    assert {"title_length", "description_empty", "price_missing"} <= fired(result), result.summary
    # Text prices that can be read are read: the price distribution itself does not move.
    assert not fired(result) & {"non_ascii", "brand_empty", "price"}, result.summary
    signals = {s.name: s for s in result.decision.signals}
    assert signals["description_empty"].current == 1.0 and signals["price_missing"].current == pytest.approx(0.5)
    assert not result.advice.retrain and "fix the feed" in result.advice.reasons[0]

    # Its traces: files under the reports folder, a drift_checks row, the champion's MLflow run.
    row = _stored(database)
    assert row.id == result.check_id and row.drifted and not row.retrain and "price_missing" in row.signals
    assert row.details["price_missing"]["current"] == pytest.approx(0.5)
    folder = Path(row.report_html).parent
    assert {p.name for p in folder.iterdir()} == {"decision.json", "report.html", "report.json"}
    champion, client = find_champion(marketplace.settings)
    logged = MlflowClient(tracking_uri=marketplace.settings.tracking_uri).list_artifacts(
        champion.run_id, f"drift/{folder.name}")
    assert {Path(a.path).name for a in logged} == {"decision.json", "report.html", "report.json"}
    history = client.get_metric_history(champion.run_id, "drift_detected")
    assert [m.value for m in history][-1] == 1.0


def _stored(database: str) -> DriftCheck:
    engine = make_engine(database)
    try:
        with session_factory(engine)() as session:
            (row,) = session.scalars(sa.select(DriftCheck)).all()
            return row
    finally:
        engine.dispose()
