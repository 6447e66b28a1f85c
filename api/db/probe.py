"""The readiness probe of the request-log database: bounded in time whatever the database does."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

import sqlalchemy as sa
from sqlalchemy.engine import Engine

REASON_CHARS = 200  # a driver's message can be long (it quotes the connection string's options)


class DatabaseProbe:
    """``await check()`` runs ``SELECT 1`` in a thread of its own and waits at most ``timeout_s``.

    At most one probe runs at a time: callers arriving while it runs share it (and its answer),
    so a hung database never piles up threads, however often /ready is polled. An answer younger
    than ``fresh_s`` is reused without probing again.
    """

    def __init__(self, *, engine: Engine, timeout_s: float, fresh_s: float = 1.0) -> None:
        self._engine = engine
        self._timeout_s = timeout_s
        self._fresh_s = fresh_s
        self._lock = threading.Lock()
        self._running: Future[tuple[bool, str | None]] | None = None
        self._answer: tuple[bool, str | None] = (False, "not probed yet")
        self._answered_at = float("-inf")

    async def check(self) -> tuple[bool, str | None]:
        """(True, None) when the database answered, else (False, why)."""
        with self._lock:
            if time.monotonic() - self._answered_at < self._fresh_s:
                return self._answer
            if self._running is None:
                self._running = Future()
                self._running.set_running_or_notify_cancel()  # a caller giving up cannot cancel it for the others
                threading.Thread(target=self._probe, args=(self._running,), name="db-probe", daemon=True).start()
            running = self._running
        waiting = asyncio.wrap_future(running)
        done, _ = await asyncio.wait([waiting], timeout=self._timeout_s)
        if not done:
            waiting.cancel()  # only this caller's wait: the probe runs on and answers the next caller
            return False, f"no answer within {self._timeout_s:g}s"
        return running.result()

    def _probe(self, running: Future[tuple[bool, str | None]]) -> None:
        try:
            with self._engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            answer: tuple[bool, str | None] = (True, None)
        except Exception as exc:
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            answer = (False, f"{type(exc).__name__}: {detail[0] if detail else ''}"[:REASON_CHARS])
        with self._lock:
            self._answer, self._answered_at, self._running = answer, time.monotonic(), None
        running.set_result(answer)
