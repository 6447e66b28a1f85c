"""Moving the champion alias, and the record of every move.

Each move (a gate promotion, a manual promotion, a rollback) is written twice:
as tags on the version it points at (who, when, why, what it replaced) and as
one registered-model tag per move, ``<alias>_history.<n>``, an append-only log
that the MLflow UI shows on the model's page and `productcat history` prints.
Only the registry client is needed here (no evaluation code), so a manual
promotion starts in about the time MLflow takes to import.
"""

from __future__ import annotations

import getpass
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ml.registry import champion, model_version, registry_client, set_version_tags
from ml.settings import MLSettings

log = logging.getLogger(__name__)

# Tags a version carries only while something else holds the alias it once had.
STALE_ON_PROMOTION = ("replaced_by", "replaced_at")
REASON_LIMIT = 1000  # registry tag values are length-limited; a reason longer than this is cut


@dataclass(frozen=True)
class AliasMove:
    seq: int
    to_version: str
    from_version: str | None
    kind: str  # promotion | rollback
    by: str
    at: str
    why: str


def history_prefix(settings: MLSettings) -> str:
    return f"{settings.champion_alias}_history."


def alias_history(client: MlflowClient, settings: MLSettings) -> list[AliasMove]:
    """Every recorded move of the alias, oldest first (empty before the first promotion)."""
    try:
        tags = client.get_registered_model(settings.registered_model).tags
    except MlflowException:  # no registered model yet: an empty history
        return []
    prefix = history_prefix(settings)
    moves = []
    for key, value in tags.items():
        if not key.startswith(prefix):
            continue
        entry = json.loads(value)
        moves.append(AliasMove(seq=int(key[len(prefix):]), to_version=entry["to"], from_version=entry.get("from"),
                               kind=entry["kind"], by=entry["by"], at=entry["at"], why=entry["why"]))
    return sorted(moves, key=lambda m: m.seq)


def _append_history(client: MlflowClient, settings: MLSettings, move: AliasMove) -> None:
    entry = {"to": move.to_version, "from": move.from_version, "kind": move.kind, "by": move.by, "at": move.at,
             "why": move.why}
    client.set_registered_model_tag(settings.registered_model, f"{history_prefix(settings)}{move.seq:05d}",
                                    json.dumps(entry, ensure_ascii=False))


def move_champion(client: MlflowClient, settings: MLSettings, *, version: str, by: str, reason: str,
                  kind: str | None = None) -> str | None:
    """Point the champion alias at ``version``; record who, when, why and what it replaced, on the
    version and in the model's history. Returns the previous champion. ``kind`` defaults to
    "rollback" for an older version than the current champion, else "promotion"."""
    current = champion(client, settings)
    previous = str(current.version) if current is not None else None
    version = str(version)
    kind = kind or ("rollback" if previous is not None and int(version) < int(previous) else "promotion")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    reason = reason[:REASON_LIMIT]
    client.set_registered_model_alias(settings.registered_model, settings.champion_alias, version)
    set_version_tags(client, settings, version, {
        "promoted_by": by, "promotion_reason": reason, "promoted_at": now, "promotion_kind": kind,
        "previous_champion": previous or "none",
    })
    # A version promoted again is no longer "replaced": drop what said so.
    tags = client.get_model_version(settings.registered_model, version).tags
    for key in STALE_ON_PROMOTION:
        if key in tags:
            client.delete_model_version_tag(settings.registered_model, version, key)
    if previous is not None and previous != version:
        set_version_tags(client, settings, previous, {"replaced_by": version, "replaced_at": now})
    seq = max((m.seq for m in alias_history(client, settings)), default=0) + 1
    _append_history(client, settings, AliasMove(seq, version, previous, kind, by, now, reason))
    log.info("%s@%s -> v%s (was %s, %s by %s): %s", settings.registered_model, settings.champion_alias, version,
             previous or "none", kind, by, reason)
    return previous


def promote(*, settings: MLSettings, version: str, reason: str, by: str | None = None) -> str | None:
    """Manual promotion or rollback: move the alias to any registered version."""
    client = registry_client(settings)
    target = model_version(client, settings, version)
    return move_champion(client, settings, version=str(target.version), by=by or getpass.getuser(), reason=reason)


def previous_champion(client: MlflowClient, settings: MLSettings) -> str | None:
    """The version the current champion replaced: the last recorded move's ``from``, else the
    current version's `previous_champion` tag (versions promoted before the history existed)."""
    current = champion(client, settings)
    if current is None:
        return None
    moves = alias_history(client, settings)
    if moves and moves[-1].to_version == str(current.version):
        return moves[-1].from_version
    previous = current.tags.get("previous_champion")
    return previous if previous and previous != "none" else None


def rollback(*, settings: MLSettings, reason: str, by: str | None = None) -> tuple[str, str]:
    """Return the alias to the champion before the current one, recorded as a rollback with its
    reason. Returns (from, to); LookupError when there is nothing to return to."""
    client = registry_client(settings)
    current = champion(client, settings)
    target = previous_champion(client, settings)
    if current is None or target is None:
        raise LookupError(f"{settings.registered_model}@{settings.champion_alias} has no earlier champion to "
                          "return to")
    move_champion(client, settings, version=target, by=by or getpass.getuser(), reason=reason, kind="rollback")
    return str(current.version), target
