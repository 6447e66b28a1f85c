"""GET /shadow/report: the challenger against the champion on live traffic (monitoring/shadow.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import DBSession, ReadKey, State
from api.routes.responses import AUTH
from ml.params import load_params
from monitoring.shadow import ShadowReport, shadow_report

router = APIRouter(tags=["monitoring"])


class ChallengerState(BaseModel):
    alias: str | None = None
    loaded_version: str | None = Field(None, description="The challenger version this instance scores now.")
    last_error: str | None = None
    refused_versions: dict[str, str] = Field(default_factory=dict)
    scored: int = Field(0, description="Products this instance's challenger scored since it started.")
    dropped: int = Field(0, description="Products whose shadow work or row it gave up (queue full, failed, "
                         "not logged); also productcat_shadow_dropped_total by reason.")


class ShadowReportOut(ShadowReport):
    challenger: ChallengerState = Field(description="The shadow scorer of the instance that answered.")


@router.get("/shadow/report", response_model=ShadowReportOut, responses=AUTH)
def report(
    state: State, session: DBSession, _: ReadKey,
    since: Annotated[datetime | None, Query(
        description="Shadow answers created since (ISO time; default: the last shadow.window_hours).")] = None,
) -> ShadowReportOut:
    """Agreement of the challenger with the champion on the requests both answered, the label pairs they
    disagree on, accuracy of each on requests that got /feedback (95% CI of the difference), latency of
    each, and the verdict of params.yaml `shadow:` that `productcat promote --from-shadow` applies."""
    rules = load_params(state.ml_settings or state.settings.ml()).shadow
    found = shadow_report(engine=session.connection(), rules=rules, since=since)
    scorer = state.shadow
    challenger = ChallengerState()
    if scorer is not None:
        manager = scorer.manager
        current = manager.current
        challenger = ChallengerState(alias=manager.alias, loaded_version=current.version if current else None,
                                     last_error=manager.last_error, refused_versions=dict(manager.refused),
                                     scored=scorer.scored, dropped=scorer.dropped)
    return ShadowReportOut(**found.model_dump(), challenger=challenger)
