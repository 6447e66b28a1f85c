"""NATS JetStream: one file-backed stream per subject, a durable pull consumer per group.

Unacknowledged messages come back after ``ack_wait`` (the redelivery delay); a publish carries
``Nats-Msg-Id`` so JetStream drops a second copy within the stream's duplicate window.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType
from nats.js.errors import NotFoundError

from streaming.brokers.base import Broker, Delivery, Subscription


def stream_name(subject: str) -> str:
    return "PRODUCTCAT_" + re.sub(r"[^A-Za-z0-9_-]", "_", subject)


class NatsDelivery(Delivery):
    def __init__(self, msg: Any) -> None:
        self._msg = msg
        self.body = msg.data
        self.position = str(msg.metadata.sequence.stream)
        self.delivery_count = int(msg.metadata.num_delivered)

    async def ack(self) -> None:
        await self._msg.ack_sync()  # waits for the server: an ack lost on the way would mean a redelivery

    async def nack(self) -> None:
        await self._msg.nak()


class NatsSubscription(Subscription):
    def __init__(self, psub: JetStreamContext.PullSubscription) -> None:
        self._psub = psub

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        try:
            msgs = await self._psub.fetch(batch=max_messages, timeout=max(timeout, 0.01))
        except (NatsTimeout, TimeoutError):  # nats-py raises either, depending on where the wait ended
            return []
        return [NatsDelivery(msg) for msg in msgs]

    async def lag(self) -> int | None:
        return int((await self._psub.consumer_info()).num_pending)


class NatsBroker(Broker):
    scheme = "nats"

    _nc: Client | None = None
    _js: JetStreamContext | None = None

    async def connect(self) -> None:
        # No client-side reconnection: a dropped connection fails the next call and the consumer
        # reconnects from scratch, so no ack of the old connection's messages is ever in doubt.
        self._nc = await nats.connect(servers=[self.url], connect_timeout=3, allow_reconnect=False)
        self._js = self._nc.jetstream(timeout=5)
        self._streams: set[str] = set()

    async def _stream(self, subject: str) -> str:
        assert self._js is not None, "connect() first"
        name = stream_name(subject)
        if name not in self._streams:
            try:
                await self._js.stream_info(name)
            except NotFoundError:
                await self._js.add_stream(name=name, subjects=[subject], storage=StorageType.FILE,
                                          duplicate_window=self.options.dedup_window_seconds)
            self._streams.add(name)
        return name

    async def publish(self, subject: str, body: bytes, *, key: str | None = None) -> None:
        assert self._js is not None, "connect() first"
        name = await self._stream(subject)
        await self._js.publish(subject, body, stream=name, headers={"Nats-Msg-Id": key} if key else None)

    async def subscribe(self, subject: str) -> Subscription:
        assert self._js is not None, "connect() first"
        name = await self._stream(subject)
        durable = re.sub(r"[^A-Za-z0-9_-]", "_", self.options.group)
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.options.redeliver_after_seconds,
                                max_ack_pending=max(1000, self.options.prefetch))
        psub = await self._js.pull_subscribe(subject, durable=durable, stream=name, config=config)
        return NatsSubscription(psub)

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):  # already broken: nothing left to release
                await nc.close()
