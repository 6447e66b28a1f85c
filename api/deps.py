"""FastAPI dependencies: the app's state, a DB session, the caller's API key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session, sessionmaker

from api.batching import MicroBatcher
from api.db.models import ApiKey
from api.keys import verify_api_key
from api.metrics import ServiceMetrics
from api.model_manager import ChampionManager
from api.request_log import RequestLogWriter
from api.settings import APISettings


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


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]


def get_session(state: State) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


DBSession = Annotated[Session, Depends(get_session)]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="A key from `productcat api-key create`.")


def _check_key(session: Session, presented: str | None, required: bool) -> ApiKey | None:
    if not presented:
        if required:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "an API key is required (header X-API-Key)")
        return None
    key = verify_api_key(session=session, presented=presented)
    if key is None:  # a wrong key is refused even where none is required: it is a caller's mistake
        raise HTTPException(status.HTTP_403_FORBIDDEN, "API key not recognised or revoked")
    return key


def require_api_key(session: DBSession, presented: Annotated[str | None, Security(api_key_header)]) -> ApiKey:
    key = _check_key(session, presented, required=True)
    assert key is not None
    return key


async def predict_api_key(
    state: State, presented: Annotated[str | None, Security(api_key_header)]
) -> ApiKey | None:
    # An anonymous call where none is required (the common case) needs neither a database session
    # nor a worker thread: the two sync dependencies this replaces cost two thread-pool hops per
    # request on the event loop (see the serving profile in docs/benchmarks.md).
    required = state.settings.require_api_key_for_predict
    if not presented and not required:
        return None

    def check() -> ApiKey | None:
        with state.sessions() as session:
            return _check_key(session, presented, required=required)

    return await asyncio.to_thread(check)


RequiredKey = Annotated[ApiKey, Depends(require_api_key)]
OptionalKey = Annotated[ApiKey | None, Depends(predict_api_key)]
