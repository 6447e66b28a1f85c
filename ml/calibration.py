"""Temperature scaling: one number, fitted on the validation split, that makes the model's
probabilities mean what they say.

The calibrated probabilities are ``softmax(log(p) / T)``. For the model families here
(softmax over logits), that is exactly dividing the logits by ``T``: the ranking of the
classes, hence every predicted label, is unchanged; ``T > 1`` softens an over-confident
model, ``T < 1`` sharpens an under-confident one. ``T`` minimises the negative
log-likelihood of the validation labels; the expected calibration error (ECE, the same
15-bin measure as the evaluation) is reported before and after.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import log_softmax

from ml.metrics import ece_from_table, reliability_table

log = logging.getLogger(__name__)

METHOD = "temperature"
ECE_BINS = 15  # as ml.evaluate, so validation and test ECE are the same measure
_MIN_T, _MAX_T = 0.05, 20.0  # far beyond any useful temperature; bounds keep the search finite
_EPS = 1e-12  # a probability of 0 has no log: clip before taking it


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)`` row by row; rows still sum to 1 and keep their argmax."""
    proba = np.asarray(proba, dtype=float)
    if temperature == 1.0 or proba.size == 0:
        return proba
    return np.exp(log_softmax(np.log(np.clip(proba, _EPS, 1.0)) / temperature, axis=1))


def negative_log_likelihood(proba: np.ndarray, target: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of the ``target`` column indices under the tempered probabilities."""
    scaled = log_softmax(np.log(np.clip(np.asarray(proba, dtype=float), _EPS, 1.0)) / temperature, axis=1)
    return float(-scaled[np.arange(len(target)), target].mean())


def fit_temperature(proba: np.ndarray, target: np.ndarray) -> float:
    """The temperature minimising validation NLL (searched on log T, bounded)."""
    from scipy.optimize import minimize_scalar  # training only: serving applies a stored temperature

    target = np.asarray(target, dtype=int)
    found = minimize_scalar(lambda log_t: negative_log_likelihood(proba, target, float(np.exp(log_t))),
                            bounds=(np.log(_MIN_T), np.log(_MAX_T)), method="bounded", options={"xatol": 1e-4})
    temperature = float(np.exp(found.x))
    # The bounded search never evaluates T = 1 itself; never return a temperature worse than none.
    if negative_log_likelihood(proba, target, temperature) > negative_log_likelihood(proba, target):
        return 1.0
    return temperature


def ece(y_true: Sequence[str], labels: Sequence[str], proba: np.ndarray) -> float:
    """The evaluation's ECE (ml.metrics), on ``ECE_BINS`` bins."""
    return ece_from_table(reliability_table(y_true, labels, proba, ECE_BINS))


def calibrate(proba: np.ndarray, y_true: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Fit the temperature on validation probabilities; returns the model card's ``calibration`` entry.

    Every true label must be one of ``labels`` (training drops validation rows of unseen classes).
    """
    index = {label: i for i, label in enumerate(labels)}
    if not len(y_true):
        raise ValueError("calibration needs at least one validation row")
    missing = sorted({t for t in y_true if t not in index})
    if missing:
        raise ValueError(f"validation labels unknown to the model: {missing[:5]}")
    target = np.array([index[t] for t in y_true])
    temperature = fit_temperature(proba, target)
    calibrated = apply_temperature(proba, temperature)
    card = {
        "method": METHOD,
        "temperature": round(temperature, 6),
        "ece_before": round(ece(y_true, labels, proba), 6),
        "ece_after": round(ece(y_true, labels, calibrated), 6),
        "nll_before": round(negative_log_likelihood(proba, target), 6),
        "nll_after": round(negative_log_likelihood(proba, target, temperature), 6),
        "validation_rows": len(target),
    }
    log.info("temperature %.4f on %d validation rows: ECE %.4f -> %.4f", temperature, len(target),
             card["ece_before"], card["ece_after"])
    return card


def card_temperature(card: dict[str, Any]) -> float:
    """The temperature a model card asks for; 1.0 (raw probabilities) for versions without one."""
    calibration = card.get("calibration") or {}
    return float(calibration.get("temperature", 1.0)) if calibration.get("method") == METHOD else 1.0
