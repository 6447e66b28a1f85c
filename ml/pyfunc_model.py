"""The MLflow pyfunc that the registry stores and the API loads.

It takes product records (the fields the API accepts) and returns the label,
its probability, the top-k labels with probabilities and the label's path.
Labels, tokenizer/vectoriser and preprocessing all live in the artifact, so a
loader needs nothing but ``mlflow.pyfunc.load_model``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

from ml.calibration import apply_temperature, card_temperature
from ml.features import PREPROCESSING_VERSION, clean_record
from ml.hierarchy import LabelTree, leaf_path_probabilities
from ml.models import score_records
from ml.settings import get_settings
from ml.text import clean_text

CARD_FILE = "model_card.json"
# Real products held with the version (validation rows it was not fitted on): the API scores them and
# checks the answers before it serves the version. Small, because that self-test runs at every swap.
SELF_TEST_FILE = "self_test_sample.json"
SELF_TEST_ROWS = 64
CLASSIFIER_ARTIFACT = "classifier"
INPUT_COLUMNS = ("title", "description", "features", "brand", "price", "image")
DEFAULT_TOP_K = 3
OUTPUT_COLUMNS = ["label", "probability", "top_labels", "top_probabilities", "label_path"]
# Per top-k label: its path in the training tree and the probability of each node on it (ml/hierarchy.py).
# Apart from OUTPUT_COLUMNS so batch scoring's file schema stays what it was.
PATH_COLUMNS = ["top_paths", "top_path_probabilities"]
RUNTIME_TAG = "serving_runtime"  # version tag set by the gate: the variant the version serves with

SIGNATURE = ModelSignature(
    inputs=Schema([
        ColSpec(DataType.string, "title", required=False),
        ColSpec(DataType.string, "description", required=False),
        ColSpec(Array(DataType.string), "features", required=False),
        ColSpec(DataType.string, "brand", required=False),
        ColSpec(DataType.double, "price", required=False),
        ColSpec(DataType.string, "image", required=False),
    ]),
    outputs=Schema([
        ColSpec(DataType.string, "label"),
        ColSpec(DataType.double, "probability"),
        ColSpec(Array(DataType.string), "top_labels"),
        ColSpec(Array(DataType.double), "top_probabilities"),
        ColSpec(Array(DataType.string), "label_path"),
        ColSpec(Array(Array(DataType.string)), "top_paths", required=False),
        ColSpec(Array(Array(DataType.double)), "top_path_probabilities", required=False),
    ]),
    params=ParamSchema([ParamSpec("top_k", DataType.long, DEFAULT_TOP_K)]),
)


def photo_root(configured: str | None) -> Path:
    """Where records' stored photo paths are resolved: the loader's ``image_root``, else ``interim_dir``."""
    if configured:
        return Path(configured)
    settings = get_settings()
    return settings.resolve(settings.interim_dir)


def write_card(folder: Path, card: dict[str, Any]) -> None:
    (folder / CARD_FILE).write_text(json.dumps({"preprocessing_version": PREPROCESSING_VERSION, **card}, indent=2))


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Product records as people send them (description as a list, price as "$12.99")
    -> the frame the signature describes: every input column, typed, anything else dropped."""
    rows = []
    for record in records:
        fields = clean_record(record)
        rows.append({
            "title": fields["title"], "description": fields["description"], "features": fields["features"],
            "brand": fields["brand"], "price": fields["price"], "image": clean_text(record.get("image")),
        })
    return pd.DataFrame(rows, columns=list(INPUT_COLUMNS))


def _plain(value: Any) -> Any:
    """A frame cell as JSON: arrays as lists of strings, NaN/NA as None, numpy scalars as Python ones."""
    if isinstance(value, (np.ndarray, list, tuple)):
        return [str(v) for v in value]
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def write_self_test_sample(folder: Path, frame: pd.DataFrame) -> int:
    """Store ``frame``'s products (input fields only, as the API receives them) in the artifact folder."""
    records = [{k: v for k, v in ((k, _plain(v)) for k, v in row.items()) if v is not None}
               for row in frame[list(INPUT_COLUMNS)].to_dict(orient="records")]
    (folder / SELF_TEST_FILE).write_text(json.dumps(records))
    return len(records)


class ProductClassifierModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        """``model_config`` (optional): ``runtime`` (what the gate chose for this version, see
        ``load_registered``), ``intra_op_threads`` (0 = one per core) and ``image_root`` (the folder a
        record's ``image`` path is relative to; default: this process's ``interim_dir`` setting)."""
        from ml.models import load_classifier

        folder = Path(context.artifacts[CLASSIFIER_ARTIFACT])
        self.classifier = load_classifier(folder)
        self.card: dict[str, Any] = json.loads((folder / CARD_FILE).read_text())
        self.leaf_to_path: dict[str, list[str]] = self.card.get("leaf_to_path", {})
        self.tree = LabelTree.from_card(self.classifier.labels, self.leaf_to_path)
        sample = folder / SELF_TEST_FILE  # absent from versions trained before it was stored
        self.self_test_records: list[dict[str, Any]] | None = (
            json.loads(sample.read_text()) if sample.exists() else None
        )
        config = context.model_config or {}
        self.image_root = photo_root(config.get("image_root"))
        self.classifier.use_runtime(config.get("runtime"), threads=int(config.get("intra_op_threads") or 0))

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    @property
    def runtime(self) -> str:
        return self.classifier.runtime

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """The probabilities the service serves: calibrated when the version's card holds a temperature."""
        records = frame.replace({np.nan: None}).to_dict(orient="records")
        return self._scored(records)[0]

    def _scored(self, records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, list[list[str]]]:
        """Served (calibrated) probabilities and the modalities each answer used."""
        proba, modalities = score_records(self.classifier, records, image_root=self.image_root)
        return self._calibrated(proba), modalities

    def _calibrated(self, proba: np.ndarray) -> np.ndarray:
        # Versions trained before calibration have no temperature: their probabilities stay raw.
        return apply_temperature(proba, card_temperature(self.card))

    def predict_records(self, records: Sequence[Mapping[str, Any]], top_k: int = DEFAULT_TOP_K) -> list[dict[str, Any]]:
        """Product records as sent (raw strings, lists, "$12.99") -> one answer each. The serving path:
        the same cleaning and model as ``predict``, without a DataFrame on the way in or out. Each of the
        top-k also comes with its path and the (aggregated) probability of every node on it, and each
        answer with the modalities it used (["text"]; image families: ["image"], ["text", "image"], or []
        for the training prior of an image-only model given no photo)."""
        top_k = max(1, min(int(top_k), len(self.labels)))
        proba, modalities = self._scored(records)
        order = np.argsort(-proba, axis=1)[:, :top_k]
        path_probs = leaf_path_probabilities(self.tree, proba, order)
        labels = np.asarray(self.labels)
        answers = []
        for row, top, probs, used in zip(proba, order, path_probs, modalities, strict=True):
            best = str(labels[top[0]])
            answers.append({
                "label": best,
                "probability": float(row[top[0]]),
                "top_labels": labels[top].tolist(),
                "top_probabilities": row[top].tolist(),
                "label_path": self.leaf_to_path.get(best, [best]),
                "top_paths": [list(self.tree.paths[i]) for i in top],
                "top_path_probabilities": probs,
                "modalities": used,
            })
        return answers

    def explain(self, record: Mapping[str, Any], *, label: str | None = None, budget_seconds: float,
                ig_steps: int = 32, top_features: int = 10) -> dict[str, Any]:
        """Why ``record`` gets ``label`` (default: its top label): the label's probability and every label
        ranked (as ``predict_records`` gives them), and the explanation (ml/explain.py) of the label's score.
        UnknownLabel for a label the model lacks; ExplanationBudgetExceeded past ``budget_seconds``."""
        from ml.explain import Deadline, explain_classifier, label_index

        deadline = Deadline(budget_seconds)
        if label is not None:
            label_index(self.labels, label)  # refuse an unknown label before any work
        (answer,) = self.predict_records([record], top_k=len(self.labels))
        label = answer["label"] if label is None else label
        probability = dict(zip(answer["top_labels"], answer["top_probabilities"], strict=True))[label]
        deadline.check("scoring the product")
        explanation = explain_classifier(self.classifier, record, label=label, deadline=deadline,
                                         ig_steps=ig_steps, top_features=top_features, image_root=self.image_root)
        ranked = [{"label": name, "probability": float(p)}
                  for name, p in zip(answer["top_labels"], answer["top_probabilities"], strict=True)]
        return {"label": label, "probability": float(probability), "method": explanation.method,
                "top_k": ranked, "explanation": explanation.to_dict()}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        top_k = int((params or {}).get("top_k", DEFAULT_TOP_K))
        records = model_input.replace({np.nan: None}).to_dict(orient="records")
        return pd.DataFrame(self.predict_records(records, top_k), columns=OUTPUT_COLUMNS + PATH_COLUMNS)


def load_registered(name: str, version: str, *, threads: int = 0,
                    runtime: str | None = None) -> tuple[Any, ProductClassifierModel]:
    """A registered version as MLflow loads it (the pyfunc) and the classifier inside it, running on
    ``runtime`` or else the one the gate chose for it (tag ``serving_runtime``; none: the default,
    fp32 ONNX where the version has it). TypeError when the version holds some other model."""
    runtime = runtime or MlflowClient().get_model_version(name, version).tags.get(RUNTIME_TAG)
    config = {"runtime": runtime, "intra_op_threads": threads}
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}", model_config=config)
    model = pyfunc.unwrap_python_model()
    if not isinstance(model, ProductClassifierModel):
        raise TypeError(f"{name} v{version} is not a product classifier: {type(model).__name__}")
    return pyfunc, model
