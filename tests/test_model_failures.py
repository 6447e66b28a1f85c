"""A promoted version that fails on real products is never served for long: the stored-sample
self-test refuses it at the swap, or its first requests roll it back to the previous champion.

Each bad version is a real registered MLflow version: a good version's artifact under a code file
whose ``ProductClassifierModel`` subclass misbehaves in one way (raises, an unknown label, NaN
probabilities, a wrong number of answers) on some products.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from api.db.migrate import upgrade
from api.main import create_app
from api.model_manager import REJECTED_TAG, ChampionManager
from ml.pyfunc_model import CLASSIFIER_ARTIFACT, SELF_TEST_FILE, SIGNATURE
from ml.registry import configure_mlflow
from ml.settings import MLSettings
from tests.api_support import api_settings, build_registry, move_alias, wait_for, wait_ready
from tests.conftest import fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAULTS = ("raise", "unknown_label", "nan", "wrong_count")
MARKER = "Zorblax"  # a word no stored sample holds: the fault shows only on products that carry it
TRIGGER = {"title": f"{MARKER} Men Navy Blue Shirt", "brand": "Turtle"}
WINDOW, MAX_RATE = 4, 0.25  # probation: the second failure within the first 4 requests rolls back

# Baked into a models-from-code file: MLflow copies it into the version and runs it at load time.
DOCTORED = '''
import math

from mlflow.models import set_model

from ml.pyfunc_model import ProductClassifierModel

FAULT, MARKER, SPARED = __FAULT__, __MARKER__, __SPARED__


def hit(records):
    """MARKER set: a product carries it; else: a product is not one of the SPARED (the input example)."""
    titles = [r.get("title") or "" for r in records]
    return any(MARKER in t for t in titles) if MARKER else any(t not in SPARED for t in titles)


class Doctored(ProductClassifierModel):
    def predict_records(self, records, top_k=3):
        answers = super().predict_records(records, top_k)
        if FAULT is None or not hit(records):
            return answers
        if FAULT == "raise":
            raise RuntimeError("feature lookup failed")
        if FAULT == "unknown_label":
            return [a | {"label": "Not A Category", "top_labels": ["Not A Category", *a["top_labels"][1:]]}
                    for a in answers]
        if FAULT == "nan":
            return [a | {"probability": math.nan, "top_probabilities": [math.nan] * len(a["top_probabilities"])}
                    for a in answers]
        return answers[1:]  # wrong_count


set_model(Doctored())
'''


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLSettings, str]:
    settings, (good,) = build_registry(tmp_path_factory.mktemp("registry"), sizes=(300,))
    return settings, good


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="module")
def example_product(registry) -> dict[str, Any]:
    """The good version's input example, as a caller would send it (every bad version answers it)."""
    settings, good = registry
    configure_mlflow(settings)
    frame = mlflow.pyfunc.load_model(f"models:/{settings.registered_model}/{good}").input_example
    row = frame.iloc[0].to_dict()
    return {"title": row["title"], "features": [str(f) for f in row["features"]]}


@pytest.fixture(scope="module")
def doctored(registry, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """Register a copy of the good version that misbehaves: ``fault`` (None: none) on products carrying
    MARKER (``on_marker``) or on every product outside its input example; ``legacy`` drops the stored
    self-test sample, as in versions trained before it existed."""
    settings, good = registry

    def register(fault: str | None, *, on_marker: bool, legacy: bool = False) -> str:
        tmp = tmp_path_factory.mktemp(f"doctored-{fault}")
        configure_mlflow(settings)
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{settings.registered_model}/{good}",
                                                         dst_path=str(tmp / "download")))
        classifier = tmp / CLASSIFIER_ARTIFACT
        shutil.copytree(local / "artifacts" / CLASSIFIER_ARTIFACT, classifier)
        assert (classifier / SELF_TEST_FILE).exists()  # training stored its validation sample
        if legacy:
            (classifier / SELF_TEST_FILE).unlink()
        example = mlflow.models.Model.load(str(local)).load_input_example(str(local))
        code = tmp / "doctored_model.py"
        baked = {"__FAULT__": fault, "__MARKER__": MARKER if on_marker else "", "__SPARED__": set(example["title"])}
        source = DOCTORED
        for token, value in baked.items():
            source = source.replace(token, repr(value))
        code.write_text(source)
        with mlflow.start_run(run_name=f"doctored-{fault}"):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(code), artifacts={CLASSIFIER_ARTIFACT: str(classifier)},
                signature=SIGNATURE, input_example=example, registered_model_name=settings.registered_model,
                pip_requirements=["mlflow"], model_config={"runtime": None, "intra_op_threads": 0},
            )
        return str(info.registered_model_version)

    return register


@contextlib.contextmanager
def _service(root: Path, database: str, settings: MLSettings, **overrides: Any) -> Iterator[TestClient]:
    values = {"rollback_window": WINDOW, "rollback_max_failure_rate": MAX_RATE, "open_read_routes": True}
    with TestClient(create_app(api_settings(root, database, **(values | overrides)), settings)) as client:
        wait_ready(client)
        yield client


def _metric(text: str, name: str) -> dict[str, float]:
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith(name)}


@pytest.mark.parametrize("fault", FAULTS)
def test_the_stored_sample_self_test_refuses_a_version_its_input_example_would_pass(registry, doctored, fault) -> None:
    settings, good = registry
    bad = doctored(fault, on_marker=False)  # wrong on every real product but the input example
    manager = ChampionManager(settings)
    move_alias(settings, good)
    try:
        assert manager.refresh() and manager.current.version == good
        move_alias(settings, bad)
        assert not manager.refresh()
        assert manager.current.version == good and bad in manager.refused
        expected = "RuntimeError: feature lookup failed" if fault == "raise" else "InvalidAnswers"
        assert manager.refused[bad].startswith(expected), manager.refused[bad]
        assert not manager.refresh() and manager.current.version == good  # remembered: not loaded again
    finally:
        move_alias(settings, good)


