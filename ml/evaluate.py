"""Stage 4: evaluate a registered model version on the frozen test split and
attach metrics, plots and a plain-words report to its MLflow run."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from ml.calibration import apply_temperature, card_temperature, ece
from ml.io import write_json
from ml.metrics import (
    EvaluationInput,
    compute_metrics,
    confused_pairs,
    hierarchy_accuracy,
    hierarchy_f1,
    reliability_table,
)
from ml.model_report import render_model_report
from ml.params import Params
from ml.plots import confusion_matrix_png, coverage_precision_png, per_class_f1_png, reliability_png
from ml.pyfunc_model import INPUT_COLUMNS, ProductClassifierModel
from ml.registry import configure_mlflow, model_version, set_version_tags
from ml.review_threshold import answered_at, coverage_precision_curve
from ml.settings import MLSettings
from ml.split import read_split, test_set_fingerprint

log = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"


def _input_frame(test: pd.DataFrame) -> pd.DataFrame:
    frame = test[list(INPUT_COLUMNS)].copy()
    frame["features"] = frame["features"].map(lambda f: list(f) if f is not None else [])
    return frame


def evaluation_input(python_model: ProductClassifierModel, rows: pd.DataFrame) -> EvaluationInput:
    """Canonical product rows with their labels -> the model's probabilities, ready for ml.metrics."""
    return EvaluationInput(labels=python_model.labels, y_true=rows["label"].tolist(),
                           proba=python_model.predict_proba(_input_frame(rows)), frame=rows)


def cpu_latency_ms(model: Any, frame: pd.DataFrame, items: int) -> dict[str, float]:
    """p50/p95 of single-item pyfunc predictions, the way one API request is served."""
    rows = frame.head(items)
    model.predict(rows.head(1))  # warm-up: first call pays one-off allocations
    timings = []
    for i in range(len(rows)):
        started = time.perf_counter()
        model.predict(rows.iloc[i:i + 1])
        timings.append((time.perf_counter() - started) * 1000)
    return {"latency_p50_ms": float(np.percentile(timings, 50)), "latency_p95_ms": float(np.percentile(timings, 95))}


def variant_metrics(model: Any, test: pd.DataFrame, frame: pd.DataFrame, *, params: Params,
                    loaded_scores: dict[str, float]) -> dict[str, Any]:
    """Macro-F1, accuracy and single-item latency of every runtime the version can run on (torch and
    its ONNX variants), on the same test rows; ``loaded_scores`` are those of the runtime the model
    was loaded with (already measured), on which it is left. Empty for a model with one runtime only
    (the baseline): its headline metrics say it all."""
    python_model: ProductClassifierModel = model.unwrap_python_model()
    classifier = python_model.classifier
    loaded = classifier.runtime
    if len(classifier.available_runtimes()) < 2:
        return {}
    variants: dict[str, Any] = {loaded: loaded_scores}
    try:
        for runtime in classifier.available_runtimes():
            if runtime == loaded:
                continue
            classifier.use_runtime(runtime)
            data = EvaluationInput(labels=python_model.labels, y_true=test["label"].tolist(),
                                   proba=python_model.predict_proba(frame), frame=test)
            metrics = compute_metrics(data, rare_class_max_support=params.evaluate.rare_class_max_support)
            variants[runtime] = {"macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"],
                                 **cpu_latency_ms(model, frame, params.evaluate.latency_items)}
    finally:
        classifier.use_runtime(loaded)
    return variants


def calibration_and_review(card: dict[str, Any], data: EvaluationInput) -> tuple[
        dict[str, Any] | None, dict[str, Any] | None, pd.DataFrame]:
    """What the version's temperature and review threshold (fitted on validation, in its card) do on
    ``data``, whose probabilities are the served (calibrated) ones: (calibration, review, the
    coverage-vs-precision curve). None for what the card lacks (versions trained before them)."""
    correct = np.asarray(data.y_pred) == np.asarray(data.y_true)
    curve = coverage_precision_curve(data.confidence, correct)
    calibration = None
    if card.get("calibration"):
        temperature = card_temperature(card)
        # softmax(T * log q) undoes softmax(log p / T): the raw probabilities without scoring again.
        raw = apply_temperature(data.proba, 1.0 / temperature)
        fitted = card["calibration"]
        calibration = {"temperature": temperature, "validation_ece_before": fitted["ece_before"],
                       "validation_ece_after": fitted["ece_after"], "validation_rows": fitted["validation_rows"],
                       "ece_uncalibrated": ece(data.y_true, data.labels, raw),
                       "ece": ece(data.y_true, data.labels, data.proba)}
    review = None
    if "review" in card:
        chosen = card["review"]
        review = {k: chosen.get(k) for k in ("threshold", "status", "target_precision", "validation_coverage",
                                              "validation_precision_answered", "validation_rows")}
        review |= answered_at(data.confidence, correct, chosen["threshold"])
    return calibration, review, curve


