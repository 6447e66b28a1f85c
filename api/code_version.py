"""Lineage logged with every answer: the code version of the running service (computed once at
startup) and what the serving model was built from."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from api.settings import APISettings
from ml.registry import git_commit

if TYPE_CHECKING:
    from api.model_manager import LoadedModel

log = logging.getLogger(__name__)

MAX_CHARS = 64  # the request log's column width


def serving_code_version(settings: APISettings) -> str | None:
    """``PRODUCTCAT_CODE_VERSION`` when set (an image built without .git records its commit there),
    else the project's git HEAD (``-dirty`` with local changes); None when neither is known."""
    if settings.code_version:
        return settings.code_version.strip()[:MAX_CHARS] or None
    commit = git_commit(settings.ml())
    if commit == "unknown":
        log.info("serving code version unknown: not a git checkout and PRODUCTCAT_CODE_VERSION unset")
        return None
    return commit[:MAX_CHARS]


def lineage_columns(model: LoadedModel, *, serving_git_commit: str | None) -> dict[str, str | None]:
    """The request-log columns that tie an answer to its training run, data and code."""
    return {"run_id": model.run_id or None, "data_version": model.data_version,
            "model_git_commit": model.model_git_commit, "serving_git_commit": serving_git_commit}
