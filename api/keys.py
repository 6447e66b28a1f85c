"""API keys: ``pc_<prefix>_<secret>``; the prefix finds the row, only the secret's sha256 is stored.

Secrets are 32 random bytes, so a fast hash is enough: there is nothing to
brute-force that a slow password hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.db.models import ApiKey

SCHEME = "pc"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(*, session: Session, name: str) -> tuple[ApiKey, str]:
    """A new key and its plaintext, which is never stored and cannot be shown again."""
    if session.scalar(sa.select(ApiKey).where(ApiKey.name == name)) is not None:
        raise ValueError(f"an API key named {name!r} exists already")
    while True:
        prefix = secrets.token_hex(4)  # hex: never contains the '_' that separates the parts
        if session.scalar(sa.select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            break
    secret = secrets.token_urlsafe(32)
    key = ApiKey(name=name, prefix=prefix, key_hash=_hash(secret))
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
