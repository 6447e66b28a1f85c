"""Inserting request-log rows: idempotent, batched, and telling a bad row from a database outage."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from api.db.models import PredictionLog

Row = dict[str, Any]
COLUMNS = tuple(column.name for column in PredictionLog.__table__.columns)
DIALECTS = ("postgresql", "sqlite")


def _insert_ignore(dialect: str) -> sa.Insert:
    # request_id is the primary key: a row already there (a replayed spool, a commit whose
    # acknowledgement was lost) is skipped, never doubled.
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(PredictionLog.__table__).on_conflict_do_nothing(index_elements=["request_id"])


def _normalise(row: Row) -> Row:
    values = {column: row.get(column) for column in COLUMNS}  # same keys in every row of an executemany
    values["channel"] = values["channel"] or "http"  # an explicit None would bypass the server default
    if isinstance(values["created_at"], str):  # read back from the spool
        values["created_at"] = datetime.fromisoformat(values["created_at"])
    return values


def is_data_error(exc: Exception) -> bool:
    """True when the rows are at fault (a retry would fail again), False when the database is."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return False  # operational, interface, programming (table missing): worth retrying later
    if isinstance(exc, sa.exc.StatementError):
        return isinstance(exc.orig, TypeError | ValueError)  # a value the driver cannot bind
    return isinstance(exc, TypeError | ValueError | KeyError)


def insert_rows(engine: Engine, rows: list[Row], *, reject: Callable[[Row, Exception], None]) -> int:
    """Insert rows in one transaction and return how many were taken. Rows the database refuses
    for their content go to ``reject`` one by one; any other error (an outage) is raised."""
    try:
        with engine.begin() as connection:
            connection.execute(_insert_ignore(connection.dialect.name), [_normalise(row) for row in rows])
        return len(rows)
    except Exception as exc:
        if not is_data_error(exc):
            raise
        if len(rows) == 1:
            reject(rows[0], exc)
            return 0
    return sum(insert_rows(engine, [row], reject=reject) for row in rows)
