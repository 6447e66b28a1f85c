"""End to end on the local stack that `make demo` starts (infra/scripts/local_stack.py):
MLflow UI, Airflow (its components, as `airflow standalone` runs them) and the API answer on
their ports; `product_retrain` triggered through Airflow's REST API registers a new version with the gate's decision in
its tags, and the API, which follows the `champion` alias, serves it and logs to Postgres.

Everything lives in a temporary folder (stores, Airflow home, pid files) on free ports, so
a demo running on this machine is left alone. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT, fresh_database, sample_store

STACK = [sys.executable, str(REPO_ROOT / "infra" / "scripts" / "local_stack.py")]
RUN_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.mlflow = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
        self.airflow = f"http://127.0.0.1:{env['AIRFLOW_PORT']}"
        self.api = f"http://127.0.0.1:{env['API_PORT']}"

    def script(self, *args: str, timeout: float = 360) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*STACK, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def airflow_client(self) -> httpx.Client:
        """A client holding a JWT from Airflow's simple auth manager (the password `standalone` generated)."""
        generated = Path(self.env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        user, password = next(iter(json.loads(generated.read_text()).items()))
        token = httpx.post(f"{self.airflow}/auth/token", json={"username": user, "password": password}, timeout=30)
        token.raise_for_status()
        return httpx.Client(base_url=f"{self.airflow}/api/v2", timeout=30,
                            headers={"Authorization": f"Bearer {token.json()['access_token']}"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Any]]:
    """A weak first champion (300 training rows), then the three services on free ports."""
    from ml.gate import promote
    from ml.train import train

    root = tmp_path_factory.mktemp("stack")
    settings, params = sample_store(root)
    params.train.max_train_samples = 300
    first = train(settings=settings, params=params, family="baseline").version
    promote(settings=settings, version=first, reason="first champion of the end-to-end test", by="tests")
    with fresh_database() as db_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODUCTCAT_", "AIRFLOW"))} | {
            "PRODUCTCAT_PROJECT_ROOT": str(REPO_ROOT),
            "PRODUCTCAT_INTERIM_DIR": str(settings.interim_dir),
            "PRODUCTCAT_PROCESSED_DIR": str(settings.processed_dir),
            "PRODUCTCAT_REPORTS_DIR": str(settings.reports_dir),
            "PRODUCTCAT_MLFLOW_TRACKING_URI": settings.tracking_uri,
            "PRODUCTCAT_MLFLOW_ARTIFACT_ROOT": str(settings.mlflow_artifact_root),
            "PRODUCTCAT_RETRAIN_SCHEDULE": "none",  # only the run this test triggers
            "PRODUCTCAT_DRIFT_SCHEDULE": "none",
            "PRODUCTCAT_API_POLL_INTERVAL_SECONDS": "1",
            "PRODUCTCAT_API_SPOOL_DIR": str(root / "spool"),
            "DATABASE_URL": db_url,
            "PRODUCTCAT_RUN_DIR": str(root / "run"),
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "MLFLOW_PORT": str(free_port()), "AIRFLOW_PORT": str(free_port()), "API_PORT": str(free_port()),
        }
        stack = Stack(root, env)
        started = stack.script("up")
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            yield stack, settings
        finally:
            stopped = stack.script("down", timeout=120)
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@pytest.mark.integration
@pytest.mark.slow
def get_json(get: Callable[..., httpx.Response], url: str, *, deadline: float) -> Any:
    """A GET that outlasts a busy machine: a read that times out (or a refused connection) is
    retried; only the overall ``deadline`` fails the test."""
    while True:
        try:
            return get(url, timeout=30).json()
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


@pytest.mark.e2e
def test_every_ui_answers_on_its_port_and_the_api_serves_the_first_champion(stack):
    stack, _ = stack
    status = stack.script("status")
    assert status.returncode == 0 and status.stdout.count("answers") == 3, status.stdout
    for page in (f"{stack.mlflow}/", f"{stack.airflow}/", f"{stack.api}/docs"):
        assert httpx.get(page, timeout=30).status_code == 200, page
    assert httpx.get(f"{stack.api}/model", timeout=30).json()["version"] == "1"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.e2e
def test_retrain_triggered_over_rest_is_gated_promoted_and_served(stack):
    import sqlalchemy as sa
    from mlflow import MlflowClient

    from api.db.models import PredictionLog

    stack, settings = stack
    conf = {"family": "baseline", "max_train_samples": 2500, "promote": True, "reason": "end-to-end test"}
    with stack.airflow_client() as airflow:
        created = airflow.post("/dags/product_retrain/dagRuns", json={"logical_date": None, "conf": conf})
        assert created.status_code == 200, created.text
        run_id = created.json()["dag_run_id"]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        run_url = f"/dags/product_retrain/dagRuns/{run_id}"
        while (state := get_json(airflow.get, run_url, deadline=deadline)["state"]) in {"queued", "running"}:
            assert time.monotonic() < deadline, f"product_retrain still {state} after {RUN_TIMEOUT_S} s"
            time.sleep(3)
        tasks = get_json(airflow.get, f"{run_url}/taskInstances", deadline=deadline + 60)["task_instances"]
    assert state == "success", {t["task_id"]: t["state"] for t in tasks}
    assert {t["task_id"] for t in tasks} == {"pull_data", "ingest", "split", "version_data", "train", "evaluate",
                                             "gate", "notify"}

    client = MlflowClient(settings.tracking_uri)
    new = client.get_model_version("product-classifier", "2")
    assert new.tags["gate_decision"] == "pass", new.tags
    assert str(client.get_model_version_by_alias("product-classifier", "champion").version) == "2"

    deadline = time.monotonic() + 60  # the API polls the alias every second here
    while get_json(httpx.get, f"{stack.api}/model", deadline=deadline)["version"] != "2":
        assert time.monotonic() < deadline, "the API did not follow the champion alias to v2"
        time.sleep(1)
    answer = httpx.post(f"{stack.api}/predict", json={"title": "Puma Men Black Running Shoes"}, timeout=30)
    assert answer.status_code == 200 and answer.json()["model"]["version"] == "2", answer.text
    request_id = answer.json()["predictions"][0]["request_id"]

    engine = sa.create_engine(stack.env["DATABASE_URL"])
    try:
        deadline = time.monotonic() + 30  # rows are written by a background writer
        while True:
            with engine.connect() as conn:
                row = conn.execute(sa.select(PredictionLog).where(PredictionLog.request_id == request_id)).first()
            if row is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        engine.dispose()
    assert row is not None and row.model_version == "2"
