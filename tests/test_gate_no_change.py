"""The gate leaves the alias alone for a candidate that is not better: the same data version,
the same recipe, metrics within noise -> `gate_decision=no_change`. New data keeps the plain rules."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from ml.gate import gate
from ml.params import Params
from ml.registry import champion, registry_client
from ml.settings import MLSettings
from ml.split import SplitOutputs
from ml.train import train
from tests.conftest import sample_store


def _train(settings: MLSettings, params: Params) -> str:
    return train(settings=settings, params=params, family="baseline", reason="tests", triggered_by="tests").version


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLSettings, Params, MlflowClient]:
    settings, params = sample_store(tmp_path_factory.mktemp("no-change"))
    params.train.max_train_samples = 600
    params.train.baseline.max_features = 20_000
    params.gate.min_macro_f1, params.gate.min_accuracy = 0.05, 0.3
    return settings, params, registry_client(settings)


@pytest.mark.integration
@pytest.mark.slow
def test_a_retrain_of_the_champion_is_no_change_and_new_data_may_still_promote(store):
    settings, params, client = store
    first = _train(settings, params)
    assert gate(settings=settings, params=params, version=first).promoted

    again = _train(settings, params)  # same data, same parameters: the second `make demo` of old
    decision = gate(settings=settings, params=params, version=again)
    assert decision.passed and decision.outcome == "no_change" and not decision.promoted
    assert str(champion(client, settings).version) == first
    tags = client.get_model_version(settings.registered_model, again).tags
    assert tags["gate_decision"] == "no_change" and tags["gate_compared_with"] == first
    assert "same data version" in tags["gate_no_change_reason"] and "same parameters" in tags["gate_no_change_reason"]
    assert "NO CHANGE" in tags["gate_reasons"]

    # New data (the same rows rewritten, so the model and its metrics tie exactly): the plain rules decide.
    train_file = SplitOutputs.for_settings(settings).split_file("train")
    pq.write_table(pq.read_table(train_file), Path(train_file), compression="gzip")
    fresh = _train(settings, params)
    assert (client.get_model_version(settings.registered_model, fresh).tags["data_content_md5"]
            != client.get_model_version(settings.registered_model, first).tags["data_content_md5"])
    decision = gate(settings=settings, params=params, version=fresh)
    assert decision.outcome == "pass" and decision.promoted
    assert str(champion(client, settings).version) == fresh
    assert "gate_no_change_reason" not in client.get_model_version(settings.registered_model, fresh).tags
