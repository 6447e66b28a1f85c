"""Error answers the routes document in the OpenAPI schema (what clients must handle)."""

from typing import Any

from api.errors import ErrorResponse

# Every route with a JSON body reads it through api/limits.py: these are its answers.
BAD_BODY: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body is not readable JSON (bad syntax, not UTF-8, nested too deeply)",
          "model": ErrorResponse},
    413: {"description": "The body is larger than the service accepts (setting max_body_bytes)",
          "model": ErrorResponse},
    415: {"description": "The body is not sent as JSON (Content-Type: application/json)", "model": ErrorResponse},
    422: {"description": "A field breaks the schema or a limit; each error names its field in `loc` "
                         "(NaN, Infinity, out-of-range numbers and lone UTF-16 surrogates included)",
          "model": ErrorResponse},
}
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "An API key is required (header X-API-Key)"},
    403: {"description": "The API key is unknown, revoked, or lacks the scope this route needs"},
    429: {"description": "Too many calls, or too many failed authentications: wait Retry-After seconds"},
}
NO_MODEL: dict[int | str, dict[str, Any]] = {503: {"description": "No model is loaded yet"}}
