"""Measure any registered version on any labelled file, apart from its test-split evaluation.

The file is read by ``ml.ingest.ingest`` itself, into a temporary folder (same reader, same
``Validator``, so labels are derived exactly as for training); the kept rows are scored and
measured by the code the test-split evaluation uses (``ml.evaluate.evaluation_input``,
``ml.metrics``). Nothing is written to MLflow: the version's test tags and metrics stay those
of the frozen test split. The report is a folder of its own (metrics.json, per_class.csv,
report.md, the file's quarantine.jsonl).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pyarrow.parquet as pq

from ml.data_version import content_hash
from ml.evaluate import evaluation_input
from ml.ingest import IngestOutputs, ingest
from ml.io import write_json
from ml.metrics import compute_metrics
from ml.params import Params
from ml.pyfunc_model import ProductClassifierModel
from ml.registry import configure_mlflow
from ml.score import resolve_version
from ml.settings import MLSettings
from ml.split import SplitOutputs
from ml.text import normalise_title

log = logging.getLogger(__name__)

HEADLINE = ("n", "accuracy", "macro_f1", "weighted_f1", "top3_accuracy", "ece")


def default_output(settings: MLSettings, *, version: str, dataset: str, source: Path) -> Path:
    stem = source.name.split(".")[0] or "file"
    return settings.resolve(settings.reports_dir) / "evaluations" / f"v{version}-{dataset}-{stem}"


def read_labelled_file(*, settings: MLSettings, params: Params, dataset: str | None, source: Path | None,
                       keep: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """Ingest ``source`` with ``dataset``'s mapping into a temporary folder: (ingest summary, kept
    products). The file's quarantine.jsonl is copied into ``keep``."""
    with tempfile.TemporaryDirectory(prefix="productcat-evaluate-") as scratch:
        local = settings.model_copy(update={"interim_dir": Path(scratch) / "interim",
                                            "reports_dir": Path(scratch) / "reports"})
        in_process = params.model_copy(deep=True)
        in_process.ingest.engine = "pandas"  # a labelled file is small; no Spark session for it
        summary = ingest(settings=local, params=in_process, dataset=dataset, source=source)
        outputs = IngestOutputs.for_settings(local)
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy2(outputs.quarantine, keep / "quarantine.jsonl")
        products = pq.read_table(outputs.products).to_pandas()
    return summary, products


def training_titles(settings: MLSettings, run_tags: dict[str, str]) -> tuple[set[str] | None, str]:
    """Normalised titles of the version's training split, when the local split is the one its run
    recorded (same ``data_content_md5``); else None and why."""
    recorded = run_tags.get("data_content_md5")
    if recorded is None:
        return None, "the version's run records no data_content_md5"
    train_file = SplitOutputs.for_settings(settings).split_file("train")
    if not train_file.exists():
        return None, f"no local training split ({train_file}); `productcat pull-data --version N` restores it"
    if content_hash(settings) != recorded:
        return None, (f"the local split ({settings.resolve(settings.processed_dir)}) is not the one the version was "
                      f"trained on (data_content_md5 {recorded}); `productcat pull-data --version N` restores it")
    titles = pq.read_table(train_file, columns=["title"]).column("title").to_pylist()
    return {normalise_title(t) for t in titles} - {""}, f"training split {train_file}"


def _measure(python_model: ProductClassifierModel, rows: pd.DataFrame, params: Params) -> dict[str, Any] | None:
    if rows.empty:
        return None
    data = evaluation_input(python_model, rows.reset_index(drop=True))
    return compute_metrics(data, rare_class_max_support=params.evaluate.rare_class_max_support)


