"""Evaluation metrics computed from a model's probability matrix on the test set.

Pure functions: the caller runs the model and hands over an `EvaluationInput`;
nothing here reads files, talks to MLflow or draws.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, precision_recall_fscore_support

log = logging.getLogger(__name__)

SHORT_TITLE_WORDS = 5  # a title with fewer words than this puts the row in the `short_title` slice
TOP_K = 3  # `top3_accuracy`: the right class among this many highest probabilities
SLICES: tuple[str, ...] = ("no_description", "short_title", "missing_brand", "rare_classes")


@dataclass
class EvaluationInput:
    """Test rows with the model's probabilities; column j of `proba` is `labels[j]`."""

    labels: list[str]
    y_true: list[str]
    proba: np.ndarray
    frame: pd.DataFrame

    def __post_init__(self) -> None:
        self.proba = np.asarray(self.proba, dtype=float)
        n, k = len(self.y_true), len(self.labels)
        if k == 0:
            raise ValueError("labels is empty")
        if len(set(self.labels)) != k:
            raise ValueError("labels contain duplicates")
        if self.proba.shape != (n, k):
            raise ValueError(f"proba has shape {self.proba.shape}, expected ({n}, {k}) for {n} rows and {k} labels")
        if len(self.frame) != n:
            raise ValueError(f"frame has {len(self.frame)} rows but y_true has {n}")
        # Not fatal: argmax and top-k still hold, only the calibration numbers become meaningless.
        if n and not np.allclose(self.proba.sum(axis=1), 1.0, atol=1e-3):
            log.warning("probability rows do not sum to 1; ECE and mean confidence will be misleading")

    @property
    def y_pred(self) -> list[str]:
        return [self.labels[i] for i in self.proba.argmax(axis=1)]

    @property
    def confidence(self) -> np.ndarray:
        """Top-1 probability of each row."""
        return self.proba.max(axis=1)


def reliability_table(
    y_true: Sequence[str], labels: Sequence[str], proba: np.ndarray, n_bins: int = 15
) -> pd.DataFrame:
    """Top-1 confidence against accuracy in `n_bins` equal-width bins over [0, 1].

    Columns: bin_lower, bin_upper, mean_confidence, accuracy, count. Every bin is
    listed; an empty one has count 0 and NaN confidence and accuracy.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    proba = np.asarray(proba, dtype=float)
    confidence = proba.max(axis=1) if len(proba) else np.empty(0)
    predicted = proba.argmax(axis=1) if len(proba) else np.empty(0, dtype=int)
    correct = np.array([labels[i] == t for i, t in zip(predicted, y_true, strict=True)], dtype=bool)
    # floor(c * n_bins) gives [lower, upper) bins; confidence 1.0 joins the top bin.
    index = np.clip(np.floor(confidence * n_bins).astype(int), 0, n_bins - 1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    rows = []
    for b in range(n_bins):
        in_bin = index == b
        count = int(in_bin.sum())
        rows.append(
            {
                "bin_lower": float(edges[b]),
                "bin_upper": float(edges[b + 1]),
                "mean_confidence": float(confidence[in_bin].mean()) if count else np.nan,
                "accuracy": float(correct[in_bin].mean()) if count else np.nan,
                "count": count,
            }
        )
    return pd.DataFrame(rows)


def ece_from_table(table: pd.DataFrame) -> float:
    """Expected calibration error: |accuracy - confidence| per bin, weighted by the bin's share of rows."""
    filled = table[table["count"] > 0]
    total = int(filled["count"].sum())
    if total == 0:
        return 0.0
    gaps = (filled["accuracy"] - filled["mean_confidence"]).abs()
    return float((gaps * filled["count"]).sum() / total)


