"""The FastAPI app: ``create_app()`` builds one; ``uvicorn api.main:app`` serves the default."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request, Response

from api.batching import MicroBatcher
from api.db.session import make_engine, session_factory
from api.deps import ServiceState
from api.metrics import ServiceMetrics
from api.model_manager import ChampionManager
from api.prediction import score_items
from api.request_log import RequestLogWriter
from api.routes import feedback, predict, reports, service
from api.settings import APISettings, get_api_settings
from ml.settings import MLSettings

log = logging.getLogger(__name__)

DESCRIPTION = """Sorts e-commerce products into categories with the model version that the
MLflow registry alias `champion` points at, and logs every answer.

* `POST /predict` one product or a batch; `POST /feedback` the true label of an earlier prediction.
* `GET /model` tells which version answers; moving the alias swaps it within the poll interval.
"""


def create_app(settings: APISettings | None = None, ml_settings: MLSettings | None = None) -> FastAPI:
    """One app; settings default to the environment's (tests pass their own)."""
    settings = settings or get_api_settings()
    ml_settings = ml_settings or settings.ml()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.db_url)
        writer = RequestLogWriter(settings=settings, engine=engine)
        writer.start()
        executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="inference")
        batcher = MicroBatcher(score_items, executor=executor, max_batch=settings.batch_max_size,
                               window_ms=settings.batch_window_ms,
                               workers=settings.inference_threads) if settings.batching else None
        state = ServiceState(
            settings=settings, manager=ChampionManager(ml_settings, intra_op_threads=settings.intra_op_threads,
                                                       runtime=settings.runtime),
            writer=writer, sessions=session_factory(engine), metrics=ServiceMetrics(), executor=executor,
            batcher=batcher,
        )
        app.state.service = state
        if state.batcher is not None:
            state.batcher.start()
        follower = asyncio.create_task(state.manager.follow(settings.poll_interval_seconds))
        try:
            yield
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            if state.batcher is not None:
                await state.batcher.close()
            state.executor.shutdown(wait=True)  # answers in flight are logged before the writer drains
            await asyncio.to_thread(writer.close)
            engine.dispose()

    app = FastAPI(title="ProductCat", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.include_router(predict.router)
    app.include_router(feedback.router)
    app.include_router(service.router)
    app.include_router(reports.router)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        state: ServiceState | None = getattr(request.app.state, "service", None)
        if state is not None and path != "/metrics":
            state.metrics.requests.labels(route=path, status=str(response.status_code)).inc()
            state.metrics.latency.labels(route=path).observe(time.perf_counter() - started)
        return response

    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn api.main:app` builds the default app on first access, not at import time.
    if name == "app":
        return create_app()
    raise AttributeError(name)