def _headline(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if metrics is None else {k: metrics[k] for k in HEADLINE}


def evaluate_file(*, settings: MLSettings, params: Params, source: Path | None, dataset: str | None = None,
                  version: str | None = None, alias: str | None = None,
                  output: Path | None = None) -> dict[str, Any]:
    """Evaluate ``version`` (or the one ``alias`` names, default the champion) on ``source`` read with
    ``dataset``'s mapping (default ``ingest.dataset``; no source: the dataset's own file). Rows whose
    label the version does not know are counted and excluded from every metric. Returns the summary
    written to ``output``/metrics.json."""
    client = configure_mlflow(settings)
    mv = resolve_version(settings, version=version, alias=alias)
    name, spec = params.dataset(dataset)
    path = source if source is not None else spec.resolved_path(settings)
    out = output or default_output(settings, version=str(mv.version), dataset=name, source=path)
    ingested, products = read_labelled_file(settings=settings, params=params, dataset=name, source=source, keep=out)
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model}/{mv.version}")
    python_model: ProductClassifierModel = model.unwrap_python_model()

    known = products["label"].isin(set(python_model.labels))
    unknown = products.loc[~known, "label"].value_counts()
    evaluated = products[known].reset_index(drop=True)
    log.info("evaluating %s v%s on %s: %d rows kept, %d with a label it does not know", mv.name, mv.version, path,
             len(products), int((~known).sum()))
    metrics = _measure(python_model, evaluated, params)

    run = client.get_run(mv.run_id)
    titles, titles_from = training_titles(settings, run.data.tags)
    # A capped run saw a seeded sample of the split only; the overlap still counts the whole split.
    capped = run.data.params.get("max_train_samples")
    overlap: dict[str, Any] = {"available": titles is not None, "compared_with": titles_from,
                               "trained_on_sample_of": int(capped) if capped and capped.isdigit() else None}
    if titles is not None:
        seen = products["title"].map(normalise_title).isin(titles)
        seen_evaluated = seen[known].reset_index(drop=True)
        overlap |= {
            "rows": int(seen.sum()), "share": float(seen.mean()) if len(seen) else 0.0,
            "overlapping": _headline(_measure(python_model, evaluated[seen_evaluated], params)),
            "unseen": _headline(_measure(python_model, evaluated[~seen_evaluated], params)),
        }
    else:
        log.warning("title overlap with the training split skipped: %s", titles_from)

    summary = {
        "version": str(mv.version), "model": mv.name, "run_id": mv.run_id, "dataset": name,
        "source_path": ingested["source_path"], "source_sha256": ingested["source_sha256"],
        "rows": {"read": ingested["read"], "kept": ingested["kept"], "quarantined": ingested["quarantined"],
                 "quarantine_reasons": ingested["quarantine_reasons"]},
        "unknown_labels": {"rows": int((~known).sum()), "share": float((~known).mean()) if len(known) else 0.0,
                           "labels": {str(k): int(v) for k, v in unknown.items()},
                           "handling": "excluded from every metric"},
        "evaluated_rows": len(evaluated),
        **(_headline(metrics) or {k: None for k in HEADLINE}),
        "slices": metrics["slices"] if metrics else {}, "per_class": metrics["per_class"] if metrics else {},
        "training_title_overlap": overlap,
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(out / "metrics.json", summary)
    if metrics:
        frame = pd.DataFrame.from_dict(metrics["per_class"], orient="index").rename_axis("label")
        frame.to_csv(out / "per_class.csv")
    (out / "report.md").write_text(render_report(summary))
    log.info("report written to %s", out)
    return summary | {"output": str(out)}


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def render_report(summary: dict[str, Any]) -> str:
    """Plain-words markdown of a file evaluation."""
    rows, unknown, overlap = summary["rows"], summary["unknown_labels"], summary["training_title_overlap"]
    lines = [
        f"# {summary['model']} v{summary['version']} on {summary['source_path']}",
        "",
        f"Read with the mapping of dataset `{summary['dataset']}`; evaluated {summary['evaluated_at']}. "
        "Not the version's test-split evaluation: its registry tags and metrics are untouched.",
        "",
        "## Rows",
        f"- read {rows['read']}, kept {rows['kept']}, quarantined {rows['quarantined']}"
        + "".join(f"\n  - {reason}: {n}" for reason, n in rows["quarantine_reasons"].items()),
        f"- labels the version does not know: {unknown['rows']} rows ({unknown['share']:.1%}), "
        f"{unknown['handling']}" + "".join(f"\n  - {label}: {n}" for label, n in list(unknown["labels"].items())[:20])
        + (f"\n  - ... {len(unknown['labels']) - 20} more labels (metrics.json lists them all)"
           if len(unknown["labels"]) > 20 else ""),
        f"- evaluated: {summary['evaluated_rows']}",
        "",
        "## Metrics",
        "| metric | value |", "|---|---|",
        *(f"| {k} | {_number(summary[k])} |" for k in HEADLINE[1:]),
        "",
        "## Slices",
        "| slice | rows | accuracy |", "|---|---|---|",
        *(f"| {k} | {v.get('n')} | {_number(v.get('accuracy'))} |" for k, v in summary["slices"].items()),
        "",
        "## Titles also in the training split",
    ]
    if not overlap["available"]:
        lines.append(f"Skipped: {overlap['compared_with']}.")
    else:
        lines += [
            f"{overlap['rows']} of {rows['kept']} kept rows ({overlap['share']:.1%}) have a normalised title that "
            f"occurs in the {overlap['compared_with']}.",
        ]
        if overlap.get("trained_on_sample_of"):
            lines.append(f"The version was trained on a sample of {overlap['trained_on_sample_of']} rows of that "
                         "split (`max_train_samples`), so it did not see every overlapping title.")
        lines += ["", "| rows | n | accuracy | macro-F1 |", "|---|---|---|---|"]
        for part in ("overlapping", "unseen"):
            m = overlap[part] or {}
            lines.append(f"| {part} | {m.get('n', 0)} | {_number(m.get('accuracy'))} | {_number(m.get('macro_f1'))} |")
    lines += ["", "## Per class", "| label | support | precision | recall | f1 |", "|---|---|---|---|---|"]
    present = (item for item in summary["per_class"].items() if item[1].get("support") or item[1].get("precision"))
    for label, m in sorted(present, key=lambda item: -item[1].get("support", 0)):
        lines.append(f"| {label} | {m.get('support')} | {_number(m.get('precision'))} | {_number(m.get('recall'))} "
                     f"| {_number(m.get('f1'))} |")
    return "\n".join(lines) + "\n"
