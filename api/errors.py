"""Error answers: short, always encodable, and counted.

FastAPI's own 422 echoes each offending value back whole; a value strict JSON cannot encode
(NaN, a lone surrogate) then fails the reply itself, and a 10 MB value makes a 20 MB reply. Here
each error keeps its ``loc``, ``msg`` and ``type`` and at most a short excerpt of a scalar input,
and the list is capped. ``RequestAccounting`` counts every answer by route and status in /metrics,
turning an unhandled exception into a short JSON 500 (logged once, with its traceback).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.schemas import BODY_SHAPE_TAGS

log = logging.getLogger(__name__)

MAX_ERRORS = 10  # errors listed in one answer; the rest are only counted
MAX_LOC_PARTS = 8
MAX_LOC_CHARS = 60
MAX_MSG_CHARS = 240
MAX_INPUT_CHARS = 40
_NO_EXCERPT = object()


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: 'body' or 'query', then the field's path.")
    msg: str
    type: str
    input: str | int | float | bool | None = Field(
        None, description=f"The offending value when it is a scalar, cut to {MAX_INPUT_CHARS} characters.")
    ctx: dict[str, str | int | float] | None = Field(None, description="The limit that was broken, if any.")


class ErrorResponse(BaseModel):
    detail: list[FieldError] | str
    omitted: int = Field(0, description=f"Errors left out of `detail`, which lists at most {MAX_ERRORS}.")


def safe_text(value: str, limit: int) -> str:
    """At most ``limit`` characters, lone surrogates written as escapes so the text always encodes."""
    cut = value[:limit] + ("…" if len(value) > limit else "")
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


def excerpt(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= 2**53 else "a very large integer"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return safe_text(value, MAX_INPUT_CHARS)
    if isinstance(value, bytes):
        return safe_text(value[:MAX_INPUT_CHARS].decode("utf-8", "replace"), MAX_INPUT_CHARS)
    return _NO_EXCERPT  # objects and lists are never echoed


def _loc(loc: Any) -> list[str | int]:
    loc = tuple(loc)
    if loc[1:2] and loc[0] == "body" and loc[1] in BODY_SHAPE_TAGS:
        loc = loc[:1] + loc[2:]  # the path into the JSON as sent, not the union member that read it
    parts = [p if isinstance(p, int) else safe_text(str(p), MAX_LOC_CHARS) for p in loc[:MAX_LOC_PARTS]]
    return parts + (["…"] if len(loc) > MAX_LOC_PARTS else [])


def bounded_error(error: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"loc": _loc(error.get("loc", ())),
                           "msg": safe_text(str(error.get("msg", "")), MAX_MSG_CHARS),
                           "type": safe_text(str(error.get("type", "")), MAX_LOC_CHARS)}
    if (value := excerpt(error.get("input"))) is not _NO_EXCERPT and value is not None:
        out["input"] = value
    ctx = {k: safe_text(v, MAX_INPUT_CHARS) if isinstance(v, str) else v
           for k, v in (error.get("ctx") or {}).items()
           if isinstance(v, str | int) or (isinstance(v, float) and math.isfinite(v))}
    if ctx:
        out["ctx"] = dict(list(ctx.items())[:4])
    return out


def validation_answer(errors: list[dict[str, Any]]) -> JSONResponse:
    """400 when the body was not readable JSON at all, else 422; never more than MAX_ERRORS errors."""
    unreadable = bool(errors) and all(e.get("type") == "json_invalid" for e in errors)
    body: dict[str, Any] = {"detail": [bounded_error(e) for e in errors[:MAX_ERRORS]]}
    if len(errors) > MAX_ERRORS:
        body["omitted"] = len(errors) - MAX_ERRORS
    return JSONResponse(body, status_code=400 if unreadable else 422)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_answer(list(exc.errors()))


def internal_error() -> JSONResponse:
    return JSONResponse({"detail": "internal server error"}, status_code=500)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # Reached only for failures outside RequestAccounting (another middleware raised).
    return internal_error()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(RequestAccounting)


class RequestAccounting:
    """ASGI middleware: every answer counted by route template and status, 500s included.
    (An ``@app.middleware("http")`` function never sees an answer when the route raises.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status_code = time.perf_counter(), 0

        async def send_noting_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except ClientDisconnect:
            status_code = status_code or 499  # the client left while sending its body: nobody to answer
        except Exception:
            log.exception("unhandled error answering %s %s", scope.get("method"), scope.get("path"))
            if status_code:
                raise  # the answer had begun: only closing the connection is left
            status_code = 500
            await internal_error()(scope, receive, send)
        finally:
            if status_code:
                self._count(scope, status_code, started)

    @staticmethod
    def _count(scope: Scope, status_code: int, started: float) -> None:
        path = getattr(scope.get("route"), "path", "unmatched")
        app = scope.get("app")
        state = getattr(getattr(app, "state", None), "service", None)
        if state is not None and path != "/metrics":
            state.metrics.requests.labels(route=path, status=str(status_code)).inc()
            state.metrics.latency.labels(route=path).observe(time.perf_counter() - started)
