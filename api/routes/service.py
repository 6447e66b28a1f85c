"""Liveness, readiness, the serving model, Prometheus metrics, and a manual reload."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import sqlalchemy as sa
from fastapi import APIRouter, Response, status

from api.deps import AdminKey, ReadKey, ServiceState, State
from api.routes.responses import AUTH
from api.schemas import ModelInfo, ProbationInfo, RollbackInfo

router = APIRouter(tags=["service"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive (answers even while the model is busy: inference runs in threads)."""
    return {"status": "ok"}


def _database_answers(state: ServiceState) -> bool:
    try:
        with state.sessions() as session:
            session.execute(sa.text("SELECT 1"))
        return True
    except Exception:
        return False


async def _database_check(state: ServiceState) -> tuple[bool, str | None]:
    """Whether the request-log database answers, within ready_timeout_seconds whatever it does
    (one shared probe in flight at most: a hung database never piles up threads)."""
    if state.db_probe is not None:
        return await state.db_probe.check()
    answers = await asyncio.to_thread(_database_answers, state)
    return answers, None if answers else "the database did not answer"


@router.get("/ready", responses={503: {"description": "Not ready: no (healthy) model loaded or the database is down"}})
async def ready(state: State, response: Response) -> dict[str, bool | str]:
    """Ready when a model is loaded and answering (not failing with nothing to fall back to) and the
    request-log database answers. GET /model tells why a model check failed and what was rolled back."""
    database, database_error = await _database_check(state)
    checks: dict[str, bool | str] = {
        "model_loaded": state.manager.current is not None, "model_healthy": state.manager.failing is None,
        "database": database}
    checks["ready"] = all(checks.values())
    if database_error:  # why, for the on-call engineer (rows are spooled meanwhile, nothing is lost)
        checks["database_error"] = database_error
    if not checks["ready"]:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return checks


def model_info(state: State) -> ModelInfo:
    manager, model = state.manager, state.manager.current
    probation, rollback = manager.probation, manager.rolled_back
    base = {"name": manager.name, "alias": manager.alias, "refused_versions": dict(manager.refused),
            "last_error": manager.last_error, "healthy": manager.failing is None, "failing": manager.failing,
            "probation": ProbationInfo.model_validate(asdict(probation)) if probation else None,
            "fallback_version": manager.fallback_version, "serving_git_commit": state.serving_git_commit,
            "rolled_back_from": RollbackInfo.model_validate(asdict(rollback) | {"at": rollback.at.isoformat()})
            if rollback else None}
    if model is None:
        return ModelInfo(version=None, **base)
    return ModelInfo(version=model.version, run_id=model.run_id, runtime=model.runtime,
                     loaded_at=model.loaded_at.isoformat(),
                     dataset=model.card.get("dataset"), data_version=model.data_version,
                     model_git_commit=model.model_git_commit, labels=model.labels,
                     low_confidence_threshold=model.low_confidence_threshold, review_threshold=model.review_threshold,
                     training_metrics=model.training_metrics, card=model.card, **base)


@router.get("/model", response_model=ModelInfo, responses=AUTH)
async def model(state: State, _: ReadKey) -> ModelInfo:
    """The version serving now, its training metrics and labels, and any version refused."""
    return model_info(state)


@router.post("/model/reload", response_model=ModelInfo, responses=AUTH)
async def reload(state: State, _: AdminKey) -> ModelInfo:
    """Check the alias now instead of waiting for the next poll (admin)."""
    await asyncio.to_thread(state.manager.refresh)
    return model_info(state)


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(state: State, _: ReadKey) -> Response:
    """Prometheus text; a scraper sends its `read` key as a bearer token unless read routes are open."""
    state.metrics.log_queue.set(state.writer.pending())
    state.metrics.log_spooled.set(state.writer.spooled)
    current = state.manager.current
    if current is not None:
        state.metrics.serving(current.name, current.version)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")