# Batching on and off alternate, so both score paths check the answers.
@pytest.mark.parametrize(("fault", "batching"), [("raise", True), ("unknown_label", False), ("nan", True),
                                                 ("wrong_count", False)])
def test_a_version_failing_in_service_is_rolled_back_tagged_and_refused(
    registry, doctored, database, example_product, tmp_path, fault, batching
) -> None:
    settings, good = registry
    # "raise" is a version from before stored samples (its self-test falls back to the input example,
    # which it answers); the others fail only on products carrying MARKER, which no stored sample holds.
    bad = doctored(fault, on_marker=fault != "raise", legacy=fault == "raise")
    move_alias(settings, good)
    try:
        with _service(tmp_path, database, settings, batching=batching) as client:
            move_alias(settings, bad)
            wait_for(lambda: client.get("/model").json()["version"] == bad, what="the bad version served")
            assert client.get("/model").json()["probation"]["version"] == bad

            answered = client.post("/predict", json=example_product)
            assert answered.status_code == 200 and answered.json()["model"]["version"] == bad
            for body in ([TRIGGER, example_product], TRIGGER):  # the second failure decides the rollback
                failed = client.post("/predict", json=body)
                assert failed.status_code == 503 and "predictions" not in failed.json(), failed.text
                assert failed.json()["detail"].startswith(f"model version {bad} failed to answer")
            after = client.post("/predict", json=TRIGGER)
            assert after.status_code == 200 and after.json()["model"]["version"] == good

            info = client.get("/model").json()
            assert info["version"] == good and info["healthy"] and info["probation"] is None
            assert info["rolled_back_from"]["version"] == bad and info["rolled_back_from"]["to_version"] == good
            assert info["refused_versions"][bad].startswith("rolled back in service: 2 of its first 3 requests")
            assert client.get("/ready").json()["model_healthy"] is True
            kind = "raised" if fault == "raise" else "invalid_output"
            metrics = client.get("/metrics").text
            assert _metric(metrics, "productcat_model_failures_total") == {
                f'productcat_model_failures_total{{kind="{kind}",version="{bad}"}}': 2.0}
            assert _metric(metrics, "productcat_model_rollbacks_total") == {
                f'productcat_model_rollbacks_total{{from_version="{bad}",to_version="{good}"}}': 1.0}

            mlflow_client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
            tags = lambda: mlflow_client.get_model_version(settings.registered_model, bad).tags  # noqa: E731
            wait_for(lambda: REJECTED_TAG in tags(), what="the rejection tag")
            assert tags()[REJECTED_TAG].startswith("2 of its first 3 requests failed")
            # The alias still names the bad version; polls since the tag have not loaded it again.
            assert client.get("/model").json()["version"] == good
            assert client.post("/predict", json=TRIGGER).json()["model"]["version"] == good
    finally:
        move_alias(settings, good)


def test_a_tagged_version_is_refused_by_a_new_instance(registry, doctored) -> None:
    settings, good = registry
    bad = doctored("nan", on_marker=True)
    MlflowClient(tracking_uri=settings.tracking_uri).set_model_version_tag(
        settings.registered_model, bad, REJECTED_TAG, "NaN probabilities in service")
    manager = ChampionManager(settings)
    move_alias(settings, bad)
    try:
        assert not manager.refresh() and manager.current is None
        assert manager.refused[bad] == "rejected in service earlier: NaN probabilities in service"
    finally:
        move_alias(settings, good)


def test_a_failing_first_champion_makes_the_service_unready(
    registry, doctored, database, example_product, tmp_path
) -> None:
    settings, good = registry
    bad = doctored("unknown_label", on_marker=True)
    move_alias(settings, bad)
    try:
        with _service(tmp_path, database, settings) as client:  # nothing earlier to fall back to
            for _ in range(2):
                assert client.post("/predict", json=TRIGGER).status_code == 503
            ready = client.get("/ready")  # not rolled back, but unhealthy: on probation again
            assert ready.status_code == 503 and ready.json()["model_healthy"] is False
            info = client.get("/model").json()
            assert info["version"] == bad and not info["healthy"] and "no earlier version" in info["failing"]
            for _ in range(WINDOW):  # a window answered well makes it healthy again
                assert client.post("/predict", json=example_product).status_code == 200
            assert client.get("/ready").status_code == 200 and client.get("/model").json()["probation"] is None
            move_alias(settings, good)  # and a new version takes over as usual
            wait_for(lambda: client.get("/model").json()["version"] == good, what="the good version")
            assert client.get("/model").json()["fallback_version"] == bad
    finally:
        move_alias(settings, good)


def test_a_good_version_proves_itself_and_the_previous_one_is_released(
    registry, doctored, database, example_product, tmp_path
) -> None:
    settings, good = registry
    fine = doctored(None, on_marker=True)
    move_alias(settings, good)
    try:
        with _service(tmp_path, database, settings) as client:
            move_alias(settings, fine)
            wait_for(lambda: client.get("/model").json()["version"] == fine, what="the new version")
            for sent in range(1, WINDOW + 1):
                assert client.post("/predict", json=[TRIGGER, example_product]).status_code == 200
                info = client.get("/model").json()
                proven = sent == WINDOW
                assert info["fallback_version"] == (None if proven else good)
                assert info["probation"] == (None if proven else {
                    "version": fine, "requests": sent, "failures": 0, "window": WINDOW, "max_failures": 1})
    finally:
        move_alias(settings, good)