def compute_metrics(data: EvaluationInput, *, rare_class_max_support: int = 10, n_bins: int = 15) -> dict[str, Any]:
    """Headline, per-class, slice and calibration metrics as a JSON-serialisable dict."""
    n = len(data.y_true)
    if n == 0:
        raise ValueError("cannot evaluate on an empty test set")
    y_true, y_pred = list(data.y_true), data.y_pred
    known = set(data.labels)
    unknown = sum(t not in known for t in y_true)
    if unknown:
        log.warning("%d test rows have a true label outside the model's labels; counted as errors", unknown)
    correct = np.array([t == p for t, p in zip(y_true, y_pred, strict=True)], dtype=bool)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=data.labels, zero_division=0
    )
    confidence = data.confidence
    return {
        "n": n,
        "accuracy": float(correct.mean()),
        "top3_accuracy": float(_top_k_hits(data, TOP_K).mean()),
        "macro_f1": _f1(y_true, y_pred, data.labels, "macro"),
        "weighted_f1": _f1(y_true, y_pred, data.labels, "weighted"),
        "ece": ece_from_table(reliability_table(y_true, data.labels, data.proba, n_bins)),
        "mean_confidence": float(confidence.mean()),
        "unknown_true_labels": unknown,
        "rare_class_max_support": rare_class_max_support,
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(data.labels, precision, recall, f1, support, strict=True)
        },
        "slices": {
            name: _slice_metrics(mask, correct, y_true, y_pred, data.labels)
            for name, mask in slice_masks(data, rare_class_max_support=rare_class_max_support).items()
        },
    }


def slice_masks(data: EvaluationInput, *, rare_class_max_support: int = 10) -> dict[str, np.ndarray]:
    """Boolean row masks of the evaluation slices, in the order of `SLICES`."""
    support = Counter(data.y_true)
    return {
        "no_description": np.array([_is_blank(v) for v in _column(data.frame, "description")], dtype=bool),
        "short_title": np.array([_word_count(v) < SHORT_TITLE_WORDS for v in _column(data.frame, "title")], dtype=bool),
        "missing_brand": np.array([_is_blank(v) for v in _column(data.frame, "brand")], dtype=bool),
        "rare_classes": np.array([support[t] <= rare_class_max_support for t in data.y_true], dtype=bool),
    }


def hierarchy_accuracy(data: EvaluationInput, leaf_to_path: dict[str, list[str]]) -> dict[str, float]:
    """Accuracy at each level of the label tree, reading the predicted leaf's path from `leaf_to_path`.

    A level counts as right only when the whole path down to it matches: the same
    name can sit under different parents. Returns {} for flat (depth 1) labels.
    """
    true_paths = [_as_path(v) for v in _column(data.frame, "label_path")]
    depth = max((len(p) for p in true_paths), default=0)
    if depth <= 1:
        return {}
    # A leaf's path is a fact of the taxonomy, so the test rows may fill leaves the caller's map lacks.
    lookup = {p[-1]: p for p in true_paths if p} | {leaf: _as_path(path) for leaf, path in leaf_to_path.items()}
    y_pred = data.y_pred
    missing = sorted(set(y_pred) - lookup.keys())
    if missing:
        log.warning("no label path for predicted leaves %s; counted wrong at every level", missing[:5])
    pred_paths = [lookup.get(leaf, []) for leaf in y_pred]
    result: dict[str, float] = {}
    for level in range(depth):
        hits = [
            pred[: level + 1] == true[: level + 1]
            for true, pred in zip(true_paths, pred_paths, strict=True)
            if len(true) > level  # ragged trees: a row only counts at levels its true path has
        ]
        result[f"level_{level}"] = float(np.mean(hits))
    return result


def hierarchical_f1(true_paths: Sequence[Sequence[str]], pred_paths: Sequence[Sequence[str]]) -> dict[str, float]:
    """Hierarchical precision, recall and F1 (Kiritchenko et al.): each answer and each truth is the set of
    its nodes from the first level down (the artificial root above level 0 left out), credit is their
    overlap, micro-averaged over rows. A shorter (coarser) right answer loses recall, not precision."""
    overlap = predicted = true = 0
    for t, p in zip(true_paths, pred_paths, strict=True):
        t_nodes = {tuple(t[: i + 1]) for i in range(len(t))}
        p_nodes = {tuple(p[: i + 1]) for i in range(len(p))}
        overlap += len(t_nodes & p_nodes)
        predicted += len(p_nodes)
        true += len(t_nodes)
    hp = overlap / predicted if predicted else 0.0
    hr = overlap / true if true else 0.0
    return {"hp": hp, "hr": hr, "hf1": 2 * hp * hr / (hp + hr) if hp + hr else 0.0}


def path_level_accuracy(true_paths: Sequence[Sequence[str]],
                        pred_paths: Sequence[Sequence[str]]) -> dict[str, float | None]:
    """Per level: the share of rows answered at that level (a path reaching it, on rows whose true path
    reaches it) whose path down to it is right. None for a level no answer reaches."""
    depth = max((len(t) for t in true_paths), default=0)
    result: dict[str, float | None] = {}
    for level in range(depth):
        hits = [list(p[: level + 1]) == list(t[: level + 1])
                for t, p in zip(true_paths, pred_paths, strict=True) if len(t) > level and len(p) > level]
        result[f"level_{level}"] = float(np.mean(hits)) if hits else None
    return result


