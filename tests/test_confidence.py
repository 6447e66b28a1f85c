"""The low-confidence threshold: set on validation, it flags the set of least confident answers
that were right at most `max_accuracy` of the time, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from ml.confidence import low_confidence_threshold


def test_flags_the_least_confident_answers_while_they_are_mostly_wrong() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    right = np.array([0, 1, 0, 0, 1, 1, 1, 1, 1, 1], dtype=bool)
    out = low_confidence_threshold(p, right, max_accuracy=0.5, min_rows=1)
    # The 5 lowest are right 2 times in 5 (0.4); the 6 lowest 3 in 6 (0.5); the 7 lowest 4 in 7 (> 0.5).
    assert out["threshold"] == pytest.approx(0.7)
    assert out["flagged_share"] == pytest.approx(0.6)
    assert out["accuracy_flagged"] == pytest.approx(0.5)
    assert out["accuracy_answered"] == pytest.approx(1.0)


def test_ties_are_flagged_together_or_not_at_all() -> None:
    p = np.array([0.2, 0.2, 0.2, 0.9])
    right = np.array([0, 0, 1, 1], dtype=bool)
    out = low_confidence_threshold(p, right, max_accuracy=0.4, min_rows=1)
    assert out["threshold"] == pytest.approx(0.9)  # the three tied answers (1 of 3 right) are one set
    assert out["flagged_share"] == pytest.approx(0.75)


def test_a_model_right_everywhere_flags_nothing() -> None:
    p = np.linspace(0.1, 0.9, 50)
    out = low_confidence_threshold(p, np.ones(50, dtype=bool), max_accuracy=0.5)
    assert out["threshold"] == 0.0 and out["flagged_share"] == 0.0 and out["accuracy_flagged"] is None


def test_too_few_unsure_answers_to_judge_flag_nothing() -> None:
    p = np.array([0.1, 0.5, 0.6, 0.7, 0.8])
    right = np.array([0, 1, 1, 1, 1], dtype=bool)
    # The lowest answer alone is wrong, but one answer is too few; the two lowest are right half the time.
    assert low_confidence_threshold(p, right, max_accuracy=0.4, min_rows=2)["threshold"] == 0.0
