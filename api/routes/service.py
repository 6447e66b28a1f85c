"""Liveness, readiness, the serving model, Prometheus metrics, and a manual reload."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from fastapi import APIRouter, Response, status

from api.deps import RequiredKey, ServiceState, State
from api.routes.responses import AUTH
from api.schemas import ModelInfo

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


@router.get("/ready", responses={503: {"description": "Not ready: no model loaded or the database is down"}})
async def ready(state: State, response: Response) -> dict[str, bool]:
    """Ready when a model is loaded and the request-log database answers."""
    checks = {"model_loaded": state.manager.current is not None,
              "database": await asyncio.to_thread(_database_answers, state)}
    checks["ready"] = all(checks.values())
    if not checks["ready"]:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return checks


def model_info(state: State) -> ModelInfo:
    manager, model = state.manager, state.manager.current
    base = {"name": manager.name, "alias": manager.alias, "refused_versions": manager.refused,
            "last_error": manager.last_error}
    if model is None:
        return ModelInfo(version=None, **base)
    return ModelInfo(version=model.version, run_id=model.run_id, runtime=model.runtime,
                     loaded_at=model.loaded_at.isoformat(),
                     labels=model.labels, training_metrics=model.training_metrics, card=model.card, **base)


@router.get("/model", response_model=ModelInfo)
async def model(state: State) -> ModelInfo:
    """The version serving now, its training metrics and labels, and any version refused."""
    return model_info(state)


@router.post("/model/reload", response_model=ModelInfo, responses=AUTH)
async def reload(state: State, api_key: RequiredKey) -> ModelInfo:
    """Check the alias now instead of waiting for the next poll (admin)."""
    await asyncio.to_thread(state.manager.refresh)
    return model_info(state)


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(state: State) -> Response:
    state.metrics.log_queue.set(state.writer.pending())
    state.metrics.log_spooled.set(state.writer.spooled)
    current = state.manager.current
    if current is not None:
        state.metrics.serving(current.name, current.version)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")
