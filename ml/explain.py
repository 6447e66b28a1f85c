"""Why a model gave a product a label: which words of which field pushed towards it and away from it.

One shape for every model family (``Explanation``); each family computes it its own way
(ml/explain_linear.py: exact contributions of the TF-IDF baseline; ml/explain_transformer.py:
integrated gradients). Both work on the one text the model reads (ml/features.py product_text) and
map what they find back onto each field's cleaned text as word spans with character offsets.

Cost is bounded by a ``Deadline`` checked between chunks of work: past it, the work stops with
``ExplanationBudgetExceeded`` instead of finishing late.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ml.features import SEP, clean_record, product_text

FIELD_PREFIXES = {"brand": "brand: ", "price": "price: "}  # what product_text writes before these fields
_WORD = re.compile(r"\S+")  # a span is a whitespace-separated word: every character a model weighs is in one


class ExplanationBudgetExceeded(RuntimeError):
    """The explanation would take longer than its time budget."""


class Unexplainable(RuntimeError):
    """No explanation method fits this model."""


class UnknownLabel(ValueError):
    """The label asked for is not one the model can answer."""


class Deadline:
    """A time budget started at construction; ``check`` raises once it is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def check(self, stage: str) -> None:
        if self.elapsed > self.seconds:
            raise ExplanationBudgetExceeded(
                f"the explanation needs more than its budget of {self.seconds * 1000:g} ms (stopped while {stage})")


@dataclass(frozen=True)
class Span:
    start: int  # offsets into the field's text
    end: int
    text: str
    weight: float  # > 0 pushes towards the label, < 0 away from it


@dataclass(frozen=True)
class FieldExplanation:
    field: str
    text: str  # the field as the model read it (cleaned)
    spans: list[Span]


@dataclass(frozen=True)
class FeatureWeight:
    feature: str
    kind: str  # word | char | token | patch
    weight: float


@dataclass(frozen=True)
class ImageMap:
    """Occlusion weights of a photo's patches, row by row (> 0: the patch supports the label)."""

    rows: int
    cols: int
    size: int  # side of the square input the model saw, in pixels
    weights: list[list[float]]


@dataclass(frozen=True)
class Explanation:
    label: str
    method: str  # linear-exact | integrated-gradients | occlusion | late-fusion
    base_value: float  # the class's score with no input features (intercept; IG: the baseline input)
    score: float  # base_value + every contribution: the class's logit
    fields: list[FieldExplanation]
    top_features: list[FeatureWeight]
    duration_ms: float = 0.0
    image_map: ImageMap | None = None  # the photo families (ml/explain_image.py)
    modality_shares: dict[str, float] | None = None  # how much of the decision came from text and from photo

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies every span, a fifth of the time of a long product's explanation.
        return {
            "label": self.label, "method": self.method, "base_value": self.base_value, "score": self.score,
            "fields": [{"field": f.field, "text": f.text, "spans": [s.__dict__.copy() for s in f.spans]}
                       for f in self.fields],
            "top_features": [f.__dict__.copy() for f in self.top_features], "duration_ms": self.duration_ms,
            "image_map": self.image_map.__dict__.copy() if self.image_map else None,
            "modality_shares": self.modality_shares,
        }


@dataclass(frozen=True)
class TextLayout:
    """The text a model reads and where each field's cleaned text sits inside it."""

    text: str
    fields: list[tuple[str, int, str]]  # (field, start offset in text, field text)


def text_layout(record: Mapping[str, Any]) -> TextLayout:
    """product_text with the place of each field; built the same way and checked against it, so a
    change there cannot silently shift every offset."""
    cleaned = clean_record(record)
    values = {
        "title": cleaned["title"], "brand": cleaned["brand"],
        "price": f"{cleaned['price']:.2f}" if cleaned["price"] is not None else None,
        "features": "; ".join(cleaned["features"]) or None, "description": cleaned["description"],
    }
    parts: list[str] = []
    fields: list[tuple[str, int, str]] = []
    position = 0
    for name in ("title", "brand", "price", "features", "description"):
        value = values[name]
        if not value:
            continue
        if parts:
            position += len(SEP)
        prefix = FIELD_PREFIXES.get(name, "")
        fields.append((name, position + len(prefix), value))
        parts.append(prefix + value)
        position += len(prefix) + len(value)
    text = SEP.join(parts)
    if text != product_text(record):
        raise RuntimeError("text_layout no longer matches ml.features.product_text")
    return TextLayout(text=text, fields=fields)


def field_spans(layout: TextLayout, char_weights: np.ndarray) -> list[FieldExplanation]:
    """Per-character weights over ``layout.text`` summed into every word of every field."""
    out = []
    for name, offset, value in layout.fields:
        spans = [Span(start=m.start(), end=m.end(), text=m.group(),
                      weight=float(char_weights[offset + m.start():offset + m.end()].sum()))
                 for m in _WORD.finditer(value)]
        out.append(FieldExplanation(field=name, text=value, spans=spans))
    return out


def strongest(features: list[FeatureWeight], count: int) -> list[FeatureWeight]:
    """The ``count`` features with the largest weights either way, strongest first; ties by name so
    the order is reproducible."""
    ranked = sorted(features, key=lambda f: (-abs(f.weight), f.kind, f.feature))
    return [f for f in ranked[:count] if f.weight != 0.0]


def label_index(labels: list[str], label: str) -> int:
    try:
        return labels.index(label)
    except ValueError:
        raise UnknownLabel(f"the model knows no label {label[:80]!r}") from None


def explain_classifier(classifier: Any, record: Mapping[str, Any], *, label: str, deadline: Deadline,  # noqa: ANN401
                       ig_steps: int, top_features: int, image_root: Path | None = None) -> Explanation:
    """Explain ``classifier``'s score of ``label`` for ``record``, whichever family it is (``image_root``:
    where the photo families find the stored photo a record names)."""
    index = label_index(list(classifier.labels), label)
    family = getattr(classifier, "family", None)
    if family == "baseline":
        from ml.explain_linear import explain_linear

        explanation = explain_linear(classifier, record, label_index=index, deadline=deadline,
                                     top_features=top_features)
    elif family == "transformer":
        from ml.explain_transformer import explain_transformer

        explanation = explain_transformer(classifier, record, label_index=index, deadline=deadline,
                                          n_steps=ig_steps, top_features=top_features)
    elif family in ("image", "fusion"):
        from ml.explain_image import explain_fusion, explain_image

        explain = explain_image if family == "image" else explain_fusion
        explanation = explain(classifier, record, label_index=index, deadline=deadline, image_root=image_root,
                              top_features=top_features)
    else:
        raise Unexplainable(f"no explanation method for model family {family!r}")
    return replace(explanation, duration_ms=deadline.elapsed * 1000)
