"""The human-review queue: which answers go to it, listing it, and resolving an item with the true category.

An item is keyed by the request_id of the prediction it holds (its ``review_id``): the id is known before
the answer leaves, and the item is written from the same journal row as the prediction
(``api/db/log_store.py``). Resolving one records the label as feedback (``api/feedback.py``), so it counts
towards live accuracy, and keeps who resolved it, when, and which prediction (model version) it corrects.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.db.models import PredictionLog, ReviewItem
from api.feedback import FeedbackConflict, record_feedback
from ml.review_rows import ResolvedReview, review_table, write_review_rows

log = logging.getLogger(__name__)

OPEN, RESOLVED = "open", "resolved"
StatusFilter = Literal["open", "resolved", "all"]


def sent_to_review(*, probability: float, threshold: float | None) -> bool:
    """The answer abstains: its top probability is below the version's review threshold."""
    return threshold is not None and probability < threshold


class QueuedItem(NamedTuple):
    item: ReviewItem
    prediction: PredictionLog | None  # None only if the log row was rejected (never written)


class ReviewPage(NamedTuple):
    items: list[QueuedItem]
    total: int


class ReviewConflict(Exception):
    """The item was resolved already, with another label."""


def _queued() -> sa.Select[tuple[ReviewItem, PredictionLog]]:
    return sa.select(ReviewItem, PredictionLog).outerjoin(
        PredictionLog, PredictionLog.request_id == ReviewItem.request_id)


def list_items(
    *, session: Session, status: StatusFilter = OPEN, label: str | None = None, model_version: str | None = None,
    limit: int = 50, offset: int = 0,
) -> ReviewPage:
    """One page of the queue and the number of items matching the filters. Open items oldest first (the
    queue's order); resolved ones newest first. ``label`` is the model's top guess."""
    conditions = []
    if status != "all":
        conditions.append(ReviewItem.status == status)
    if label is not None:
        conditions.append(ReviewItem.label == label)
    if model_version is not None:
        conditions.append(ReviewItem.model_version == model_version)
    total = session.scalar(sa.select(sa.func.count()).select_from(ReviewItem).where(*conditions)) or 0
    order = (ReviewItem.created_at, ReviewItem.request_id) if status == OPEN else (
        ReviewItem.created_at.desc(), ReviewItem.request_id.desc())
    rows = session.execute(_queued().where(*conditions).order_by(*order).limit(limit).offset(offset)).all()
    return ReviewPage([QueuedItem(item, prediction) for item, prediction in rows], int(total))


def get_item(*, session: Session, review_id: str) -> QueuedItem | None:
    row = session.execute(_queued().where(ReviewItem.request_id == review_id)).first()
    return QueuedItem(*row) if row is not None else None


def resolve(
    *, session: Session, review_id: str, label: str, label_path: list[str], api_key_id: int | None
) -> QueuedItem:
    """Close an item with the true ``label``; resolving again with the same label changes nothing.

    The item is claimed first by a conditional update (only one of two reviewers racing wins), then the
    label is recorded as feedback (a reviewer's answer supersedes a caller's). Should that fail, the claim
    is undone; should even that fail, the item stays resolved without ``feedback_id`` and resolving it
    again with the same label records the feedback then.
    LookupError: no such item; ReviewConflict: resolved already with another label."""
    claimed = session.execute(
        sa.update(ReviewItem)
        .where(ReviewItem.request_id == review_id, ReviewItem.status == OPEN)
        .values(status=RESOLVED, resolved_label=label, resolved_label_path=label_path,
                resolved_at=datetime.now(UTC), resolved_by=api_key_id)
    ).rowcount
    session.commit()
    queued = get_item(session=session, review_id=review_id)
    if queued is None:
        raise LookupError(review_id)
    item = queued.item
    if not claimed and item.resolved_label != label:
        raise ReviewConflict(f"review item {review_id} was resolved already with another label")
    if item.feedback_id is None:
        try:
            feedback = record_feedback(session=session, request_id=review_id, label=label, api_key_id=api_key_id,
                                       overwrite_others=True)
        except (FeedbackConflict, sa.exc.SQLAlchemyError):
            session.rollback()
            if claimed:
                _unclaim(session=session, review_id=review_id)
            raise
        item.feedback_id = feedback.id
        session.commit()
    return queued


def _unclaim(*, session: Session, review_id: str) -> None:
    try:
        session.execute(sa.update(ReviewItem).where(ReviewItem.request_id == review_id).values(
            status=OPEN, resolved_label=None, resolved_label_path=None, resolved_at=None, resolved_by=None))
        session.commit()
    except sa.exc.SQLAlchemyError:
        session.rollback()
        log.exception("review item %s stays resolved without its feedback; resolving it again records it", review_id)


def resolved_reviews(*, session: Session, since: datetime | None = None) -> list[ResolvedReview]:
    """Resolved items with their products, oldest resolution first (``since``: resolved at or after)."""
    query = (sa.select(ReviewItem, PredictionLog.product)
             .join(PredictionLog, PredictionLog.request_id == ReviewItem.request_id)
             .where(ReviewItem.status == RESOLVED)
             .order_by(ReviewItem.resolved_at, ReviewItem.request_id))
    if since is not None:
        query = query.where(ReviewItem.resolved_at >= since)
    return [ResolvedReview(review_id=item.request_id, request_id=item.request_id, model_version=item.model_version,
                           product=product, label=item.resolved_label or "", label_path=item.resolved_label_path or [],
                           resolved_at=item.resolved_at, resolved_by=item.resolved_by)
            for item, product in session.execute(query)]


def export_reviews(*, session: Session, output: Path, since: datetime | None = None) -> int:
    """Write resolved items as training rows with their provenance (``ml/review_rows.py``); returns the count."""
    reviews = resolved_reviews(session=session, since=since)
    write_review_rows(review_table(reviews), output)
    log.info("exported %d resolved review items to %s", len(reviews), output)
    return len(reviews)


def export_from_database(*, url: str, output: Path, since: datetime | None = None) -> int:
    """``export_reviews`` on the database at ``url``, migrated first (the CLI and the retrain DAG)."""
    from api.db.migrate import upgrade
    from api.db.session import make_engine, session_factory

    upgrade(url)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            return export_reviews(session=session, output=output, since=since)
    finally:
        engine.dispose()
