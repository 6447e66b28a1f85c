"""SQLAlchemy tables of the prediction service, portable between Postgres and SQLite.

The schema itself comes from the Alembic migrations in ``api/migrations``; these
classes only map it (keep both in step when a column changes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware in and out on every backend: SQLite keeps no offset, so values
    are stored as UTC and read back as UTC. A naive value is taken to be UTC already."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def utcnow() -> datetime:
    return datetime.now(UTC)


# Named constraints, so migrations can refer to (and later drop) them on every backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {
        datetime: UTCDateTime(),
        float: sa.Double(),  # explicit: SQLAlchemy 2.0 and 2.1 map `float` differently
        dict[str, Any]: sa.JSON(),
        list[dict[str, Any]]: sa.JSON(),
    }


class PredictionLog(Base):
    """One predicted product; a batch call gives each product its own row and request_id."""

    __tablename__ = "prediction_log"

    request_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    batch_id: Mapped[str] = mapped_column(sa.String(36), index=True)  # the HTTP call
    position: Mapped[int]  # index of the product in its batch
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    product: Mapped[dict[str, Any]]  # the input as validated, so drift checks see what the model saw
    label: Mapped[str] = mapped_column(sa.Text)
    probability: Mapped[float]
    top_k: Mapped[list[dict[str, Any]]]  # [{"label": ..., "probability": ...}, ...]
    model_name: Mapped[str] = mapped_column(sa.String(255))
    model_version: Mapped[str] = mapped_column(sa.String(64))
    latency_ms: Mapped[float]
    api_key_id: Mapped[int | None]  # no foreign key: log rows outlive the keys that made them
    # How the product came in: http (/predict) or the broker of the stream consumer (nats, amqp, redis, kafka).
    channel: Mapped[str] = mapped_column(sa.String(16), server_default="http")
    # Lineage (None on rows logged before it was recorded): the model version's training run, the data
    # version it was trained on (DVC hash of the split, else its content hash), the commit that trained
    # it and the commit of the code that served the answer.
    run_id: Mapped[str | None] = mapped_column(sa.String(64))
    data_version: Mapped[str | None] = mapped_column(sa.String(64))
    model_git_commit: Mapped[str | None] = mapped_column(sa.String(64))
    serving_git_commit: Mapped[str | None] = mapped_column(sa.String(64))
    # The top probability was below the version's review threshold: the caller got no label and the product
    # went to the review queue (``label`` still holds the model's top guess).
    needs_review: Mapped[bool] = mapped_column(server_default=sa.false())


class ReviewItem(Base):
    """A product the model was not sure enough about, waiting for (or answered by) a person.

    Keyed by the prediction's request_id: the id is known before the answer leaves, and the item is
    inserted from the same journal row, in the same transaction, as its ``prediction_log`` row (so a
    replayed spool never doubles it and an outage never loses it). Product and top-k live in that row."""

    __tablename__ = "review_item"

    request_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    status: Mapped[str] = mapped_column(sa.String(16), server_default="open", index=True)  # open | resolved
    model_name: Mapped[str] = mapped_column(sa.String(255))
    model_version: Mapped[str] = mapped_column(sa.String(64), index=True)
    label: Mapped[str] = mapped_column(sa.Text)  # the model's top guess
    probability: Mapped[float]
    threshold: Mapped[float]  # the review threshold the prediction fell below
    channel: Mapped[str] = mapped_column(sa.String(16), server_default="http")
    resolved_label: Mapped[str | None] = mapped_column(sa.Text)
    resolved_label_path: Mapped[list[str] | None] = mapped_column(sa.JSON())
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[int | None]  # the reviewer's API key id (no foreign key: keys may go, decisions stay)
    feedback_id: Mapped[int | None]  # the feedback row the resolution wrote (counts towards live accuracy)


class Feedback(Base):
    """A caller's true label for an earlier prediction; the newest one per request_id wins.

    Rows for one request_id form a chain: each names the row it supersedes (0 for the
    first), and the pair is unique, so two writers that both saw the same latest answer
    cannot both add theirs: the second fails and re-checks who owns the answer now."""

    __tablename__ = "feedback"
    __table_args__ = (sa.UniqueConstraint("request_id", "previous_id", name="uq_feedback_request_id_previous_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Not a foreign key: the prediction may still sit in the writer's queue or spool.
    request_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    label: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    api_key_id: Mapped[int | None]  # who wrote it; only that key or an admin may supersede it
    previous_id: Mapped[int]  # the feedback row this one supersedes, 0 for the first


class ApiKey(Base):
    """A caller's key: the public prefix finds the row, the secret is kept only as its sha256."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True, index=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    scopes: Mapped[str] = mapped_column(sa.String(64), server_default="predict,feedback")  # comma-separated


