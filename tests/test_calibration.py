"""Temperature scaling fitted on validation, the review threshold chosen on the calibrated
probabilities, and the served probabilities of a real trained version."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from scipy.special import softmax

from ml.calibration import apply_temperature, calibrate, fit_temperature
from ml.evaluate import evaluate
from ml.features import product_texts
from ml.params import load_params
from ml.pyfunc_model import load_registered
from ml.registry import configure_mlflow
from ml.review_threshold import choose_review_threshold, coverage_precision_curve, review_card
from tests.api_support import build_registry

LABELS = [f"c{i}" for i in range(6)]


def _overconfident(n: int = 3000, true_temperature: float = 2.5, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Labels drawn from softmax(z); the model shows softmax(z * T): over-confident by exactly T."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, len(LABELS)))
    truth = softmax(logits, axis=1)
    y = [LABELS[rng.choice(len(LABELS), p=row)] for row in truth]
    return softmax(logits * true_temperature, axis=1), y


def test_temperature_recovers_the_temperature_that_made_the_model_overconfident() -> None:
    shown, y = _overconfident(true_temperature=2.5)
    target = np.array([LABELS.index(t) for t in y])
    assert fit_temperature(shown, target) == pytest.approx(2.5, rel=0.1)


def test_calibration_lowers_ece_and_keeps_every_label() -> None:
    shown, y = _overconfident()
    card = calibrate(shown, y, LABELS)
    assert card["method"] == "temperature" and card["validation_rows"] == len(y)
    assert card["ece_after"] < card["ece_before"] / 2
    calibrated = apply_temperature(shown, card["temperature"])
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    assert (calibrated.argmax(axis=1) == shown.argmax(axis=1)).all()


def test_a_well_calibrated_model_keeps_a_temperature_near_one() -> None:
    shown, y = _overconfident(true_temperature=1.0)
    assert calibrate(shown, y, LABELS)["temperature"] == pytest.approx(1.0, abs=0.1)


def test_threshold_is_the_lowest_that_reaches_the_target_precision() -> None:
    p = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.90, 0.80, 0.70, 0.60, 0.50])
    right = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 0], dtype=bool)
    # Top 6 all right; the 7th (0.80) is wrong: 6/7 = 0.857, 7/8 = 0.875, 7/9, 7/10.
    assert choose_review_threshold(p, right, target_precision=1.0, min_answered_rows=1) == pytest.approx(0.90)
    assert choose_review_threshold(p, right, target_precision=0.87, min_answered_rows=1) == pytest.approx(0.70)
    card = review_card(p, right, target_precision=0.87, min_answered_rows=1)
    assert card["validation_coverage"] == pytest.approx(0.8)
    assert card["validation_precision_answered"] == pytest.approx(0.875)
    assert card["status"] == "chosen"


def test_tied_probabilities_are_answered_together_or_not_at_all() -> None:
    p = np.array([0.9, 0.9, 0.9, 0.9, 0.5])
    right = np.array([1, 1, 1, 0, 1], dtype=bool)
    # No cut inside the 0.9 block: its precision is 3/4, with or without the 0.5 row (4/5).
    assert choose_review_threshold(p, right, target_precision=0.8, min_answered_rows=1) == pytest.approx(0.5)
    assert choose_review_threshold(p, right, target_precision=0.9, min_answered_rows=1) is None
    assert coverage_precision_curve(p, right)["answered"].tolist() == [4, 5]


def test_unreachable_target_or_too_few_rows_gives_no_threshold() -> None:
    p = np.linspace(0.99, 0.5, 100)
    right = np.arange(100) % 10 != 0  # the most confident product is wrong: 90 % everywhere
    assert choose_review_threshold(p, right, target_precision=0.98, min_answered_rows=1) is None
    right = np.arange(100) >= 0
    right[20:] = False  # only the top 20 are right
    assert choose_review_threshold(p, right, target_precision=0.98, min_answered_rows=20) == pytest.approx(p[19])
    assert choose_review_threshold(p, right, target_precision=0.98, min_answered_rows=21) is None
    card = review_card(p, right, target_precision=0.98, min_answered_rows=21)
    assert card["threshold"] is None and card["status"] == "target_unreachable"
    assert card["validation_coverage"] == 1.0  # no threshold: everything is answered


@pytest.mark.integration
@pytest.mark.slow
def test_a_trained_version_serves_calibrated_probabilities_and_reports_its_threshold(tmp_path: Path) -> None:
    settings, versions = build_registry(tmp_path / "registry")
    configure_mlflow(settings)
    _, model = load_registered(settings.registered_model, versions[-1])
    card = model.card
    calibration, review = card["calibration"], card["review"]
    assert calibration["method"] == "temperature" and calibration["temperature"] > 0
    assert calibration["ece_after"] <= calibration["ece_before"] + 1e-9  # fitted on the same rows
    assert set(review) >= {"threshold", "target_precision", "validation_precision_answered", "validation_coverage",
                           "validation_rows"}
    assert review["target_precision"] == load_params(settings).review.target_precision
    run = MlflowClient(settings.tracking_uri).get_run(card["run_id"]).data.metrics
    assert {"ece_before", "ece_after", "temperature", "val_review_coverage"} <= set(run)

    records = json.loads(Path(mlflow.artifacts.download_artifacts(
        f"models:/{settings.registered_model}/{versions[-1]}/artifacts/classifier/self_test_sample.json",
        dst_path=str(tmp_path / "sample"))).read_text())[:20]
    served = model.predict_records(records, top_k=len(model.labels))
    raw = model.classifier.predict_proba(product_texts(records))  # the fitted pipeline alone, uncalibrated
    for answer, row in zip(served, raw, strict=True):
        probabilities = dict(zip(answer["top_labels"], answer["top_probabilities"], strict=True))
        served_row = np.array([probabilities[label] for label in model.labels])
        assert served_row.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(served_row, apply_temperature(row[None, :], calibration["temperature"])[0])
        assert answer["label"] == model.labels[int(row.argmax())]
    if calibration["temperature"] != pytest.approx(1.0, abs=1e-3):
        assert not np.allclose(np.array([a["probability"] for a in served]), raw.max(axis=1))

    # The evaluation sees the same calibrated numbers and reports the threshold on test.
    summary = evaluate(settings=settings, params=load_params(settings), version=versions[-1])
    assert summary["calibration"]["temperature"] == pytest.approx(calibration["temperature"])
    assert 0.0 <= summary["review"]["coverage"] <= 1.0
    out = settings.resolve(settings.reports_dir) / "evaluation" / f"v{versions[-1]}"
    assert (out / "coverage_precision.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "model_report.md").read_text()
    assert "## Calibration fitted on validation" in report and "## Review threshold" in report


def test_report_states_the_threshold_and_what_it_costs_or_why_there_is_none() -> None:
    from tests.test_model_report import evaluation, report_for, section

    calibration = {"temperature": 0.7, "validation_ece_before": 0.06, "validation_ece_after": 0.02,
                   "validation_rows": 2000, "ece_uncalibrated": 0.05, "ece": 0.021}
    review = {"threshold": 0.83, "status": "chosen", "target_precision": 0.98, "validation_coverage": 0.9,
              "validation_precision_answered": 0.981, "validation_rows": 2000, "rows": 5000, "coverage": 0.88,
              "review_share": 0.12, "precision_answered": 0.975, "accuracy_all": 0.95}
    report = report_for(evaluation(), calibration=calibration, review=review)
    assert "T = 0.700" in section(report, "Calibration fitted on validation")
    text = section(report, "Review threshold")
    assert "0.8300" in text and "| this test set | 5,000 | 88.0% | 12.0% | 97.5% |" in text
    assert "fall short of the target (97.5% < 98.0%)" in text
    none = report_for(evaluation(), review=review | {"threshold": None, "status": "target_unreachable",
                                                      "precision_answered": 0.95})
    assert "no threshold reaches the target precision of 98.0%" in section(none, "Review threshold")
    assert "## Calibration fitted on validation" not in none


def test_validation_texts_at_training_are_the_texts_the_service_builds(tmp_path: Path) -> None:
    """The temperature and threshold are fitted on what training scores; it must be what is served
    (features come back from Parquet as arrays, not lists)."""
    from ml.pyfunc_model import records_frame
    from ml.split import read_split

    settings, _ = build_registry(tmp_path / "registry")
    validation = read_split(settings, "validation").head(50)
    assert validation["features"].map(len).sum() > 0
    served = records_frame(json.loads(validation.to_json(orient="records"))).to_dict(orient="records")
    assert product_texts(validation.to_dict("records")) == product_texts(served)


def test_a_confidence_level_asks_the_precision_lower_bound_to_reach_the_target() -> None:
    p = np.linspace(0.999, 0.5, 400)
    right = np.ones(400, dtype=bool)
    right[50::10] = False  # the 50 most confident are all right, then 90 % right
    estimate = choose_review_threshold(p, right, target_precision=0.98, min_answered_rows=20)
    bounded = choose_review_threshold(p, right, target_precision=0.98, min_answered_rows=20, confidence=0.95)
    assert estimate == pytest.approx(p[59])  # 59 right of 60: 98.3 %
    # 50 right of 50 has a 95 % lower bound of 94.9 %: no cut is sure enough of 98 %.
    assert bounded is None
    assert choose_review_threshold(p, right, target_precision=0.94, min_answered_rows=20,
                                   confidence=0.95) == pytest.approx(p[49])
