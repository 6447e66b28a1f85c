"""Who may call what: API keys with scopes, read from `X-API-Key` or `Authorization: Bearer`.

Each protected route depends on one ``KeyCheck``: the scope it needs and whether a key
is required under the running settings (``/predict`` and the read routes can be open).
``document_security`` writes the same rules into the OpenAPI schema, so the schema
declares a key required exactly where a call without one is refused.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Request, Security, status
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.db.models import ApiKey
from api.keys import Scope, has_scope, verify_api_key
from api.ratelimit import TokenBuckets, client_address
from api.settings import APISettings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="A key from `productcat api-key create`.")
bearer = HTTPBearer(auto_error=False, description="The same key as a bearer token (e.g. for a Prometheus scrape).")

Required = Callable[[APISettings], bool]


def always(settings: APISettings) -> bool:
    return True


def too_many(seconds: float, what: str) -> HTTPException:
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, f"too many {what}; retry later",
                         headers={"Retry-After": str(max(1, math.ceil(seconds)))})


class KeyCheck:
    """Dependency: the caller's active key holding ``scope`` (admin holds every scope), or None
    where ``required(settings)`` is false and the call carries no key. A key that is presented
    is always checked: a wrong one is a caller's mistake, even where none is needed."""

    def __init__(self, scope: Scope, required: Required = always) -> None:
        self.scope = scope
        self.required = required

    async def __call__(
        self, request: Request,
        header: Annotated[str | None, Security(api_key_header)],
        token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> ApiKey | None:
        state = request.app.state.service
        presented = header or (token.credentials if token else None)
        if not presented:
            if self.required(state.settings):
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "an API key is required (header X-API-Key)",
                                    headers={"WWW-Authenticate": "Bearer"})
            return None  # the common anonymous /predict: no database, no thread hop
        # Throttled before the lookup: guessing keys must not cost a database query each.
        address = client_address(request.client.host if request.client else None)
        failures: TokenBuckets = state.limits.failed_auth
        if wait := failures.wait(address):
            state.metrics.throttled.labels(limit="failed_auth").inc()
            raise too_many(wait, "failed authentications from this address")

        def lookup() -> ApiKey | None:
            with state.sessions() as session:
                return verify_api_key(session=session, presented=presented)

        key = await asyncio.to_thread(lookup)
        if key is None:
            failures.take(address)
            raise HTTPException(status.HTTP_403_FORBIDDEN, "API key not recognised or revoked")
        if not has_scope(key, self.scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this API key lacks the scope {self.scope.value!r}")
        return key


def _key_check(dependant: Dependant) -> KeyCheck | None:
    for sub in dependant.dependencies:
        if isinstance(sub.call, KeyCheck):
            return sub.call
        if (found := _key_check(sub)) is not None:
            return found
    return None


def document_security(app: FastAPI, settings: APISettings) -> None:
    """Make each operation's declared security match its KeyCheck under ``settings``: FastAPI
    declares every Security dependency as required; an optional key is declared by adding the
    empty requirement ``{}`` (anonymous allowed)."""

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # FastAPI's own, cached on the app: amended once, in place
            for route in app.routes:
                check = _key_check(route.dependant) if isinstance(route, APIRoute) else None
                if check is None or not route.include_in_schema or check.required(settings):
                    continue
                for method in route.methods:
                    operation = schema["paths"][route.path_format][method.lower()]
                    operation["security"] = [{}, *operation.get("security", [])]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
