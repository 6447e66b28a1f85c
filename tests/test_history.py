"""Registry tags that tell the truth: why a version was trained and by what, who moved the
alias when and why (on the version and in the model's append-only history), no stale
`replaced_by` on a version promoted again, and `productcat history` printing the moves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ml.promotion import alias_history, promote
from ml.registry import registry_client
from ml.settings import MLSettings, get_settings
from ml.train import train
from productcat.cli import app
from tests.conftest import sample_store


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLSettings, list[str]]:
    settings, params = sample_store(tmp_path_factory.mktemp("history"))
    versions = []
    for size in (300, 600):
        run_params = params.model_copy(deep=True)
        run_params.train.max_train_samples = size
        run_params.train.baseline.max_features = 20_000
        versions.append(train(settings=settings, params=run_params, family="baseline", reason="new catalogue",
                              triggered_by="product_retrain manual run tests").version)
    return settings, versions


@pytest.mark.integration
def test_train_reason_and_trigger_are_version_and_run_tags(registry):
    settings, (first, _) = registry
    client = registry_client(settings)
    version = client.get_model_version(settings.registered_model, first)
    assert version.tags["train_reason"] == "new catalogue"
    assert version.tags["triggered_by"] == "product_retrain manual run tests"
    assert client.get_run(version.run_id).data.tags["train_reason"] == "new catalogue"


@pytest.mark.integration
def test_every_alias_move_is_recorded_and_printed(registry, monkeypatch):
    settings, (first, second) = registry
    client = registry_client(settings)
    assert promote(settings=settings, version=first, reason="first champion", by="ana") is None
    assert promote(settings=settings, version=second, reason="better on shoes", by="ben") == first
    assert promote(settings=settings, version=first, reason="bad labels in the new feed", by="ana") == second

    moves = alias_history(client, settings)
    assert [(m.from_version, m.to_version, m.kind, m.by) for m in moves] == [
        (None, first, "promotion", "ana"), (first, second, "promotion", "ben"), (second, first, "rollback", "ana")]
    assert moves[-1].why == "bad labels in the new feed" and moves[-1].at
    model_tags = client.get_registered_model(settings.registered_model).tags
    assert sorted(k for k in model_tags if k.startswith("champion_history.")) == [
        "champion_history.00001", "champion_history.00002", "champion_history.00003"]

    rolled_back = client.get_model_version(settings.registered_model, first).tags
    assert "replaced_by" not in rolled_back and "replaced_at" not in rolled_back  # it holds the alias again
    assert (rolled_back["promotion_kind"], rolled_back["promoted_by"], rolled_back["previous_champion"]) == (
        "rollback", "ana", second)
    assert client.get_model_version(settings.registered_model, second).tags["replaced_by"] == first

    monkeypatch.setenv("PRODUCTCAT_MLFLOW_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("COLUMNS", "200")  # one line per move: the table is read as text below
    get_settings.cache_clear()
    try:
        printed = CliRunner().invoke(app, ["history"])
        as_json = CliRunner().invoke(app, ["history", "--json"])
    finally:
        get_settings.cache_clear()
    assert printed.exit_code == 0, printed.output
    assert "rollback" in printed.output and "bad labels in the new feed" in printed.output
    assert [m["to_version"] for m in json.loads(as_json.stdout)] == [first, second, first]


@pytest.mark.integration
def test_promote_rollback_returns_to_the_champion_before(registry, monkeypatch):
    settings, (first, second) = registry
    monkeypatch.setenv("PRODUCTCAT_MLFLOW_TRACKING_URI", settings.tracking_uri)
    get_settings.cache_clear()
    try:
        forward = CliRunner().invoke(app, ["promote", "--version", second, "--reason", "try it", "--by", "ben"])
        back = CliRunner().invoke(app, ["promote", "--rollback", "--reason", "returns rose", "--by", "ana"])
        neither = CliRunner().invoke(app, ["promote", "--reason", "no target"])
    finally:
        get_settings.cache_clear()
    assert forward.exit_code == 0 and back.exit_code == 0, forward.output + back.output
    assert f"-> v{first} (was {second})" in back.output
    assert neither.exit_code == 2 and "--rollback" in neither.output
    last = alias_history(registry_client(settings), settings)[-1]
    assert (last.from_version, last.to_version, last.kind, last.by, last.why) == (
        second, first, "rollback", "ana", "returns rose")


def test_help_does_not_import_the_layers_below(tmp_path: Path):
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from productcat.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0 and 'api-key' in r.output, r.output; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'ml', 'api', 'monitoring', 'mlflow'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": ""})
    assert done.stdout.strip() == "[]"
