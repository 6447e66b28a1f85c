"""Where a drift check leaves its traces: HTML + JSON under the reports folder (one timestamped
folder per check), a ``drift_checks`` row in the request-log database, and the champion's
MLflow run (artifacts and ``drift_*`` metrics), so each place answers its own question."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities import Metric
from sqlalchemy.orm import Session

from api.db.models import DriftCheck
from ml.settings import MLSettings
from monitoring.banner import verdict_banner
from monitoring.champion import Champion
from monitoring.decision import DriftDecision, RetrainAdvice

if TYPE_CHECKING:  # the API reads checks through this module and should not import Evidently
    from evidently.core.report import Snapshot

log = logging.getLogger(__name__)

DECISION_FILE, REPORT_HTML, REPORT_JSON, QUALITY_HTML = "decision.json", "report.html", "report.json", "quality.html"


@dataclass(frozen=True)
class SavedReports:
    folder: Path
    report_html: Path | None
    report_json: Path | None
    quality_html: Path | None


def check_folder(settings: MLSettings, at: datetime) -> Path:
    # The suffix keeps two checks started in the same second apart.
    return settings.resolve(settings.reports_dir) / "drift" / f"{at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def save_reports(folder: Path, *, drift: Snapshot | None, quality: Snapshot | None,
                 summary: dict[str, Any]) -> SavedReports:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DECISION_FILE).write_text(json.dumps(summary, indent=2, default=str))
    html = json_path = quality_path = None
    if drift is not None:
        html, json_path = _save_html(drift, folder / REPORT_HTML, summary), folder / REPORT_JSON
        drift.save_json(str(json_path))
    if quality is not None:
        quality_path = _save_html(quality, folder / QUALITY_HTML, summary)
    return SavedReports(folder, html, json_path, quality_path)


def _save_html(snapshot: Snapshot, path: Path, summary: dict[str, Any]) -> Path:
    snapshot.save_html(str(path))
    # The verdict on top of Evidently's evidence: what the on-call reads first.
    page = path.read_text(encoding="utf-8")
    path.write_text(page.replace("<body>", f"<body>{verdict_banner(summary)}", 1), encoding="utf-8")
    return path


def record_check(*, session: Session, champion: Champion, data_version: str | None, window: tuple[datetime, datetime],
                 decision: DriftDecision, advice: RetrainAdvice, saved: SavedReports) -> DriftCheck:
    check = DriftCheck(
        created_at=window[1], model_name=champion.name, model_version=champion.version, run_id=champion.run_id,
        data_version=data_version, window_start=window[0], window_end=window[1],
        current_rows=decision.current_rows, labelled_rows=decision.labelled_rows, status=decision.status,
        drifted=decision.drifted, retrain=advice.retrain, signals=[s.name for s in decision.fired],
        reasons=advice.reasons, details=json.loads(json.dumps(decision.to_dict()["signals"], default=str)),
        report_html=_text(saved.report_html), report_json=_text(saved.report_json),
        quality_html=_text(saved.quality_html),
    )
    session.add(check)
    session.commit()
    return check


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def log_to_mlflow(client: MlflowClient, *, champion: Champion, check: DriftCheck, saved: SavedReports,
                  decision: DriftDecision) -> None:
    """Reports and signal values under the champion's training run: its history beside its training."""
    if not champion.run_id:
        log.warning("champion v%s has no run: drift check %d not logged to MLflow", champion.version, check.id)
        return
    client.log_artifacts(champion.run_id, str(saved.folder), artifact_path=f"drift/{saved.folder.name}")
    stamp = int(check.window_end.timestamp() * 1000)
    metrics = [Metric(f"drift_{s.name}", float(s.value), stamp, check.id) for s in decision.signals
               if s.value is not None]
    metrics.append(Metric("drift_detected", float(decision.drifted), stamp, check.id))
    client.log_batch(champion.run_id, metrics=metrics)
    client.set_tag(champion.run_id, "last_drift_check", saved.folder.name)


def latest_check(session: Session) -> DriftCheck | None:
    return session.scalar(sa.select(DriftCheck).order_by(DriftCheck.created_at.desc(), DriftCheck.id.desc()).limit(1))


def recent_checks(session: Session, limit: int = 50) -> list[DriftCheck]:
    return list(session.scalars(
        sa.select(DriftCheck).order_by(DriftCheck.created_at.desc(), DriftCheck.id.desc()).limit(limit)))
