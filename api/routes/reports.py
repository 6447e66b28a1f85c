"""GET /reports/drift: the drift monitor's checks, and their Evidently reports as HTML."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field

from api.db.models import DriftCheck
from api.deps import DBSession, read_key
from api.routes.responses import AUTH
from monitoring.store import latest_check, recent_checks

# Every report: a `read` key unless PRODUCTCAT_API_OPEN_READ_ROUTES (the local demo) opens them.
router = APIRouter(prefix="/reports/drift", tags=["monitoring"], dependencies=[Depends(read_key)], responses=AUTH)

NOT_FOUND: dict[int | str, dict[str, str]] = {404: {"description": "No such check, or its report is not on this host"}}
CheckId = Annotated[int, PathParam(ge=1, le=2**31 - 1, description="Id from GET /reports/drift.")]


class DriftCheckOut(BaseModel):
    id: int
    created_at: datetime
    model_name: str
    model_version: str
    window_start: datetime
    window_end: datetime
    current_rows: int
    labelled_rows: int
    status: str = Field(description="ok, or insufficient_data when the window held fewer than min_rows requests.")
    drifted: bool
    retrain: bool = Field(description="Whether this check asks for a retrain (see reasons).")
    signals: list[str] = Field(description="Signals that crossed their threshold.")
    reasons: list[str]
    report_url: str | None = None
    quality_url: str | None = None


def _out(check: DriftCheck) -> DriftCheckOut:
    return DriftCheckOut.model_validate({
        **{name: getattr(check, name) for name in DriftCheckOut.model_fields if hasattr(check, name)},
        "report_url": f"/reports/drift/{check.id}" if check.report_html else None,
        "quality_url": f"/reports/drift/{check.id}/quality" if check.quality_html else None,
    })


def _html(path: str | None, what: str) -> FileResponse:
    if not path or not Path(path).is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{what} has no report file on this host")
    return FileResponse(path, media_type="text/html")


@router.get("", response_model=list[DriftCheckOut])
def list_checks(session: DBSession,
                limit: Annotated[int, Query(ge=1, le=500, description="Newest checks first.")] = 50
                ) -> list[DriftCheckOut]:
    """Drift checks, newest first: verdict, signals that fired, and links to their reports."""
    return [_out(check) for check in recent_checks(session, limit)]


@router.get("/latest", response_class=HTMLResponse, responses=NOT_FOUND)
def latest(session: DBSession) -> FileResponse:
    """The newest check's Evidently drift report."""
    check = latest_check(session)
    if check is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no drift check has run yet")
    return _html(check.report_html, f"drift check {check.id}")


@router.get("/{check_id}", response_class=HTMLResponse, responses=NOT_FOUND)
def report(check_id: CheckId, session: DBSession) -> FileResponse:
    """One check's Evidently drift report."""
    check = session.get(DriftCheck, check_id)
    return _html(check.report_html if check else None, f"drift check {check_id}")


@router.get("/{check_id}/quality", response_class=HTMLResponse, responses=NOT_FOUND)
def quality(check_id: CheckId, session: DBSession) -> FileResponse:
    """One check's quality report, on the requests that got feedback (when there were enough)."""
    check = session.get(DriftCheck, check_id)
    return _html(check.quality_html if check else None, f"drift check {check_id}")
