"""`productcat evaluate --dataset --source`: any version measured on any labelled file, read the way
ingest reads it, in a report of its own that leaves the version's test tags and metrics alone; and
`productcat ingest --source`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ml.evaluate_file import evaluate_file
from ml.params import load_params
from ml.registry import registry_client
from ml.settings import MLSettings, get_settings
from ml.split import SplitOutputs
from ml.text import normalise_title
from productcat.cli import app
from tests.api_support import build_registry
from tests.conftest import REPO_ROOT

SAMPLE = REPO_ROOT / "data/sample/fashion_styles.csv.gz"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLSettings, str, Path, pd.DataFrame]:
    """A one-version registry and a labelled file: 120 rows (of common classes) of its training split, 80 of its test
    split, 2 with a label the model never saw and 1 with no id (quarantined)."""
    root = tmp_path_factory.mktemp("evaluate-file")
    settings, (version,) = build_registry(root / "registry", sizes=(300,))
    splits = SplitOutputs.for_settings(settings)
    ids = {name: set(pq.read_table(splits.split_file(name), columns=["id"]).column("id").to_pylist())
           for name in ("train", "test")}
    sample = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    # Common classes only: a 300-row model knows them all, so the two strange rows are the only unknown ones.
    sample = sample[sample["articleType"].isin(sample["articleType"].value_counts().index[:8])]
    rows = pd.concat([sample[sample["id"].isin(ids["train"])].head(120),
                      sample[sample["id"].isin(ids["test"])].head(80)])
    strange = rows.head(2).copy()
    strange["id"] = ["990001", "990002"]
    strange["productDisplayName"] = ["Quantum Hoverboard Deluxe", "Quantum Hoverboard Mini"]
    strange["articleType"] = "Hoverboards"
    broken = rows.head(1).copy()
    broken["id"] = ""
    rows = pd.concat([rows, strange, broken])
    path = root / "labelled.csv"
    rows.to_csv(path, index=False)
    return settings, version, path, rows


def _env(monkeypatch: pytest.MonkeyPatch, settings: MLSettings) -> None:
    for name in ("interim_dir", "processed_dir", "reports_dir", "mlflow_artifact_root"):
        monkeypatch.setenv(f"PRODUCTCAT_{name.upper()}", str(getattr(settings, name)))
    monkeypatch.setenv("PRODUCTCAT_MLFLOW_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("PRODUCTCAT_PROJECT_ROOT", str(REPO_ROOT))
    get_settings.cache_clear()


def _registry_state(settings: MLSettings, version: str) -> tuple[dict, dict, dict, int]:
    client = registry_client(settings)
    mv = client.get_model_version(settings.registered_model, version)
    run = client.get_run(mv.run_id)
    runs = client.search_runs([run.info.experiment_id])
    return dict(mv.tags), dict(run.data.metrics), dict(run.data.tags), len(runs)


@pytest.mark.integration
def test_evaluate_a_version_on_a_labelled_file(store, monkeypatch, tmp_path):
    settings, version, path, rows = store
    before = _registry_state(settings, version)
    _env(monkeypatch, settings)
    try:
        result = CliRunner().invoke(app, ["evaluate", "--version", version, "--dataset", "fashion-sample",
                                          "--source", str(path), "--output", str(tmp_path / "report")])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "report" / "metrics.json").read_text())

    assert summary["rows"] == {"read": 203, "kept": 202, "quarantined": 1, "quarantine_reasons": {"missing_id": 1}}
    assert summary["unknown_labels"]["rows"] == 2 and summary["unknown_labels"]["labels"] == {"Hoverboards": 2}
    assert summary["unknown_labels"]["share"] == pytest.approx(2 / 202)
    assert summary["evaluated_rows"] == 200
    for key in ("accuracy", "macro_f1", "weighted_f1", "top3_accuracy", "ece"):
        assert 0 <= summary[key] <= 1
    assert summary["accuracy"] > 0.3 and set(summary["slices"]) >= {"short_title", "rare_classes"}
    assert sum(m["support"] for m in summary["per_class"].values()) == 200

    train_titles = {normalise_title(t) for t in pq.read_table(
        SplitOutputs.for_settings(settings).split_file("train"), columns=["title"]).column("title").to_pylist()}
    kept = rows[rows["id"] != ""]
    seen = kept["productDisplayName"].map(normalise_title).isin(train_titles)
    overlap = summary["training_title_overlap"]
    assert overlap["trained_on_sample_of"] == 300
    assert overlap["available"] and overlap["rows"] == int(seen.sum()) >= 120
    assert overlap["share"] == pytest.approx(seen.mean())
    assert overlap["overlapping"]["n"] + overlap["unseen"]["n"] == 200 and overlap["unseen"]["n"] > 0

    report = (tmp_path / "report" / "report.md").read_text()
    assert "quarantined 1" in report and "Hoverboards: 2" in report
    assert (tmp_path / "report" / "per_class.csv").exists()
    assert json.loads((tmp_path / "report" / "quarantine.jsonl").read_text())["reason"] == "missing_id"
    assert _registry_state(settings, version) == before  # no tag, metric or run added to the registry


@pytest.mark.integration
def test_overlap_is_skipped_without_the_versions_training_split(store, tmp_path):
    settings, version, path, _ = store
    elsewhere = settings.model_copy(update={"processed_dir": tmp_path / "no-split"})
    summary = evaluate_file(settings=elsewhere, params=load_params(elsewhere), source=path,
                            dataset="fashion-sample", version=version, output=tmp_path / "report")
    overlap = summary["training_title_overlap"]
    assert not overlap["available"] and "pull-data" in overlap["compared_with"]
    assert summary["evaluated_rows"] == 200
    assert "Skipped:" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.integration
def test_ingest_reads_another_file_with_the_datasets_mapping(store, monkeypatch, tmp_path):
    settings, _, path, _ = store
    local = settings.model_copy(update={"interim_dir": tmp_path / "interim", "reports_dir": tmp_path / "reports"})
    _env(monkeypatch, local)
    try:
        result = CliRunner().invoke(app, ["ingest", "--dataset", "fashion-sample", "--source", str(path), "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["source_path"] == str(path)
    assert (summary["read"], summary["kept"], summary["quarantine_reasons"]) == (203, 202, {"missing_id": 1})
    products = pq.read_table(tmp_path / "interim" / "products.parquet").to_pandas()
    assert len(products) == 202 and (products["label"] == "Hoverboards").sum() == 2
