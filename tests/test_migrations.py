"""Alembic migrations of the request-log database, on SQLite and on the real Postgres."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from api.db.migrate import current_revision, downgrade, upgrade
from api.db.models import Base
from tests.conftest import REPO_ROOT, head_revision

TABLES = {"prediction_log", "feedback", "api_keys", "drift_checks"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'requests.db'}"
    return request.getfixturevalue("postgres_url")


def inspect(url: str) -> tuple[set[str], dict[str, bool]]:
    """Table names, and every index name with whether it is unique."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        tables = set(inspector.get_table_names())
        indexes = {
            ix["name"]: bool(ix["unique"])
            for table in tables & TABLES
            for ix in inspector.get_indexes(table)
            if "duplicates_constraint" not in ix  # Postgres lists a unique constraint's own index too
        }
        return tables, indexes
    finally:
        engine.dispose()


def test_upgrade_creates_the_tables_and_downgrade_removes_them(database_url: str) -> None:
    assert current_revision(database_url) is None
    upgrade(database_url)
    upgrade(database_url)  # a second start finds nothing to do

    tables, indexes = inspect(database_url)
    assert tables >= TABLES
    assert current_revision(database_url) == head_revision()
    assert indexes == {
        "ix_prediction_log_batch_id": False, "ix_prediction_log_created_at": False,
        "ix_feedback_request_id": False, "ix_api_keys_prefix": True, "ix_drift_checks_created_at": False,
    }

    downgrade(database_url, "base")
    tables, _ = inspect(database_url)
    assert not tables & TABLES
    assert current_revision(database_url) is None


def test_the_migration_matches_the_models(database_url: str) -> None:
    upgrade(database_url)
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_alembic_ini_at_the_root_migrates_the_configured_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.chdir(REPO_ROOT)
    config = Config("alembic.ini")
    config.attributes["configure_logger"] = False  # keep pytest's logging as it is
    command.upgrade(config, "head")
    assert inspect(url)[0] >= TABLES

    # What a person types: the `alembic` command from the project root, URL from the environment.
    result = subprocess.run([sys.executable, "-m", "alembic", "current"], cwd=REPO_ROOT, capture_output=True,
                            text=True, env={**os.environ, "DATABASE_URL": url}, check=True, timeout=60)
    assert f"{head_revision()} (head)" in result.stdout


def test_0003_gives_existing_keys_predict_and_feedback_and_chains_feedback(database_url: str) -> None:
    upgrade(database_url, "0002")
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO api_keys (id, name, prefix, key_hash, created_at) VALUES "
            "(1, 'old-shop', 'aaaa1111', :h, CURRENT_TIMESTAMP), (2, 'old-bot', 'bbbb2222', :h, CURRENT_TIMESTAMP)"
        ), {"h": "0" * 64})
        conn.execute(sa.text(
            "INSERT INTO feedback (id, request_id, label, created_at, api_key_id) VALUES "
            "(1, 'r1', 'Tops', CURRENT_TIMESTAMP, 1), (2, 'r2', 'Shirts', CURRENT_TIMESTAMP, 2),"
            "(3, 'r1', 'Dresses', CURRENT_TIMESTAMP, 1)"
        ))
    upgrade(database_url)
    with engine.connect() as conn:
        scopes = dict(conn.execute(sa.text("SELECT name, scopes FROM api_keys")).all())
        chain = conn.execute(sa.text("SELECT id, previous_id FROM feedback ORDER BY id")).all()
    engine.dispose()
    assert scopes == {"old-shop": "predict,feedback", "old-bot": "predict,feedback"}  # never admin
    assert [tuple(row) for row in chain] == [(1, 0), (2, 0), (3, 1)]

    downgrade(database_url, "0002")  # and back: the columns go, the rows stay
    assert current_revision(database_url) == "0002"
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM feedback")).scalar_one() == 3
        assert "scopes" not in {c["name"] for c in sa.inspect(conn).get_columns("api_keys")}
    engine.dispose()


def test_0005_adds_lineage_columns_that_rows_logged_before_do_without(database_url: str) -> None:
    from datetime import UTC, datetime

    from api.db.log_store import insert_rows

    upgrade(database_url, "0004")
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO prediction_log (request_id, batch_id, position, created_at, product, label, probability, "
            "top_k, model_name, model_version, latency_ms) VALUES "
            "('old', 'b1', 0, CURRENT_TIMESTAMP, '{\"title\": \"Shirt\"}', 'Shirts', 0.9, '[]', 'm', '1', 3.0)"))
    upgrade(database_url)
    # A row spooled before the upgrade (no lineage keys) replays beside one that has them.
    spooled = {"request_id": "spooled", "batch_id": "b2", "position": 0, "created_at": datetime.now(UTC).isoformat(),
               "product": {"title": "Belt"}, "label": "Belts", "probability": 0.8, "top_k": [], "model_name": "m",
               "model_version": "1", "latency_ms": 2.0, "api_key_id": None}
    new = spooled | {"request_id": "new", "run_id": "r" * 32, "data_version": "d" * 32,
                     "model_git_commit": "a" * 40, "serving_git_commit": "b" * 40 + "-dirty"}
    assert insert_rows(engine, [spooled, new], reject=lambda row, exc: pytest.fail(str(exc))) == 2
    columns = "request_id, run_id, data_version, model_git_commit, serving_git_commit"
    with engine.connect() as conn:
        rows = {r[0]: tuple(r[1:]) for r in conn.execute(sa.text(f"SELECT {columns} FROM prediction_log"))}
    assert rows == {"old": (None,) * 4, "spooled": (None,) * 4,
                    "new": ("r" * 32, "d" * 32, "a" * 40, "b" * 40 + "-dirty")}

    downgrade(database_url, "0004")  # and back: the columns go, the rows stay
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM prediction_log")).scalar_one() == 3
        assert "run_id" not in {c["name"] for c in sa.inspect(conn).get_columns("prediction_log")}
    engine.dispose()
