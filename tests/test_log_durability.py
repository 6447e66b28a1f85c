"""Write-ahead request logging: a row is on disk before its response is sent, so a process killed
under load (SIGKILL, no shutdown) loses no answered request's row, and the next process replays
the journal without doubling any."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from api.db.migrate import upgrade
from api.db.session import make_engine
from api.request_log import RequestLogWriter
from api.settings import APISettings
from tests.api_support import build_registry, wait_for
from tests.conftest import REPO_ROOT

SHIRT = {"title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle", "price": "$24.99"}
CLIENTS = 8


def row(request_id: str) -> dict[str, object]:
    return {"request_id": request_id, "batch_id": request_id, "position": 0, "product": {"title": "Shirt"},
            "label": "Shirts", "probability": 0.9, "top_k": [], "model_name": "m", "model_version": "1",
            "latency_ms": 1.0, "api_key_id": None}


def count_rows(url: str, request_ids: list[str] | None = None) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            query = "SELECT count(*) FROM prediction_log"
            if request_ids is None:
                return int(connection.execute(sa.text(query)).scalar_one())
            return len(set(request_ids) & set(connection.scalars(sa.text("SELECT request_id FROM prediction_log"))))
    finally:
        engine.dispose()


def test_rows_are_on_disk_when_log_durably_returns_and_retired_once_written(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'requests.db'}"
    upgrade(url)
    # A long flush interval: the rows are still only in memory and in the journal when we look.
    settings = APISettings(spool_dir=tmp_path / "spool", log_flush_seconds=30, log_batch_size=1000)
    engine = make_engine(url)
    writer = RequestLogWriter(settings=settings, engine=engine)
    writer.start()
    ids = [f"req-{i}" for i in range(50)]

    async def answer_all() -> None:  # concurrent requests, sharing fsyncs (group commit)
        await asyncio.gather(*(writer.log_durably([row(request_id)]) for request_id in ids))

    asyncio.run(answer_all())
    journal = b"".join(path.read_bytes() for path in (tmp_path / "spool").glob("spool-*.jsonl"))
    assert writer.journaled == 50 and all(f'"{request_id}"'.encode() in journal for request_id in ids)
    assert count_rows(url) == 0 and all(writer.is_pending(request_id) for request_id in ids)

    writer.close()
    engine.dispose()
    assert count_rows(url) == 50 and writer.written == 50 and writer.spooled == 0
    assert not list((tmp_path / "spool").glob("spool-*.jsonl"))  # every row in the table: journal retired


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(env: dict[str, str], log_file: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    with log_file.open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"],
            cwd=REPO_ROOT, env=os.environ | env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert server.poll() is None, f"the server exited; see {log_file}"
        try:
            return httpx.get(f"{url}/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=60, what="the API to be ready")
        yield server, url
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


@pytest.mark.integration
@pytest.mark.slow
def test_a_process_killed_under_load_loses_no_answered_row(tmp_path: Path, postgres_url: str) -> None:
    upgrade(postgres_url)
    ml_settings, _ = build_registry(tmp_path / "registry", sizes=(300,))
    env = {"PRODUCTCAT_PROJECT_ROOT": str(REPO_ROOT), "PRODUCTCAT_MLFLOW_TRACKING_URI": ml_settings.tracking_uri,
           "DATABASE_URL": postgres_url, "PRODUCTCAT_API_SPOOL_DIR": str(tmp_path / "spool"),
           "PRODUCTCAT_API_LOG_DURABILITY": "write-ahead", "PRODUCTCAT_API_RATE_LIMIT_PREDICT_PER_ADDRESS": "0",
           # A long flush interval keeps answered rows in memory: without the journal they would die.
           "PRODUCTCAT_API_LOG_FLUSH_SECONDS": "2", "PRODUCTCAT_API_LOG_BATCH_SIZE": "1000"}
    answered: list[str] = []
    stop = threading.Event()

    with serving(env, tmp_path / "server.log") as (server, url):

        def client() -> None:
            with httpx.Client(base_url=url, timeout=10) as http:
                while not stop.is_set():
                    try:
                        response = http.post("/predict", json=SHIRT)
                    except httpx.HTTPError:
                        return  # the server is gone
                    if response.status_code == 200:
                        answered.append(response.json()["predictions"][0]["request_id"])

        clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in clients:
            thread.start()
        try:
            wait_for(lambda: len(answered) >= 100, timeout=60, what="answered requests under load")
            server.send_signal(signal.SIGKILL)  # mid-load: requests in flight, rows queued in memory
            server.wait(timeout=10)
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=15)
    answered_at_kill = list(answered)
    assert count_rows(postgres_url, answered_at_kill) < len(answered_at_kill)  # some rows were only on disk

    with serving(env, tmp_path / "server.log"):  # same spool folder: adopts the dead process's journal
        wait_for(lambda: count_rows(postgres_url, answered_at_kill) == len(answered_at_kill), timeout=30,
                 what="every answered request's row")
        wait_for(lambda: not list((tmp_path / "spool").glob("spool-*.jsonl")), timeout=30,
                 what="the adopted journal to be retired")
    # request_id is the primary key, so no row is doubled; rows beyond the answered ones can only be
    # requests journaled but killed before their answer left (at most one in flight per client).
    assert len(answered_at_kill) <= count_rows(postgres_url) <= len(answered_at_kill) + CLIENTS
