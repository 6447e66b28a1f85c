"""POST /feedback: a shop's correction, stored next to the logged prediction."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.deps import DBSession, RequiredKey, State
from api.feedback import prediction_exists, record_feedback
from api.routes.responses import AUTH, BAD_BODY
from api.schemas import FeedbackIn, FeedbackOut

router = APIRouter(tags=["feedback"])


@router.post(
    "/feedback",
    response_model=FeedbackOut,
    status_code=status.HTTP_201_CREATED,
    responses=BAD_BODY | AUTH | {404: {"description": "No prediction has this request_id"}},
)
def feedback(body: FeedbackIn, state: State, session: DBSession, api_key: RequiredKey) -> FeedbackOut:
    """Record the true label of an earlier prediction (its `request_id` from /predict)."""
    known = state.writer.is_pending(body.request_id) or prediction_exists(session=session, request_id=body.request_id)
    if not known:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no prediction with request_id {body.request_id!r}")
    record_feedback(session=session, request_id=body.request_id, label=body.label, api_key_id=api_key.id)
    model = state.manager.current
    return FeedbackOut(request_id=body.request_id, label=body.label,
                       known_label=bool(model and body.label in model.labels))
