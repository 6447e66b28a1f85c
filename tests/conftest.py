from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ml.params import Params, load_params
from ml.settings import MLSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT / "data" / "sample"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHROMIUM = os.environ.get("PRODUCTCAT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_WAIT_MS = 60_000  # a busy two-core machine: Playwright's expect() retries until then


def sample_store(root: Path) -> tuple[MLSettings, Params]:
    """A throwaway MLflow store under ``root`` with the bundled fashion sample ingested and split."""
    from ml.ingest import ingest
    from ml.split import split

    settings = MLSettings(
        project_root=REPO_ROOT, interim_dir=root / "interim", processed_dir=root / "processed",
        reports_dir=root / "reports", mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        mlflow_artifact_root=root / "artifacts",
    )
    params = load_params(settings)
    params.ingest.dataset = "fashion-sample"
    ingest(settings=settings, params=params)
    split(settings=settings, params=params)
    return settings, params


@pytest.fixture
def settings(tmp_path: Path) -> MLSettings:
    """Repo params and bundled sample, with every output in a temporary folder."""
    return MLSettings(
        project_root=REPO_ROOT,
        interim_dir=tmp_path / "interim",
        processed_dir=tmp_path / "processed",
        reports_dir=tmp_path / "reports",
    )


@pytest.fixture
def params(settings: MLSettings) -> Params:
    return load_params(settings)


def write_jsonl_gz(path: Path, rows: Iterable[dict[str, Any] | str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def read_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture
def amazon_rows() -> list[dict[str, Any]]:
    """The real Amazon-2018 rows bundled with the sample."""
    return read_jsonl_gz(SAMPLE_DIR / "amazon2018_meta.jsonl.gz")


@pytest.fixture
def with_dataset(params: Params) -> Callable[..., Params]:
    """Params with one extra dataset entry (name 'under-test'), selected for ingest."""

    def make(**spec: Any) -> Params:
        data = params.model_dump()
        data["datasets"]["under-test"] = spec
        data["ingest"]["dataset"] = "under-test"
        return Params.model_validate(data)

    return make


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local[2] SparkSession for the whole run (startup costs ~15 s), stopped at the end.

    pyspark is imported here, not at module level, so collecting tests never starts a JVM.
    """
    pytest.importorskip("pyspark", reason="the spark extra is not installed")
    from ml.spark_session import spark_session

    session = spark_session(
        MLSettings(project_root=REPO_ROOT, spark_master="local[2]", spark_shuffle_partitions=2),
        app_name="productcat-tests",
    )
    yield session
    session.stop()


POSTGRES_ADMIN_URL = os.environ.get("PRODUCTCAT_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database on the real Postgres server, dropped afterwards."""
    import sqlalchemy as sa

    name = f"productcat_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(sa.text(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def head_revision() -> str:
    """The newest Alembic revision of the request-log database."""
    from alembic.script import ScriptDirectory

    from api.db.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def run_dvc(project: Path, *args: str) -> str:
    """`dvc` in ``project`` with the project's own paths (PRODUCTCAT_* folder overrides dropped)."""
    bin_dir = Path(sys.executable).parent
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for name in ("INTERIM_DIR", "PROCESSED_DIR", "REPORTS_DIR", "PARAMS_FILE", "PROJECT_ROOT"):
        env.pop(f"PRODUCTCAT_{name}", None)
    done = subprocess.run([str(bin_dir / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def make_dvc_project(root: Path, remote: Path) -> Path:
    """A copy of the pipeline definition, its code and the sample in a git + DVC repo of its own,
    with ``remote`` as its default DVC remote."""
    root.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "ml", root / "ml", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(SAMPLE_DIR, root / "data" / "sample")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    run_dvc(root, "init", "-q")
    run_dvc(root, "remote", "add", "-d", "local", str(remote))
    return root


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (no browser download is possible), one per test module.
    Missing, it fails the run under CI (.ci/run installs it) and skips elsewhere."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM}: .ci/run installs the Debian package `chromium`")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=BROWSER_WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()
