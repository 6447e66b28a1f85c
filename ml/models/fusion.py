"""Text + image late fusion: a TF-IDF baseline, the image head, and a stacking head over both.

The stacking head (a logistic regression over [log p_text, log p_image]) must learn how far to trust
each model on products neither was fitted on, so it is fitted on out-of-fold probabilities of the
train split (``cross_val_predict``, ``folds`` folds, on products with a photo), never on validation
or test, which stay for calibration, the review threshold and the gate. A product without a usable
photo gets the text model's answer alone (modalities ["text"]).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from ml.features import product_texts
from ml.models import META_FILE
from ml.models.baseline import BaselineClassifier
from ml.models.image import ImageClassifier, full_proba
from ml.models.image_embeddings import ImageEmbedder, record_embeddings

log = logging.getLogger(__name__)

STACKER_FILE = "stacker.joblib"
TEXT_DIR, IMAGE_DIR = "text", "image"
FLOOR = 1e-6  # log-probabilities are clipped here: a fold without a class gives it 0


def stack_features(text_proba: np.ndarray, image_proba: np.ndarray) -> np.ndarray:
    return np.hstack([np.log(np.clip(text_proba, FLOOR, 1.0)), np.log(np.clip(image_proba, FLOOR, 1.0))])


def _out_of_fold(model: Any, x: Any, y: np.ndarray, *, n_classes: int, folds: int, seed: int) -> np.ndarray:  # noqa: ANN401
    """Each row's probabilities from a clone fitted on the other folds, spread over ``n_classes``."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Expected with rare classes: a class with fewer rows than folds is missing from some folds,
        # whose predictions then give it 0 (clipped to FLOOR in stack_features).
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        warnings.filterwarnings("ignore", message="Number of classes in training fold", category=RuntimeWarning)
        proba = cross_val_predict(clone(model), x, y, cv=splitter, method="predict_proba")
    out = np.zeros((len(y), n_classes))
    out[:, np.unique(y)] = proba  # cross_val_predict's columns: the sorted classes of y
    return out


class FusionClassifier:
    family = "fusion"
    runtime = "torch"

    def __init__(self, text: BaselineClassifier, image: ImageClassifier, stacker: LogisticRegression) -> None:
        if text.labels != image.labels:
            raise ValueError("the text and image models of a fusion must share one label list")
        self.text = text
        self.image = image
        self.stacker = stacker
        self.labels = text.labels

    @classmethod
    def fit(cls, records: Sequence[Mapping[str, Any]], labels: list[str], *, image_root: Path, cache: Path | None,
            size: int, batch_size: int, image_c: float, text_c: float, max_features: int, stack_c: float,
            class_weight: dict[str, float] | None, seed: int, folds: int = 3) -> FusionClassifier:
        texts = product_texts(records)
        text = BaselineClassifier.fit(texts, labels, c=text_c, class_weight=class_weight,
                                      max_features=max_features, seed=seed)
        embedder = ImageEmbedder(size=size, batch_size=batch_size)
        vectors, mask = record_embeddings(embedder, records, image_root=image_root, cache=cache)
        image = ImageClassifier.fit_embeddings(vectors, mask, labels, size=size, batch_size=batch_size, c=image_c,
                                               class_weight=class_weight, seed=seed)
        image.embedder = embedder
        index = {name: i for i, name in enumerate(text.labels)}
        y = np.asarray([index[label] for label in labels])
        n = len(text.labels)
        log.info("out-of-fold probabilities (%d folds) for the stacking head on %d products with a photo",
                 folds, int(mask.sum()))
        text_oof = _out_of_fold(text.pipeline, texts, y, n_classes=n, folds=folds, seed=seed)[mask]
        image_oof = _out_of_fold(image.head, vectors, y[mask], n_classes=n, folds=folds, seed=seed)
        weights = {index[k]: w for k, w in class_weight.items()} if class_weight else None
        stacker = LogisticRegression(C=stack_c, class_weight=weights, max_iter=1000, random_state=seed)
        stacker.fit(stack_features(text_oof, image_oof), y[mask])
        return cls(text, image, stacker)

    def predict_proba_records(self, records: Sequence[Mapping[str, Any]], *, image_root: Path | None,
                              cache: Path | None = None) -> tuple[np.ndarray, list[list[str]]]:
        """Probabilities and the modalities each used: ["text", "image"], or ["text"] without a usable photo."""
        proba = self.text.predict_proba(product_texts(records))
        vectors, mask = record_embeddings(self.image.embedder, records, image_root=image_root, cache=cache)
        if mask.any():
            features = stack_features(proba[mask], self.image.head_proba(vectors))
            proba[mask] = full_proba(self.stacker, features, len(self.labels))
        return proba, [["text", "image"] if has else ["text"] for has in mask]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Text alone: the text model's answer."""
        return self.text.predict_proba(texts)

    def available_runtimes(self) -> list[str]:
        return [self.runtime]

    def use_runtime(self, preferred: str | None, *, threads: int = 0) -> str:
        return self.runtime

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.text.save(folder / TEXT_DIR)
        self.image.save(folder / IMAGE_DIR)
        joblib.dump(self.stacker, folder / STACKER_FILE)
        (folder / META_FILE).write_text(json.dumps({"family": self.family, "labels": self.labels}))

    @classmethod
    def load(cls, folder: Path) -> FusionClassifier:
        return cls(BaselineClassifier.load(folder / TEXT_DIR), ImageClassifier.load(folder / IMAGE_DIR),
                   joblib.load(folder / STACKER_FILE))
