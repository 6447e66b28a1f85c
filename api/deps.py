"""FastAPI dependencies: the app's state, a DB session, the caller's API key for each kind of route."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from api.auth import KeyCheck, too_many
from api.batching import MicroBatcher
from api.db.models import ApiKey
from api.db.probe import DatabaseProbe
from api.keys import Scope
from api.metrics import ServiceMetrics
from api.model_manager import ChampionManager
from api.ratelimit import AccessLimits, client_address
from api.request_log import RequestLogWriter
from api.settings import APISettings
from api.shadow import ShadowScorer
from ml.settings import MLSettings


@dataclass
class ServiceState:
    """Everything one running app holds; built in the lifespan, read by the routes."""

    settings: APISettings
    manager: ChampionManager
    writer: RequestLogWriter
    sessions: sessionmaker[Session]
    metrics: ServiceMetrics
    executor: ThreadPoolExecutor
    batcher: MicroBatcher[Any, dict[str, Any]] | None = None  # None: batching is off
    db_probe: DatabaseProbe | None = None  # None: /ready probes with no time bound
    serving_git_commit: str | None = None  # the running code's version (api/code_version.py), once at startup
    shadow: ShadowScorer | None = None  # the challenger, scored off the request path (None: settings.shadow off)
    ml_settings: MLSettings | None = None  # where params.yaml is (None: the environment's)
    limits: AccessLimits = field(init=False)  # from settings: every app starts with full buckets

    def __post_init__(self) -> None:
        self.limits = AccessLimits(
            predict_per_key=self.settings.rate_limit_predict_per_key,
            predict_per_address=self.settings.rate_limit_predict_per_address,
            failed_auth_per_address=self.settings.rate_limit_failed_auth_per_address,
            max_clients=self.settings.rate_limit_max_clients,
        )


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]


def get_session(state: State) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


DBSession = Annotated[Session, Depends(get_session)]


def _read_routes_closed(settings: APISettings) -> bool:
    return not settings.open_read_routes


def _predict_needs_key(settings: APISettings) -> bool:
    return settings.require_api_key_for_predict


predict_key = KeyCheck(Scope.PREDICT, required=_predict_needs_key)


async def predict_caller(
    request: Request, state: State, key: Annotated[ApiKey | None, Depends(predict_key)]
) -> ApiKey | None:
    """The /predict caller's key (if any), within its rate: per key, or per address without one."""
    if key is not None:
        wait, limit = state.limits.predict_key.take(str(key.id)), "predict_key"
    else:
        address = client_address(request.client.host if request.client else None)
        wait, limit = state.limits.predict_address.take(address), "predict_address"
    if wait:
        state.metrics.throttled.labels(limit=limit).inc()
        raise too_many(wait, "/predict calls")
    return key


OptionalKey = Annotated[ApiKey | None, Depends(predict_caller)]  # /predict: anonymous unless settings say otherwise
FeedbackKey = Annotated[ApiKey, Depends(KeyCheck(Scope.FEEDBACK))]
AdminKey = Annotated[ApiKey, Depends(KeyCheck(Scope.ADMIN))]
ReviewKey = Annotated[ApiKey, Depends(KeyCheck(Scope.REVIEW))]  # the review queue: always a key (products inside)
read_key = KeyCheck(Scope.READ, required=_read_routes_closed)
ReadKey = Annotated[ApiKey | None, Depends(read_key)]  # GET /model, /metrics, /reports/drift*
