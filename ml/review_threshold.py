"""Where a prediction stops being answered and goes to a person: a threshold on the calibrated
top probability, chosen on the validation split to reach a target precision.

Products whose top probability is at or above the threshold are answered; the rest are
``needs_review``. The threshold is the lowest one (the most products answered) at which
the answered validation products are right at least ``target_precision`` of the time,
with at least ``min_answered_rows`` of them, so a handful of lucky products cannot set it.
With ``confidence`` (e.g. 0.95) the precision that must reach the target is the one-sided
Wilson lower bound rather than the validation estimate itself: a validation set of a few
hundred products then buys a threshold that holds on new products that often.
A cut only falls between distinct probabilities: tied products are answered together or
not at all, so the validation figures are exactly what the threshold does.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd


def coverage_precision_curve(top_probability: np.ndarray, correct: np.ndarray) -> pd.DataFrame:
    """Every possible cut, most confident first: columns ``threshold`` (answer when probability >=
    it), ``answered``, ``coverage`` (share answered) and ``precision`` (accuracy of the answered)."""
    p = np.asarray(top_probability, dtype=float)
    order = np.argsort(-p, kind="stable")
    p, right = p[order], np.asarray(correct, dtype=float)[order]
    n = len(p)
    answered = np.arange(1, n + 1)
    distinct = np.append(p[:-1] > p[1:], True)  # a cut after row k only where row k+1 is less confident
    return pd.DataFrame({
        "threshold": p[distinct], "answered": answered[distinct],
        "coverage": answered[distinct] / max(n, 1), "precision": (np.cumsum(right) / answered)[distinct],
    })


def answered_at(top_probability: np.ndarray, correct: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """What a threshold does to a set of products: share answered, their precision, share sent to review.
    ``None`` answers everything (no review routing)."""
    p, right = np.asarray(top_probability, dtype=float), np.asarray(correct, dtype=bool)
    answered = np.ones(len(p), dtype=bool) if threshold is None else p >= threshold
    n, k = len(p), int(answered.sum())
    return {
        "rows": n,
        "coverage": round(k / n, 6) if n else 0.0,
        "review_share": round(1 - k / n, 6) if n else 0.0,
        "precision_answered": round(float(right[answered].mean()), 6) if k else None,
        "accuracy_all": round(float(right.mean()), 6) if n else None,
    }


def wilson_lower_bound(precision: np.ndarray, rows: np.ndarray, confidence: float) -> np.ndarray:
    """One-sided lower bound of a proportion measured as ``precision`` on ``rows`` trials."""
    z = NormalDist().inv_cdf(confidence)
    n = np.asarray(rows, dtype=float)
    p = np.asarray(precision, dtype=float)
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def choose_review_threshold(top_probability: np.ndarray, correct: np.ndarray, *, target_precision: float,
                            min_answered_rows: int, confidence: float | None = None) -> float | None:
    """The lowest threshold whose answered validation products reach ``target_precision``
    (at least ``min_answered_rows`` of them; with ``confidence``, their precision's lower bound
    does); None when no cut reaches it."""
    curve = coverage_precision_curve(top_probability, correct)
    precision = curve["precision"] if confidence is None else wilson_lower_bound(
        curve["precision"], curve["answered"], confidence)
    # The tolerance: 0.98 * 50 right out of 50 must not lose to floating point noise.
    reaching = curve[(precision >= target_precision - 1e-12) & (curve["answered"] >= min_answered_rows)]
    if reaching.empty:
        return None
    return float(reaching["threshold"].iloc[-1])


def review_card(top_probability: np.ndarray, correct: np.ndarray, *, target_precision: float,
                min_answered_rows: int, confidence: float | None = None, fixed_threshold: float | None = None,
                enabled: bool = True) -> dict[str, Any]:
    """The model card's ``review`` entry: the threshold (None: no review routing) and what it does
    on validation. ``fixed_threshold`` (params ``review.threshold``) replaces the chosen one."""
    if not enabled:
        threshold, status = None, "disabled"
    elif fixed_threshold is not None:
        threshold, status = float(fixed_threshold), "fixed"
    else:
        threshold = choose_review_threshold(top_probability, correct, target_precision=target_precision,
                                            min_answered_rows=min_answered_rows, confidence=confidence)
        status = "chosen" if threshold is not None else "target_unreachable"
    on_validation = answered_at(top_probability, correct, threshold)
    return {
        "threshold": threshold,
        "status": status,
        "target_precision": target_precision,
        "min_answered_rows": min_answered_rows,
        "confidence": confidence,
        "validation_precision_answered": on_validation["precision_answered"],
        "validation_coverage": on_validation["coverage"],
        "validation_rows": on_validation["rows"],
    }
