"""Engines and sessions for the request-log database (Postgres in production, SQLite by default)."""

from __future__ import annotations

import functools
import re
import select
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

# Seconds before a Postgres connection attempt gives up: during an outage the
# request-log writer should fall back to its spool quickly, not hang.
CONNECT_TIMEOUT_S = 5
# A dead network (no ACKs at all) is noticed by the kernel: idle probes on pooled connections, and
# unacknowledged data dropped after the statement deadline (tcp_user_timeout).
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 10, 3, 3
# Client-side slack past the server's statement_timeout, so a live server cancels first and says why.
DEADLINE_MARGIN_S = 1.0


def make_engine(url: str, *, connect_timeout: float = CONNECT_TIMEOUT_S, statement_timeout: float | None = None,
                pool_timeout: float = 30.0) -> Engine:
    """An engine whose pooled connections are checked before use (they die when the database restarts).

    With ``statement_timeout`` (seconds), no Postgres call waits longer than that: the server cancels
    slow statements, and a server that stops answering altogether (frozen, or a network that drops
    packets) fails the call on the client side after the same deadline, like a refused connection.
    ``pool_timeout`` bounds the wait for a pooled connection.
    """
    parsed = sa.make_url(url)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        # The writer thread and the request threads share the pool; `timeout` waits out
        # another connection's write lock instead of failing at once.
        options["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if parsed.database in (None, "", ":memory:"):
            options["poolclass"] = StaticPool  # one in-memory database, not one per connection
    elif parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("psycopg2", "psycopg"):
        # libpq rounds connect_timeout to whole seconds and treats values under 2 as 2.
        connect_args: dict[str, Any] = {"connect_timeout": max(2, round(connect_timeout))}
        if statement_timeout is not None:
            connect_args |= {
                "options": f"-c statement_timeout={int(statement_timeout * 1000)}",
                "keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE_S, "keepalives_interval": KEEPALIVE_INTERVAL_S,
                "keepalives_count": KEEPALIVE_COUNT, "tcp_user_timeout": int(statement_timeout * 1000),
            }
            if parsed.get_driver_name() == "psycopg2":
                _install_deadlines()
        options["connect_args"] = connect_args
        options["pool_timeout"] = pool_timeout
    engine = sa.create_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        sa.event.listen(engine, "connect", _sqlite_wal)
    return engine


def _install_deadlines() -> None:
    """Make psycopg2 calls give up after a deadline.

    A frozen server (SIGSTOP, a hung host) still has a kernel that accepts connections and ACKs what
    is sent, so neither libpq's connect_timeout (not applied to non-blocking connects) nor keepalives
    nor the server's statement_timeout ever fire: libpq would wait forever. psycopg2's wait callback
    turns each call into non-blocking steps that we poll with a deadline. The callback is
    process-wide, so each connection's deadlines come from its own parameters: connect_timeout while
    connecting, statement_timeout (+ a margin) afterwards; a connection without them waits as before.
    """
    from psycopg2 import extensions

    if extensions.get_wait_callback() is not _wait_with_deadline:
        extensions.set_wait_callback(_wait_with_deadline)


@functools.lru_cache(maxsize=64)
def _deadlines(dsn: str) -> tuple[float | None, float | None]:
    """(connect, io) seconds from a connection's parameters; None: no deadline."""
    from psycopg2.extensions import parse_dsn

    params = parse_dsn(dsn)
    connect = float(params["connect_timeout"]) if params.get("connect_timeout") else None
    found = re.search(r"statement_timeout\s*=\s*(\d+)", params.get("options", ""))
    io = int(found.group(1)) / 1000 + DEADLINE_MARGIN_S if found and int(found.group(1)) > 0 else None
    return connect, io


def _wait_with_deadline(connection: Any) -> None:
    import psycopg2
    from psycopg2 import extensions

    connecting = connection.status == extensions.STATUS_SETUP
    limit = _deadlines(connection.dsn)[0 if connecting else 1]
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        state = connection.poll()
        if state == extensions.POLL_OK:
            return
        if state not in (extensions.POLL_READ, extensions.POLL_WRITE):
            raise psycopg2.OperationalError(f"unexpected poll state {state}")
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            # The wording makes SQLAlchemy treat it as a lost connection: it is discarded, never reused.
            what = "connect to" if connecting else "receive data from"
            raise psycopg2.OperationalError(f"could not {what} server: no answer within {limit:g}s")
        poller = select.poll()  # afresh each step: libpq may open a new socket while connecting
        poller.register(connection.fileno(), select.POLLIN if state == extensions.POLL_READ else select.POLLOUT)
        poller.poll(None if remaining is None else remaining * 1000)


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (feedback, health checks) run while the writer thread inserts.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # Objects stay readable after commit: services return them to routes that serialise them.
    return sessionmaker(engine, expire_on_commit=False)
