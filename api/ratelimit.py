"""In-process token buckets: N requests a minute per client, with bursts of up to N.

One process, one table per limit. Memory is bounded: a bucket that has refilled to
full carries no information (a new one would be the same), so idle clients are
dropped as soon as that is true, and past ``max_clients`` the least recently seen
client is forgotten too (it starts over with a full bucket). An attacker cycling
addresses or keys therefore costs at most ``max_clients`` entries per limit.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    def __init__(self, *, per_minute: int, max_clients: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at); oldest first
        self._lock = threading.Lock()  # sync routes call in from worker threads

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def _evict(self, now: float) -> None:
        full_after = self.capacity / self.rate
        while self._buckets:
            client, (_, at) = next(iter(self._buckets.items()))
            if now - at < full_after and len(self._buckets) < self.max_clients:
                break
            del self._buckets[client]

    def wait(self, client: str) -> float:
        """Seconds until ``client`` may be served again (0: now), without spending anything."""
        if not self.enabled:
            return 0.0
        with self._lock:
            tokens = self._tokens(client, self._clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def take(self, client: str) -> float:
        """Spend one token: 0 when there was one, else the seconds until there will be (nothing spent)."""
        if not self.enabled:
            return 0.0
        with self._lock:
            now = self._clock()
            tokens = self._tokens(client, now)
            served = tokens >= 1
            self._buckets.pop(client, None)
            self._evict(now)
            self._buckets[client] = (tokens - 1 if served else tokens, now)  # the newest goes last
        return 0.0 if served else (1 - tokens) / self.rate


def client_address(host: str | None) -> str:
    """The bucket an address counts against: an IPv6 host by its /64, since one subscriber holds
    a whole /64 and could otherwise hop through 2^64 buckets."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]  # test clients and unix sockets name themselves
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class AccessLimits:
    """The service's limits, one table each: /predict per key, anonymous /predict per address,
    and failed authentications (unknown or revoked keys) per address."""

    def __init__(self, *, predict_per_key: int, predict_per_address: int, failed_auth_per_address: int,
                 max_clients: int) -> None:
        self.predict_key = TokenBuckets(per_minute=predict_per_key, max_clients=max_clients)
        self.predict_address = TokenBuckets(per_minute=predict_per_address, max_clients=max_clients)
        self.failed_auth = TokenBuckets(per_minute=failed_auth_per_address, max_clients=max_clients)
