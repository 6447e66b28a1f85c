"""`productcat promote --from-shadow`: the champion alias moves to the challenger only when its live
record (monitoring/shadow.py) passes the rules in ``params.yaml`` ``shadow:``; the report's numbers
are the recorded reason (version tags and the alias history, as every promotion)."""

from __future__ import annotations

import json
import logging
from datetime import datetime

from api.db.session import make_engine
from ml.params import Params
from ml.promotion import challenger, move_champion
from ml.registry import champion, registry_client, set_version_tags
from ml.settings import MLSettings
from monitoring.shadow import ShadowReport, shadow_report

log = logging.getLogger(__name__)

EVIDENCE_TAG = "shadow_evidence"  # version tag: the report that promoted it, as JSON


def evidence_reason(report: ShadowReport) -> str:
    accuracy = report.accuracy
    return (f"shadow report v{report.challenger_version} vs v{report.champion_version}: {report.requests} requests, "
            f"agreement {report.agreement_rate:.3f}, {accuracy.labelled} labelled, accuracy "
            f"{accuracy.challenger:.4f} vs {accuracy.champion:.4f} (difference {accuracy.difference:+.4f}, "
            f"{accuracy.confidence:.0%} CI {accuracy.ci_low:+.4f} .. {accuracy.ci_high:+.4f})")


def promote_from_shadow(*, settings: MLSettings, params: Params, db_url: str, by: str,
                        since: datetime | None = None) -> tuple[ShadowReport, str | None]:
    """The report on the current champion and challenger, and the previous champion when the alias moved
    (None: the verdict did not pass; the report's reasons say which rule failed). LookupError without
    a champion or a challenger."""
    client = registry_client(settings)
    serving, shadowed = champion(client, settings), challenger(client, settings)
    if serving is None or shadowed is None:
        missing = settings.champion_alias if serving is None else settings.challenger_alias
        raise LookupError(f"{settings.registered_model} has no {missing} alias: set a challenger with "
                          f"`productcat promote --alias {settings.challenger_alias} --version N --reason ...` "
                          "(or run the gate with --no-promote) and let it see traffic first")
    engine = make_engine(db_url)
    try:
        report = shadow_report(engine=engine, rules=params.shadow, since=since,
                               champion_version=str(serving.version), challenger_version=str(shadowed.version))
    finally:
        engine.dispose()
    if not report.passed:
        log.info("shadow: v%s stays champion (%s)", serving.version, report.verdict)
        return report, None
    version = str(shadowed.version)
    set_version_tags(client, settings, version, {EVIDENCE_TAG: json.dumps(
        report.model_dump(mode="json", exclude={"per_class"}), ensure_ascii=False)[:4900]})
    previous = move_champion(client, settings, version=version, by=by, reason=evidence_reason(report))
    return report, previous
