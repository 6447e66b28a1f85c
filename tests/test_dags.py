"""Every DAG file imports cleanly with the required settings, and each DAG runs
for real with `dag.test()` on the bundled sample; `ml.score` (what `batch_score`
runs) is also called directly and through `productcat score`."""

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
    assert {"product_retrain", "batch_score", "drift_monitor", "shadow_report"} <= set(dagbag.dag_ids)
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
def test_product_retrain_versions_its_data_then_trains_and_promotes_a_first_champion(dagbag, tmp_path, monkeypatch):
    """The whole DAG in a DVC project of its own: pull (nothing pushed yet), ingest, split, dvc commit +
    push of the data, train, evaluate, gate; the champion's run names the data version dvc.lock holds."""
    import yaml
    from mlflow import MlflowClient

    from ml.settings import get_settings
    from tests.conftest import make_dvc_project

    project = make_dvc_project(tmp_path / "project", tmp_path / "dvc-store")
    for name in ("INTERIM_DIR", "PROCESSED_DIR", "REPORTS_DIR", "PARAMS_FILE"):
        monkeypatch.delenv(f"PRODUCTCAT_{name}", raising=False)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("PRODUCTCAT_MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("PRODUCTCAT_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("PRODUCTCAT_PROJECT_ROOT", str(project))
    get_settings.cache_clear()
    try:
        run = dagbag.get_dag("product_retrain").test(
            run_conf={"family": "baseline", "max_train_samples": 1500, "promote": True, "reason": "dag test"}
        )
    finally:
        get_settings.cache_clear()
    assert run.state == "success"
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    split_md5 = next(out["md5"] for out in lock["split"]["outs"] if out["path"] == "data/processed")
    pushed = tmp_path / "dvc-store" / "files" / "md5" / split_md5[:2] / split_md5[2:]
    assert pushed.is_file(), "the split's version is not in the DVC remote"
    client = MlflowClient(tracking)
    champion = client.get_model_version_by_alias("product-classifier", "champion")
    assert champion.tags["gate_decision"] == "pass" and champion.tags["dataset"] == "fashion-sample"
    assert client.get_run(champion.run_id).data.tags["data_dvc_md5"] == split_md5
    # Why and by what it was trained, and who moved the alias: the trigger's conf, not a guess.
    assert champion.tags["train_reason"] == "dag test"
    assert champion.tags["triggered_by"].startswith("product_retrain manual run ")
    assert champion.tags["promoted_by"].startswith("gate (product_retrain manual run ")
    assert "trained for: dag test" in champion.tags["promotion_reason"]


@pytest.mark.integration
@pytest.mark.slow
def test_product_retrain_with_another_dataset_trains_but_leaves_dvc_lock_alone(dagbag, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from ml.settings import get_settings
    from tests.conftest import make_dvc_project

    project = make_dvc_project(tmp_path / "project", tmp_path / "dvc-store")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("PRODUCTCAT_MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("PRODUCTCAT_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("PRODUCTCAT_PROJECT_ROOT", str(project))
    for name in ("interim", "processed", "reports"):
        monkeypatch.setenv(f"PRODUCTCAT_{name.upper()}_DIR", str(tmp_path / name))
    get_settings.cache_clear()
    try:
        run = dagbag.get_dag("product_retrain").test(
            run_conf={"dataset": "marketplace-sample", "family": "baseline", "promote": True}
        )
    finally:
        get_settings.cache_clear()
    assert run.state == "success"
    assert not (project / "dvc.lock").exists()  # marketplace data is not what params.yaml describes
    assert '"dataset": "marketplace-sample"' in (tmp_path / "reports" / "ingest_summary.json").read_text()
    champion = MlflowClient(tracking).get_model_version_by_alias("product-classifier", "champion")
    assert champion.tags["gate_decision"] == "pass" and champion.tags["dataset"] == "marketplace-sample"


@pytest.fixture(scope="module")
def served(airflow_home: Path, tmp_path_factory: pytest.TempPathFactory):
    """A small real champion trained on fashion-sample and a migrated Postgres request log, both
    reached through the environment, as the DAG tasks read them."""
    from api.db.migrate import upgrade
    from api.settings import get_api_settings
    from ml.gate import promote
    from ml.ingest import ingest
    from ml.params import load_params
    from ml.settings import get_settings
    from ml.split import split
    from ml.train import train
    from tests.conftest import fresh_database

    root = tmp_path_factory.mktemp("served")
    with fresh_database() as db_url, pytest.MonkeyPatch.context() as env:
        for name in ("interim", "processed", "reports"):
            env.setenv(f"PRODUCTCAT_{name.upper()}_DIR", str(root / name))
        env.setenv("PRODUCTCAT_MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        env.setenv("PRODUCTCAT_MLFLOW_ARTIFACT_ROOT", str(root / "artifacts"))
        env.setenv("PRODUCTCAT_PROJECT_ROOT", str(REPO_ROOT))
        env.setenv("DATABASE_URL", db_url)
        get_settings.cache_clear()
        get_api_settings.cache_clear()
        settings = get_settings()
        params = load_params(settings)
        params.ingest.dataset = "fashion-sample"
        params.train.max_train_samples = 600
        params.train.baseline.max_features = 20_000
        ingest(settings=settings, params=params)
        split(settings=settings, params=params)
        version = train(settings=settings, params=params, family="baseline").version
        promote(settings=settings, version=version, reason="dag tests", by="tests")
        upgrade(db_url)
        try:
            yield settings, params, version, db_url
        finally:
            get_settings.cache_clear()
            get_api_settings.cache_clear()


@pytest.mark.integration
def test_batch_score_writes_one_row_per_readable_product(dagbag, served, tmp_path):
    import json

    import pyarrow.parquet as pq

    from ml.ingest import IngestOutputs
    from ml.pyfunc_model import load_registered
    from ml.score import summary_path

    settings, _, version, _ = served
    output = tmp_path / "scores.parquet"
    run = dagbag.get_dag("batch_score").test(run_conf={"dataset": "fashion-sample", "output": str(output)})
    assert run.state == "success"
    scored = pq.read_table(output).to_pandas()
    products = pq.read_table(IngestOutputs.for_settings(settings).products, columns=["id"]).to_pandas()
    assert sorted(scored["id"]) == sorted(products["id"])  # ingest kept exactly the readable rows
    _, model = load_registered(settings.registered_model, version)
    assert set(scored["label"]) <= set(model.labels)
    assert scored["top_labels"].map(len).eq(3).all() and scored["probability"].between(0, 1).all()
    assert set(scored["model_version"]) == {version}
    summary = json.loads(summary_path(output).read_text())
    assert (summary["read"], summary["scored"], summary["unreadable_reasons"]) == (5000, 4999, {"missing_text": 1})


@pytest.mark.integration
@pytest.mark.slow
def test_batch_score_on_spark_counts_and_scores_as_the_pandas_engine(dagbag, served, spark, tmp_path):
    """engine=spark through the DAG: the task finds the test session running (local[2]) and uses it."""
    import json

    import pyarrow.parquet as pq

    from ml.score import summary_path

    _, _, version, _ = served
    output = tmp_path / "spark-scores.parquet"
    conf = {"dataset": "fashion-sample", "output": str(output), "engine": "spark"}
    assert dagbag.get_dag("batch_score").test(run_conf=conf).state == "success"
    summary = json.loads(summary_path(output).read_text())
    assert summary["engine"] == "spark" and summary["model_version"] == version
    assert (summary["read"], summary["scored"], summary["unreadable_reasons"]) == (5000, 4999, {"missing_text": 1})
    scored = pq.read_table(output, columns=["id", "scored_at"]).to_pandas()
    assert len(scored) == scored["id"].nunique() == 4999 and scored["scored_at"].notna().all()


@pytest.mark.integration
def test_drift_monitor_stores_the_check_and_triggers_a_retrain(dagbag, served):
    import pandas as pd
    import sqlalchemy as sa
    from airflow.models import DagRun

    from api.db.models import DriftCheck
    from ml.readers import open_reader
    from tests.test_monitoring_real import Env, log_requests

    settings, params, _, db_url = served
    # Marketplace titles (electronics, furniture...) sent to a fashion champion: a real shift.
    chunk = next(open_reader(params.datasets["marketplace-sample"], settings, 1000))
    titles = dict.fromkeys(r.fields["title"] for r in chunk if r.fields and r.fields.get("title"))
    products = [{"title": t} for t in list(titles)[:150]]
    log_requests(Env(settings, params, pd.DataFrame()), db_url, products)
    run = dagbag.get_dag("drift_monitor").test()
    assert run.state == "success"
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            check = conn.execute(sa.select(DriftCheck)).one()
    finally:
        engine.dispose()
    assert (check.current_rows, check.status, check.retrain) == (150, "ok", True)
    # Only runs this DAG started: the retrain test above may have left its own run in the same metadata DB.
    triggered = [r for r in DagRun.find(dag_id="product_retrain") if "drift_check_id" in (r.conf or {})]
    assert [r.conf["drift_check_id"] for r in triggered] == [check.id]
    assert triggered[0].conf["reason"].startswith(f"drift check {check.id}: ")


@pytest.mark.integration
def test_score_catalogue_counts_unreadable_rows_and_scores_the_rest_in_chunks(served, tmp_path):
    import gzip

    import pyarrow.parquet as pq

    from ml.score import score_catalogue

    settings, params, version, _ = served
    with gzip.open(REPO_ROOT / "data/sample/fashion_styles.csv.gz", "rt", encoding="utf-8") as handle:
        lines = [next(handle) for _ in range(11)]  # header + 10 real products
    header, good = lines[0], lines[1:]
    bad = ["90001,,Men,Apparel,Topwear,Shirts,Blue,Fall,2011.0,Casual\n",  # no title: missing_text
           ",Blue Shirt,Men,Apparel,Topwear,Shirts,Blue,Fall,2011.0,Casual\n",  # no id: missing_id
           "90002,Red Shirt,Men,Apparel,Topwear,Shirts,Red,Fall,2011.0,Casual,extra,fields\n"]  # bad_row
    source = tmp_path / "catalogue.csv"
    source.write_text(header + "".join(good[:4] + bad + good[4:]), encoding="utf-8")
    summary = score_catalogue(settings=settings, params=params, source=source, output=tmp_path / "out.parquet",
                              dataset="fashion-sample", chunk_rows=4, top_k=2)
    assert (summary["read"], summary["scored"]) == (13, 10) and summary["reconciles"]
    assert summary["unreadable_reasons"] == {"missing_text": 1, "missing_id": 1, "bad_row": 1}
    scored = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert list(scored["id"]) == [line.split(",", 1)[0] for line in good]  # file order, across 4 chunks
    assert scored["top_labels"].map(len).eq(2).all() and set(scored["model_version"]) == {version}


@pytest.mark.integration
def test_score_command_prints_the_counts(served, tmp_path):
    from typer.testing import CliRunner

    from productcat.cli import app

    output = tmp_path / "cli.parquet"
    result = CliRunner().invoke(app, ["score", "--dataset", "fashion-sample", "--output", str(output), "--top-k", "1"])
    assert result.exit_code == 0, result.output
    assert "4999" in result.output and output.with_suffix(".summary.json").exists()


@pytest.mark.integration
def test_shadow_report_runs_on_the_request_log_and_moves_no_alias(dagbag, served):
    from mlflow import MlflowClient

    settings, _, version, _ = served
    run = dagbag.get_dag("shadow_report").test()  # no challenger has scored anything: no evidence, no move
    assert run.state == "success"
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    assert str(client.get_model_version_by_alias(settings.registered_model, settings.champion_alias).version) == version
