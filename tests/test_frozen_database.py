"""A database that hangs instead of refusing (its processes frozen with SIGSTOP) is treated like a
down one: /ready answers at once, /predict goes on, rows wait on disk and arrive exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.db.migrate import upgrade
from api.main import create_app
from api.request_log import RequestLogWriter
from tests.api_support import api_settings, build_registry, logged_ids, wait_for, wait_ready
from tests.pg_cluster import throwaway_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHIRT = {"title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle", "price": "$24.99"}
TIMEOUTS = {"db_connect_timeout_seconds": 1.0, "db_statement_timeout_seconds": 1.0, "db_pool_timeout_seconds": 1.0,
            "ready_timeout_seconds": 1.0, "rate_limit_predict_per_address": 0}


def predict(client: TestClient) -> str:
    started = time.monotonic()
    response = client.post("/predict", json=SHIRT)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 2.0  # the answer never waits for the database
    return response.json()["predictions"][0]["request_id"]


def test_a_frozen_database_is_treated_as_down_and_gets_every_row_once_it_thaws(tmp_path: Path) -> None:
    ml_settings, _ = build_registry(tmp_path / "registry", sizes=(300,))
    with throwaway_cluster() as cluster:
        upgrade(cluster.url)
        settings = api_settings(tmp_path, cluster.url, **TIMEOUTS)
        with TestClient(create_app(settings, ml_settings)) as client:
            wait_ready(client)
            writer: RequestLogWriter = client.app.state.service.writer
            answered = [predict(client) for _ in range(5)]
            wait_for(lambda: writer.written >= 5, timeout=10, what="rows written before the freeze")

            cluster.freeze()
            try:
                refused = 0  # polled as a load balancer would (an answer under a second old is reused)
                deadline = time.monotonic() + 15
                while refused < 3:
                    assert time.monotonic() < deadline, "/ready never reported the frozen database"
                    started = time.monotonic()
                    ready = client.get("/ready")
                    assert time.monotonic() - started < 3.0  # bounded, whatever the database does
                    if ready.status_code == 503:
                        refused += 1
                        assert ready.json()["database"] is False and ready.json()["database_error"]
                    assert sum(t.name == "db-probe" for t in threading.enumerate()) <= 1  # no pile-up
                answered += [predict(client) for _ in range(20)]
                # The writer's insert times out like a refused connection: the rows wait on disk.
                wait_for(lambda: writer.spooled >= 20, timeout=15, what="rows set aside during the freeze")
                assert sorted((tmp_path / "spool").glob("spool-*.jsonl"))
                assert all(writer.is_pending(request_id) for request_id in answered[5:])
            finally:
                cluster.thaw()

            wait_for(lambda: set(answered) <= set(logged_ids(cluster.url)), timeout=30,
                     what="the set-aside rows to reach the table")
            wait_ready(client)
        ids = logged_ids(cluster.url)
        assert sorted(ids) == sorted(answered)  # nothing lost, nothing doubled
        assert writer.lost == writer.rejected == 0
        assert not sorted((tmp_path / "spool").glob("spool-*.jsonl"))  # replayed, then retired
