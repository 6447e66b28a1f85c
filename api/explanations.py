"""Explanations served: computed in the inference executor within the time budget, and logged.

Over the budget (setting ``explain_time_budget_ms``) the work stops and the caller gets a 422 that
names the product and says why; a label the model does not know is a 422 naming the label. Each
explanation served is logged (``explanation_log``) with the model version that gave it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from typing import Any

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError

from api.db.models import ExplanationLog
from api.deps import ServiceState
from api.model_manager import LoadedModel
from api.prediction import predict_products
from api.schemas import (
    ExplainBody,
    Explanation,
    ExplanationResponse,
    LabelProbability,
    ModelRef,
    PredictResponse,
    Product,
)
from ml.explain import ExplanationBudgetExceeded, Unexplainable, UnknownLabel

log = logging.getLogger(__name__)

Loc = tuple[str | int, ...]


def serving_model(state: ServiceState) -> LoadedModel:
    model = state.manager.current
    if model is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no champion model is loaded yet")
    return model


def check_explain_request(*, state: ServiceState, body: ExplainBody, top_k: int) -> None:
    """The limits /predict applies to one product, named as /explain's body places them."""
    errors: list[dict[str, Any]] = []
    limit = state.settings.max_product_chars
    if (chars := body.product.text_chars()) > limit:
        errors.append({"type": "too_long", "loc": ("body", "product"),
                       "msg": f"the product has {chars:,} characters of text (title, description, features and "
                              f"brand together); at most {limit:,}"})
    if top_k > state.settings.max_top_k:
        errors.append({"type": "less_than_equal", "loc": ("query", "top_k"), "input": top_k,
                       "msg": f"top_k must be at most {state.settings.max_top_k}"})
    if errors:
        raise RequestValidationError(errors)


async def compute_explanation(*, state: ServiceState, model: LoadedModel, record: dict[str, Any],
                              label: str | None, product_loc: Loc, label_loc: Loc) -> dict[str, Any]:
    """``model``'s explanation of ``label`` (None: its top label) for ``record``, as
    ProductClassifierModel.explain returns it; 422 over the budget or for an unknown label."""
    settings = state.settings
    work = functools.partial(model.python_model.explain, record, label=label,
                             budget_seconds=settings.explain_time_budget_ms / 1000,
                             ig_steps=settings.explain_ig_steps, top_features=settings.explain_top_features)
    try:
        return await asyncio.get_running_loop().run_in_executor(state.executor, work)
    except ExplanationBudgetExceeded as exc:
        raise RequestValidationError([{
            "type": "explanation_budget", "loc": product_loc,
            "msg": f"{exc}: send a shorter product, or ask the operator to raise explain_time_budget_ms"}]) from None
    except UnknownLabel as exc:
        raise RequestValidationError([{"type": "unknown_label", "loc": label_loc, "msg": str(exc)}]) from None
    except Unexplainable as exc:
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, str(exc)) from None


def _write_log(state: ServiceState, row: ExplanationLog) -> None:
    try:
        with state.sessions() as session:
            session.add(row)
            session.commit()
    except SQLAlchemyError as exc:  # the answer is still right: a log outage must not refuse it
        log.warning("explanation %s not logged: %s", row.request_id, type(exc).__name__)


async def log_explanation(*, state: ServiceState, model: LoadedModel, request_id: str, answer: dict[str, Any],
                          api_key_id: int | None) -> None:
    explanation = answer["explanation"]
    row = ExplanationLog(
        request_id=request_id, model_name=model.name, model_version=model.version, label=answer["label"],
        method=answer["method"], duration_ms=explanation["duration_ms"], api_key_id=api_key_id,
        summary={"probability": answer["probability"], "base_value": explanation["base_value"],
                 "score": explanation["score"], "top_features": explanation["top_features"]},
    )
    await asyncio.to_thread(_write_log, state, row)


async def explain_product(*, state: ServiceState, body: ExplainBody, top_k: int,
                          api_key_id: int | None) -> ExplanationResponse:
    """POST /explain: one product, its predicted label or the one the body names."""
    check_explain_request(state=state, body=body, top_k=top_k)
    model = serving_model(state)  # held for the whole request: the answer names the version that explained
    answer = await compute_explanation(state=state, model=model, record=body.product.record(), label=body.label,
                                       product_loc=("body", "product"), label_loc=("body", "label"))
    request_id = str(uuid.uuid4())
    await log_explanation(state=state, model=model, request_id=request_id, answer=answer, api_key_id=api_key_id)
    return ExplanationResponse(
        request_id=request_id, model=ModelRef(name=model.name, version=model.version), label=answer["label"],
        probability=answer["probability"], method=answer["method"],
        top_k=[LabelProbability(**item) for item in answer["top_k"][:top_k]],
        explanation=Explanation.model_validate(answer["explanation"]),
    )


async def predict_and_explain(*, state: ServiceState, product: Product, top_k: int,
                              api_key_id: int | None) -> PredictResponse:
    """/predict?explain=true: the prediction of one product with the explanation of its top label, logged
    under the prediction's request_id. Explained first, so that a product over the budget is refused
    before its prediction is logged."""
    record = product.record()
    model = serving_model(state)
    answer = await compute_explanation(state=state, model=model, record=record, label=None, product_loc=("body",),
                                       label_loc=("query", "explain"))
    response = await predict_products(state=state, products=[product], top_k=top_k, api_key_id=api_key_id)
    if response.model.version != model.version:  # the champion moved in between: explain with the one that answered
        model = serving_model(state)
        if model.version != response.model.version:
            log.warning("no explanation for version %s: it stopped serving mid-request", response.model.version)
            return response
        answer = await compute_explanation(state=state, model=model, record=record, label=None,
                                           product_loc=("body",), label_loc=("query", "explain"))
    prediction = response.predictions[0]
    await log_explanation(state=state, model=model, request_id=prediction.request_id, answer=answer,
                          api_key_id=api_key_id)
    prediction.explanation = Explanation.model_validate(answer["explanation"])
    return response
