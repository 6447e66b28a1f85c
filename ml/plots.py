"""PNG figures of an evaluation: confusion matrix, per-class F1, reliability diagram,
coverage vs precision of the review threshold.

Built on `matplotlib.figure.Figure` rather than pyplot, so no global figure
state leaks between calls and no GUI backend is ever needed.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ml.metrics import EvaluationInput, ece_from_table

log = logging.getLogger(__name__)

_MAX_NAME = 40  # longer class names are cut so the axes keep their room
_ANNOTATE_UP_TO = 20  # write the numbers into confusion cells only while they stay readable


def confusion_matrix_png(data: EvaluationInput, path: str | Path, max_classes: int = 40) -> Path:
    """Row-normalised confusion matrix (rows: true class); beyond `max_classes` only the most frequent true classes."""
    support = Counter(data.y_true)
    classes = list(data.labels)
    title = "Confusion matrix, rows normalised by true class"
    if len(classes) > max_classes:
        classes = sorted(classes, key=lambda c: (-support[c], c))[:max_classes]
        title += f"\nshowing the {max_classes} most frequent of {len(data.labels)} classes"
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)))
    for t, p in zip(data.y_true, data.y_pred, strict=True):
        if t in index and p in index:
            counts[index[t], index[p]] += 1
    # Divide by the whole row, not the visible cells: mistakes into hidden classes show as missing mass.
    totals = np.array([support[c] for c in classes], dtype=float)[:, None]
    matrix = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    n = len(classes)
    side = max(6.0, 0.22 * n + 3.0)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    font = _font_size(n)
    ax.set_xticks(range(n), [_short(c) for c in classes], rotation=90, fontsize=font)
    ax.set_yticks(range(n), [f"{_short(c)} ({support[c]})" for c in classes], fontsize=font)
    if n <= _ANNOTATE_UP_TO:
        for (row, col), value in np.ndenumerate(matrix):
            if value > 0:
                colour = "white" if value > 0.5 else "black"
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=font - 1, color=colour)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (test support)")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def per_class_f1_png(metrics: dict[str, Any], path: str | Path) -> Path:
    """Horizontal F1 bars, best class on top; classes without test support are left out (their F1 means nothing)."""
    per_class = metrics["per_class"]
    ranked = sorted(
        ((name, v) for name, v in per_class.items() if v["support"] > 0), key=lambda item: (item[1]["f1"], item[0])
    )
    n = len(ranked)
    fig = Figure(figsize=(8.0, max(3.0, 0.2 * n + 1.5)))
    ax = fig.add_subplot()
    f1 = np.array([v["f1"] for _, v in ranked])
    ax.barh(range(n), f1, color=matplotlib.colormaps["RdYlGn"](f1), edgecolor="none")
    ax.set_yticks(range(n), [f"{_short(name)} (n={v['support']})" for name, v in ranked], fontsize=_font_size(n))
    ax.set_ylim(-0.6, max(n, 1) - 0.4)
    ax.set_xlim(0.0, 1.0)
    macro = metrics["macro_f1"]
    ax.axvline(macro, color="black", linestyle="--", linewidth=1, label=f"macro F1 {macro:.3f}")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("F1")
    omitted = len(per_class) - n
    title = f"Per-class F1 on the test set ({n} classes"
    title += f"; {omitted} without test examples left out)" if omitted else ")"
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def reliability_png(table: pd.DataFrame, path: str | Path) -> Path:
    """Accuracy per top-1 confidence bin against the diagonal of perfect calibration, ECE in the title."""
    fig = Figure(figsize=(6.0, 6.0))
    ax = fig.add_subplot()
    width = table["bin_upper"] - table["bin_lower"]
    ax.bar(
        table["bin_lower"],
        table["accuracy"].fillna(0.0),
        width=width,
        align="edge",
        color="tab:blue",
        edgecolor="black",
        linewidth=0.5,
        label="accuracy",
    )
    ax.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="grey", label="perfect calibration")
    filled = table[table["count"] > 0]
    ax.plot(filled["mean_confidence"], filled["accuracy"], "o", color="tab:red", markersize=4, label="mean confidence")
    for _, row in filled.iterrows():
        ax.text(
            (row["bin_lower"] + row["bin_upper"]) / 2,
            min(row["accuracy"], 0.93) + 0.02,
            str(int(row["count"])),
            ha="center",
            fontsize=6,
        )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("top-1 confidence")
    ax.set_ylabel("accuracy (numbers: products per bin)")
    ax.set_title(
        f"Reliability diagram, ECE {ece_from_table(table):.3f} over {int(table['count'].sum())} products", fontsize=10
    )
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def coverage_precision_png(curve: pd.DataFrame, path: str | Path, *, review: dict[str, Any] | None = None,
                           title: str | None = None) -> Path:
    """Precision of the answered products against the share answered, one point per possible threshold
    (``ml.review_threshold.coverage_precision_curve``); ``review`` (what the chosen threshold does
    here: coverage, precision_answered, threshold, target_precision) marks the operating point."""
    fig = Figure(figsize=(6.5, 5.0))
    ax = fig.add_subplot()
    ax.plot(curve["coverage"], curve["precision"], color="tab:blue", linewidth=1.5, label="answered precision")
    low = float(curve["precision"].min()) if len(curve) else 0.0
    if review and review.get("target_precision") is not None:
        target = float(review["target_precision"])
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.0%}")
        low = min(low, target)
    if review and review.get("threshold") is not None and review.get("precision_answered") is not None:
        ax.plot([review["coverage"]], [review["precision_answered"]], "o", color="tab:red", markersize=7,
                label=f"threshold {review['threshold']:.3f}: {review['coverage']:.1%} answered, "
                      f"precision {review['precision_answered']:.1%}")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(max(0.0, low - 0.02), 1.005)
    ax.set_xlabel("coverage (share of products answered)")
    ax.set_ylabel("precision of the answered products")
    rows = int(curve["answered"].max()) if len(curve) else 0
    ax.set_title(title or f"Coverage vs precision, calibrated top probability, {rows:,} products", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def _font_size(n_items: int) -> float:
    # Shrinks with the number of tick labels; the figures grow ~0.2 inch per class, which fits a 7 pt label,
    # so 100+ classes stay legible without overlapping.
    return float(np.clip(360.0 / max(n_items, 1), 7.0, 10.0))


def _short(name: str) -> str:
    return name if len(name) <= _MAX_NAME else name[: _MAX_NAME - 1] + "…"


def _save(fig: Figure, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format="png", dpi=110, bbox_inches="tight")
    log.info("wrote %s", target)
    return target
