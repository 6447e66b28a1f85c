"""Feedback service: storing labels, who may overwrite whose, and reading predictions with their latest label."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.db.migrate import upgrade
from api.db.models import Feedback, PredictionLog
from api.db.session import make_engine, session_factory
from api.feedback import FeedbackConflict, labelled_predictions, prediction_exists, record_feedback

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as session:
        yield session
    engine.dispose()


def add_prediction(session: Session, created_at: datetime, label: str = "Shirts") -> str:
    request_id = str(uuid.uuid4())
    session.execute(sa.insert(PredictionLog).values(
        request_id=request_id, batch_id=str(uuid.uuid4()), position=0, created_at=created_at,
        product={"title": "shirt"}, label=label, probability=0.8, top_k=[{"label": label, "probability": 0.8}],
        model_name="product-classifier", model_version="1", latency_ms=3.0, api_key_id=None,
    ))
    session.commit()
    return request_id


def test_prediction_exists(session: Session) -> None:
    request_id = add_prediction(session, T0)
    assert prediction_exists(session=session, request_id=request_id)
    assert not prediction_exists(session=session, request_id=str(uuid.uuid4()))


def test_labelled_predictions_carry_the_latest_label_only(session: Session) -> None:
    corrected = add_prediction(session, T0)
    confirmed = add_prediction(session, T0 + timedelta(minutes=1))
    add_prediction(session, T0 + timedelta(minutes=2))  # no feedback: not returned
    record_feedback(session=session, request_id=corrected, label="Tops", api_key_id=1)
    record_feedback(session=session, request_id=confirmed, label="Shirts", api_key_id=1)
    record_feedback(session=session, request_id=corrected, label="Dresses", api_key_id=1)  # the caller changed its mind

    rows = labelled_predictions(session=session)
    assert [(row.prediction.request_id, row.label) for row in rows] == [(corrected, "Dresses"), (confirmed, "Shirts")]
    assert rows[0].prediction.label == "Shirts" and rows[0].labelled_at.tzinfo is not None

    later = labelled_predictions(session=session, since=T0 + timedelta(seconds=30))
    assert [row.prediction.request_id for row in later] == [confirmed]
    assert len(labelled_predictions(session=session, limit=1)) == 1


def test_feedback_may_arrive_before_its_prediction_is_written(session: Session) -> None:
    request_id = str(uuid.uuid4())  # still in the writer's queue: no foreign key stops the label
    record_feedback(session=session, request_id=request_id, label="Tops", api_key_id=None)
    assert labelled_predictions(session=session) == []
    add_prediction(session, T0)
    session.execute(sa.update(PredictionLog).values(request_id=request_id))
    session.commit()
    assert [row.label for row in labelled_predictions(session=session)] == ["Tops"]


def test_only_the_writer_or_an_admin_replaces_an_answer(session: Session) -> None:
    request_id = add_prediction(session, T0)
    record_feedback(session=session, request_id=request_id, label="Tops", api_key_id=1)
    with pytest.raises(FeedbackConflict, match="only an admin key"):
        record_feedback(session=session, request_id=request_id, label="Dresses", api_key_id=2)
    record_feedback(session=session, request_id=request_id, label="Shirts", api_key_id=1)  # its own: corrected
    record_feedback(session=session, request_id=request_id, label="Kurtas", api_key_id=3, overwrite_others=True)
    with pytest.raises(FeedbackConflict):  # the admin's answer is now the one that stands
        record_feedback(session=session, request_id=request_id, label="Tops", api_key_id=1)
    assert [row.label for row in labelled_predictions(session=session)] == ["Kurtas"]
    chain = session.execute(sa.select(Feedback.id, Feedback.previous_id, Feedback.api_key_id)
                            .order_by(Feedback.id)).all()
    assert [(previous, key) for _, previous, key in chain] == [(0, 1), (chain[0].id, 1), (chain[1].id, 3)]


def test_two_rows_cannot_supersede_the_same_answer(session: Session) -> None:
    request_id = add_prediction(session, T0)
    session.add(Feedback(request_id=request_id, label="Tops", api_key_id=1, previous_id=0))
    session.commit()
    session.add(Feedback(request_id=request_id, label="Dresses", api_key_id=2, previous_id=0))
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()


@pytest.mark.integration
def test_keys_racing_for_one_answer_leave_one_owner(postgres_url: str) -> None:
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    sessions = session_factory(engine)
    with sessions() as session:
        request_id = add_prediction(session, T0)
    start, outcomes = threading.Barrier(8), []

    def answer(key_id: int) -> None:
        with sessions() as own:
            start.wait()
            try:
                record_feedback(session=own, request_id=request_id, label=f"label-{key_id}", api_key_id=key_id)
                outcomes.append(key_id)
            except FeedbackConflict:
                outcomes.append(-key_id)

    threads = [threading.Thread(target=answer, args=(key_id,)) for key_id in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with sessions() as session:
        writers = session.scalars(sa.select(Feedback.api_key_id).where(Feedback.request_id == request_id)).all()
    engine.dispose()
    winners = [key for key in outcomes if key > 0]
    assert len(outcomes) == 8 and len(winners) == 1 and writers == winners
