"""POST /predict: one product or a batch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query
from fastapi.exceptions import RequestValidationError

from api.deps import OptionalKey, State
from api.explanations import predict_and_explain
from api.limits import GuardedRoute
from api.prediction import check_request, predict_products
from api.routes.responses import AUTH, BAD_BODY, NO_MODEL
from api.schemas import EXAMPLE_FASHION_PRODUCT, EXAMPLE_PRODUCT, PredictBody, PredictResponse

router = APIRouter(tags=["prediction"], route_class=GuardedRoute)

BATCH_EXAMPLE = [EXAMPLE_PRODUCT, EXAMPLE_FASHION_PRODUCT]


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=BAD_BODY | AUTH | NO_MODEL,
)
async def predict(
    state: State,
    api_key: OptionalKey,
    body: Annotated[
        PredictBody,
        Body(openapi_examples={
            "one product": {"value": EXAMPLE_PRODUCT},
            "a batch": {"value": BATCH_EXAMPLE},
        }),
    ],
    top_k: Annotated[int, Query(ge=1, description="How many labels to return with probabilities.")] = 3,
    explain: Annotated[bool, Query(description="Also say why (one product only): the prediction carries an "
                                   "`explanation` of its top label, as POST /explain gives it.")] = False,
    level: Annotated[int | None, Query(ge=0, description="Answer at this level of the category tree (0 = the root "
                                       "category; default: the leaf). The label and top_k are then nodes of that "
                                       "level, each with the summed probability of the leaves under it; the review "
                                       "and low-confidence thresholds apply to that probability.")] = None,
) -> PredictResponse:
    """Categorise one product or a list of them. A title or a description must be present; every
    other field is optional."""
    products = body if isinstance(body, list) else [body]
    if explain and level is not None:
        raise RequestValidationError([{"type": "value_error", "loc": ("query", "level"), "input": level,
                                       "msg": "level is not available with explain=true (explanations are of leaves)"}])
    if explain and isinstance(body, list):
        raise RequestValidationError([{"type": "value_error", "loc": ("query", "explain"), "input": True,
                                       "msg": "explain=true takes one product, not a list"}])
    check_request(state=state, products=products, top_k=top_k, is_batch=isinstance(body, list))
    api_key_id = api_key.id if api_key else None
    if explain:
        return await predict_and_explain(state=state, product=products[0], top_k=top_k, api_key_id=api_key_id)
    return await predict_products(state=state, products=products, top_k=top_k, api_key_id=api_key_id, level=level)
