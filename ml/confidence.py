"""Where the model's own confidence stops meaning much: a threshold on the top probability,
set on the validation split, below which an answer is flagged as low confidence.

The threshold is the highest top probability ``t`` such that the validation products
scored below ``t`` are right at most ``max_accuracy`` of the time (by default: more
often wrong than right). It travels in the model card; the service flags answers below
it. A calibrated abstention with a review queue is a stronger tool; this flag is the
floor every version has.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def low_confidence_threshold(
    top_probability: np.ndarray, correct: np.ndarray, *, max_accuracy: float, min_rows: int = 10
) -> dict[str, Any]:
    """The threshold and what it means on validation: share flagged, accuracy of both sides.

    ``threshold`` is 0.0 (nothing flagged) when no low-probability set of at least ``min_rows``
    products is that inaccurate.
    """
    order = np.argsort(top_probability, kind="stable")
    p, right = np.asarray(top_probability, dtype=float)[order], np.asarray(correct, dtype=float)[order]
    n = len(p)
    below_accuracy = np.cumsum(right) / np.arange(1, n + 1)  # accuracy of the k lowest, k = 1..n
    # A cut may only fall between distinct probabilities, so ties are flagged together or not at all.
    distinct = np.append(p[1:] > p[:-1], True)
    eligible = np.flatnonzero((below_accuracy <= max_accuracy) & distinct & (np.arange(1, n + 1) >= min_rows))
    flagged = int(eligible[-1] + 1) if eligible.size else 0
    threshold = float(p[flagged]) if 0 < flagged < n else (float(p[-1]) + 1e-9 if flagged == n else 0.0)
    return {
        "threshold": round(threshold, 6),
        "max_accuracy": max_accuracy,
        "validation_rows": n,
        "flagged_share": round(flagged / n, 4) if n else 0.0,
        "accuracy_flagged": round(float(right[:flagged].mean()), 4) if flagged else None,
        "accuracy_answered": round(float(right[flagged:].mean()), 4) if flagged < n else None,
    }