def _flat_metrics(metrics: dict[str, Any], hierarchy: dict[str, float], latency: dict[str, float]) -> dict[str, float]:
    settings_not_results = {"n", "rare_class_max_support"}
    flat = {f"test_{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and k not in settings_not_results}
    flat |= {f"test_{name}_accuracy": v["accuracy"] for name, v in metrics["slices"].items() if v["n"]}
    flat |= {f"test_hierarchy_{k}_accuracy": v for k, v in hierarchy.items()}
    return flat | {f"test_{k}": v for k, v in latency.items()}


def _review_metrics(calibration: dict[str, Any] | None, review: dict[str, Any] | None) -> dict[str, float]:
    metrics = {"test_ece_uncalibrated": float(calibration["ece_uncalibrated"])} if calibration else {}
    if review:
        metrics["test_review_coverage"] = float(review["coverage"])
        if review["precision_answered"] is not None:
            metrics["test_review_precision"] = float(review["precision_answered"])
    return metrics


def evaluate(*, settings: MLSettings, params: Params, version: str | int | None = None) -> dict[str, Any]:
    """Evaluate ``version`` (default: the newest) and return its evaluation summary."""
    client = configure_mlflow(settings)
    mv = model_version(client, settings, version)
    # The test rows' photos are stored under this project's interim_dir (image families read them).
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model}/{mv.version}",
                                     model_config={"image_root": str(settings.resolve(settings.interim_dir))})
    python_model: ProductClassifierModel = model.unwrap_python_model()
    test = read_split(settings, "test")
    frame = _input_frame(test)
    log.info("evaluating %s v%s on %d test rows", settings.registered_model, mv.version, len(test))
    data = evaluation_input(python_model, test)
    metrics = compute_metrics(data, rare_class_max_support=params.evaluate.rare_class_max_support)
    hierarchy = hierarchy_accuracy(data, python_model.leaf_to_path)
    hierarchical = hierarchy_f1(data, python_model.leaf_to_path)  # {} for flat labels
    pairs = confused_pairs(data)
    table = reliability_table(data.y_true, data.labels, data.proba, 15)
    card = python_model.card
    calibration, review, curve = calibration_and_review(card, data)
    latency = cpu_latency_ms(model, frame, params.evaluate.latency_items)
    variants = variant_metrics(model, test, frame, params=params, loaded_scores={
        "macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"], **latency})
    fingerprint = test_set_fingerprint(test["id"])
    out = settings.resolve(settings.reports_dir) / "evaluation" / f"v{mv.version}"
    out.mkdir(parents=True, exist_ok=True)
    confusion_matrix_png(data, out / "confusion_matrix.png")
    per_class_f1_png(metrics, out / "per_class_f1.png")
    reliability_png(table, out / "reliability.png")
    coverage_precision_png(curve, out / "coverage_precision.png", review=review)
    curve.to_csv(out / "coverage_precision.csv", index=False)
    (out / "confused_pairs.json").write_text(json.dumps(pairs, indent=2, ensure_ascii=False))
    pd.DataFrame.from_dict(metrics["per_class"], orient="index").rename_axis("label").to_csv(out / "per_class.csv")
    (out / "model_report.md").write_text(render_model_report(
        model_name=settings.registered_model, version=str(mv.version), family=card.get("family", "?"),
        metrics=metrics, hierarchy=hierarchy, pairs=pairs, dataset=card.get("dataset", "?"), reliability=table,
        runtime=python_model.runtime, variants=variants, calibration=calibration, review=review,
        hierarchical=hierarchical,
    ))
    summary = {
        "version": str(mv.version), "run_id": mv.run_id, "test_fingerprint": fingerprint, "test_rows": len(test),
        **{k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "top3_accuracy", "ece")},
        "hierarchy": hierarchy, "hierarchical_f1": hierarchical, **latency, "runtime": python_model.runtime,
        "variants": variants,
        "slices": metrics["slices"], "per_class": metrics["per_class"],
        "calibration": calibration, "review": review,
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(out / "metrics.json", summary)
    write_json(settings.resolve(settings.reports_dir) / EVALUATION_FILE, summary)
    with mlflow.start_run(run_id=mv.run_id):
        mlflow.log_metrics(_flat_metrics(metrics, hierarchy, latency) | _review_metrics(calibration, review)
                           | {f"test_hierarchical_{k}": v for k, v in hierarchical.items()} | {
            f"test_{runtime.replace('-', '_')}_{key}": value
            for runtime, values in variants.items() for key, value in values.items()
        })
        mlflow.log_artifacts(str(out), artifact_path="evaluation")
    set_version_tags(client, settings, str(mv.version), {
        "test_fingerprint": fingerprint, "test_macro_f1": f"{metrics['macro_f1']:.4f}",
        "test_accuracy": f"{metrics['accuracy']:.4f}", "evaluated_at": summary["evaluated_at"],
    })
    log.info("v%s: accuracy %.4f, macro-F1 %.4f, top-3 %.4f, ECE %.4f, p50 %.1f ms", mv.version,
             metrics["accuracy"], metrics["macro_f1"], metrics["top3_accuracy"], metrics["ece"],
             latency["latency_p50_ms"])
    return summary


def load_evaluation(client: Any, run_id: str) -> dict[str, Any] | None:
    """The evaluation summary stored with a run, or None if it was never evaluated."""
    try:
        path = client.download_artifacts(run_id, "evaluation/metrics.json")
    except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        return None
    return json.loads(Path(path).read_text())
