"""A Markdown report of where a model is strong and where it fails.

Every sentence is derived from the numbers passed in (the output of
`ml.metrics`), so the report stays true when the numbers change.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pandas as pd

from ml.metrics import SHORT_TITLE_WORDS, TOP_K

log = logging.getLogger(__name__)

SLICE_MARGIN = 0.01  # accuracy gaps under one point are noise, not a strength or a weakness
SMALL_SLICE = 30  # below this many products a slice's accuracy is only a rough estimate
F1_GAP = 0.05  # macro vs weighted F1 gap that says small and large classes differ
WELL_CALIBRATED_ECE = 0.03
CLEARLY_MISCALIBRATED_ECE = 0.10
NEAR_MISS_GAP = 0.05  # top-3 minus top-1 accuracy worth pointing out
_TITLE_CHARS = 70


def render_model_report(
    *,
    model_name: str,
    version: str | None,
    family: str,
    metrics: dict[str, Any],
    hierarchy: dict[str, float],
    pairs: list[dict[str, Any]],
    dataset: str,
    reliability: pd.DataFrame | None = None,
    top_classes: int = 5,
    runtime: str | None = None,
    variants: dict[str, dict[str, float]] | None = None,
    calibration: dict[str, Any] | None = None,
    review: dict[str, Any] | None = None,
    hierarchical: dict[str, float] | None = None,
) -> str:
    """Markdown report; pass the `reliability_table` to judge calibration bin by bin instead of on average.
    ``calibration`` and ``review`` (``ml.evaluate.calibration_and_review``): the version's temperature and
    review threshold and what they do on this test set."""
    classes = _ranked_classes(metrics)
    sections = [
        _header(model_name, version, family, dataset, metrics),
        _summary(metrics, classes, reliability),
        _headline(metrics),
        _classes(classes, top_classes),
        _slices(metrics),
        _calibration(metrics, reliability),
        _temperature(calibration),
        _review(review),
        _confusions(metrics, pairs),
        _hierarchy(hierarchy, hierarchical or {}),
        _variants(runtime, variants or {}),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _header(model_name: str, version: str | None, family: str, dataset: str, metrics: dict[str, Any]) -> str:
    name = f"{model_name} v{version}" if version else f"{model_name} (unregistered)"
    return (
        f"# Model report: {_cell(name)}\n\n"
        f"Family: {family}. Dataset: {dataset}. Test set: {metrics['n']:,} products, "
        f"{len(metrics['per_class'])} classes."
    )


def _summary(
    metrics: dict[str, Any], classes: list[tuple[str, dict[str, Any]]], reliability: pd.DataFrame | None
) -> str:
    lines = ["## In short", ""]
    best, worst = _best_and_worst(classes, 3)
    if best:
        lines.append("- Strongest classes: " + ", ".join(f"{name} (F1 {v['f1']:.2f})" for name, v in best) + ".")
    if worst:
        lines.append("- Weakest classes: " + ", ".join(f"{name} (F1 {v['f1']:.2f})" for name, v in worst) + ".")
    worse = _worse_slices(metrics)
    if worse:
        name, gap = worse[0]
        lines.append(f"- Hardest slice: `{name}`, {_points(gap)} points below overall accuracy.")
    else:
        lines.append("- No slice is more than one point below overall accuracy.")
    lines.append(f"- Calibration: {_calibration_verdict(metrics, reliability)}.")
    return "\n".join(lines)


def _headline(metrics: dict[str, Any]) -> str:
    acc, top3, n = metrics["accuracy"], metrics["top3_accuracy"], metrics["n"]
    macro, weighted = metrics["macro_f1"], metrics["weighted_f1"]
    table = _table(
        ["metric", "value"],
        [
            ["accuracy (top-1)", _pct(acc)],
            [f"top-{TOP_K} accuracy", _pct(top3)],
            ["macro F1", f"{macro:.3f}"],
            ["weighted F1", f"{weighted:.3f}"],
            ["ECE", f"{metrics['ece']:.3f}"],
            ["mean confidence", _pct(metrics["mean_confidence"])],
            ["test products", f"{n:,}"],
        ],
    )
    text = [
        f"The model picks the right class for {_pct(acc)} of {n:,} test products; "
        f"the right class is among its top {TOP_K} for {_pct(top3)}."
    ]
    if top3 - acc >= NEAR_MISS_GAP:
        text.append(f"For {_pct(top3 - acc)} of products the right class is the model's second or third choice.")
    if weighted - macro > F1_GAP:
        text.append(
            f"Macro F1 ({macro:.3f}) is {weighted - macro:.3f} below weighted F1 ({weighted:.3f}): "
            "small classes fare worse than large ones."
        )
    elif macro - weighted > F1_GAP:
        text.append(
            f"Macro F1 ({macro:.3f}) is {macro - weighted:.3f} above weighted F1 ({weighted:.3f}): "
            "the large classes are the harder ones."
        )
    else:
        text.append(
            f"Macro F1 ({macro:.3f}) and weighted F1 ({weighted:.3f}) are within {F1_GAP}: "
            "quality is similar across small and large classes."
        )
    unknown = metrics.get("unknown_true_labels", 0)
    if unknown:
        text.append(f"{unknown:,} test products carry a label the model does not know; they count as errors.")
    return "## Headline\n\n" + table + "\n\n" + " ".join(text)


def _classes(classes: list[tuple[str, dict[str, Any]]], top: int) -> str:
    if not classes:
        return "## Classes\n\nNo class has test examples."
    best, worst = _best_and_worst(classes, top)
    header = ["class", "F1", "precision", "recall", "support"]
    parts = [f"## Where it is strong\n\nBest {len(best)} classes by F1:\n\n" + _table(header, _class_rows(best))]
    if worst:
        rows = [[*row, _why(v)] for row, (_, v) in zip(_class_rows(worst), worst, strict=True)]
        parts.append(f"## Where it fails\n\nWorst {len(worst)} classes by F1:\n\n" + _table([*header, "failure"], rows))
    zero = [(name, v) for name, v in classes if v["f1"] == 0]
    if zero:
        listed = ", ".join(f"{_cell(name)} ({v['support']} products)" for name, v in zero)
        verb = "has" if len(zero) == 1 else "have"
        parts.append(f"{len(zero)} of {len(classes)} classes {verb} F1 = 0, the model never gets them right: {listed}.")
    else:
        parts.append(f"Every one of the {len(classes)} classes with test examples has F1 above 0.")
    return "\n\n".join(parts)


def _slices(metrics: dict[str, Any]) -> str:
    overall, n_total = metrics["accuracy"], metrics["n"]
    rows, sentences = [], []
    for name, s in metrics["slices"].items():
        words = _slice_words(name, metrics)
        if not s["n"]:
            rows.append([f"`{name}`", "0", "0.0%", "n/a", "n/a", "n/a"])
            sentences.append(f"- `{name}` ({words}): no test products fall in this slice, so it says nothing.")
            continue
        gap = s["accuracy"] - overall
        rows.append(
            [
                f"`{name}`",
                f"{s['n']:,}",
                _pct(s["n"] / n_total),
                _pct(s["accuracy"]),
                f"{gap * 100:+.1f} pt",
                f"{s['macro_f1']:.3f}",
            ]
        )
        if gap <= -SLICE_MARGIN:
            verdict = f"accuracy is {_points(-gap)} points lower than overall"
        elif gap >= SLICE_MARGIN:
            verdict = f"accuracy is {_points(gap)} points higher than overall"
        else:
            verdict = "accuracy is on par with overall"
        caveat = f" (only {s['n']} products: a rough estimate)" if s["n"] < SMALL_SLICE else ""
        sentences.append(f"- `{name}` ({words}): {verdict}, {_pct(s['accuracy'])} vs {_pct(overall)}{caveat}.")
    header = ["slice", "products", "share of test", "accuracy", "vs overall", "macro F1"]
    worse = _worse_slices(metrics)
    closing = (
        "Slices below overall accuracy, worst first: " + ", ".join(f"`{n}` ({_points(g)} pt)" for n, g in worse) + "."
        if worse
        else "No slice is more than one point below overall accuracy."
    )
    return "## Slices\n\n" + _table(header, rows) + "\n\n" + "\n".join(sentences) + "\n\n" + closing


def _calibration(metrics: dict[str, Any], reliability: pd.DataFrame | None) -> str:
    ece, conf, acc = metrics["ece"], metrics["mean_confidence"], metrics["accuracy"]
    text = [
        f"ECE is {ece:.3f}; mean top-1 confidence is {_pct(conf)} against an accuracy of {_pct(acc)}.",
        f"The model is {_calibration_verdict(metrics, reliability)}.",
    ]
    if reliability is not None:
        filled = reliability[reliability["count"] > 0]
        # Bins with a handful of products would dominate a "largest gap" search with noise.
        solid = filled[filled["count"] >= max(1, 0.01 * filled["count"].sum())]
        if not solid.empty:
            gaps = solid["accuracy"] - solid["mean_confidence"]
            row = solid.loc[gaps.abs().idxmax()]
            text.append(
                f"The largest gap is for predictions made with {row['bin_lower']:.0%}–{row['bin_upper']:.0%} "
                f"confidence: {int(row['count']):,} products, right {_pct(row['accuracy'])} of the time."
            )
    if ece >= WELL_CALIBRATED_ECE and conf > acc:
        text.append("Thresholds on the raw probability will let through more wrong labels than they promise.")
    elif ece >= WELL_CALIBRATED_ECE:
        text.append("Thresholds on the raw probability will reject more correct labels than needed.")
    return "## Calibration\n\n" + " ".join(text)


def _temperature(calibration: dict[str, Any] | None) -> str:
    if not calibration:
        return ""
    t = calibration["temperature"]
    effect = "softens over-confident" if t > 1 else "sharpens under-confident" if t < 1 else "leaves"
    before, after = calibration["validation_ece_before"], calibration["validation_ece_after"]
    rows = [
        ["validation (fit)", f"{before:.3f}", f"{after:.3f}"],
        ["this test set", f"{calibration['ece_uncalibrated']:.3f}", f"{calibration['ece']:.3f}"],
    ]
    return (
        "## Calibration fitted on validation\n\n"
        f"The probabilities above are the calibrated ones the service serves: temperature scaling with T = {t:.3f} "
        f"({effect} probabilities; labels are unchanged), fitted on {calibration['validation_rows']:,} validation "
        "products.\n\n" + _table(["ECE", "uncalibrated", "calibrated"], rows)
    )


def _review(review: dict[str, Any] | None) -> str:
    if not review:
        return ""
    target = review["target_precision"]
    head = "## Review threshold\n\n"
    if review["threshold"] is None:
        why = ("review routing is switched off (`review.enabled: false`)" if review.get("status") == "disabled"
               else f"no threshold reaches the target precision of {_pct(target)} on validation")
        answered = review["precision_answered"]
        return head + (f"No review threshold: {why}, so every product is answered. On this test set the answers "
                       f"are right {_pct(answered) if answered is not None else 'n/a'} of the time.")
    how = "set in params.yaml" if review.get("status") == "fixed" else (
        f"the lowest whose answered validation products reach {_pct(target)} precision")
    val_precision = review["validation_precision_answered"]
    rows = [
        ["validation", f"{review['validation_rows']:,}", _pct(review["validation_coverage"]),
         _pct(1 - review["validation_coverage"]), _pct(val_precision) if val_precision is not None else "n/a"],
        ["this test set", f"{review['rows']:,}", _pct(review["coverage"]), _pct(review["review_share"]),
         _pct(review["precision_answered"]) if review["precision_answered"] is not None else "n/a"],
    ]
    text = (f"Products whose calibrated top probability is below {review['threshold']:.4f} ({how}) are sent to "
            "review instead of answered (`needs_review`).\n\n"
            + _table(["split", "products", "answered", "sent to review", "precision of answered"], rows))
    precision = review["precision_answered"]
    if precision is not None and precision < target:
        text += (f"\n\nOn this test set the answered products fall short of the target ({_pct(precision)} "
                 f"< {_pct(target)}): the threshold was chosen on validation and does not transfer exactly.")
    return head + text + "\n\n`coverage_precision.png` shows the precision and coverage of every other threshold."


def _confusions(metrics: dict[str, Any], pairs: list[dict[str, Any]]) -> str:
    errors = round((1 - metrics["accuracy"]) * metrics["n"])
    if not pairs:
        return "## Most confused classes\n\n" + (
            "No mistakes: every test product got its true class." if errors == 0 else "No confused pairs were given."
        )
    first = pairs[0]
    covered = sum(p["count"] for p in pairs)
    text = (
        f"The most frequent mistake is labelling {first['true']} products as {first['predicted']}: "
        f"{first['count']:,} times, {_pct(first['share_of_true'])} of all {first['true']} test products. "
        f"The {len(pairs)} pairs below account for {covered:,} of the {errors:,} mistakes "
        f"({_pct(covered / max(errors, covered))})."
    )
    rows = []
    for p in pairs:
        examples = "; ".join(
            f"{_cell(_clip(e.get('title') or e.get('id') or '?'))} ({e['probability']:.2f})" for e in p["examples"]
        )
        rows.append([_cell(p["true"]), _cell(p["predicted"]), f"{p['count']:,}", _pct(p["share_of_true"]), examples])
    header = ["true", "predicted", "count", "share of true", "examples (top-1 probability)"]
    return "## Most confused classes\n\n" + text + "\n\n" + _table(header, rows)


def _hierarchy(hierarchy: dict[str, float], hierarchical: dict[str, float]) -> str:
    if not hierarchy:
        return ""
    levels = list(hierarchy)
    table = _table(["level", "accuracy"], [[level, _pct(acc)] for level, acc in hierarchy.items()])
    top, leaf = hierarchy[levels[0]], hierarchy[levels[-1]]
    if leaf < top and leaf < 1:
        share = (top - leaf) / (1 - leaf)
        text = (
            f"Accuracy falls from {_pct(top)} at {levels[0]} to {_pct(leaf)} at {levels[-1]}: "
            f"{_pct(share)} of the mistakes at {levels[-1]} still land in the right {levels[0]} branch."
        )
    else:
        text = (
            f"Accuracy is {_pct(top)} at {levels[0]} and {_pct(leaf)} at {levels[-1]}: "
            f"mistakes at {levels[-1]} are also wrong at {levels[0]}."
        )
    if hierarchical:
        text += (
            f"\n\nHierarchical F1 (ancestor-set overlap of the predicted and true paths): {hierarchical['hf1']:.3f} "
            f"(precision {hierarchical['hp']:.3f}, recall {hierarchical['hr']:.3f})."
        )
    return "## Hierarchy\n\n" + table + "\n\n" + text


def _ranked_classes(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Classes with test examples, best F1 first (ties by support, then name, for a stable order)."""
    present = [(name, v) for name, v in metrics["per_class"].items() if v["support"] > 0]
    return sorted(present, key=lambda item: (-item[1]["f1"], -item[1]["support"], item[0]))