def hierarchy_f1(data: EvaluationInput, leaf_to_path: dict[str, list[str]]) -> dict[str, float]:
    """Hierarchical P/R/F1 of the predicted leaves' paths (from `leaf_to_path`) against the true paths;
    {} for flat (depth 1) labels, where it equals accuracy."""
    true_paths = [_as_path(v) for v in _column(data.frame, "label_path")]
    if max((len(p) for p in true_paths), default=0) <= 1:
        return {}
    lookup = {p[-1]: p for p in true_paths if p} | {leaf: _as_path(path) for leaf, path in leaf_to_path.items()}
    return hierarchical_f1(true_paths, [lookup.get(leaf, [leaf]) for leaf in data.y_pred])


def confused_pairs(data: EvaluationInput, top: int = 10, examples: int = 3) -> list[dict[str, Any]]:
    """The most frequent (true, predicted) mistakes, each with its most confident example products."""
    y_pred, confidence = data.y_pred, data.confidence
    true_counts = Counter(data.y_true)
    rows_by_pair: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (t, p) in enumerate(zip(data.y_true, y_pred, strict=True)):
        if t != p:
            rows_by_pair[(t, p)].append(i)
    # Ties broken by name so the report does not change between identical runs.
    ranked = sorted(rows_by_pair.items(), key=lambda item: (-len(item[1]), item[0]))[:top]
    ids, titles = _column(data.frame, "id"), _column(data.frame, "title")
    pairs = []
    for (t, p), rows in ranked:
        # Confident mistakes first: they show best what the model has wrongly learnt.
        shown = sorted(rows, key=lambda i: (-confidence[i], i))[:examples]
        pairs.append(
            {
                "true": t,
                "predicted": p,
                "count": len(rows),
                "share_of_true": len(rows) / true_counts[t],
                "examples": [
                    {"id": _text(ids[i]), "title": _text(titles[i]), "probability": float(confidence[i])} for i in shown
                ],
            }
        )
    return pairs


def _top_k_hits(data: EvaluationInput, k: int) -> np.ndarray:
    index = {label: i for i, label in enumerate(data.labels)}
    true_index = np.array([index.get(t, -1) for t in data.y_true])  # -1 never matches: unknown labels miss
    # Stable sort keeps the first column equal to argmax, so top-1 here agrees with `y_pred` on ties.
    ranked = np.argsort(-data.proba, axis=1, kind="stable")[:, :k]
    return (ranked == true_index[:, None]).any(axis=1)


def _f1(y_true: list[str], y_pred: list[str], labels: list[str], average: Literal["macro", "weighted"]) -> float:
    # Average over the classes this test set has or predicts: a class absent from both has no
    # defined F1, and counting it as 0 would blame the model for the split.
    seen = set(y_true) | set(y_pred)
    present = [label for label in labels if label in seen]
    if not present:
        return 0.0
    return float(f1_score(y_true, y_pred, labels=present, average=average, zero_division=0))


def _slice_metrics(
    mask: np.ndarray, correct: np.ndarray, y_true: list[str], y_pred: list[str], labels: list[str]
) -> dict[str, Any]:
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        return {"n": 0, "accuracy": None, "macro_f1": None}
    true = [y_true[i] for i in rows]
    pred = [y_pred[i] for i in rows]
    return {"n": len(rows), "accuracy": float(correct[rows].mean()), "macro_f1": _f1(true, pred, labels, "macro")}


def _column(frame: pd.DataFrame, name: str) -> list[Any]:
    if name not in frame.columns:
        # Treated as missing everywhere rather than crashing the whole evaluation.
        log.warning("test frame has no %r column; every row counts as missing it", name)
        return [None] * len(frame)
    return frame[name].tolist()


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # list-likes: pd.isna returns an array
        return False


def _word_count(value: Any) -> int:
    return 0 if _is_blank(value) else len(str(value).split())


def _text(value: Any) -> str | None:
    return None if _is_blank(value) else str(value)


def _as_path(value: Any) -> list[str]:
    """A label path as a list, whether it came as a list, a numpy array (Parquet) or a missing value."""
    if value is None or isinstance(value, float):
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]
