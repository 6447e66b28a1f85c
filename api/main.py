"""The FastAPI app: ``create_app()`` builds one; ``uvicorn api.main:app`` serves the default."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI

from api.auth import document_security
from api.batching import MicroBatcher
from api.code_version import serving_code_version
from api.db.probe import DatabaseProbe
from api.db.session import make_engine, session_factory
from api.deps import ServiceState
from api.docs_pages import mount_offline_docs
from api.errors import install_error_handlers
from api.limits import document_limits
from api.metrics import ServiceMetrics
from api.model_manager import ChampionManager
from api.prediction import score_items
from api.request_log import RequestLogWriter
from api.routes import explain, feedback, predict, reports, review, service, shadow
from api.routes.web import mount_web
from api.settings import APISettings, get_api_settings
from api.shadow import ShadowScorer
from ml.settings import MLSettings

log = logging.getLogger(__name__)

DESCRIPTION = """Sorts e-commerce products into categories with the model version that the
MLflow registry alias `champion` points at, and logs every answer.

* `POST /predict` one product or a batch; `POST /feedback` the true label of an earlier prediction.
* `POST /explain` (or `/predict?explain=true`) which words pushed a product towards its label.
* A product the model is not sure enough about comes back `needs_review`, without a category; `GET /review`
  lists those, `POST /review/{id}/resolve` gives one its category (a `review` key).
* `GET /model` tells which version answers; moving the alias swaps it within the poll interval.
* `GET /shadow/report` compares the `challenger` alias, scored off the request path, with the champion.
* A refused request gets a small JSON answer whose errors name the field (`loc`); limits under `POST /predict`.
"""


def create_app(settings: APISettings | None = None, ml_settings: MLSettings | None = None) -> FastAPI:
    """One app; settings default to the environment's (tests pass their own)."""
    settings = settings or get_api_settings()
    ml_settings = ml_settings or settings.ml()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.db_url, connect_timeout=settings.db_connect_timeout_seconds,
                             statement_timeout=settings.db_statement_timeout_seconds,
                             pool_timeout=settings.db_pool_timeout_seconds)
        writer = RequestLogWriter(settings=settings, engine=engine)
        writer.start()
        executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="inference")
        batcher = MicroBatcher(score_items, executor=executor, max_batch=settings.batch_max_size,
                               window_ms=settings.batch_window_ms,
                               workers=settings.inference_threads) if settings.batching else None
        state = ServiceState(
            settings=settings, manager=ChampionManager(ml_settings, intra_op_threads=settings.intra_op_threads,
                                                       runtime=settings.runtime,
                                                       rollback_window=settings.rollback_window,
                                                       rollback_max_failure_rate=settings.rollback_max_failure_rate,
                                                       review_threshold=settings.review_threshold),
            writer=writer, sessions=session_factory(engine), metrics=ServiceMetrics(), executor=executor,
            batcher=batcher, db_probe=DatabaseProbe(engine=engine, timeout_s=settings.ready_timeout_seconds),
            serving_git_commit=serving_code_version(settings), ml_settings=ml_settings,
        )
        if settings.shadow:
            challenger = ChampionManager(ml_settings, intra_op_threads=settings.intra_op_threads,
                                         runtime=settings.runtime, review_threshold=settings.review_threshold,
                                         alias=ml_settings.challenger_alias, optional=True)
            state.shadow = ShadowScorer(manager=challenger, engine=engine, metrics=state.metrics,
                                        queue_size=settings.shadow_queue_size)
            state.shadow.start()
        app.state.service = state
        if state.batcher is not None:
            state.batcher.start()
        followers = [asyncio.create_task(state.manager.follow(settings.poll_interval_seconds))]
        if state.shadow is not None:
            followers.append(asyncio.create_task(state.shadow.manager.follow(settings.poll_interval_seconds)))
        try:
            yield
        finally:
            for follower in followers:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            if state.batcher is not None:
                await state.batcher.close()
            state.executor.shutdown(wait=True)  # answers in flight are logged before the writer drains
            if state.shadow is not None:
                await asyncio.to_thread(state.shadow.close)
            await asyncio.to_thread(writer.close)
            engine.dispose()

    # docs_url/redoc_url None: the pages are served with local assets (no CDN) by mount_offline_docs.
    app = FastAPI(title="ProductCat", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    mount_offline_docs(app)
    app.include_router(predict.router)
    app.include_router(explain.router)
    app.include_router(feedback.router)
    app.include_router(service.router)
    app.include_router(reports.router)
    app.include_router(review.router)
    app.include_router(shadow.router)
    mount_web(app)  # the web page at / and its assets under /static (public; its data calls carry the key)
    document_security(app, settings)  # the schema declares a key where the running settings need one
    document_limits(app, settings)  # batch size, body size and text limits of the running settings
    install_error_handlers(app)  # short 4xx/500 answers, each counted by route and status

    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn api.main:app` builds the default app on first access, not at import time.
    if name == "app":
        return create_app()
    raise AttributeError(name)
