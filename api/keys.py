"""API keys: ``pc_<prefix>_<secret>``; the prefix finds the row, only the secret's sha256 is stored.

Secrets are 32 random bytes, so a fast hash is enough: there is nothing to
brute-force that a slow password hash would protect.

Each key holds scopes: ``predict`` (POST /predict), ``feedback`` (POST /feedback),
``read`` (GET /model, /metrics, /reports/drift when those are not open), ``review`` (the human-review
queue: GET /review, POST /review/{id}/resolve) and ``admin`` (every scope, plus POST /model/reload and
overwriting other keys' feedback).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.db.models import ApiKey

SCHEME = "pc"


class Scope(StrEnum):
    PREDICT = "predict"
    FEEDBACK = "feedback"
    READ = "read"
    REVIEW = "review"
    ADMIN = "admin"


# What `api-key create` gives without --scope, and what migration 0003 gave the keys made before scopes.
DEFAULT_SCOPES = (Scope.PREDICT, Scope.FEEDBACK)


def scopes_of(key: ApiKey) -> tuple[Scope, ...]:
    return tuple(Scope(name) for name in key.scopes.split(",") if name)


def has_scope(key: ApiKey, scope: Scope) -> bool:
    held = scopes_of(key)
    return scope in held or Scope.ADMIN in held


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(
    *, session: Session, name: str, scopes: Iterable[Scope] = DEFAULT_SCOPES
) -> tuple[ApiKey, str]:
    """A new key and its plaintext, which is never stored and cannot be shown again."""
    chosen = [scope for scope in Scope if scope in set(scopes)]  # stored in one canonical order
    if not chosen:
        raise ValueError("an API key needs at least one scope")
    if session.scalar(sa.select(ApiKey).where(ApiKey.name == name)) is not None:
        raise ValueError(f"an API key named {name!r} exists already")
    while True:
        prefix = secrets.token_hex(4)  # hex: never contains the '_' that separates the parts
        if session.scalar(sa.select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            break
    secret = secrets.token_urlsafe(32)
    key = ApiKey(name=name, prefix=prefix, key_hash=_hash(secret), scopes=",".join(chosen))
    session.add(key)
    session.commit()
    return key, f"{SCHEME}_{prefix}_{secret}"


def verify_api_key(*, session: Session, presented: str) -> ApiKey | None:
    """The active key ``presented`` belongs to, or None (malformed, unknown, wrong secret, revoked)."""
    scheme, _, rest = presented.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != SCHEME or not prefix or not secret:
        return None
    key = session.scalar(sa.select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None or not hmac.compare_digest(key.key_hash, _hash(secret)):
        return None
    return None if key.revoked_at is not None else key


def revoke_api_key(*, session: Session, name: str) -> ApiKey:
    """Stop a key from working; revoking twice keeps the first time. LookupError for an unknown name."""
    key = session.scalar(sa.select(ApiKey).where(ApiKey.name == name))
    if key is None:
        raise LookupError(f"no API key named {name!r}")
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        session.commit()
    return key


def list_api_keys(*, session: Session) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    return list(session.scalars(sa.select(ApiKey).order_by(ApiKey.id)))
