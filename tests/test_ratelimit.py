"""Token buckets of the API's rate limits: the rate, the burst, and memory that stays bounded."""

from __future__ import annotations

import pytest

from api.ratelimit import TokenBuckets, client_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_n_then_one_every_60_over_n_seconds() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_minute=6, max_clients=10, clock=clock)
    assert [buckets.take("a") for _ in range(6)] == [0.0] * 6
    assert buckets.take("a") == pytest.approx(10.0)  # one token every 10 s
    assert buckets.take("b") == 0.0  # clients do not share a bucket
    clock.now += 4
    assert buckets.wait("a") == pytest.approx(6.0) and buckets.wait("a") == pytest.approx(6.0)  # waiting spends nothing
    clock.now += 6
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0


def test_zero_turns_a_limit_off() -> None:
    buckets = TokenBuckets(per_minute=0, max_clients=10)
    assert not buckets.enabled
    assert all(buckets.take("a") == 0.0 for _ in range(1000)) and len(buckets) == 0


def test_memory_stays_bounded_under_many_distinct_clients() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_minute=60, max_clients=1000, clock=clock)
    for n in range(100_000):  # an attacker cycling addresses or keys, all within one second
        buckets.take(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
        assert len(buckets) <= 1000
    assert len(buckets) == 1000
    # The most recent clients are the ones remembered: the last one is still throttled-in-progress.
    assert buckets.wait("10.1.134.159") == 0.0  # 59 tokens left of 60
    clock.now += 60  # every bucket is full again: nothing to remember
    buckets.take("fresh")
    assert len(buckets) == 1


def test_an_idle_client_is_forgotten_only_once_its_bucket_is_full() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_minute=2, max_clients=100, clock=clock)
    buckets.take("a"), buckets.take("a")
    clock.now += 59  # one token back, not two
    buckets.take("b")
    assert len(buckets) == 2 and buckets.wait("a") == 0.0
    clock.now += 1
    buckets.take("c")
    assert len(buckets) == 2  # "a" is full again: dropped, losing nothing


@pytest.mark.parametrize(("host", "bucket"), [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # the same subscriber
    ("::ffff:203.0.113.7", "203.0.113.7"),
    (None, "unknown"),
    ("testclient", "testclient"),
])
def test_addresses_are_grouped_by_what_one_client_controls(host: str | None, bucket: str) -> None:
    assert client_address(host) == bucket
