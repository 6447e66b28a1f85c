"""Every DAG file imports cleanly with the required settings, and each DAG runs
for real with `dag.test()` on the bundled sample."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DAGS_DIR = REPO_ROOT / "dags"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway AIRFLOW_HOME with a migrated SQLite metadata database."""
    home = tmp_path_factory.mktemp("airflow")
    os.environ.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_DIR),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return home


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.mark.integration
def test_every_dag_file_imports_with_required_settings(dagbag):
    assert dagbag.import_errors == {}
    assert {"product_retrain"} <= set(dagbag.dag_ids)
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md, f"{dag_id} needs a docstring: it is its doc in the UI"
        assert dag.tags, dag_id
        assert dag.catchup is False, dag_id
        assert dag.default_args.get("retries", 0) >= 1, dag_id


@pytest.mark.integration
def test_dag_files_do_not_import_torch_at_parse_time():
    code = "import sys, runpy; runpy.run_path(sys.argv[1]); print('torch' in sys.modules)"
    for path in DAGS_DIR.glob("*.py"):
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
        assert done.stdout.strip().endswith("False"), path


@pytest.mark.integration
@pytest.mark.slow
def test_product_retrain_trains_and_promotes_a_first_champion(dagbag, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from ml.settings import get_settings

    for name in ("interim", "processed", "reports"):
        monkeypatch.setenv(f"PRODUCTCAT_{name.upper()}_DIR", str(tmp_path / name))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("PRODUCTCAT_MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("PRODUCTCAT_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("PRODUCTCAT_PROJECT_ROOT", str(REPO_ROOT))
    get_settings.cache_clear()
    try:
        run = dagbag.get_dag("product_retrain").test(
            run_conf={"dataset": "marketplace-sample", "family": "baseline", "promote": True}
        )
    finally:
        get_settings.cache_clear()
    assert run.state == "success"
    summary = (tmp_path / "reports" / "ingest_summary.json").read_text()
    assert '"dataset": "marketplace-sample"' in summary
    champion = MlflowClient(tracking).get_model_version_by_alias("product-classifier", "champion")
    assert champion.tags["gate_decision"] == "pass" and champion.tags["dataset"] == "marketplace-sample"