def _best_and_worst(
    classes: list[tuple[str, dict[str, Any]]], top: int
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    """Best `top` and worst `top` (worst first), split so that few classes never appear in both lists."""
    best = classes[: min(top, math.ceil(len(classes) / 2))]
    worst = list(reversed(classes[len(best) :]))[:top]
    return best, worst


def _class_rows(classes: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    return [
        [_cell(name), f"{v['f1']:.3f}", f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['support']:,}"]
        for name, v in classes
    ]


def _why(v: dict[str, Any]) -> str:
    if v["recall"] == 0:
        return "never recognised (recall 0.00)"
    if v["recall"] < v["precision"] - 0.1:
        return f"mostly missed (recall {v['recall']:.2f})"
    if v["precision"] < v["recall"] - 0.1:
        return f"over-predicted (precision {v['precision']:.2f})"
    return "missed and over-predicted alike"


def _worse_slices(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    gaps = [(name, metrics["accuracy"] - s["accuracy"]) for name, s in metrics["slices"].items() if s["n"]]
    return sorted(((name, gap) for name, gap in gaps if gap >= SLICE_MARGIN), key=lambda item: -item[1])


def _calibration_verdict(metrics: dict[str, Any], reliability: pd.DataFrame | None = None) -> str:
    ece = metrics["ece"]
    if ece < WELL_CALIBRATED_ECE:
        return f"well calibrated (ECE {ece:.3f})"
    if reliability is not None and (reliability["count"] > 0).any():
        filled = reliability[reliability["count"] > 0]
        excess = (filled["mean_confidence"] - filled["accuracy"]) * filled["count"]
        over = float(excess.clip(lower=0).sum())
        under = float((-excess).clip(lower=0).sum())
    else:
        over = max(metrics["mean_confidence"] - metrics["accuracy"], 0.0)
        under = max(metrics["accuracy"] - metrics["mean_confidence"], 0.0)
    degree = "clearly" if ece >= CLEARLY_MISCALIBRATED_ECE else "slightly"
    direction = "over-confident" if over >= under else "under-confident"
    return f"{degree} {direction} (ECE {ece:.3f})"


def _slice_words(name: str, metrics: dict[str, Any]) -> str:
    rare = metrics.get("rare_class_max_support")
    rare_words = f"products of classes with at most {rare} test examples" if rare else "products of rare classes"
    return {
        "no_description": "products with no description",
        "short_title": f"products whose title has fewer than {SHORT_TITLE_WORDS} words",
        "missing_brand": "products with no brand",
        "rare_classes": rare_words,
    }.get(name, name.replace("_", " "))


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _clip(text: str) -> str:
    return text if len(text) <= _TITLE_CHARS else text[: _TITLE_CHARS - 1] + "…"


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _points(gap: float) -> str:
    return f"{gap * 100:.1f}"


def _variants(runtime: str | None, variants: dict[str, dict[str, float]]) -> str:
    """The same weights on each inference runtime: what quantisation costs and what it buys."""
    if not variants:
        return ""
    rows = [[name, f"{v['macro_f1']:.4f}", _pct(v["accuracy"]), f"{v['latency_p50_ms']:.1f}"]
            for name, v in variants.items()]
    return (
        "## Inference runtimes\n\n"
        f"The metrics above were computed on `{runtime}`. The same weights on each runtime, same test rows "
        "(the gate picks the one that serves: int8 only within `gate.max_int8_macro_f1_drop` of torch):\n\n"
        + _table(["runtime", "macro-F1", "accuracy", "p50 ms (one item)"], rows)
    )
