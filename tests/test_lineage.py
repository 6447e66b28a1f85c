"""Lineage in every prediction: the request-log row names the training run, data version and the
code that trained and served the model; GET /model shows the same; `productcat lineage <id>` walks
from a logged answer to the run, dataset, data version and the promotion that made it champion."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.code_version import serving_code_version
from api.db.migrate import upgrade
from api.main import create_app
from api.settings import APISettings, get_api_settings
from ml.registry import git_commit, registry_client, set_version_tags
from ml.settings import MLSettings, get_settings
from productcat.cli import app as cli
from tests.api_support import api_settings, build_registry, wait_ready
from tests.conftest import REPO_ROOT, fresh_database

pytestmark = pytest.mark.integration

SHIRT = {"title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle", "price": "$24.99"}
IMAGE_COMMIT = "0123456789abcdef0123456789abcdef01234567"  # as a Docker build would pass PRODUCTCAT_CODE_VERSION


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLSettings, str]:
    settings, versions = build_registry(tmp_path_factory.mktemp("lineage"), sizes=(300,))
    # What the gate records on a version it passed (ml/gate.py), read back by `productcat lineage`.
    set_version_tags(registry_client(settings), settings, versions[0], {
        "gate_decision": "pass", "gate_reasons": json.dumps(["PASS: macro-F1 0.61 >= 0.30"])})
    return settings, versions[0]


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database() as url:
        upgrade(url)
        yield url


def _row(database: str, request_id: str) -> dict:
    engine = sa.create_engine(database)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM prediction_log WHERE request_id = :id"), {"id": request_id})
        found = dict(row.mappings().one())
    engine.dispose()
    return found


def _lineage(monkeypatch: pytest.MonkeyPatch, settings: MLSettings, database: str, *args: str):
    monkeypatch.setenv("DATABASE_URL", database)
    monkeypatch.setenv("PRODUCTCAT_MLFLOW_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("PRODUCTCAT_PROJECT_ROOT", str(REPO_ROOT))
    get_settings.cache_clear()
    get_api_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, ["lineage", *args])
    finally:
        get_settings.cache_clear()
        get_api_settings.cache_clear()


def test_a_prediction_leads_back_to_its_run_data_code_and_promotion(registry, database, tmp_path, monkeypatch):
    settings, version = registry
    client = registry_client(settings)
    run_id = client.get_model_version(settings.registered_model, version).run_id
    run_tags = client.get_run(run_id).data.tags
    served = api_settings(tmp_path, database, PRODUCTCAT_CODE_VERSION=IMAGE_COMMIT)
    with TestClient(create_app(served, settings)) as service:
        wait_ready(service)
        request_id = service.post("/predict", json=SHIRT).json()["predictions"][0]["request_id"]
        info = service.get("/model").json()
    assert (info["run_id"], info["data_version"], info["model_git_commit"], info["serving_git_commit"]) == (
        run_id, run_tags["data_content_md5"], run_tags["git_commit"], IMAGE_COMMIT)

    row = _row(database, request_id)  # the writer drained on shutdown
    assert (row["model_version"], row["run_id"], row["data_version"], row["model_git_commit"],
            row["serving_git_commit"]) == (version, run_id, run_tags["data_content_md5"], run_tags["git_commit"],
                                           IMAGE_COMMIT)

    result = _lineage(monkeypatch, settings, database, request_id, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["request"]["serving_git_commit"] == IMAGE_COMMIT and found["request"]["channel"] == "http"
    assert found["model"]["version"] == version
    assert found["run"]["run_id"] == run_id and found["run"]["params"]["max_train_samples"] == "300"
    assert "val_macro_f1" in found["run"]["metrics"] and found["run"]["tags"]["git_commit"] == run_tags["git_commit"]
    assert found["dataset"]["key"] == "fashion-sample" and found["dataset"]["format"] == "csv"
    assert found["data_version"]["data_content_md5"] == row["data_version"]
    promotion = found["promotion"]
    assert promotion["gate_decision"] == "pass" and promotion["gate_reasons"] == ["PASS: macro-F1 0.61 >= 0.30"]
    assert [(m["to_version"], m["why"]) for m in promotion["alias_moves"]] == [(version, "test fixture")]

    printed = _lineage(monkeypatch, settings, database, request_id)
    assert printed.exit_code == 0 and "fashion-sample" in printed.output and IMAGE_COMMIT in printed.output


def test_an_unknown_request_id_is_one_readable_line(registry, database, monkeypatch):
    result = _lineage(monkeypatch, registry[0], database, "no-such-request")
    assert result.exit_code == 2
    assert "no prediction with request id 'no-such-request'" in result.output and "Traceback" not in result.output


def test_the_serving_code_version_is_the_checkout_head_or_unknown(tmp_path):
    # Fields with environment aliases take the alias as keyword (a plain project_root= is ignored).
    checkout = APISettings(PRODUCTCAT_PROJECT_ROOT=REPO_ROOT)
    assert serving_code_version(checkout) == git_commit(MLSettings(project_root=REPO_ROOT))
    assert serving_code_version(APISettings(PRODUCTCAT_PROJECT_ROOT=tmp_path)) is None  # an image without .git
