"""POST /feedback: a shop's correction, stored next to the logged prediction."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.deps import DBSession, FeedbackKey, State
from api.feedback import FeedbackConflict, prediction_exists, record_feedback
from api.keys import Scope, has_scope
from api.limits import GuardedRoute
from api.routes.responses import AUTH, BAD_BODY
from api.schemas import FeedbackIn, FeedbackOut

router = APIRouter(tags=["feedback"], route_class=GuardedRoute)  # body read within limits, strict JSON


@router.post(
    "/feedback",
    response_model=FeedbackOut,
    status_code=status.HTTP_201_CREATED,
    responses=BAD_BODY | AUTH | {
        404: {"description": "No prediction has this request_id"},
        409: {"description": "Another API key answered this request_id; only an admin key may change it"},
    },
)
def feedback(body: FeedbackIn, state: State, session: DBSession, api_key: FeedbackKey) -> FeedbackOut:
    """Record the true label of an earlier prediction (its `request_id` from /predict). A key may
    correct its own answer; another key's answer stands unless an admin key overwrites it."""
    known = state.writer.is_pending(body.request_id) or prediction_exists(session=session, request_id=body.request_id)
    if not known:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no prediction with request_id {body.request_id!r}")
    try:
        record_feedback(session=session, request_id=body.request_id, label=body.label, api_key_id=api_key.id,
                        overwrite_others=has_scope(api_key, Scope.ADMIN))
    except FeedbackConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    model = state.manager.current
    return FeedbackOut(request_id=body.request_id, label=body.label,
                       known_label=bool(model and body.label in model.labels))
