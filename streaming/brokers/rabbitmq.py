"""RabbitMQ: one durable quorum queue per subject, reached through the default exchange.

Quorum queues count deliveries (``x-delivery-count``), so a message that keeps failing is seen
as such; unacknowledged messages go back to the queue as soon as the consumer's channel closes.
Publisher confirms make ``publish`` return only once the broker has the message. RabbitMQ keeps
no de-duplication of its own: a prediction republished after a redelivery carries the same
``message_id`` (its request_id) for downstream consumers to drop.
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from streaming.brokers.base import Broker, Delivery, Subscription

QUEUE_ARGUMENTS = {"x-queue-type": "quorum"}


class RabbitDelivery(Delivery):
    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message
        self.body = message.body
        self.position = str(message.delivery_tag)
        previous = int((message.headers or {}).get("x-delivery-count") or 0)  # type: ignore[call-overload]
        self.delivery_count = max(previous + 1, 2 if message.redelivered else 1)

    async def ack(self) -> None:
        await self._message.ack()

    async def nack(self) -> None:
        await self._message.nack(requeue=True)


class RabbitSubscription(Subscription):
    def __init__(self, broker: RabbitBroker, queue: AbstractQueue) -> None:
        self._broker = broker
        self._queue = queue
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def start(self) -> None:
        await self._queue.consume(self._inbox.put, no_ack=False)

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        self._broker.check_open()
        try:
            first = await asyncio.wait_for(self._inbox.get(), timeout)
        except TimeoutError:
            self._broker.check_open()  # a dead connection delivers nothing: say so instead of waiting forever
            return []
        messages = [first]
        while len(messages) < max_messages and not self._inbox.empty():
            messages.append(self._inbox.get_nowait())
        return [RabbitDelivery(message) for message in messages]

    async def lag(self) -> int | None:
        declared = await self._broker.channel.declare_queue(self._queue.name, passive=True)
        return int(declared.declaration_result.message_count or 0)


class RabbitBroker(Broker):
    scheme = "amqp"

    _connection: AbstractConnection | None = None
    _channel: AbstractChannel | None = None

    @property
    def channel(self) -> AbstractChannel:
        assert self._channel is not None, "connect() first"
        return self._channel

    def check_open(self) -> None:
        if self._connection is None or self._connection.is_closed or self.channel.is_closed:
            raise ConnectionError("the RabbitMQ connection is closed")

    async def connect(self) -> None:
        # A plain (not robust) connection: when it drops, the consumer reconnects from scratch and
        # RabbitMQ requeues whatever the old channel had not acknowledged.
        self._connection = await aio_pika.connect(self.url, timeout=5)
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=self.options.prefetch)
        self._queues: dict[str, AbstractQueue] = {}

    async def _queue(self, name: str) -> AbstractQueue:
        if name not in self._queues:
            self._queues[name] = await self.channel.declare_queue(name, durable=True, arguments=QUEUE_ARGUMENTS)
        return self._queues[name]

    async def publish(self, subject: str, body: bytes, *, key: str | None = None) -> None:
        await self._queue(subject)
        message = aio_pika.Message(body, content_type="application/json", message_id=key,
                                   delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await self.channel.default_exchange.publish(message, routing_key=subject, timeout=10)

    async def subscribe(self, subject: str) -> Subscription:
        subscription = RabbitSubscription(self, await self._queue(subject))
        await subscription.start()
        return subscription

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await connection.close()

    def __repr__(self) -> str:
        return f"RabbitBroker({self.url.split('@')[-1]!r})"  # never the credentials
