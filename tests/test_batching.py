"""The micro-batcher with a real (tiny) scoring function on a real thread pool: answers go to the
request that asked, in order; the window bounds the wait; one bad item fails only its own request."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from api.batching import MicroBatcher
from ml.models.transformer import length_buckets, training_batches


class Doubler:
    """Doubles numbers, one call per batch; records the batches; refuses negatives (a whole call fails)."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.batches: list[list[int]] = []
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.batches.append(list(items))
        if any(x < 0 for x in items):
            raise ValueError(f"negative item in {items}")
        time.sleep(self.seconds)
        return [2 * x for x in items]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1) as pool:
        yield pool


async def _started(fn: Doubler, executor: ThreadPoolExecutor, **knobs: float) -> MicroBatcher[int, int]:
    batcher = MicroBatcher(fn, executor=executor, **knobs)
    batcher.start()
    return batcher


def test_each_request_gets_its_own_answers_in_order(executor: ThreadPoolExecutor) -> None:
    fn = Doubler(seconds=0.01)

    async def scenario() -> list[list[int]]:
        batcher = await _started(fn, executor, max_batch=8, window_ms=20)
        try:
            requests = [[i] for i in range(40)] + [[100, 101, 102]]
            return await asyncio.gather(*(batcher.submit(r) for r in requests))
        finally:
            await batcher.close()

    answers = asyncio.run(scenario())
    assert answers == [[2 * i] for i in range(40)] + [[200, 202, 204]]
    assert [x for batch in fn.batches for x in batch] == [*range(40), 100, 101, 102]  # first come, first scored
    assert max(map(len, fn.batches)) == 8 and len(fn.batches) < 41  # gathered, never above max_batch


def test_a_lone_request_does_not_wait_for_the_window(executor: ThreadPoolExecutor) -> None:
    async def scenario() -> float:
        batcher = await _started(Doubler(), executor, max_batch=32, window_ms=2000)
        try:
            started = time.perf_counter()
            assert await batcher.submit([3]) == [6]
            return time.perf_counter() - started
        finally:
            await batcher.close()

    assert asyncio.run(scenario()) < 0.5


def test_under_load_a_request_waits_its_window_and_no_longer(executor: ThreadPoolExecutor) -> None:
    window = 0.3
    fn = Doubler()

    async def scenario() -> tuple[float, float]:
        batcher = await _started(fn, executor, max_batch=4, window_ms=window * 1000)
        try:
            await asyncio.gather(*(batcher.submit([i]) for i in range(3)))  # concurrent load: gathering is on
            started = time.perf_counter()
            await batcher.submit([7])  # alone: waits for company until the window closes
            alone = time.perf_counter() - started
            started = time.perf_counter()
            await asyncio.gather(*(batcher.submit([i]) for i in range(4)))  # a full batch goes at once
            return alone, time.perf_counter() - started
        finally:
            await batcher.close()

    alone, full = asyncio.run(scenario())
    assert window * 0.9 <= alone < window + 0.2
    assert full < window * 0.5
    assert fn.batches[-2:] == [[7], [0, 1, 2, 3]]


def test_an_item_that_fails_fails_only_its_own_request(executor: ThreadPoolExecutor) -> None:
    fn = Doubler(seconds=0.05)

    async def scenario() -> list[object]:
        batcher = await _started(fn, executor, max_batch=8, window_ms=50)
        try:
            await asyncio.gather(batcher.submit([0]), batcher.submit([0]))  # gathering on
            requests = [[1], [-1], [2], [3, -4], [5]]
            return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
        finally:
            await batcher.close()

    ok1, bad, ok2, bad_pair, ok3 = asyncio.run(scenario())
    assert (ok1, ok2, ok3) == ([2], [4], [10])
    assert isinstance(bad, ValueError) and isinstance(bad_pair, ValueError)
    assert [1, -1, 2, 3, -4, 5] in fn.batches  # they did share one call before it was split


def test_length_buckets_cover_every_row_once_with_little_padding() -> None:
    lengths = [12, 30, 7, 31, 12, 64, 8, 29, 13, 7, 30, 12]
    groups = length_buckets(lengths, max_batch=4, max_padding=0.3)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        sizes = [lengths[i] for i in group]
        assert len(group) <= 4 and sizes == sorted(sizes)
        assert len(group) * max(sizes) <= 1.3 * sum(sizes) or len(group) == 1
    assert length_buckets([], max_batch=4) == []


def test_training_batches_shuffle_every_row_once_into_batches_of_similar_length() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1_000).tolist()
    batches = training_batches(lengths, batch_size=16, generator=torch.Generator().manual_seed(1))
    assert sorted(i for batch in batches for i in batch) == list(range(1_000))
    assert sorted(map(len, batches)) == [8] + [16] * 62  # pools of 800 rows: the last pool's remainder

    def padding(groups: list[list[int]]) -> int:
        return sum(len(g) * max(lengths[i] for i in g) - sum(lengths[i] for i in g) for g in groups)

    plain = [list(range(i, min(i + 16, 1_000))) for i in range(0, 1_000, 16)]
    assert padding(batches) < padding(plain) / 5
    again = training_batches(lengths, batch_size=16, generator=torch.Generator().manual_seed(1))
    other = training_batches(lengths, batch_size=16, generator=torch.Generator().manual_seed(2))
    assert again == batches and other != batches
