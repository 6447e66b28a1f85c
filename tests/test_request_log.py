"""The request-log writer: batches, a real database outage, crash recovery, back-pressure, shutdown."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from api.db.migrate import upgrade
from api.db.models import PredictionLog
from api.db.session import make_engine
from api.request_log import RequestLogWriter
from api.settings import APISettings
from api.spool import Spool
from tests.api_support import logged_ids
from tests.conftest import POSTGRES_ADMIN_URL


def make_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "request_id": str(uuid.uuid4()), "batch_id": str(uuid.uuid4()), "position": 0,
        "product": {"title": "Red cotton shirt", "price": 12.5}, "label": "Shirts", "probability": 0.91,
        "top_k": [{"label": "Shirts", "probability": 0.91}, {"label": "Tops", "probability": 0.05}],
        "model_name": "product-classifier", "model_version": "3", "latency_ms": 4.2, "api_key_id": None,
    }
    return row | overrides


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def api_settings(tmp_path: Path, **overrides: Any) -> APISettings:
    options = {"spool_dir": tmp_path / "spool", "log_flush_seconds": 0.05, "log_batch_size": 50} | overrides
    return APISettings(**options)


def spool_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").glob("spool-*.jsonl"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'requests.db'}"
    upgrade(url)
    return url


def test_rows_are_written_in_batches_and_reconcile(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    commits: list[int] = []
    sa.event.listen(engine, "commit", lambda _connection: commits.append(1))
    writer = RequestLogWriter(settings=api_settings(tmp_path), engine=engine)
    writer.start()
    rows = [make_row(position=i) for i in range(500)]
    for row in rows:
        writer.log(row)
    writer.close()

    assert sorted(logged_ids(sqlite_url)) == sorted(row["request_id"] for row in rows)
    assert writer.written == 500 and writer.spooled == 0
    assert 10 <= len(commits) <= 25  # batches of up to 50, not one transaction per row
    with engine.connect() as connection:
        stored = connection.execute(sa.select(PredictionLog).where(PredictionLog.request_id == rows[7]["request_id"]))
        first = stored.one()
    assert first.product == rows[7]["product"] and first.top_k == rows[7]["top_k"] and first.position == 7
    assert first.created_at.tzinfo is not None and first.created_at <= datetime.now(UTC)
    engine.dispose()


@pytest.mark.integration
def test_database_outage_spools_then_replays_every_row_exactly_once(postgres_url: str, tmp_path: Path) -> None:
    upgrade(postgres_url)
    name = sa.make_url(postgres_url).database
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    engine = make_engine(postgres_url)
    writer = RequestLogWriter(settings=api_settings(tmp_path, log_batch_size=20), engine=engine, retry_seconds=0.1)
    logged: list[str] = []
    stop = threading.Event()

    def produce() -> None:  # a steady trickle of requests, before, during and after the outage
        while not stop.is_set():
            row = make_row()
            writer.log(row)
            logged.append(row["request_id"])
            time.sleep(0.002)

    writer.start()
    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: writer.written >= 40, "rows written before the outage")
        with admin.connect() as connection:  # the database goes away: new connections refused, live ones killed
            connection.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"), {"name": name})
        with pytest.raises(sa.exc.OperationalError):
            sa.create_engine(postgres_url).connect()
        wait_for(lambda: writer.spooled >= 60, "rows spooled during the outage")
        assert spool_files(tmp_path)
        assert all(writer.is_pending(request_id) for request_id in logged[-30:])
        written_during_outage = writer.written

        with admin.connect() as connection:
            connection.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        wait_for(lambda: writer.replayed >= 60 and not spool_files(tmp_path), "the spool to be replayed")
        wait_for(lambda: writer.written > written_during_outage, "direct writes to resume")
    finally:
        stop.set()
        producer.join()
        writer.close()
        engine.dispose()
        admin.dispose()

    ids = logged_ids(postgres_url)
    assert len(ids) == len(logged) == len(set(ids))  # nothing lost, nothing doubled
    assert set(ids) == set(logged)
    assert writer.lost == writer.rejected == 0 and not spool_files(tmp_path)


def test_spool_left_by_a_crashed_writer_is_replayed_on_start(sqlite_url: str, tmp_path: Path) -> None:
    rows = [make_row(position=i, created_at=datetime.now(UTC).isoformat()) for i in range(30)]
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    (spool / "spool-1-dead.jsonl").write_text(lines + '{"request_id": "torn-by-the-cra')  # died mid-write
    engine = make_engine(sqlite_url)
    with engine.begin() as connection:  # a previous replay got this far before the crash
        connection.execute(sa.insert(PredictionLog), [{**row, "created_at": datetime.now(UTC)} for row in rows[:10]])

    writer = RequestLogWriter(settings=api_settings(tmp_path), engine=engine)
    writer.start()
    wait_for(lambda: not spool_files(tmp_path), "the orphaned spool to be replayed")
    writer.close()
    engine.dispose()

    ids = logged_ids(sqlite_url)
    assert sorted(ids) == sorted(row["request_id"] for row in rows)
    assert writer.replayed == 30 and writer.rejected == 0  # earlier rows skipped, not refused


def test_writer_closed_during_an_outage_leaves_a_spool_the_next_writer_replays(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'requests.db'}"  # not migrated yet: every insert fails like an outage
    engine = make_engine(url)
    first = RequestLogWriter(settings=api_settings(tmp_path), engine=engine)
    first.start()
    rows = [make_row(position=i) for i in range(20)]
    for row in rows:
        first.log(row)
    first.close()
    assert first.spooled == 20 and first.written == 0 and spool_files(tmp_path)

    upgrade(url)
    second = RequestLogWriter(settings=api_settings(tmp_path), engine=engine)
    second.start()
    # Never "unknown" to the feedback route: pending until its insert committed, then in the table.
    assert second.is_pending(rows[0]["request_id"]) or rows[0]["request_id"] in logged_ids(url)
    wait_for(lambda: not spool_files(tmp_path), "the previous writer's spool to be replayed")
    second.close()
    engine.dispose()
    assert sorted(logged_ids(url)) == sorted(row["request_id"] for row in rows)


def test_live_spool_files_are_not_adopted_by_another_writer(tmp_path: Path) -> None:
    mine, theirs = Spool(tmp_path), Spool(tmp_path)
    mine.append([make_row()])
    assert theirs.claim() == []  # locked by a live writer
    mine.release()  # that writer exits with rows still spooled
    assert len(theirs.claim()) == 1


def test_a_full_queue_spills_to_the_spool_and_nothing_is_dropped(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    writer = RequestLogWriter(settings=api_settings(tmp_path, log_queue_size=5), engine=engine)
    rows = [make_row(position=i) for i in range(12)]
    for row in rows:  # the writer thread is not running yet, so the queue fills up
        writer.log(row)
    assert writer.pending() == 5 and writer.spooled == 7
    assert all(writer.is_pending(row["request_id"]) for row in rows)

    writer.start()
    wait_for(lambda: len(logged_ids(sqlite_url)) == 12, "queued and spooled rows to be written")
    writer.close()
    engine.dispose()
    assert sorted(logged_ids(sqlite_url)) == sorted(row["request_id"] for row in rows)
    assert not any(writer.is_pending(row["request_id"]) for row in rows) and not spool_files(tmp_path)


def test_close_drains_the_queue_without_waiting_for_the_flush_interval(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    settings = api_settings(tmp_path, log_flush_seconds=30, log_batch_size=1000)
    writer = RequestLogWriter(settings=settings, engine=engine)
    writer.start()
    rows = [make_row(position=i) for i in range(100)]
    for row in rows:
        writer.log(row)
    started = time.monotonic()
    writer.close(timeout=10)
    assert time.monotonic() - started < 5
    assert writer.written == 100 and writer.pending() == 0
    assert sorted(logged_ids(sqlite_url)) == sorted(row["request_id"] for row in rows)

    late = make_row()
    writer.log(late)  # after close: kept on disk for the next writer, not dropped
    assert writer.spooled == 1 and spool_files(tmp_path)
    engine.dispose()


def test_close_before_start_keeps_queued_rows_on_disk(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    writer = RequestLogWriter(settings=api_settings(tmp_path), engine=engine)
    for _ in range(3):
        writer.log(make_row())
    writer.close()  # e.g. the service failed during startup
    engine.dispose()
    assert writer.spooled == 3 and len(spool_files(tmp_path)) == 1


def test_rows_the_database_refuses_are_set_aside_not_retried_forever(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    writer = RequestLogWriter(settings=api_settings(tmp_path), engine=engine)
    writer.start()
    rows = [make_row(position=i) for i in range(10)]
    rows[4]["label"] = None  # NOT NULL violation
    for row in rows:
        writer.log(row)
    writer.close()
    engine.dispose()
    assert writer.written == 9 and writer.rejected == 1 and writer.spooled == 0
    rejected = (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in rejected] == [rows[4]["request_id"]]
    assert len(logged_ids(sqlite_url)) == 9


def test_request_logging_off_discards_rows(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    writer = RequestLogWriter(settings=api_settings(tmp_path, request_logging=False), engine=engine)
    writer.start()
    row = make_row()
    writer.log(row)
    writer.close()
    engine.dispose()
    assert (writer.written, writer.spooled, writer.pending()) == (0, 0, 0)
    assert not writer.is_pending(row["request_id"])
    assert logged_ids(sqlite_url) == [] and not (tmp_path / "spool").exists()
