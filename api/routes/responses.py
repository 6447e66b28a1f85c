"""Error answers the routes document in the OpenAPI schema (what clients must handle)."""

from typing import Any

BAD_BODY: dict[int | str, dict[str, Any]] = {400: {"description": "The body is not readable JSON"}}
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "An API key is required (header X-API-Key)"},
    403: {"description": "The API key is unknown or revoked"},
}
NO_MODEL: dict[int | str, dict[str, Any]] = {503: {"description": "No model is loaded yet"}}
