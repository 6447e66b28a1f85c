"""Redis Streams: one stream per subject, read through a consumer group.

Redis never hands an unacknowledged entry out again by itself: this adapter reclaims entries that
stayed pending longer than the redelivery delay (XAUTOCLAIM, whichever consumer held them, itself
included after a restart) before it reads new ones. A publish with a key is dropped when the same
key was published within the de-duplication window (SET NX + XADD in one script).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from streaming.brokers.base import Broker, Delivery, Subscription

FIELD = b"data"

# KEYS[1] stream, KEYS[2] the key's marker; ARGV: body, window (ms), max length.
_PUBLISH_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'data', ARGV[1])
end
return false
"""


class RedisDelivery(Delivery):
    def __init__(self, subscription: RedisSubscription, entry_id: bytes, body: bytes, count: int) -> None:
        self._subscription = subscription
        self._entry_id = entry_id
        self.body = body
        self.position = entry_id.decode()
        self.delivery_count = count

    async def ack(self) -> None:
        await self._subscription.ack(self._entry_id)

    async def nack(self) -> None:
        """Nothing to tell Redis: the entry stays pending and is reclaimed after the redelivery delay."""


class RedisSubscription(Subscription):
    def __init__(self, client: aioredis.Redis, stream: str, group: str, consumer: str, reclaim_after: float) -> None:
        self._client = client
        self._stream = stream
        self._group = group
        self._consumer = consumer
        self._reclaim_ms = max(1, int(reclaim_after * 1000))
        self._reclaim_every = min(reclaim_after / 2, 1.0)
        self._next_reclaim = 0.0  # reclaim at once: entries a previous run left pending

    async def ack(self, entry_id: bytes) -> None:
        await self._client.xack(self._stream, self._group, entry_id)

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        if time.monotonic() >= self._next_reclaim:
            self._next_reclaim = time.monotonic() + self._reclaim_every
            claimed = await self._reclaim(max_messages)
            if claimed:
                return claimed
        reply = await self._client.xreadgroup(self._group, self._consumer, {self._stream: ">"},
                                              count=max_messages, block=max(1, int(timeout * 1000)))
        entries = [entry for _, stream_entries in reply or [] for entry in stream_entries]
        return [RedisDelivery(self, entry_id, (fields or {}).get(FIELD, b""), 1) for entry_id, fields in entries]

    async def _reclaim(self, max_messages: int) -> list[Delivery]:
        reply = await self._client.xautoclaim(self._stream, self._group, self._consumer,
                                              min_idle_time=self._reclaim_ms, start_id="0-0", count=max_messages)
        entries = [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
        if not entries:
            return []
        pending = await self._client.xpending_range(self._stream, self._group, min=entries[0][0],
                                                    max=entries[-1][0], count=len(entries) * 4 + 16)
        counts = {item["message_id"]: int(item["times_delivered"]) for item in pending}
        return [RedisDelivery(self, entry_id, fields.get(FIELD, b""), counts.get(entry_id, 2))
                for entry_id, fields in entries]

    async def lag(self) -> int | None:
        for group in await self._client.xinfo_groups(self._stream):
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self._group:
                lag = group.get("lag")
                return None if lag is None else int(lag)
        return None


class RedisBroker(Broker):
    scheme = "redis"

    _client: aioredis.Redis | None = None

    async def connect(self) -> None:
        self._client = aioredis.from_url(self.url, socket_connect_timeout=3, decode_responses=False)
        await self._client.ping()
        self._publish_once: Any = self._client.register_script(_PUBLISH_ONCE)

    @property
    def client(self) -> aioredis.Redis:
        assert self._client is not None, "connect() first"
        return self._client

    async def publish(self, subject: str, body: bytes, *, key: str | None = None) -> None:
        if key is None:
            await self.client.xadd(subject, {FIELD: body}, maxlen=self.options.max_stream_length, approximate=True)
            return
        window_ms = int(self.options.dedup_window_seconds * 1000)
        await self._publish_once(keys=[subject, f"{subject}:published:{key}"],
                                 args=[body, window_ms, self.options.max_stream_length])

    async def subscribe(self, subject: str) -> Subscription:
        try:
            # From the start of the stream: products published before the group existed are read too.
            await self.client.xgroup_create(subject, self.options.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        return RedisSubscription(self.client, subject, self.options.group, self.options.consumer_name,
                                 self.options.redeliver_after_seconds)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # the connection is already gone
                await client.aclose()
