"""Calibration and the review threshold on the real catalogues: train the baseline on each one
(as `productcat train` does: temperature and threshold fitted on validation), evaluate it on
the frozen test split and write what the threshold costs and buys to docs/model-analysis.md.

    python benchmarks/review_threshold.py --update-doc docs/model-analysis.md

Runs go to their own MLflow store (benchmarks/out/review/mlflow.db); the catalogues are read
from PRODUCTCAT_RAW_DATA_DIR (default ../shared/data) with params.yaml's `fashion` and
`marketplace` entries, ingested and split once under benchmarks/out/review/<dataset>/.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.doc_section import write_section  # noqa: E402
from ml.evaluate import calibration_and_review, evaluate, evaluation_input  # noqa: E402
from ml.ingest import ingest  # noqa: E402
from ml.logging_setup import configure_logging  # noqa: E402
from ml.params import Params, load_params  # noqa: E402
from ml.plots import coverage_precision_png  # noqa: E402
from ml.pyfunc_model import ProductClassifierModel  # noqa: E402
from ml.review_threshold import answered_at, choose_review_threshold  # noqa: E402
from ml.settings import MLSettings  # noqa: E402
from ml.split import read_split, split  # noqa: E402
from ml.train import train  # noqa: E402

log = logging.getLogger("review_threshold")
START, END = "<!-- review-threshold:start -->", "<!-- review-threshold:end -->"
DATASETS = ("fashion", "marketplace")
# (target precision, confidence of its lower bound or None): what each would cost, chosen on validation as train does.
OTHER_TARGETS = ((0.95, None), (0.98, None), (0.99, None), (0.98, 0.95))
COMMAND = ".venv/bin/python benchmarks/review_threshold.py --update-doc docs/model-analysis.md"


def run_one(dataset: str, out: Path, images: Path) -> dict[str, Any]:
    folder = out / dataset
    settings = MLSettings(
        project_root=REPO_ROOT, interim_dir=folder / "interim", processed_dir=folder / "processed",
        reports_dir=folder / "reports", mlflow_tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
        mlflow_artifact_root=out / "mlartifacts",
    )
    params: Params = load_params(settings)
    params.ingest.dataset = dataset
    if not (folder / "processed" / "test.parquet").exists():
        ingest(settings=settings, params=params)
        split(settings=settings, params=params)
    result = train(settings=settings, params=params, family="baseline")
    summary = evaluate(settings=settings, params=params, version=result.version)
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model}/{result.version}")
    python_model: ProductClassifierModel = model.unwrap_python_model()
    card = python_model.card

    test = evaluation_input(python_model, read_split(settings, "test"))
    _, review, curve = calibration_and_review(card, test)
    plot = coverage_precision_png(curve, images / f"review_{dataset}.png", review=review,
                                  title=f"{dataset}: coverage vs precision on the test set ({len(test.y_true):,} "
                                        "products, calibrated)")
    shutil.copy2(folder / "reports" / "evaluation" / f"v{result.version}" / "coverage_precision.csv",
                 out / f"{dataset}_test_curve.csv")

    # The same validation rows the threshold was chosen on (train's seeded sample of known labels).
    val = read_split(settings, "validation")
    val = val[val["label"].isin(set(python_model.labels))]
    cap = params.train.max_validation_samples
    val = val if cap is None or len(val) <= cap else val.sample(n=cap, random_state=params.train.seed)
    val_data = evaluation_input(python_model, val)
    val_p, val_right = val_data.confidence, np.asarray(val_data.y_pred) == np.asarray(val_data.y_true)
    test_p, test_right = test.confidence, np.asarray(test.y_pred) == np.asarray(test.y_true)
    targets = []
    for target, confidence in OTHER_TARGETS:
        threshold = choose_review_threshold(val_p, val_right, target_precision=target, confidence=confidence,
                                            min_answered_rows=params.review.min_answered_rows)
        targets.append({"target_precision": target, "confidence": confidence, "threshold": threshold,
                        "validation": answered_at(val_p, val_right, threshold),
                        "test": answered_at(test_p, test_right, threshold)})
        same = (target, confidence) == (card["review"]["target_precision"], card["review"].get("confidence"))
        if same and threshold != card["review"]["threshold"]:
            log.warning("%s: re-chosen threshold %s differs from the card's %s", dataset, threshold,
                        card["review"]["threshold"])
    split_rows = json.loads((folder / "reports" / "split_summary.json").read_text())["rows"]
    return {
        "dataset": dataset, "version": result.version, "classes": len(python_model.labels),
        "train_rows": split_rows["train"], "validation_rows": len(val), "test_rows": len(test.y_true),
        "accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"],
        "calibration": summary["calibration"], "review": summary["review"], "card_review": card["review"],
        "targets": targets, "plot": str(plot.relative_to(REPO_ROOT)),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _threshold(value: float | None) -> str:
    return "none (target not reached)" if value is None else f"{value:.4f}"


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        START,
        "The baseline (TF-IDF + logistic regression, params.yaml defaults) trained on each catalogue; the "
        "temperature and the review threshold are fitted on the validation split at training "
        f"(`review.target_precision` {rows[0]['card_review']['target_precision']:.0%}, at least "
        f"{rows[0]['card_review']['min_answered_rows']} answered validation products), then measured on the "
        "frozen test split, which played no part in choosing them.",
        "",
        "| | " + " | ".join(r["dataset"] for r in rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]

    def row(name: str, cell: Any) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in rows) + " |")

    row("classes / validation rows / test rows", lambda r: f"{r['classes']} / {r['validation_rows']:,} / "
                                                           f"{r['test_rows']:,}")
    row("test accuracy / macro-F1", lambda r: f"{r['accuracy']:.1%} / {r['macro_f1']:.3f}")
    row("temperature T", lambda r: f"{r['calibration']['temperature']:.3f}")
    row("ECE validation: raw → calibrated", lambda r: f"{r['calibration']['validation_ece_before']:.3f} → "
                                                      f"{r['calibration']['validation_ece_after']:.3f}")
    row("ECE test: raw → calibrated", lambda r: f"{r['calibration']['ece_uncalibrated']:.3f} → "
                                                f"{r['calibration']['ece']:.3f}")
    row("review threshold (calibrated top probability)", lambda r: _threshold(r["review"]["threshold"]))
    row("validation: answered / precision of answered", lambda r: f"{_pct(r['review']['validation_coverage'])} / "
                                                                  f"{_pct(r['review']['validation_precision_answered'])}")
    row("**test: answered / precision of answered**", lambda r: f"**{_pct(r['review']['coverage'])} / "
                                                                f"{_pct(r['review']['precision_answered'])}**")
    row("**test: share sent to review**", lambda r: f"**{_pct(r['review']['review_share'])}**")
    lines += ["", "Other targets, each threshold chosen on validation the same way and applied to test "
              "(answered share / precision of the answered):", "",
              "| target precision | " + " | ".join(r["dataset"] for r in rows) + " |",
              "|---|" + "---|" * len(rows)]
    for i, (target, confidence) in enumerate(OTHER_TARGETS):
        cells = []
        for r in rows:
            t = r["targets"][i]
            cells.append("not reachable on validation" if t["threshold"] is None else
                         f"t = {t['threshold']:.3f}: {_pct(t['test']['coverage'])} / "
                         f"{_pct(t['test']['precision_answered'])}")
        bound = f", {confidence:.0%} lower bound (`review.confidence`)" if confidence else ""
        lines.append(f"| {target:.0%}{bound} | " + " | ".join(cells) + " |")
    lines.append("")
    for r in rows:
        review, target = r["review"], r["card_review"]["target_precision"]
        if review["threshold"] is None:
            lines.append(f"- {r['dataset']}: no threshold reaches {target:.0%} on validation; the version answers "
                         "everything (no review routing).")
            continue
        verdict = ("meets the target" if review["precision_answered"] >= target
                   else f"falls {100 * (target - review['precision_answered']):.1f} points short of the target: "
                        "the threshold is an estimate from validation, not a guarantee")
        lines.append(
            f"- {r['dataset']}: answering {_pct(review['coverage'])} of test products and sending "
            f"{_pct(review['review_share'])} to review gives {_pct(review['precision_answered'])} precision on the "
            f"answered ones (all products: {_pct(r['accuracy'])}); this {verdict}.")
    lines.append("")
    for r in rows:  # the plots sit in docs/images/, beside the document
        lines.append(f"![{r['dataset']}: coverage vs precision](images/{Path(r['plot']).name})")
    lines += ["", f"Reproduce: `{COMMAND}` (per-dataset JSON in `benchmarks/out/review/review_results.json`, "
              "test curves in `benchmarks/out/review/<dataset>_test_curve.csv`).", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=DATASETS, help="Datasets to run (default: both).")
    parser.add_argument("--update-doc", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true", help="Rewrite the section from the saved results.")
    args = parser.parse_args()
    configure_logging("INFO")
    out = REPO_ROOT / "benchmarks" / "out" / "review"
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "review_results.json"
    rows = {r["dataset"]: r for r in (json.loads(results_file.read_text()) if results_file.exists() else [])}
    for dataset in [] if args.report_only else args.only or DATASETS:
        log.info("=== %s", dataset)
        rows[dataset] = run_one(dataset, out, REPO_ROOT / "docs" / "images")
        results_file.write_text(json.dumps([rows[d] for d in DATASETS if d in rows], indent=2))
    ordered = [rows[d] for d in DATASETS if d in rows]
    section = to_markdown(ordered)
    print(section)
    if args.update_doc:
        write_section(args.update_doc, section, start=START, end=END, heading="Review threshold")


if __name__ == "__main__":
    main()
