"""Request bodies read within limits and parsed as strict JSON, before any validation.

``GuardedRoute`` is the route class of every router that takes a JSON body. It refuses a body
over ``max_body_bytes`` (413: from Content-Length before reading, and while reading a chunked
body), a body that is not JSON (415), JSON that does not parse (400), and values that strict JSON
cannot encode back - NaN, Infinity, numbers out of float range, lone UTF-16 surrogates - with a
422 naming each one's place. A top-level list longer than ``max_batch_size`` is refused before it
is validated item by item (validating a few hundred thousand junk items costs seconds).
Only then does FastAPI validate the already parsed body against the route's schema.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from api.schemas import MAX_DESCRIPTION_CHARS, MAX_FEATURE_CHARS, MAX_FEATURES, MAX_TITLE_CHARS
from api.settings import APISettings

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # raw UTF-8 cannot hold surrogates; only escapes can


class _NonFinite:
    """Stands in for a non-finite number while parsing, so its place can be reported."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def batch_size_error(*, count: int, limit: int) -> dict[str, Any]:
    return {"type": "too_long", "loc": ("body",), "input": None,
            "msg": f"a batch holds at most {limit} products, got {count}"}


def _json_content_type(value: str) -> bool:
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, *, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"the body is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # chunked transfer, or a Content-Length that understated the body
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _unreadable(msg: str, position: int | None = None) -> RequestValidationError:
    loc = ("body",) if position is None else ("body", position)
    return RequestValidationError([{"type": "json_invalid", "loc": loc, "msg": msg}])


def _finite_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def parse_strict_json(body: bytes) -> Any:
    """The body as JSON; RequestValidationError (type json_invalid) when it is not JSON at all,
    or listing each non-finite number and lone surrogate with its place."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _unreadable(f"the body is not UTF-8 (byte {exc.start})", exc.start) from None
    flagged: list[bool] = []

    def constant(name: str) -> _NonFinite:
        flagged.append(True)
        return _NonFinite(name)

    def number(literal: str) -> float | _NonFinite:
        value = _finite_float(literal)
        if isinstance(value, _NonFinite):
            flagged.append(True)
        return value

    try:
        value = json.loads(text, parse_constant=constant, parse_float=number)
    except json.JSONDecodeError as exc:
        raise _unreadable(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", exc.pos) from None
    except RecursionError:
        raise _unreadable("the JSON nests too deeply") from None
    except ValueError:  # the only other ValueError json raises: an integer past the interpreter's digit limit
        digits = sys.get_int_max_str_digits()
        raise _unreadable(f"not readable JSON: an integer has more than {digits:,} digits") from None
    if flagged or _SURROGATE_ESCAPE.search(body):
        errors = _unencodable_values(value)
        if errors:
            raise RequestValidationError(errors)
    return value


def _unencodable_values(value: Any, most: int = 20) -> list[dict[str, Any]]:
    """Where the parsed body holds what strict JSON cannot encode (iterative: depth is the caller's)."""
    errors: list[dict[str, Any]] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [(("body",), value)]
    while stack and len(errors) < most:
        loc, item = stack.pop()
        if isinstance(item, _NonFinite):
            errors.append({"type": "finite_number", "loc": loc, "input": item.literal,
                           "msg": f"Input should be a finite number, not {item.literal[:20]}"})
        elif isinstance(item, str):
            if not _encodable(item):
                errors.append({"type": "string_unicode", "loc": loc, "input": item,
                               "msg": "String holds a lone UTF-16 surrogate, which is not a character"})
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if not _encodable(key):
                    errors.append({"type": "string_unicode", "loc": loc, "input": key,
                                   "msg": "Key holds a lone UTF-16 surrogate, which is not a character"})
                else:
                    stack.append(((*loc, key), child))
        elif isinstance(item, list):
            stack.extend(((*loc, i), child) for i, child in reversed(list(enumerate(item))))
    return errors


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _settings(request: Request) -> APISettings:
    return request.app.state.service.settings


class GuardedRoute(APIRoute):
    """An APIRoute whose JSON body is read within the limits and parsed strictly (module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def guarded(request: Request) -> Response:
            settings = _settings(request)
            body = await read_body(request, limit=settings.max_body_bytes)
            request._body = body  # FastAPI reads the cached body and JSON below instead of the stream
            if body:
                content_type = request.headers.get("content-type", "")
                if not _json_content_type(content_type):
                    raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                                        "send the body as JSON, with Content-Type: application/json")
                parsed = parse_strict_json(body)
                if isinstance(parsed, list) and len(parsed) > settings.max_batch_size:
                    raise RequestValidationError([batch_size_error(count=len(parsed), limit=settings.max_batch_size)])
                request._json = parsed
            return await handler(request)

        return guarded


def limits_text(settings: APISettings) -> str:
    return (
        "\n\n**Limits** (checked before the model sees anything; each refusal names its field in `loc`):\n"
        f"* body: at most {settings.max_body_bytes:,} bytes, else 413; JSON only (415), readable (400);\n"
        f"* batch: 1 to {settings.max_batch_size} products (422);\n"
        f"* per product: title and brand {MAX_TITLE_CHARS:,} characters each; description "
        f"{MAX_DESCRIPTION_CHARS:,} in all; features {MAX_FEATURE_CHARS:,} in all, {MAX_FEATURES} at most; "
        f"all its text together {settings.max_product_chars:,} (422);\n"
        f"* `top_k`: 1 to {settings.max_top_k};\n"
        "* NaN, Infinity, numbers out of float range and lone UTF-16 surrogates are refused anywhere (422)."
    )


def document_limits(app: FastAPI, settings: APISettings) -> None:
    """Write the limits that come from settings into /predict's OpenAPI operation (batch maxItems,
    top_k maximum, a description of every limit), so the schema admits what the route accepts."""
    generate = app.openapi
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        schema = generate()
        if not done:
            operation = schema["paths"]["/predict"]["post"]
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            (batch,) = [variant for variant in body["oneOf"] if variant.get("type") == "array"]
            batch.update(minItems=1, maxItems=settings.max_batch_size)
            (top_k,) = [p for p in operation["parameters"] if p["name"] == "top_k"]
            top_k["schema"]["maximum"] = settings.max_top_k
            operation["description"] = operation.get("description", "") + limits_text(settings)
            done = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
