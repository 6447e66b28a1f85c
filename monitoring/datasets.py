"""The two sides of a drift check: the champion's reference and the current window of requests.

Reference: a seeded sample of the champion's training split (what it learned from), plus
its validation split scored by the champion. Predictions on training rows are optimistic
(the model fitted them: measured 0.86 mean top-1 probability on marketplace training rows
against 0.44 on held-out ones), so prediction and quality columns exist only for the
validation rows; elsewhere they are NaN, which Evidently and the statistics skip.
The rest of the training split is the vocabulary, so the reference's own OOV share is
measured on words it did not build the vocabulary from, as the window's is.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.db.models import PredictionLog
from api.feedback import labelled_predictions
from ml.data_version import content_hash
from ml.params import MonitorParams
from ml.pyfunc_model import ProductClassifierModel, records_frame
from ml.settings import MLSettings
from ml.split import read_split
from monitoring.champion import Champion
from monitoring.descriptors import DESCRIPTORS_VERSION, describe, vocabulary

log = logging.getLogger(__name__)

PREDICTION, PROBABILITY, TARGET = "prediction", "probability", "target"


@dataclass(frozen=True)
class Reference:
    frame: pd.DataFrame  # descriptors; prediction/probability/target on the validation rows only
    vocabulary: frozenset[str]
    data_version: str  # content hash of the split files read
    matches_champion: bool  # the split on disk is the one the champion was trained on


def predict(model: ProductClassifierModel, records: list[dict]) -> pd.DataFrame:
    """Top-1 label and probability, through the artifact's own predict (as the API calls it)."""
    if not records:
        return pd.DataFrame({PREDICTION: pd.Series(dtype=object), PROBABILITY: pd.Series(dtype=float)})
    out = model.predict(None, records_frame(records), params={"top_k": 1})
    return pd.DataFrame({PREDICTION: out["label"].to_numpy(), PROBABILITY: out["probability"].to_numpy(float)})


def build_reference(
    *, settings: MLSettings, monitor: MonitorParams, champion: Champion, model: ProductClassifierModel
) -> Reference:
    """The reference for this champion, cached per (version, split content, sampling params)."""
    data_version = content_hash(settings)
    matches = champion.data_version in (None, data_version)
    if not matches:
        log.warning("the split on disk (%s) is not the one champion v%s was trained on (%s): the reference "
                    "only approximates its training data", data_version, champion.version, champion.data_version)
    key = hashlib.md5(f"{DESCRIPTORS_VERSION}:{data_version}:{monitor.reference_rows}:{monitor.seed}".encode())
    cache = settings.resolve(settings.reports_dir) / "drift" / "reference" / f"v{champion.version}-{key.hexdigest()}"
    if cache.with_suffix(".parquet").exists():
        words = frozenset(json.loads(cache.with_suffix(".vocab.json").read_text()))
        return Reference(pd.read_parquet(cache.with_suffix(".parquet")), words, data_version, matches)
    train = read_split(settings, "train").sample(frac=1.0, random_state=monitor.seed)
    size = min(monitor.reference_rows, len(train) // 2)
    sample, rest = train.iloc[:size], train.iloc[size:]
    words = vocabulary(rest.to_dict("records"))
    validation = read_split(settings, "validation")
    validation = validation.sample(n=min(len(validation), monitor.reference_rows), random_state=monitor.seed)
    scored = validation.to_dict("records")
    held_out = pd.concat([describe(scored, words, total=len(scored)), predict(model, scored)], axis=1)
    held_out[TARGET] = validation["label"].to_numpy()
    frame = pd.concat([describe(sample.to_dict("records"), words, total=size), held_out], ignore_index=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(cache.with_suffix(".parquet"))
    cache.with_suffix(".vocab.json").write_text(json.dumps(sorted(words)))
    log.info("reference of v%s: %d training + %d validation rows, %d words", champion.version, size,
             len(validation), len(words))
    return Reference(frame, words, data_version, matches)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    rows: list[PredictionLog]  # newest first
    feedback: dict[str, str]  # request_id -> latest true label


def load_window(*, session: Session, monitor: MonitorParams, until: datetime,
                hours: float | None = None, max_rows: int | None = None) -> Window:
    """Logged requests of the last ``hours`` before ``until`` (newest ``max_rows``), with their feedback."""
    start = until - timedelta(hours=hours or monitor.window_hours)
    query = (
        sa.select(PredictionLog)
        .where(PredictionLog.created_at >= start, PredictionLog.created_at <= until)
        .order_by(PredictionLog.created_at.desc(), PredictionLog.request_id)
        .limit(max_rows or monitor.window_rows)
    )
    rows = list(session.scalars(query))
    ids = {row.request_id for row in rows}
    labels = {p.prediction.request_id: p.label for p in labelled_predictions(session=session, since=start)}
    return Window(start, until, rows, {k: v for k, v in labels.items() if k in ids})


def current_frame(window: Window, *, champion: Champion, words: frozenset[str]) -> pd.DataFrame:
    """Descriptors of every request; prediction columns only where the champion answered."""
    frame = describe([row.product for row in window.rows], words, total=len(window.rows))
    by_champion = np.array([row.model_version == champion.version for row in window.rows], dtype=bool)
    frame[PREDICTION] = [row.label if mine else None for row, mine in zip(window.rows, by_champion, strict=True)]
    frame[PROBABILITY] = np.where(by_champion, [row.probability for row in window.rows], np.nan)
    frame[TARGET] = [window.feedback.get(row.request_id) if mine else None
                     for row, mine in zip(window.rows, by_champion, strict=True)]
    return frame
