"""POST /explain: why one product gets its label, or a label the caller names."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from api.deps import OptionalKey, State
from api.explanations import explain_product
from api.limits import GuardedRoute
from api.routes.responses import AUTH, BAD_BODY, NO_MODEL
from api.schemas import EXAMPLE_FASHION_PRODUCT, EXAMPLE_PRODUCT, ExplainBody, ExplanationResponse

router = APIRouter(tags=["prediction"], route_class=GuardedRoute)


@router.post(
    "/explain",
    response_model=ExplanationResponse,
    responses=BAD_BODY | AUTH | NO_MODEL | {501: {"description": "The serving model's family cannot be explained"}},
)
async def explain(
    state: State,
    api_key: OptionalKey,
    body: Annotated[
        ExplainBody,
        Body(openapi_examples={
            "its predicted label": {"value": {"product": EXAMPLE_PRODUCT}},
            "a label of your choice": {"value": {"product": EXAMPLE_FASHION_PRODUCT, "label": "Tshirts"}},
        }),
    ],
    top_k: Annotated[int, Query(ge=1, description="How many labels to return with probabilities.")] = 3,
) -> ExplanationResponse:
    """Which words of which field pushed the product towards the label and which away from it (weights
    in logit units, > 0 towards). The TF-IDF baseline's are exact (coefficient x feature value); a
    transformer's are integrated-gradients attributions. Bounded by the time budget: over it, a 422
    that says so. Same model version and product: same answer."""
    return await explain_product(state=state, body=body, top_k=top_k, api_key_id=api_key.id if api_key else None)
