"""Engines and sessions for the request-log database (Postgres in production, SQLite by default)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

# Seconds before a Postgres connection attempt gives up: during an outage the
# request-log writer should fall back to its spool quickly, not hang.
CONNECT_TIMEOUT_S = 5


def make_engine(url: str, *, connect_timeout: int = CONNECT_TIMEOUT_S) -> Engine:
    """An engine whose pooled connections are checked before use (they die when the database restarts)."""
    parsed = sa.make_url(url)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        # The writer thread and the request threads share the pool; `timeout` waits out
        # another connection's write lock instead of failing at once.
        options["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if parsed.database in (None, "", ":memory:"):
            options["poolclass"] = StaticPool  # one in-memory database, not one per connection
    elif parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("psycopg2", "psycopg"):
        options["connect_args"] = {"connect_timeout": connect_timeout}
    engine = sa.create_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        sa.event.listen(engine, "connect", _sqlite_wal)
    return engine


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (feedback, health checks) run while the writer thread inserts.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # Objects stay readable after commit: services return them to routes that serialise them.
    return sessionmaker(engine, expire_on_commit=False)
