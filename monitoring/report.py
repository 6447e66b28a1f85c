"""The Evidently reports of a drift check, and the window statistics the decision reads.

Evidently 0.7, current API only (``from evidently import Report``): distribution drift of
each descriptor and of the predicted label with the method and threshold params.yaml names
(so the report's "drift detected" agrees with the decision), and classification quality on
the requests that got feedback. Shares, mean confidence and quality are plain means computed
here, because a share's change in percentage points is what an engineer reads, not a p-value.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import pandas as pd
from evidently import DataDefinition, Dataset, MulticlassClassification, Report
from evidently.core.report import Snapshot
from evidently.metrics import MeanValue
from evidently.presets import ClassificationPreset, DataDriftPreset
from sklearn.metrics import accuracy_score, f1_score

from ml.params import MonitorParams
from monitoring.datasets import PREDICTION, PROBABILITY, TARGET
from monitoring.descriptors import DESCRIPTION_CHARS, LOG_PRICE, NUMERIC, OOV_RATE, SHARES, TITLE, TITLE_CHARS

log = logging.getLogger(__name__)

LABEL_GROUP = "predicted_label"  # the predicted label, labels rare in the reference pooled as OTHER
OTHER = "(other)"
# signal -> (report column, Evidently drift method); thresholds come from params.yaml.
DISTANCES: dict[str, tuple[str, str]] = {
    "title_length": (TITLE_CHARS, "wasserstein"),  # Wasserstein distance in reference std units
    "description_length": (DESCRIPTION_CHARS, "wasserstein"),
    "price": (LOG_PRICE, "wasserstein"),
    "oov_rate": (OOV_RATE, "wasserstein"),
    "title_text": (TITLE, "abs_text_content_drift"),  # ROC AUC of a domain classifier on the titles
    "predicted_label": (LABEL_GROUP, "jensenshannon"),
}
DEFINITION = DataDefinition(
    numerical_columns=[*NUMERIC, *SHARES, PROBABILITY], categorical_columns=[LABEL_GROUP], text_columns=[TITLE]
)
COLUMNS = [TITLE, *NUMERIC, *SHARES, PROBABILITY, LABEL_GROUP]


@dataclass
class DriftReport:
    snapshot: Snapshot
    distances: dict[str, float]  # signal -> Evidently drift score
    skipped: dict[str, str] = field(default_factory=dict)  # signal -> why it was not compared


def _pool(labels: pd.Series, keep: set[str]) -> pd.Series:
    return labels.where(labels.isna() | labels.isin(keep), OTHER)


def _values(frame: pd.DataFrame, column: str) -> int:
    return int((frame[column].str.len() > 0).sum()) if column == TITLE else int(frame[column].notna().sum())


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, *, monitor: MonitorParams,
                 metadata: dict[str, str]) -> DriftReport:
    # With 100 labels and a window of a few hundred rows, rare labels are mostly sampling noise.
    shares = reference[PREDICTION].value_counts(normalize=True)
    keep = set(shares[shares >= monitor.label_min_share].index)
    ref = reference.assign(**{LABEL_GROUP: _pool(reference[PREDICTION], keep)})[COLUMNS]
    cur = current.assign(**{LABEL_GROUP: _pool(current[PREDICTION], keep)})[COLUMNS]
    compared, skipped = {}, {}
    for signal, (column, method) in DISTANCES.items():
        counts = _values(ref, column), _values(cur, column)
        if min(counts) < monitor.min_values:
            skipped[signal] = f"too few values (reference {counts[0]}, current {counts[1]}; min {monitor.min_values})"
        else:
            compared[column] = (signal, method)
    preset = DataDriftPreset(
        # Evidently calls the window drifted when this share of columns drift; one is enough, as in the decision.
        drift_share=math.floor(1000 / max(1, len(compared))) / 1000,
        columns=list(compared),
        per_column_method={column: method for column, (_, method) in compared.items()},
        per_column_threshold={column: getattr(monitor.thresholds, signal) for column, (signal, _) in compared.items()},
    )
    means = [MeanValue(column=c) for c in (*SHARES, PROBABILITY) if cur[c].notna().any()]
    metrics = [preset, *means] if compared else means
    with warnings.catch_warnings():
        # Summary statistics of the NaN-only parts warn, and the domain classifier hits its iteration
        # cap on tiny windows; neither changes a score.
        warnings.simplefilter("ignore")
        snapshot = Report(metrics, metadata=metadata, tags=["drift"]).run(
            current_data=Dataset.from_pandas(cur, data_definition=DEFINITION),
            reference_data=Dataset.from_pandas(ref, data_definition=DEFINITION),
        )
    distances = {
        compared[m["config"]["column"]][0]: float(m["value"])
        for m in snapshot.dict()["metrics"]
        if m["config"]["type"].endswith(":ValueDrift") and m["config"]["column"] in compared
    }
    return DriftReport(snapshot, distances, skipped)


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.loc[frame[TARGET].notna() & frame[PREDICTION].notna(), [TARGET, PREDICTION]].astype(str)


def quality_report(current: pd.DataFrame, *, metadata: dict[str, str]) -> Snapshot:
    """Accuracy, precision, recall, F1, per-label quality and the confusion matrix on the requests
    with feedback. Without reference data: Evidently 0.7.23's per-label widgets fail (KeyError) on a
    label the reference lacks, and feedback brings new labels; the reference values are in the decision."""
    definition = DataDefinition(categorical_columns=[TARGET, PREDICTION], classification=[
        MulticlassClassification(target=TARGET, prediction_labels=PREDICTION)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on labels that have no predicted sample
        return Report([ClassificationPreset()], metadata=metadata, tags=["quality"]).run(
            current_data=Dataset.from_pandas(_labelled(current), data_definition=definition))


def statistics(reference: pd.DataFrame, current: pd.DataFrame, *, min_feedback_rows: int
               ) -> dict[str, tuple[float | None, float | None]]:
    """statistic -> (reference, current): shares, mean top-1 probability, and quality when enough feedback."""
    def mean(series: pd.Series) -> float | None:
        return float(series.mean()) if series.notna().any() else None

    stats = {column: (mean(reference[column]), mean(current[column])) for column in SHARES}
    stats["confidence"] = mean(reference[PROBABILITY]), mean(current[PROBABILITY])
    ref, cur = _labelled(reference), _labelled(current)
    if len(cur) >= min_feedback_rows and len(ref):
        ref_acc, cur_acc = (float(accuracy_score(f[TARGET], f[PREDICTION])) for f in (ref, cur))
        ref_f1, cur_f1 = (float(f1_score(f[TARGET], f[PREDICTION], average="macro", zero_division=0))
                          for f in (ref, cur))
        stats["accuracy"], stats["macro_f1"] = (ref_acc, cur_acc), (ref_f1, cur_f1)
    return stats
