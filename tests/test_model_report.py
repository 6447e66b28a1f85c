"""The Markdown model report and the evaluation figures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ml.metrics import EvaluationInput, compute_metrics, confused_pairs, hierarchy_accuracy, reliability_table
from ml.model_report import render_model_report
from ml.plots import confusion_matrix_png, per_class_f1_png, reliability_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LEAF_TO_PATH = {
    "shirts": ["clothing", "shirts"],
    "jeans": ["clothing", "jeans"],
    "sofas": ["home", "sofas"],
    "lamps": ["home", "lamps"],
    "kettles": ["kitchen", "kettles"],
}
LABELS = list(LEAF_TO_PATH)


def evaluation(confidence: float = 0.9) -> EvaluationInput:
    """20 products: shirts/sofas/lamps always right, jeans mostly taken for shirts, kettles always for lamps.

    The 4 rows with no description are the jeans mistakes, so that slice is far below overall.
    """
    rows: list[tuple[str, str, str | None]] = []  # (true, predicted, description)
    rows += [("shirts", "shirts", "cotton")] * 5
    rows += [("sofas", "sofas", "three seats")] * 4
    rows += [("lamps", "lamps", "bright")] * 4
    rows += [("jeans", "jeans", "denim")]
    rows += [("jeans", "shirts", None)] * 4
    rows += [("kettles", "lamps", "boils water")] * 2
    y_true = [t for t, _, _ in rows]
    proba = np.full((len(rows), len(LABELS)), (1 - confidence) / (len(LABELS) - 1))
    for i, (_, predicted, _) in enumerate(rows):
        proba[i, LABELS.index(predicted)] = confidence
    frame = pd.DataFrame(
        {
            "id": [f"p{i}" for i in range(len(rows))],
            "title": [f"{t} product number {i} with a long title" for i, (t, _, _) in enumerate(rows)],
            "description": [d for _, _, d in rows],
            "brand": ["Acme"] * len(rows),
            "features": [[] for _ in rows],
            "price": [9.99] * len(rows),
            "label": y_true,
            "label_path": [LEAF_TO_PATH[t] for t in y_true],
        }
    )
    return EvaluationInput(labels=LABELS, y_true=y_true, proba=proba, frame=frame)


def report_for(data: EvaluationInput, **overrides: Any) -> str:
    metrics = compute_metrics(data, rare_class_max_support=2)
    kwargs: dict[str, Any] = {
        "model_name": "productcat-baseline",
        "version": "3",
        "family": "tfidf-logreg",
        "metrics": metrics,
        "hierarchy": hierarchy_accuracy(data, LEAF_TO_PATH),
        "pairs": confused_pairs(data),
        "dataset": "fashion-sample",
    }
    return render_model_report(**(kwargs | overrides))


def section(report: str, heading: str) -> str:
    """The text of one `## heading` section."""
    start = report.index(f"## {heading}")
    end = report.find("\n## ", start + 1)
    return report[start : end if end != -1 else None]


def test_report_names_the_worst_class_and_the_zero_f1_class():
    report = report_for(evaluation())
    fails = section(report, "Where it fails")
    assert "kettles" in fails  # F1 0: never right
    assert fails.index("kettles") < fails.index("jeans")  # worst first
    assert "1 of 5 classes has F1 = 0" in fails
    assert "kettles (2 products)" in fails
    assert "never recognised (recall 0.00)" in fails
    assert "mostly missed (recall 0.20)" in fails  # jeans: precision 1, recall 1/5
    assert "shirts" in section(report, "Where it is strong")


def test_report_compares_every_slice_with_overall_accuracy():
    report = report_for(evaluation())
    slices = section(report, "Slices")
    for name in ("no_description", "short_title", "missing_brand", "rare_classes"):
        assert f"`{name}`" in slices
    # Overall 14/20 = 70%; the 4 rows without description are all wrong: 70 points lower.
    assert "`no_description` (products with no description): accuracy is 70.0 points lower than overall" in slices
    assert "`missing_brand` (products with no brand): no test products fall in this slice" in slices
    assert "Hardest slice: `no_description`, 70.0 points below overall accuracy." in report


def test_report_calls_an_overconfident_model_overconfident():
    report = report_for(evaluation(confidence=0.9))  # 90% confident, 70% right
    assert "clearly over-confident" in section(report, "Calibration")


def test_report_calls_an_underconfident_model_underconfident_from_the_reliability_table():
    data = evaluation(confidence=0.4)  # 40% confident, 70% right
    table = reliability_table(data.y_true, data.labels, data.proba, n_bins=10)
    calibration = section(report_for(data, reliability=table), "Calibration")
    assert "clearly under-confident" in calibration
    assert "40%–50% confidence: 20 products, right 70.0% of the time" in calibration


def test_report_lists_confused_pairs_with_example_titles():
    confusions = section(report_for(evaluation()), "Most confused classes")
    assert "labelling jeans products as shirts: 4 times, 80.0% of all jeans test products" in confusions
    assert "jeans product number 14 with a long title (0.90)" in confusions
    assert confusions.index("| jeans | shirts |") < confusions.index("| kettles | lamps |")


def test_report_shows_hierarchy_only_when_labels_have_levels():
    data = evaluation()
    with_tree = report_for(data)
    assert "## Hierarchy" in with_tree
    # Level 0: jeans->shirts stays in clothing (right), kettles->lamps does not: 18/20 vs 14/20 at the leaf.
    assert "| level_0 | 90.0% |" in with_tree and "| level_1 | 70.0% |" in with_tree
    assert "## Hierarchy" not in report_for(data, hierarchy={})


def test_headline_numbers_and_header():
    report = report_for(evaluation())
    assert report.startswith("# Model report: productcat-baseline v3")
    assert "| accuracy (top-1) | 70.0% |" in report
    assert "20 products, 5 classes" in report
    assert "(unregistered)" in report_for(evaluation(), version=None)


def test_plots_write_png_files(tmp_path):
    data = evaluation()
    metrics = compute_metrics(data)
    table = reliability_table(data.y_true, data.labels, data.proba)
    written = [
        confusion_matrix_png(data, tmp_path / "confusion.png"),
        per_class_f1_png(metrics, tmp_path / "f1.png"),
        reliability_png(table, tmp_path / "nested" / "reliability.png"),
    ]
    for path in written:
        assert path.exists() and path.stat().st_size > 1000
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_plots_cope_with_many_classes(tmp_path):
    n_classes = 120
    rng = np.random.default_rng(0)
    labels = [f"category number {i} with a rather long name" for i in range(n_classes)]
    y_true = [labels[i] for i in rng.integers(0, n_classes, size=600)]
    proba = rng.dirichlet(np.ones(n_classes) * 0.1, size=600)
    frame = pd.DataFrame({"id": [str(i) for i in range(600)], "title": ["t"] * 600})
    data = EvaluationInput(labels=labels, y_true=y_true, proba=proba, frame=frame)
    matrix = confusion_matrix_png(data, tmp_path / "confusion.png", max_classes=40)
    f1 = per_class_f1_png(compute_metrics(data), tmp_path / "f1.png")
    assert matrix.stat().st_size > 1000 and f1.stat().st_size > 1000
