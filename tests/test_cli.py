"""The `productcat` command as people and pipeline stages call it."""

import json

from typer.testing import CliRunner

from ml.settings import get_settings
from productcat.cli import app


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


def test_service_commands_load_when_called(tmp_path, monkeypatch):
    """`api-key` and `db` are listed without importing the service, and load it when run."""
    from api.settings import get_api_settings

    runner = CliRunner()
    listing = runner.invoke(app, ["--help"])
    assert listing.exit_code == 0 and "api-key" in listing.output and "db" in listing.output
    keys_help = runner.invoke(app, ["api-key", "--help"])
    assert keys_help.exit_code == 0 and "create" in keys_help.output and "revoke" in keys_help.output
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'requests.db'}")
    get_api_settings.cache_clear()
    try:
        current = runner.invoke(app, ["db", "current"])
    finally:
        get_api_settings.cache_clear()
    assert current.exit_code == 0, current.output
    assert current.stdout.strip() == "none"


def test_ml_imports_no_layer_above_it():
    """The CLI moved above the layers: nothing in `ml` imports `api`, `monitoring` or `productcat`."""
    import re

    from tests.conftest import REPO_ROOT

    upward = re.compile(r"^\s*(from|import) (api|monitoring|productcat)\b", re.MULTILINE)
    offenders = [p.name for p in (REPO_ROOT / "ml").rglob("*.py") if upward.search(p.read_text())]
    assert offenders == []
