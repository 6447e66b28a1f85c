"""Scoring products with the serving model, off the event loop (through the micro-batcher when
batching is on), and logging each answer."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError

from api.code_version import lineage_columns
from api.db.log_store import REVIEW_THRESHOLD
from api.deps import ServiceState
from api.levels import answer_at, check_level, cut_top, logged_top_k, scored_top_k, top_k_entries
from api.limits import batch_size_error
from api.model_health import InvalidAnswers
from api.model_manager import LoadedModel
from api.review import sent_to_review
from api.schemas import ModelRef, Prediction, PredictResponse, Product

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ScoreItem:
    """One product of one request, for the micro-batcher: the model the request started with, so a
    request never gets an answer from a version other than the one its response names."""

    model: LoadedModel
    record: dict[str, Any]
    top_k: int


def score_items(items: list[ScoreItem]) -> list[dict[str, Any]]:
    """A micro-batch scored in one forward pass per model (two only while the alias moves),
    each answer cut to its own request's top_k."""
    groups: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(id(item.model), []).append(i)
    answers: list[dict[str, Any]] = [{} for _ in items]
    for rows in groups.values():
        model = items[rows[0]].model
        outputs = model.predict([items[i].record for i in rows], max(items[i].top_k for i in rows))
        for i, out in zip(rows, outputs, strict=True):
            answers[i] = cut_top(out, items[i].top_k)
    return answers


def check_request(*, state: ServiceState, products: list[Product], top_k: int, is_batch: bool) -> None:
    """Limits that come from settings, reported like any other 422 (they name the field). The batch
    size was already checked on the parsed JSON (api/limits.py), before the items were validated."""
    errors: list[dict[str, Any]] = []
    settings = state.settings
    if is_batch and not products:
        errors.append({"type": "too_short", "loc": ("body",), "msg": "the batch is empty", "input": []})
    if len(products) > settings.max_batch_size:
        errors.append(batch_size_error(count=len(products), limit=settings.max_batch_size))
    for i, product in enumerate(products):
        if (chars := product.text_chars()) > settings.max_product_chars:
            errors.append({"type": "too_long", "loc": ("body", i) if is_batch else ("body",),
                           "msg": f"the product has {chars:,} characters of text (title, description, features "
                                  f"and brand together); at most {settings.max_product_chars:,}"})
    if top_k > settings.max_top_k:
        errors.append({"type": "less_than_equal", "loc": ("query", "top_k"), "input": top_k,
                       "msg": f"top_k must be at most {settings.max_top_k}"})
    if errors:
        raise RequestValidationError(errors)


async def predict_products(
    *, state: ServiceState, products: list[Product], top_k: int, api_key_id: int | None, level: int | None = None
) -> PredictResponse:
    """``level``: answer with nodes of that level of the tree (api/levels.py); None: leaves."""
    model = state.manager.current  # held for the whole request: a swap meanwhile does not affect it
    if model is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no champion model is loaded yet")
    check_level(model=model, level=level)
    scored_k = scored_top_k(model=model, level=level, top_k=top_k)
    records = [p.record() for p in products]
    started = time.perf_counter()
    try:
        if state.batcher is not None:
            outputs = await state.batcher.submit([ScoreItem(model, record, scored_k) for record in records])
        else:
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(state.executor, model.predict, records, scored_k)
    except Exception as exc:  # the model raised or answered invalidly (model.predict checks every batch)
        _model_failed(state, model, exc)
    state.manager.observe(model, None)
    latency_ms = (time.perf_counter() - started) * 1000
    batch_id, now = str(uuid.uuid4()), datetime.now(UTC)
    predictions, rows = [], []
    threshold, review_threshold = model.low_confidence_threshold, model.review_threshold
    lineage = lineage_columns(model, serving_git_commit=state.serving_git_commit)
    for position, (record, out) in enumerate(zip(records, outputs, strict=True)):
        answer = answer_at(out, model=model, level=level, top_k=top_k)  # thresholds apply to the node answered
        top = top_k_entries(answer)
        request_id = str(uuid.uuid4())
        review = sent_to_review(probability=answer["probability"], threshold=review_threshold)
        # The review item is keyed by the request_id: known now, and written with the log row (api/db/log_store.py).
        prediction = Prediction(request_id=request_id, label=None if review else answer["label"],
                                probability=answer["probability"],
                                label_path=[] if review else list(answer["label_path"]), top_k=top,
                                low_confidence=threshold is not None and answer["probability"] < threshold,
                                needs_review=review, review_id=request_id if review else None,
                                modalities=out.get("modalities"))
        predictions.append(prediction)
        state.metrics.predictions.labels(label=out["label"]).inc()
        if review:
            state.metrics.needs_review.labels(version=model.version).inc()
        rows.append({
            "request_id": request_id, "batch_id": batch_id, "position": position, "created_at": now,
            "product": record, "label": out["label"], "probability": out["probability"],  # the model's leaf answer
            "top_k": logged_top_k(out, top_k), "model_name": model.name, "model_version": model.version,
            "latency_ms": latency_ms, "api_key_id": api_key_id, "needs_review": review, **lineage,
            **({REVIEW_THRESHOLD: review_threshold} if review else {}),
        })
    await state.writer.log_durably(rows)  # write-ahead: on disk (review items too) before the answer leaves
    if state.shadow is not None:  # O(1), never blocks: the challenger scores it later, in its own thread
        state.shadow.submit(champion_version=model.version, request_ids=[row["request_id"] for row in rows],
                            records=records, top_k=top_k)
    return PredictResponse(batch_id=batch_id, model=ModelRef(name=model.name, version=model.version),
                           predictions=predictions)


def _model_failed(state: ServiceState, model: LoadedModel, exc: Exception) -> NoReturn:
    """Count the failure (it may roll the version back) and answer 503: never an invalid prediction."""
    kind = "invalid_output" if isinstance(exc, InvalidAnswers) else "raised"
    state.metrics.model_failures.labels(version=model.version, kind=kind).inc()
    failure = f"{type(exc).__name__}: {str(exc)[:200]}"
    log.warning("model version %s failed a request: %s", model.version, failure)
    rollback = state.manager.observe(model, failure)
    if rollback is not None:
        state.metrics.rollbacks.labels(from_version=rollback.version, to_version=rollback.to_version).inc()
    raise HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"model version {model.version} failed to answer ({kind.replace('_', ' ')}); retry shortly",
        headers={"Retry-After": "1"},
    ) from None
