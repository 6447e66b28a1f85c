"""Evaluation metrics on cases small enough to compute by hand."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ml.metrics import (
    EvaluationInput,
    compute_metrics,
    confused_pairs,
    hierarchy_accuracy,
    reliability_table,
)

LABELS = ["a", "b", "c"]


def frame_for(n: int, **columns: list[Any]) -> pd.DataFrame:
    """Test rows with full text by default; `columns` overrides any column."""
    data: dict[str, list[Any]] = {
        "id": [f"p{i}" for i in range(n)],
        "title": [f"a long enough product title {i}" for i in range(n)],
        "description": ["some description"] * n,
        "brand": ["Acme"] * n,
        "features": [[] for _ in range(n)],
        "price": [1.0] * n,
        "label": [None] * n,
        "label_path": [[] for _ in range(n)],
    }
    data.update(columns)
    return pd.DataFrame(data)


def one_hot_ish(labels: list[str], predicted: list[str], confidence: float) -> np.ndarray:
    """Rows putting `confidence` on the predicted label and spreading the rest evenly."""
    rest = (1 - confidence) / (len(labels) - 1)
    proba = np.full((len(predicted), len(labels)), rest)
    for row, label in enumerate(predicted):
        proba[row, labels.index(label)] = confidence
    return proba


def make(y_true: list[str], proba: np.ndarray, labels: list[str] = LABELS, **columns: list[Any]) -> EvaluationInput:
    return EvaluationInput(labels=labels, y_true=y_true, proba=proba, frame=frame_for(len(y_true), **columns))


def test_perfect_predictions_score_one_everywhere():
    y = ["a", "b", "c", "a"]
    result = compute_metrics(make(y, one_hot_ish(LABELS, y, 0.9)))
    assert result["accuracy"] == 1.0
    assert result["top3_accuracy"] == 1.0
    assert result["macro_f1"] == pytest.approx(1.0)
    assert result["weighted_f1"] == pytest.approx(1.0)
    assert result["per_class"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert result["n"] == 4 and result["unknown_true_labels"] == 0


def test_ece_of_always_right_at_080_is_one_minus_mean_confidence():
    y = ["a", "b", "c", "a", "b"]
    result = compute_metrics(make(y, one_hot_ish(LABELS, y, 0.8)))
    assert result["mean_confidence"] == pytest.approx(0.8)
    assert result["ece"] == pytest.approx(1 - result["mean_confidence"])
    assert result["ece"] == pytest.approx(0.2)


def test_ece_weights_each_bin_by_its_size():
    # Bin of 0.9: 3 rows all right -> gap 0.1. Bin of 0.5: 1 row wrong -> gap 0.5.
    # ECE = 3/4 * 0.1 + 1/4 * 0.5 = 0.2
    y_true = ["a", "b", "c", "a"]
    proba = np.vstack([one_hot_ish(LABELS, ["a", "b", "c"], 0.9), one_hot_ish(LABELS, ["b"], 0.5)])
    result = compute_metrics(make(y_true, proba), n_bins=10)
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["ece"] == pytest.approx(0.2)


def test_reliability_table_bins_and_counts():
    y_true = ["a", "b", "c", "a"]
    proba = np.vstack([one_hot_ish(LABELS, ["a", "b", "c"], 0.95), one_hot_ish(LABELS, ["b"], 0.45)])
    table = reliability_table(y_true, LABELS, proba, n_bins=5)
    assert list(table.columns) == ["bin_lower", "bin_upper", "mean_confidence", "accuracy", "count"]
    assert len(table) == 5 and table["count"].sum() == 4
    assert table["count"].tolist() == [0, 0, 1, 0, 3]
    top = table.iloc[-1]
    assert top["bin_lower"] == pytest.approx(0.8) and top["bin_upper"] == pytest.approx(1.0)
    assert top["accuracy"] == 1.0 and top["mean_confidence"] == pytest.approx(0.95)
    assert table.iloc[2]["accuracy"] == 0.0
    assert np.isnan(table.iloc[0]["accuracy"])


def test_top3_counts_the_true_label_at_rank_two_but_not_at_rank_four():
    labels = ["a", "b", "c", "d"]
    proba = np.array(
        [
            [0.4, 0.3, 0.2, 0.1],  # true b: rank 2 -> top-3 hit, top-1 miss
            [0.4, 0.3, 0.2, 0.1],  # true d: rank 4 -> miss both
        ]
    )
    result = compute_metrics(make(["b", "d"], proba, labels=labels))
    assert result["accuracy"] == 0.0
    assert result["top3_accuracy"] == 0.5


def test_slices_pick_the_right_rows():
    y_true = ["a", "a", "b", "b", "c"]
    predicted = ["a", "b", "b", "b", "a"]  # rows 1 and 4 wrong
    data = make(
        y_true,
        one_hot_ish(LABELS, predicted, 0.7),
        description=[None, "", "text", "  ", "text"],  # rows 0, 1, 3 have none
        title=["short one", "five words is not short", None, "one two three four", "a b c d e f"],
        brand=["Acme", np.nan, None, "", "Acme"],  # rows 1, 2, 3 missing
    )
    slices = compute_metrics(data, rare_class_max_support=1)["slices"]
    assert slices["no_description"]["n"] == 3
    assert slices["no_description"]["accuracy"] == pytest.approx(2 / 3)
    assert slices["short_title"]["n"] == 3  # rows 0, 2 (no title) and 3
    assert slices["short_title"]["accuracy"] == 1.0
    assert slices["missing_brand"]["n"] == 3
    assert slices["missing_brand"]["accuracy"] == pytest.approx(2 / 3)
    assert slices["rare_classes"]["n"] == 1  # only class c has a single test example
    assert slices["rare_classes"]["accuracy"] == 0.0
    assert slices["rare_classes"]["macro_f1"] == 0.0


def test_empty_slice_reports_none():
    y = ["a", "b"]
    slices = compute_metrics(make(y, one_hot_ish(LABELS, y, 0.9)), rare_class_max_support=0)["slices"]
    assert slices["rare_classes"] == {"n": 0, "accuracy": None, "macro_f1": None}
    assert slices["no_description"] == {"n": 0, "accuracy": None, "macro_f1": None}


def test_unknown_true_label_is_counted_as_an_error_without_crashing():
    y_true = ["a", "b", "zzz", "c"]
    predicted = ["a", "b", "a", "c"]
    result = compute_metrics(make(y_true, one_hot_ish(LABELS, predicted, 0.6)))
    assert result["unknown_true_labels"] == 1
    assert result["accuracy"] == 0.75
    assert result["top3_accuracy"] == 0.75
    assert set(result["per_class"]) == set(LABELS)
    # The unknown row is a false positive of "a": precision 1/2, recall 1.
    assert result["per_class"]["a"]["precision"] == 0.5
    assert result["per_class"]["a"]["recall"] == 1.0
    json.dumps(result, allow_nan=False)


def test_macro_f1_ignores_classes_absent_from_test_and_predictions():
    labels = ["a", "b", "never"]
    y = ["a", "b"]
    result = compute_metrics(make(y, one_hot_ish(labels, y, 0.9), labels=labels))
    assert result["macro_f1"] == pytest.approx(1.0)
    assert result["per_class"]["never"]["support"] == 0


def test_output_is_json_serialisable_with_the_documented_keys():
    y = ["a", "b", "c"]
    result = compute_metrics(make(y, one_hot_ish(LABELS, ["a", "a", "c"], 0.5)))
    assert set(result) == {
        "n",
        "accuracy",
        "top3_accuracy",
        "macro_f1",
        "weighted_f1",
        "ece",
        "mean_confidence",
        "unknown_true_labels",
        "rare_class_max_support",
        "per_class",
        "slices",
    }
    assert set(result["slices"]) == {"no_description", "short_title", "missing_brand", "rare_classes"}
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_confused_pairs_sorted_by_count_with_most_confident_examples_first():
    y_true = ["a", "a", "a", "a", "b", "b", "c"]
    predicted = ["b", "b", "b", "a", "c", "c", "a"]
    proba = one_hot_ish(LABELS, predicted, 0.6)
    proba[2] = [0.05, 0.9, 0.05]  # the most confident a->b mistake
    pairs = confused_pairs(make(y_true, proba), top=2, examples=2)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("a", "b", 3), ("b", "c", 2)]
    assert pairs[0]["share_of_true"] == 0.75
    assert pairs[1]["share_of_true"] == 1.0
    assert [e["id"] for e in pairs[0]["examples"]] == ["p2", "p0"]
    assert pairs[0]["examples"][0]["probability"] == pytest.approx(0.9)
    assert pairs[0]["examples"][0]["title"] == "a long enough product title 2"


def test_confused_pairs_empty_when_everything_is_right():
    y = ["a", "b"]
    assert confused_pairs(make(y, one_hot_ish(LABELS, y, 0.9))) == []


def test_hierarchy_accuracy_on_two_levels():
    labels = ["shirts", "jeans", "sofas"]
    leaf_to_path = {"shirts": ["clothing", "shirts"], "jeans": ["clothing", "jeans"], "sofas": ["home", "sofas"]}
    y_true = ["shirts", "shirts", "jeans", "sofas"]
    predicted = ["shirts", "jeans", "sofas", "sofas"]  # right, right parent, wrong parent, right
    # Paths as Parquet hands them back: numpy arrays.
    paths = [np.array(leaf_to_path[leaf]) for leaf in y_true]
    data = make(y_true, one_hot_ish(labels, predicted, 0.8), labels=labels, label_path=paths)
    assert hierarchy_accuracy(data, leaf_to_path) == {"level_0": 0.75, "level_1": 0.5}


def test_hierarchy_level_needs_the_whole_path_to_match():
    # Same leaf name under two parents: predicting the other parent's "accessories" is wrong at both levels.
    labels = ["men/accessories", "women/accessories"]
    leaf_to_path = {"men/accessories": ["men", "accessories"], "women/accessories": ["women", "accessories"]}
    data = make(
        ["men/accessories"],
        one_hot_ish(labels, ["women/accessories"], 0.8),
        labels=labels,
        label_path=[["men", "accessories"]],
    )
    assert hierarchy_accuracy(data, leaf_to_path) == {"level_0": 0.0, "level_1": 0.0}


def test_hierarchy_is_empty_for_flat_labels():
    y = ["a", "b"]
    data = make(y, one_hot_ish(LABELS, y, 0.9), label_path=[["a"], ["b"]])
    assert hierarchy_accuracy(data, {"a": ["a"], "b": ["b"]}) == {}


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        make(["a", "b"], np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="empty"):
        compute_metrics(make([], np.empty((0, 3))))
