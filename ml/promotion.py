"""Moving the champion alias, and the record of every move.

Each move (a gate promotion, a manual promotion, a rollback) is written twice:
as tags on the version it points at (who, when, why, what it replaced) and as
one registered-model tag per move, ``<alias>_history.<n>``, an append-only log
that the MLflow UI shows on the model's page and `productcat history` prints.
The ``challenger`` alias (the version the API scores in the champion's shadow) keeps
its own history the same way; it is cleared when its version becomes champion.
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
from mlflow.entities.model_registry import ModelVersion
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
    to_version: str | None  # None: the alias was removed (a challenger that became champion)
    from_version: str | None
    kind: str  # promotion | rollback (champion); challenger | cleared (challenger)
    by: str
    at: str
    why: str


def history_prefix(settings: MLSettings, alias: str | None = None) -> str:
    return f"{alias or settings.champion_alias}_history."


def alias_history(client: MlflowClient, settings: MLSettings, alias: str | None = None) -> list[AliasMove]:
    """Every recorded move of the alias (default: champion), oldest first (empty before the first one)."""
    try:
        tags = client.get_registered_model(settings.registered_model).tags
    except MlflowException:  # no registered model yet: an empty history
        return []
    prefix = history_prefix(settings, alias)
    moves = []
    for key, value in tags.items():
        if not key.startswith(prefix):
            continue
        entry = json.loads(value)
        moves.append(AliasMove(seq=int(key[len(prefix):]), to_version=entry["to"], from_version=entry.get("from"),
                               kind=entry["kind"], by=entry["by"], at=entry["at"], why=entry["why"]))
    return sorted(moves, key=lambda m: m.seq)


def _append_history(client: MlflowClient, settings: MLSettings, move: AliasMove, alias: str | None = None) -> None:
    entry = {"to": move.to_version, "from": move.from_version, "kind": move.kind, "by": move.by, "at": move.at,
             "why": move.why}
    client.set_registered_model_tag(settings.registered_model, f"{history_prefix(settings, alias)}{move.seq:05d}",
                                    json.dumps(entry, ensure_ascii=False))


def _record(client: MlflowClient, settings: MLSettings, alias: str, *, to: str | None, previous: str | None,
            kind: str, by: str, at: str, why: str) -> None:
    seq = max((m.seq for m in alias_history(client, settings, alias)), default=0) + 1
    _append_history(client, settings, AliasMove(seq, to, previous, kind, by, at, why), alias)


def challenger(client: MlflowClient, settings: MLSettings) -> ModelVersion | None:
    """The version the challenger alias names, or None."""
    try:
        return client.get_model_version_by_alias(settings.registered_model, settings.challenger_alias)
    except MlflowException:
        return None


def move_challenger(client: MlflowClient, settings: MLSettings, *, version: str, by: str, reason: str) -> str | None:
    """Point the challenger alias at ``version`` (the API scores it in the champion's shadow), recorded
    like a champion move; returns the previous challenger. The champion's own version is refused:
    shadowing a version against itself measures nothing."""
    version = str(version)
    current_champion = champion(client, settings)
    if current_champion is not None and str(current_champion.version) == version:
        raise ValueError(f"v{version} is the champion already; a challenger must be another version")
    current = challenger(client, settings)
    previous = str(current.version) if current is not None else None
    now = datetime.now(UTC).isoformat(timespec="seconds")
    reason = reason[:REASON_LIMIT]
    client.set_registered_model_alias(settings.registered_model, settings.challenger_alias, version)
    set_version_tags(client, settings, version, {"challenger_by": by, "challenger_reason": reason,
                                                 "challenger_at": now})
    _record(client, settings, settings.challenger_alias, to=version, previous=previous, kind="challenger", by=by,
            at=now, why=reason)
    log.info("%s@%s -> v%s (was %s, by %s): %s", settings.registered_model, settings.challenger_alias, version,
             previous or "none", by, reason)
    return previous


def clear_challenger(client: MlflowClient, settings: MLSettings, *, by: str, reason: str) -> str | None:
    """Remove the challenger alias (recorded); returns the version it named, None when there was none."""
    current = challenger(client, settings)
    if current is None:
        return None
    client.delete_registered_model_alias(settings.registered_model, settings.challenger_alias)
    _record(client, settings, settings.challenger_alias, to=None, previous=str(current.version), kind="cleared",
            by=by, at=datetime.now(UTC).isoformat(timespec="seconds"), why=reason[:REASON_LIMIT])
    return str(current.version)


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
    _record(client, settings, settings.champion_alias, to=version, previous=previous, kind=kind, by=by, at=now,
            why=reason)
    log.info("%s@%s -> v%s (was %s, %s by %s): %s", settings.registered_model, settings.champion_alias, version,
             previous or "none", kind, by, reason)
    shadowed = challenger(client, settings)
    if shadowed is not None and str(shadowed.version) == version:  # the challenger won: nothing left to shadow
        clear_challenger(client, settings, by=by, reason=f"became {settings.champion_alias}: {reason}")
    return previous


def promote(*, settings: MLSettings, version: str, reason: str, by: str | None = None,
            alias: str | None = None) -> str | None:
    """Manual promotion or rollback: move the alias (default: champion; or the challenger alias) to any
    registered version. Returns the version the alias named before."""
    client = registry_client(settings)
    target = model_version(client, settings, version)
    who = by or getpass.getuser()
    if alias in (None, settings.champion_alias):
        return move_champion(client, settings, version=str(target.version), by=who, reason=reason)
    if alias == settings.challenger_alias:
        return move_challenger(client, settings, version=str(target.version), by=who, reason=reason)
    raise ValueError(f"alias must be {settings.champion_alias} or {settings.challenger_alias}, not {alias[:40]!r}")


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
