"""Train and evaluate each model family on the real catalogues; write the table
of accuracy, macro-F1, weighted-F1, train time and samples/s to docs/benchmarks.md.

    python benchmarks/training_benchmark.py --update-doc docs/benchmarks.md

Every run goes through the same functions as `productcat ingest/split/train/evaluate`,
into its own MLflow store (benchmarks/out/mlflow.db), so the runs can be opened in the UI:
    mlflow ui --backend-store-uri sqlite:///benchmarks/out/mlflow.db
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.doc_section import write_section  # noqa: E402
from ml.evaluate import evaluate  # noqa: E402
from ml.ingest import ingest  # noqa: E402
from ml.logging_setup import configure_logging  # noqa: E402
from ml.params import Params, load_params  # noqa: E402
from ml.settings import MLSettings  # noqa: E402
from ml.split import split  # noqa: E402
from ml.train import train  # noqa: E402

log = logging.getLogger("training_benchmark")
START, END = "<!-- training-benchmark:start -->", "<!-- training-benchmark:end -->"


@dataclass(frozen=True)
class Config:
    dataset: str
    family: str
    note: str = ""
    train: dict[str, Any] = field(default_factory=dict)  # overrides of params.yaml `train:`
    transformer: dict[str, Any] = field(default_factory=dict)


CONFIGS = [
    Config("fashion", "baseline", "class weights: balanced"),
    Config("fashion", "baseline", "class weights: none", {"class_weighting": "none"}),
    Config("fashion", "transformer", "CPU: 4,000-row training sample, up to 3 epochs, 48 tokens, lr 2e-4",
           {"max_train_samples": 4000, "max_validation_samples": 1000, "class_weighting": "sqrt"},
           {"epochs": 3, "max_length": 48, "learning_rate": 2.0e-4}),
    Config("marketplace", "baseline", "13 root categories"),
    Config("amazon-in", "baseline", "20 main categories"),
    Config("flipkart", "baseline", "top-level category"),
    Config("rakuten", "baseline", "499 rows only (27 product-type codes)"),
    Config("amazon2018", "baseline", "70 rows only (the format's real rows; 9 classes)"),
]


def run_one(config: Config, out: Path) -> dict[str, Any]:
    folder = out / config.dataset
    settings = MLSettings(
        project_root=REPO_ROOT, interim_dir=folder / "interim", processed_dir=folder / "processed",
        reports_dir=folder / "reports", mlflow_tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
        mlflow_artifact_root=out / "mlartifacts",
    )
    params: Params = load_params(settings)
    params.ingest.dataset = config.dataset
    params.train = params.train.model_copy(update=config.train)
    params.train.transformer = params.train.transformer.model_copy(update=config.transformer)
    if not (folder / "processed" / "test.parquet").exists():
        ingest(settings=settings, params=params)
        split(settings=settings, params=params)
    result = train(settings=settings, params=params, family=config.family)
    ev = evaluate(settings=settings, params=params, version=result.version)
    split_summary = json.loads((folder / "reports" / "split_summary.json").read_text())
    return {
        "dataset": config.dataset, "family": config.family, "note": config.note, "version": result.version,
        "train_rows": min(split_summary["rows"]["train"], config.train.get("max_train_samples") or 10**9),
        "test_rows": ev["test_rows"], "classes": len(ev["per_class"]),
        "accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"], "weighted_f1": ev["weighted_f1"],
        "top3_accuracy": ev["top3_accuracy"], "ece": ev["ece"], "hierarchy": ev["hierarchy"],
        "train_seconds": result.train_seconds, "samples_per_second": result.train_samples_per_second,
        "latency_p50_ms": ev["latency_p50_ms"],
    }


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        START,
        f"CPU only ({os.cpu_count()} cores), Python {platform.python_version()}; test = the frozen hash split "
        "(20 %) of each catalogue after dedupe.",
        "",
        "| dataset | model | train rows | test rows | classes | accuracy | macro-F1 | weighted-F1 | top-3 | ECE "
        "| train time (s) | train samples/s | p50 latency (ms) | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['family']} | {r['train_rows']:,} | {r['test_rows']:,} | {r['classes']} "
            f"| {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['weighted_f1']:.4f} | {r['top3_accuracy']:.4f} "
            f"| {r['ece']:.4f} | {r['train_seconds']:,.1f} | {r['samples_per_second']:,.1f} "
            f"| {r['latency_p50_ms']:.1f} | {r['note']} |"
        )
    hier = [r for r in rows if r["hierarchy"]]
    if hier:
        lines += ["", "Accuracy at each level of the category tree, derived from the predicted leaf:", "",
                  "| dataset | model | note | " + " | ".join(hier[0]["hierarchy"]) + " |",
                  "|---|---|---|" + "---:|" * len(hier[0]["hierarchy"])]
        for r in hier:
            lines.append(f"| {r['dataset']} | {r['family']} | {r['note']} | "
                         + " | ".join(f"{v:.4f}" for v in r["hierarchy"].values()) + " |")
    lines += ["", "Reproduce: `python benchmarks/training_benchmark.py --update-doc docs/benchmarks.md` "
              "(per-run JSON in `benchmarks/out/training_results.json`).", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="Datasets to run (default: all configured).")
    parser.add_argument("--family", choices=["baseline", "transformer"], help="Run only this model family.")
    parser.add_argument("--update-doc", type=Path, default=None)
    args = parser.parse_args()
    configure_logging("INFO")
    out = REPO_ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "training_results.json"
    # Results of earlier runs are kept, so one configuration can be re-run alone (e.g. on a quiet machine).
    rows = json.loads(results_file.read_text()) if results_file.exists() else []
    order = {(c.dataset, c.family, c.note): i for i, c in enumerate(CONFIGS)}

    def key(row: dict[str, Any]) -> tuple[str, str, str]:
        return row["dataset"], row["family"], row["note"]

    for config in CONFIGS:
        if (args.only and config.dataset not in args.only) or (args.family and config.family != args.family):
            continue
        log.info("=== %s / %s (%s)", config.dataset, config.family, config.note)
        result = run_one(config, out)
        rows = [r for r in rows if key(r) != key(result)] + [result]
        rows.sort(key=lambda r: order.get(key(r), len(order)))
        results_file.write_text(json.dumps(rows, indent=2))
    section = to_markdown(rows)
    print(section)
    if args.update_doc:
        write_section(args.update_doc, section, start=START, end=END,
                      heading="Training and evaluation on the real catalogues")


if __name__ == "__main__":
    main()
