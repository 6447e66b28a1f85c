"""Model families. Each maps product texts to class probabilities and saves
itself to a folder that holds everything needed to load it again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

META_FILE = "productcat_model.json"


class TextClassifier(Protocol):
    family: str
    labels: list[str]
    runtime: str  # what computes predict_proba now (a transformer may run on torch or an ONNX variant)

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...

    def available_runtimes(self) -> list[str]: ...

    def use_runtime(self, preferred: str | None, *, threads: int = 0) -> str: ...

    def save(self, folder: Path) -> None: ...


def load_classifier(folder: Path) -> TextClassifier:
    """Load whichever family saved itself into ``folder``."""
    family = json.loads((folder / META_FILE).read_text())["family"]
    if family == "baseline":
        from ml.models.baseline import BaselineClassifier

        return BaselineClassifier.load(folder)
    if family == "transformer":
        from ml.models.transformer import TransformerClassifier

        return TransformerClassifier.load(folder)
    raise ValueError(f"unknown model family {family!r} in {folder}")
