"""Inserting request-log rows: idempotent, batched, and telling a bad row from a database outage.

A row whose answer was ``needs_review`` also opens its review item, in the same transaction: the item
comes from the same journaled row as the prediction, so it is exactly as durable (spooled during an
outage, replayed after a crash, never doubled) and never exists without its prediction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from api.db.models import PredictionLog, ReviewItem

Row = dict[str, Any]
COLUMNS = tuple(column.name for column in PredictionLog.__table__.columns)
REVIEW_THRESHOLD = "review_threshold"  # key of a needs_review row: the threshold its probability fell below
DIALECTS = ("postgresql", "sqlite")


def _insert_ignore(dialect: str, table: sa.Table = PredictionLog.__table__) -> sa.Insert:
    # request_id is the primary key: a row already there (a replayed spool, a commit whose
    # acknowledgement was lost) is skipped, never doubled.
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=["request_id"])


def _normalise(row: Row) -> Row:
    values = {column: row.get(column) for column in COLUMNS}  # same keys in every row of an executemany
    values["channel"] = values["channel"] or "http"  # an explicit None would bypass the server default
    values["needs_review"] = bool(values["needs_review"])  # rows spooled before the column have none
    if isinstance(values["created_at"], str):  # read back from the spool
        values["created_at"] = datetime.fromisoformat(values["created_at"])
    return values


def _review_item(values: Row, row: Row) -> Row:
    """The queue item of a needs_review prediction (its product and top-k stay in the log row)."""
    return {"request_id": values["request_id"], "created_at": values["created_at"], "status": "open",
            "model_name": values["model_name"], "model_version": values["model_version"], "label": values["label"],
            "probability": values["probability"], "threshold": row[REVIEW_THRESHOLD], "channel": values["channel"]}


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
        normalised = [_normalise(row) for row in rows]
        items = [_review_item(values, row) for values, row in zip(normalised, rows, strict=True)
                 if values["needs_review"]]
        with engine.begin() as connection:
            connection.execute(_insert_ignore(connection.dialect.name), normalised)
            if items:
                connection.execute(_insert_ignore(connection.dialect.name, ReviewItem.__table__), items)
        return len(rows)
    except Exception as exc:
        if not is_data_error(exc):
            raise
        if len(rows) == 1:
            reject(rows[0], exc)
            return 0
    return sum(insert_rows(engine, [row], reject=reject) for row in rows)
