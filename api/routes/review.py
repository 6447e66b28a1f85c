"""The human-review queue (GET /review, GET /review/{id}, POST /review/{id}/resolve) and the label set a
reviewer picks from (GET /labels)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from api.deps import DBSession, ReadKey, ReviewKey, ServiceState, State
from api.feedback import FeedbackConflict
from api.limits import GuardedRoute
from api.model_manager import LoadedModel
from api.review import QueuedItem, ReviewConflict, StatusFilter, get_item, list_items, resolve
from api.routes.responses import AUTH, BAD_BODY, NO_MODEL
from api.schemas import LabelProbability

router = APIRouter(tags=["review"], route_class=GuardedRoute)  # body read within limits, strict JSON

ReviewId = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                                    description="The item's id: the request_id of the prediction it holds.")]
NOT_FOUND: dict[int | str, dict[str, str]] = {404: {"description": "No review item has this id (yet)"}}


class ReviewItemOut(BaseModel):
    id: str = Field(description="The review id: the request_id of the prediction (also `review_id` in /predict).")
    request_id: str
    created_at: datetime
    status: str = Field(description="open, or resolved.")
    model_name: str
    model_version: str = Field(description="The version whose prediction is under review.")
    label: str = Field(description="The model's top guess.")
    probability: float
    threshold: float = Field(description="The review threshold the probability fell below.")
    channel: str = Field(description="http (/predict) or the stream consumer's broker.")
    product: dict[str, Any] = Field(description="The product as sent.")
    top_k: list[LabelProbability]
    resolved_label: str | None = None
    resolved_label_path: list[str] | None = None
    resolved_at: datetime | None = None
    resolved_by: int | None = Field(None, description="Id of the API key that resolved it.")


class ReviewList(BaseModel):
    items: list[ReviewItemOut]
    total: int = Field(description="Items matching the filters, over every page.")
    limit: int
    offset: int


class ResolveIn(BaseModel):
    label: Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(str.strip)] = Field(
        description="The true category: one of GET /labels.")


class LabelSet(BaseModel):
    model_version: str
    labels: list[str]
    label_paths: dict[str, list[str]] = Field(description="Each label's path in the category tree (root first).")


def _out(queued: QueuedItem) -> ReviewItemOut:
    item, prediction = queued
    return ReviewItemOut(
        id=item.request_id, request_id=item.request_id, created_at=item.created_at, status=item.status,
        model_name=item.model_name, model_version=item.model_version, label=item.label,
        probability=item.probability, threshold=item.threshold, channel=item.channel,
        product=prediction.product if prediction else {}, top_k=prediction.top_k if prediction else [],
        resolved_label=item.resolved_label, resolved_label_path=item.resolved_label_path,
        resolved_at=item.resolved_at, resolved_by=item.resolved_by,
    )


def _serving(state: ServiceState) -> LoadedModel:
    model = state.manager.current
    if model is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no champion model is loaded yet")
    return model


@contextlib.contextmanager
def _database() -> Iterator[None]:
    """The queue lives in the database: while it is unreachable, a 503 to retry (predictions still spool)."""
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the review queue's database is unreachable; "
                            "retry shortly", headers={"Retry-After": "5"}) from exc


def _not_found(state: ServiceState, review_id: str) -> HTTPException:
    if state.writer.is_pending(review_id):  # answered a moment ago: its item is still on its way to the table
        return HTTPException(status.HTTP_404_NOT_FOUND, "this review item is not in the queue yet; retry shortly",
                             headers={"Retry-After": "1"})
    return HTTPException(status.HTTP_404_NOT_FOUND, "no review item with this id")


DB_DOWN: dict[int | str, dict[str, str]] = {503: {"description": "The database is unreachable: retry shortly"}}


@router.get("/review", response_model=ReviewList, responses=AUTH | DB_DOWN)
def review_queue(
    session: DBSession, _: ReviewKey,
    status_: Annotated[StatusFilter, Query(alias="status", description="open (default), resolved or all.")] = "open",
    label: Annotated[str | None, Query(max_length=200, description="Only items the model guessed as this label.")]
    = None,
    model_version: Annotated[str | None, Query(max_length=64, description="Only this model version's items.")]
    = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> ReviewList:
    """The review queue (scope `review`): open items oldest first, resolved ones newest first."""
    with _database():
        page = list_items(session=session, status=status_, label=label, model_version=model_version, limit=limit,
                          offset=offset)
    return ReviewList(items=[_out(queued) for queued in page.items], total=page.total, limit=limit, offset=offset)


@router.get("/review/{review_id}", response_model=ReviewItemOut, responses=AUTH | NOT_FOUND | DB_DOWN)
def review_item(review_id: ReviewId, state: State, session: DBSession, _: ReviewKey) -> ReviewItemOut:
    """One review item (scope `review`)."""
    with _database():
        queued = get_item(session=session, review_id=review_id)
    if queued is None:
        raise _not_found(state, review_id)
    return _out(queued)


@router.post(
    "/review/{review_id}/resolve", response_model=ReviewItemOut,
    responses=BAD_BODY | AUTH | NOT_FOUND | {409: {"description": "Resolved already with another label"},
                                             503: {"description": "No model is loaded yet, or the database is "
                                                                  "unreachable: retry shortly"}},
)
def resolve_item(review_id: ReviewId, body: ResolveIn, state: State, session: DBSession,
                 api_key: ReviewKey) -> ReviewItemOut:
    """Give the item its true category (scope `review`). It is recorded as feedback on the prediction, so it
    counts towards live accuracy; resolving again with the same label changes nothing."""
    model = _serving(state)
    if body.label not in model.label_set:
        raise RequestValidationError([{"type": "value_error", "loc": ("body", "label"),
                                       "msg": f"not a label of the serving model (version {model.version}); "
                                              "see GET /labels"}])
    path = list(model.card.get("leaf_to_path", {}).get(body.label) or [body.label])
    try:
        with _database():
            queued = resolve(session=session, review_id=review_id, label=body.label, label_path=path,
                             api_key_id=api_key.id)
    except LookupError:
        raise _not_found(state, review_id) from None
    except (ReviewConflict, FeedbackConflict) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return _out(queued)


@router.get("/labels", response_model=LabelSet, responses=AUTH | NO_MODEL)
async def labels(state: State, _: ReadKey) -> LabelSet:
    """Every label the serving version can answer, with its path: what a reviewer picks from."""
    model = _serving(state)
    paths = model.card.get("leaf_to_path", {})
    return LabelSet(model_version=model.version, labels=sorted(model.labels),
                    label_paths={label: list(paths.get(label) or [label]) for label in model.labels})
