"""Model families. Each maps product texts to class probabilities and saves
itself to a folder that holds everything needed to load it again.

A family that reads more than the text (``image``, ``fusion``) also implements
``predict_proba_records(records, *, image_root, cache=None)``: the records themselves (their ``image`` is a
stored photo's path relative to ``image_root``), answered with the modalities each answer used.
``score_records`` calls whichever a family has."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

META_FILE = "productcat_model.json"
TEXT_ONLY = ("text",)


class TextClassifier(Protocol):
    family: str
    labels: list[str]
    runtime: str  # what computes predict_proba now (a transformer may run on torch or an ONNX variant)

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...

    def available_runtimes(self) -> list[str]: ...

    def use_runtime(self, preferred: str | None, *, threads: int = 0) -> str: ...

    def save(self, folder: Path) -> None: ...


def score_records(classifier: TextClassifier, records: Sequence[Mapping[str, Any]], *, image_root: Path | None,
                  cache: Path | None = None) -> tuple[np.ndarray, list[list[str]]]:
    """Probabilities of product records and, per record, the modalities the answer used: the family's
    own record-level method where it has one, else its text path (every answer ["text"]). ``cache``:
    a file that keeps image embeddings between runs (training's splits; never at serving)."""
    by_records = getattr(classifier, "predict_proba_records", None)
    if by_records is not None:
        return by_records(records, image_root=image_root, cache=cache)
    from ml.features import product_texts

    return classifier.predict_proba(product_texts(records)), [list(TEXT_ONLY) for _ in records]


def load_classifier(folder: Path) -> TextClassifier:
    """Load whichever family saved itself into ``folder``."""
    family = json.loads((folder / META_FILE).read_text())["family"]
    if family == "baseline":
        from ml.models.baseline import BaselineClassifier

        return BaselineClassifier.load(folder)
    if family == "transformer":
        from ml.models.transformer import TransformerClassifier

        return TransformerClassifier.load(folder)
    if family == "image":
        from ml.models.image import ImageClassifier

        return ImageClassifier.load(folder)
    if family == "fusion":
        from ml.models.fusion import FusionClassifier

        return FusionClassifier.load(folder)
    raise ValueError(f"unknown model family {family!r} in {folder}")