class DriftCheck(Base):
    """One run of the drift monitor (``monitoring.service``): its verdict, the signals that fired
    and where its reports are, so the history of the champion's inputs is queryable."""

    __tablename__ = "drift_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    model_name: Mapped[str] = mapped_column(sa.String(255))
    model_version: Mapped[str] = mapped_column(sa.String(64))
    run_id: Mapped[str | None] = mapped_column(sa.String(64))  # the champion's training run, where reports are logged
    data_version: Mapped[str | None] = mapped_column(sa.String(64))  # content hash of the reference split
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    current_rows: Mapped[int]
    labelled_rows: Mapped[int]
    status: Mapped[str] = mapped_column(sa.String(32))  # ok | insufficient_data
    drifted: Mapped[bool]
    retrain: Mapped[bool]
    signals: Mapped[list[str]] = mapped_column(sa.JSON())  # names of the signals that fired
    reasons: Mapped[list[str]] = mapped_column(sa.JSON())  # why retrain or not, in words
    details: Mapped[dict[str, Any]]  # every signal: value, reference, threshold, fired
    report_html: Mapped[str | None] = mapped_column(sa.Text)
    report_json: Mapped[str | None] = mapped_column(sa.Text)
    quality_html: Mapped[str | None] = mapped_column(sa.Text)


class ExplanationLog(Base):
    """One explanation served (POST /explain, /predict?explain=true), with the version that gave it, so
    what a reviewer was shown can be traced to the exact model and, for /predict, the exact prediction."""

    __tablename__ = "explanation_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # /predict?explain=true: the prediction's request_id (prediction_log); /explain: an id of its own.
    request_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    model_name: Mapped[str] = mapped_column(sa.String(255))
    model_version: Mapped[str] = mapped_column(sa.String(64))
    label: Mapped[str] = mapped_column(sa.Text)  # the label explained
    method: Mapped[str] = mapped_column(sa.String(32))  # linear-exact | integrated-gradients | occlusion
    duration_ms: Mapped[float]
    api_key_id: Mapped[int | None]  # no foreign key: log rows outlive the keys that made them
    summary: Mapped[dict[str, Any]]  # probability, base_value, score and the top features


class ShadowPrediction(Base):
    """The challenger's answer to a request the champion answered (``request_id`` of its prediction_log
    row), scored off the request path (api/shadow.py): evidence for ``productcat shadow report``."""

    __tablename__ = "shadow_prediction"
    __table_args__ = (sa.UniqueConstraint("request_id", "model_version", name="uq_shadow_prediction_request_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(sa.String(36), index=True)  # not a foreign key: the log row may wait
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    model_name: Mapped[str] = mapped_column(sa.String(255))
    model_version: Mapped[str] = mapped_column(sa.String(64))  # the challenger's
    champion_version: Mapped[str] = mapped_column(sa.String(64))  # the version whose answer the caller got
    label: Mapped[str] = mapped_column(sa.Text)
    probability: Mapped[float]
    top_k: Mapped[list[dict[str, Any]]]
    latency_ms: Mapped[float]  # the challenger's time for the request's products (one forward pass)
