"""Full category paths from the leaf model: per-level accuracy and hierarchical F1 of the leaf answer
against the back-off answer (the deepest node whose aggregated probability reaches a threshold chosen on
validation), on fashion, marketplace and flipkart. Writes a section of docs/model-analysis.md.

    nice .venv/bin/python benchmarks/hierarchy_benchmark.py --update-doc docs/model-analysis.md

Each catalogue is trained with its leaf (not its root) as the target, through the same functions as
`productcat ingest/split/train`, into benchmarks/out/hierarchy/ (its own MLflow store); a trained
version is reused on the next run (--retrain to train again). Per-run JSON: hierarchy_results.json there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from benchmarks.doc_section import write_section  # noqa: E402
from ml.hierarchy import LabelTree, back_off  # noqa: E402
from ml.logging_setup import configure_logging  # noqa: E402
from ml.metrics import hierarchical_f1, path_level_accuracy  # noqa: E402
from ml.params import Params, load_params  # noqa: E402
from ml.settings import MLSettings  # noqa: E402

log = logging.getLogger("hierarchy_benchmark")
START, END = "<!-- hierarchy-benchmark:start -->", "<!-- hierarchy-benchmark:end -->"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # back-off thresholds tried on validation


@dataclass(frozen=True)
class Config:
    dataset: str
    note: str
    label: dict[str, Any] = field(default_factory=dict)  # overrides of the dataset's `label:` spec
    train: dict[str, Any] = field(default_factory=dict)  # overrides of params.yaml `train:`
    baseline: dict[str, Any] = field(default_factory=dict)


CONFIGS = [
    Config("fashion", "articleType leaf of masterCategory > subCategory > articleType"),
    # params.yaml trains marketplace and flipkart on their root; here the target is the deepest node.
    Config("marketplace", "full path (2 to 5 levels) as the target", {"level": -1},
           baseline={"max_features": 20_000}),
    # Below level 3 flipkart's tree holds brand and product-name nodes (5,932 distinct full paths in 18,000
    # rows): the leaf is cut at the third level; products with a shorter path are left out.
    Config("flipkart", "path cut at its third level as the target", {"level": 2, "min_depth": 3},
           baseline={"max_features": 10_000}),
]


def _settings(folder: Path, out: Path) -> MLSettings:
    return MLSettings(project_root=REPO_ROOT, interim_dir=folder / "interim", processed_dir=folder / "processed",
                      reports_dir=folder / "reports", mlflow_tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
                      mlflow_artifact_root=out / "mlartifacts", registered_model=f"hierarchy-{folder.name}")


def _params(settings: MLSettings, config: Config) -> Params:
    params: Params = load_params(settings)
    key = f"{config.dataset}-tree"
    spec = params.datasets[config.dataset]
    label = spec.label.model_copy(update=config.label) if spec.label else None
    params.datasets[key] = spec.model_copy(update={"label": label})
    params.ingest.dataset = key
    params.train = params.train.model_copy(update={"family": "baseline", **config.train})
    params.train.baseline = params.train.baseline.model_copy(update=config.baseline)
    return params


def trained_version(config: Config, out: Path, *, retrain: bool) -> tuple[MLSettings, str]:
    """The registered version for ``config``: trained here unless one exists (and not ``retrain``)."""
    from mlflow import MlflowClient

    from ml.ingest import ingest
    from ml.registry import configure_mlflow
    from ml.split import split
    from ml.train import train

    folder = out / config.dataset
    settings = _settings(folder, out)
    params = _params(settings, config)
    configure_mlflow(settings)
    versions = MlflowClient().search_model_versions(f"name='{settings.registered_model}'")
    if versions and not retrain:
        return settings, str(max(int(v.version) for v in versions))
    if not (folder / "processed" / "test.parquet").exists():
        ingest(settings=settings, params=params)
        split(settings=settings, params=params)
    return settings, train(settings=settings, params=params).version


def answer_rows(tree: LabelTree, proba: np.ndarray, true_paths: list[tuple[str, ...]],
                threshold: float | None) -> dict[str, Any]:
    """Per-level accuracy, hierarchical P/R/F1, the share of answers at each depth and the error rate of
    the answered nodes, for the leaf answer (threshold None) or the back-off answer at ``threshold``."""
    leaves = [tree.paths[i] for i in np.argmax(proba, axis=1)]
    pred = leaves if threshold is None else back_off(tree, proba, threshold)
    depth = max(len(p) for p in true_paths)
    # an answer "at depth d" stops d levels down; "full" = as deep as the product's own path
    full = np.array([len(p) >= len(t) for p, t in zip(pred, true_paths, strict=True)])
    wrong = np.array([t[: len(p)] != p for p, t in zip(pred, true_paths, strict=True)])
    # the products the back-off answered above the leaf's depth: was the leaf wrong there, the coarse node right?
    coarser = np.array([len(p) < len(leaf) for p, leaf in zip(pred, leaves, strict=True)])
    leaf_wrong = np.array([leaf != t for leaf, t in zip(leaves, true_paths, strict=True)])
    return {
        "threshold": threshold, **hierarchical_f1(true_paths, pred),
        "levels": path_level_accuracy(true_paths, pred),
        # of the products whose true path reaches a level, the share the answer reaches it for
        "answered": {f"level_{d}": float(np.mean([len(p) > d for p, t in zip(pred, true_paths, strict=True)
                                                  if len(t) > d])) for d in range(depth)},
        "depth_share": {str(d + 1): float(np.mean([len(p) == d + 1 for p in pred])) for d in range(depth)},
        "full_depth_share": float(full.mean()),
        "node_error_rate": float(wrong.mean()),
        "coarser_share": float(coarser.mean()),
        "leaf_wrong_when_coarser": float(leaf_wrong[coarser].mean()) if coarser.any() else None,
        "coarse_right_when_coarser": float((~wrong)[coarser].mean()) if coarser.any() else None,
    }


def analyse(config: Config, out: Path, *, retrain: bool) -> dict[str, Any]:
    import mlflow

    from ml.evaluate import evaluation_input
    from ml.split import read_split

    settings, version = trained_version(config, out, retrain=retrain)
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model}/{version}").unwrap_python_model()
    tree = LabelTree.from_card(model.labels, model.leaf_to_path)
    parents: dict[str, set[tuple[str, ...]]] = {}
    splits = {}
    for name in ("validation", "test"):
        rows = read_split(settings, name)
        data = evaluation_input(model, rows)
        splits[name] = (data.proba, [tuple(p) for p in rows["label_path"].map(list)])
        for path in splits[name][1]:
            parents.setdefault(path[-1], set()).add(path)
    val_proba, val_true = splits["validation"]
    candidates = [answer_rows(tree, val_proba, val_true, t) for t in THRESHOLDS]
    # the validation threshold with the best hierarchical F1, and the one that keeps node errors lowest
    # while answering at full depth at least 80 % of the time
    best_f1 = max(candidates, key=lambda r: (r["hf1"], -r["threshold"]))["threshold"]
    cautious = [r for r in candidates if r["full_depth_share"] >= 0.8]
    best_safe = (min(cautious, key=lambda r: (r["node_error_rate"], -r["full_depth_share"]))["threshold"]
                 if cautious else None)  # None: no threshold keeps 80 % of answers at full depth
    test_proba, test_true = splits["test"]
    chosen = sorted({best_f1, 0.5, 0.9} | ({best_safe} if best_safe is not None else set()))
    return {
        "dataset": config.dataset, "note": config.note, "version": version,
        "classes": len(tree.labels), "depth": tree.depth,
        "tree_levels": {str(d + 1): sum(len(p) == d + 1 for p in tree.paths) for d in range(tree.depth)},
        "homonym_leaves": sum(len(v) > 1 for v in parents.values()),
        "test_rows": len(test_true), "validation_rows": len(val_true),
        "best_f1_threshold": best_f1, "best_safe_threshold": best_safe,
        "validation": candidates,
        "leaf": answer_rows(tree, test_proba, test_true, None),
        "back_off": [answer_rows(tree, test_proba, test_true, t) for t in chosen],
    }


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _level_cell(row: dict[str, Any], level: str) -> str:
    accuracy, answered = row["levels"][level], row["answered"][level]
    cell = "-" if accuracy is None else _pct(accuracy)
    return cell if answered > 0.9995 else f"{cell} ({answered * 100:.0f} %)"


def _maybe_pct(value: float | None) -> str:
    return "-" if value is None else _pct(value)


def _verdict(r: dict[str, Any]) -> str:
    leaf = r["leaf"]
    by_t = {row["threshold"]: row for row in r["back_off"]}
    best = by_t[r["best_f1_threshold"]]
    text = (f"*{r['dataset']}:* hierarchical F1 {leaf['hf1']:.3f} for the leaf, {best['hf1']:.3f} for the back-off "
            f"at the validation-best t={r['best_f1_threshold']:g} ({best['hf1'] - leaf['hf1']:+.3f}); wrong answers "
            f"{_pct(leaf['node_error_rate'])} -> {_pct(best['node_error_rate'])}")
    if r["best_safe_threshold"] is not None and r["best_safe_threshold"] != r["best_f1_threshold"]:
        safe = by_t[r["best_safe_threshold"]]
        text += (f", and {_pct(safe['node_error_rate'])} at t={r['best_safe_threshold']:g}, where "
                 f"{_pct(safe['coarser_share'])} of answers stop above the leaf (hF1 {safe['hf1']:.3f})")
    return text + "."


def to_markdown(results: list[dict[str, Any]]) -> str:
    lines = [START, "",
             "Leaf answer = today's model (the most probable leaf and its path). Back-off at *t* = walk down the "
             "tree by aggregated probability and stop at the deepest node whose probability reaches *t*. "
             "Thresholds chosen on the validation split (best hierarchical F1, and the lowest node error rate "
             "that still answers at full depth for at least 80 % of products); figures on the test split. "
             "Hierarchical P/R/F1: overlap of the predicted and true ancestor sets (Kiritchenko et al.), "
             "micro-averaged. *full depth* = answers as deep as the product's own path; *error* = answered node not on "
             "the product's true path; *coarser* = answers stopped above the leaf answer's depth, and among them "
             "how often the leaf answer was wrong and how often the coarser node is right.", ""]
    for r in results:
        lines += [f"**{r['dataset']}** ({r['note']}; {r['classes']} leaves, depth {r['depth']}, leaves per depth "
                  + ", ".join(f"{d}: {n}" for d, n in r["tree_levels"].items())
                  + f"; {r['homonym_leaves']} leaf names under two parents; {r['test_rows']:,} test products; "
                  f"v{r['version']})", ""]
        levels = list(r["leaf"]["levels"])
        lines += ["| answer | " + " | ".join(f"acc {lv}" for lv in levels)
                  + " | hP | hR | hF1 | full depth | error | coarser | leaf wrong there | coarse right there |",
                  "|---|" + "---:|" * (len(levels) + 8)]
        for row in [r["leaf"], *r["back_off"]]:
            t = row["threshold"]
            name = "leaf" if t is None else f"back-off t={t:g}" + (
                " (val best hF1)" if t == r["best_f1_threshold"] else "") + (
                " (val safest)" if t == r["best_safe_threshold"] and t != r["best_f1_threshold"] else "")
            lines.append(f"| {name} | " + " | ".join(_level_cell(row, lv) for lv in levels)
                         + f" | {row['hp']:.3f} | {row['hr']:.3f} | {row['hf1']:.3f} "
                         f"| {_pct(row['full_depth_share'])} | {_pct(row['node_error_rate'])} "
                         f"| {_pct(row['coarser_share'])} | {_maybe_pct(row['leaf_wrong_when_coarser'])} "
                         f"| {_maybe_pct(row['coarse_right_when_coarser'])} |")
        lines += ["", _verdict(r), ""]
    lines += ["*acc level_L*: of the products whose true path reaches level L and whose answer reaches it too, the "
              "share answered right down to L; in brackets, when not all, the share of those products the answer "
              "reaches L for (a back-off stops above; in a ragged tree a leaf answer can end above the true depth). "
              "Their product is the strict per-level accuracy that `productcat evaluate` reports (`hierarchy`).", "",
              "Reproduce: `nice .venv/bin/python benchmarks/hierarchy_benchmark.py --update-doc "
              "docs/model-analysis.md` (per-run JSON in `benchmarks/out/hierarchy/hierarchy_results.json`).",
              "", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="Datasets to run (default: all configured).")
    parser.add_argument("--train-only", action="store_true", help="Train (or find) the versions, analyse nothing.")
    parser.add_argument("--retrain", action="store_true", help="Train even when a version exists.")
    parser.add_argument("--update-doc", type=Path, default=None)
    args = parser.parse_args()
    configure_logging("INFO")
    out = REPO_ROOT / "benchmarks" / "out" / "hierarchy"
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "hierarchy_results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    for config in CONFIGS:
        if args.only and config.dataset not in args.only:
            continue
        log.info("=== %s (%s)", config.dataset, config.note)
        if args.train_only:
            trained_version(config, out, retrain=args.retrain)
            continue
        result = analyse(config, out, retrain=args.retrain)
        results = [r for r in results if r["dataset"] != config.dataset] + [result]
        results_file.write_text(json.dumps(results, indent=2))
    if args.train_only:
        return
    order = [c.dataset for c in CONFIGS]
    results.sort(key=lambda r: order.index(r["dataset"]) if r["dataset"] in order else len(order))
    section = to_markdown(results)
    print(section)
    if args.update_doc:
        write_section(args.update_doc, section, start=START, end=END, heading="Full category paths: leaf or back-off")


if __name__ == "__main__":
    main()
