"""Dynamic micro-batching: items from concurrent requests are gathered and scored in one call.

Under concurrent load a batch is sent when it holds ``max_batch`` items or ``window_ms`` after its
first item arrived, whichever comes first; items that arrive while every worker is busy join the
batch that waits. A service without concurrent load (its last batch held one item) sends a lone
request at once, so single requests never pay the window. Each item's answer, or error, goes to
its own request only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    arrived: float  # loop.time() when submitted


class MicroBatcher(Generic[T, R]):
    """Feeds ``run_batch`` (a blocking callable: items in, one result per item out, same order)
    from an asyncio queue; ``workers`` batches may run at once on ``executor``."""

    def __init__(self, run_batch: Callable[[list[T]], Sequence[R]], *, executor: Executor, max_batch: int,
                 window_ms: float, workers: int = 1) -> None:
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch = max_batch
        self.window = window_ms / 1000
        self._pending: deque[_Pending[T, R]] = deque()
        self._arrival = asyncio.Event()
        self._free = asyncio.Semaphore(workers)
        self._gather = False  # whether the last batch had company: only then is the window worth waiting
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._collector = asyncio.get_running_loop().create_task(self._collect(), name="micro-batcher")

    async def close(self) -> None:
        """Stop gathering and let the batches already running finish."""
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
        await asyncio.gather(*self._running, return_exceptions=True)
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the service is shutting down"))

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Queue ``items`` (one request's) and wait for their results; the first item error is raised."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        pending = [_Pending[T, R](item, loop.create_future(), now) for item in items]
        self._pending.extend(pending)
        self._arrival.set()
        results = await asyncio.gather(*(p.future for p in pending), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value] - no exception left

    async def _wait_for_arrival(self, timeout: float | None) -> None:
        """Until the next item arrives, or ``timeout`` seconds (None: no limit)."""
        self._arrival.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._arrival.wait()

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                await self._wait_for_arrival(None)
                continue
            if self._gather:
                deadline = self._pending[0].arrived + self.window
                while len(self._pending) < self.max_batch and (left := deadline - loop.time()) > 0:
                    await self._wait_for_arrival(left)
            await self._free.acquire()  # while every worker is busy, new items keep joining this batch
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            # One item alone means no concurrent load: the next lone request should not wait for company.
            self._gather = len(batch) > 1
            task = loop.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Pending[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, [p.item for p in batch])
                if len(results) != len(batch):
                    raise ValueError(f"run_batch returned {len(results)} results for {len(batch)} items")
            except Exception:
                log.warning("a batch of %d failed: scoring its items one by one", len(batch), exc_info=True)
                await self._run_alone(batch)
                return
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():  # a request that went away has cancelled its future
                    pending.future.set_result(result)
        finally:
            self._free.release()

    async def _run_alone(self, batch: list[_Pending[T, R]]) -> None:
        """Each item in its own call, so an item that fails fails only its own request."""
        loop = asyncio.get_running_loop()
        for pending in batch:
            try:
                (result,) = await loop.run_in_executor(self.executor, self.run_batch, [pending.item])
            except Exception as exc:  # noqa: BLE001 - handed to the one request it belongs to
                if not pending.future.done():
                    pending.future.set_exception(exc)
                continue
            if not pending.future.done():
                pending.future.set_result(result)
