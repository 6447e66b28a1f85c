"""The `productcat` command as people and pipeline stages call it."""

import json

from typer.testing import CliRunner

from ml.cli import app
from ml.settings import get_settings


def test_ingest_then_split_through_the_cli(tmp_path, monkeypatch):
    for name in ("interim", "processed", "reports"):
        monkeypatch.setenv(f"PRODUCTCAT_{name.upper()}_DIR", str(tmp_path / name))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        ingested = runner.invoke(app, ["ingest", "--dataset", "rakuten-sample"])
        assert ingested.exit_code == 0, ingested.output
        assert "quarantined" in ingested.output
        split = runner.invoke(app, ["split", "--json"])
        assert split.exit_code == 0, split.output
        summary = json.loads(split.stdout)
        assert summary["read"] == 499 and summary["reconciles"]
        assert (tmp_path / "reports" / "ingest_summary.json").exists()
        assert (tmp_path / "processed" / "test.parquet").exists()
    finally:
        get_settings.cache_clear()


def test_unknown_dataset_is_a_clear_error():
    result = CliRunner().invoke(app, ["ingest", "--dataset", "nope"])
    assert result.exit_code == 2
    assert "unknown dataset 'nope'" in result.output and "fashion-sample" in result.output
