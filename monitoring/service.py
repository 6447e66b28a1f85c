"""One drift check, end to end: the champion and its reference, the window of logged requests,
the Evidently reports, the decision, and its traces (files, ``drift_checks``, MLflow).

``run_drift_check`` is what ``productcat drift`` and the orchestration call; ``retrain_advice``
is what a DAG asks before it triggers ``product_retrain`` (this module never calls Airflow).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from api.db.models import DriftCheck
from api.db.session import make_engine, session_factory
from ml.params import Params
from ml.settings import MLSettings
from monitoring.champion import find_champion, load_champion_model
from monitoring.datasets import build_reference, current_frame, load_window
from monitoring.decision import OK, DriftDecision, RetrainAdvice, decide, should_retrain
from monitoring.report import drift_report, quality_report, statistics
from monitoring.store import check_folder, latest_check, log_to_mlflow, record_check, save_reports

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftCheckResult:
    check_id: int
    decision: DriftDecision
    advice: RetrainAdvice
    summary: dict[str, Any]  # what decision.json holds


def run_drift_check(
    *, settings: MLSettings, params: Params, db_url: str, until: datetime | None = None,
    window_hours: float | None = None, window_rows: int | None = None,
) -> DriftCheckResult:
    """Judge the requests logged in the window ending at ``until`` (default: now) against the champion."""
    monitor = params.monitor
    until = until or datetime.now(UTC)
    champion, client = find_champion(settings)
    model = load_champion_model(champion)
    reference = build_reference(settings=settings, monitor=monitor, champion=champion, model=model)
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as session:
            window = load_window(session=session, monitor=monitor, until=until, hours=window_hours,
                                 max_rows=window_rows)
            current = current_frame(window, champion=champion, words=reference.vocabulary)
            labelled = int(current["target"].notna().sum())
            stats = statistics(reference.frame, current, min_feedback_rows=monitor.min_feedback_rows)
            meta = {"model": f"{champion.name} v{champion.version}", "run_id": champion.run_id,
                    "reference_data_version": reference.data_version,
                    "window": f"{window.start:%Y-%m-%d %H:%M} - {window.end:%Y-%m-%d %H:%M} UTC"}
            enough = len(current) >= monitor.min_rows
            drift = drift_report(reference.frame, current, monitor=monitor, metadata=meta) if enough else None
            decision = decide(monitor=monitor, distances=drift.distances if drift else {},
                              skipped=drift.skipped if drift else {}, stats=stats,
                              current_rows=len(current), labelled_rows=labelled)
            advice = should_retrain(decision, monitor)
            quality = (quality_report(current, metadata=meta)
                       if enough and "accuracy" in stats else None)
            summary = {**meta, "model_version": champion.version, "dataset": champion.dataset,
                       "reference_matches_champion": reference.matches_champion,
                       "window_start": window.start.isoformat(), "window_end": window.end.isoformat(),
                       **decision.to_dict(), "retrain": advice.retrain, "reasons": advice.reasons}
            saved = save_reports(check_folder(settings, until), drift=drift.snapshot if drift else None,
                                 quality=quality, summary=summary)
            check = record_check(session=session, champion=champion, data_version=reference.data_version,
                                 window=(window.start, window.end), decision=decision, advice=advice, saved=saved)
    finally:
        engine.dispose()
    try:
        log_to_mlflow(client, champion=champion, check=check, saved=saved, decision=decision)
    except Exception as exc:  # the check stands without its MLflow copy; say so instead of losing it
        log.warning("drift check %d not logged to MLflow: %s", check.id, exc)
    log.info("drift check %d of v%s: %s on %d requests; fired: %s; retrain: %s", check.id, champion.version,
             decision.status if decision.status != OK else ("drifted" if decision.drifted else "no drift"),
             len(current), [s.name for s in decision.fired] or "none", advice.retrain)
    return DriftCheckResult(check.id, decision, advice, summary)


def retrain_advice(*, db_url: str) -> RetrainAdvice:
    """Whether the latest drift check asks for a retrain, and why (what the orchestration reads)."""
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as session:
            check: DriftCheck | None = latest_check(session)
    finally:
        engine.dispose()
    if check is None:
        return RetrainAdvice(False, ["no drift check has run yet"])
    return RetrainAdvice(check.retrain, [f"drift check {check.id} at {check.created_at:%Y-%m-%d %H:%M} UTC "
                                         f"({check.status}, drifted={check.drifted})", *check.reasons])
