"""Feedback service: a caller's true label for an earlier prediction, and the labelled log for monitoring."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.db.models import Feedback, PredictionLog


class LabelledPrediction(NamedTuple):
    prediction: PredictionLog
    label: str  # the latest feedback's label: the truth as the caller last told it
    labelled_at: datetime


class FeedbackConflict(Exception):
    """Another key's answer stands for this request_id, and the caller may not overwrite it."""


def record_feedback(
    *, session: Session, request_id: str, label: str, api_key_id: int | None, overwrite_others: bool = False
) -> Feedback:
    """Store a label; earlier feedback on the same prediction is kept, the newest one counts.

    Only the key that wrote the current answer may replace it, unless ``overwrite_others``
    (an admin). Concurrent writers cannot slip past the check: each row names the row it
    supersedes and that pair is unique, so a writer that lost the race checks again.
    """
    for _ in range(3):
        latest = session.scalar(
            sa.select(Feedback).where(Feedback.request_id == request_id).order_by(Feedback.id.desc()).limit(1)
        )
        if latest is not None and latest.api_key_id != api_key_id and not overwrite_others:
            raise FeedbackConflict("another API key has answered this request_id; only an admin key may change it")
        feedback = Feedback(request_id=request_id, label=label, api_key_id=api_key_id,
                            previous_id=latest.id if latest is not None else 0)
        session.add(feedback)
        try:
            session.commit()
            return feedback
        except sa.exc.IntegrityError:
            session.rollback()  # someone else answered in between: look again
    raise FeedbackConflict("this request_id is being answered by several callers at once; retry")


def prediction_exists(*, session: Session, request_id: str) -> bool:
    """In the table already. A row may still wait in the writer: ask ``writer.is_pending`` first."""
    return bool(session.scalar(sa.select(sa.exists().where(PredictionLog.request_id == request_id))))


def labelled_predictions(
    *, session: Session, since: datetime | None = None, limit: int | None = None
) -> list[LabelledPrediction]:
    """Predictions that got feedback, oldest first, each with its latest label.

    ``since`` filters on when the prediction was made (aware datetime; naive is taken as UTC).
    """
    # The highest id is the newest feedback, even when two share a created_at.
    latest = (
        sa.select(sa.func.max(Feedback.id).label("id")).group_by(Feedback.request_id).subquery("latest_feedback")
    )
    query = (
        sa.select(PredictionLog, Feedback.label, Feedback.created_at)
        .join(Feedback, Feedback.request_id == PredictionLog.request_id)
        .join(latest, latest.c.id == Feedback.id)
        .order_by(PredictionLog.created_at, PredictionLog.request_id)
    )
    if since is not None:
        query = query.where(PredictionLog.created_at >= since)
    if limit is not None:
        query = query.limit(limit)
    return [LabelledPrediction(prediction, label, at) for prediction, label, at in session.execute(query)]
