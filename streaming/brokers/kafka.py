"""Kafka (aiokafka): a topic per subject, a consumer group with manual offset commits.

``ack`` commits the message's offset + 1 on its partition; the consumer acknowledges each
micro-batch in order, so a commit never skips an unprocessed message. ``nack`` seeks back to the
message, so it and the ones after it are fetched again (the consumer is idempotent on them).
Kafka keeps no delivery count (every delivery reports 1). The producer is idempotent (retries
never duplicate) and waits for all in-sync replicas; it does not de-duplicate across restarts.

Not exercised by the test suite: no Kafka broker runs on the development machine.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streaming.brokers.base import Broker, Delivery, Subscription


class KafkaDelivery(Delivery):
    def __init__(self, consumer: AIOKafkaConsumer, record: Any) -> None:
        self._consumer = consumer
        self._partition = TopicPartition(record.topic, record.partition)
        self._offset = record.offset
        self.body = record.value or b""
        self.position = f"{record.partition}:{record.offset}"
        self.delivery_count = 1

    async def ack(self) -> None:
        await self._consumer.commit({self._partition: OffsetAndMetadata(self._offset + 1, "")})

    async def nack(self) -> None:
        self._consumer.seek(self._partition, self._offset)


class KafkaSubscription(Subscription):
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        batches = await self.consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_messages)
        return [KafkaDelivery(self.consumer, record) for records in batches.values() for record in records]

    async def lag(self) -> int | None:
        total = 0
        for partition in self.consumer.assignment():
            highwater = self.consumer.highwater(partition)
            if highwater is None:
                return None
            total += highwater - await self.consumer.position(partition)
        return total


class KafkaBroker(Broker):
    scheme = "kafka"

    _producer: AIOKafkaProducer | None = None

    @property
    def bootstrap(self) -> str:
        return self.url.split("://", 1)[1].rstrip("/")

    async def connect(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all")
        await self._producer.start()
        self._consumers: list[AIOKafkaConsumer] = []

    async def publish(self, subject: str, body: bytes, *, key: str | None = None) -> None:
        assert self._producer is not None, "connect() first"
        await self._producer.send_and_wait(subject, body, key=key.encode() if key else None)

    async def subscribe(self, subject: str) -> Subscription:
        consumer = AIOKafkaConsumer(
            subject, bootstrap_servers=self.bootstrap, group_id=self.options.group, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=self.options.prefetch,
        )
        await consumer.start()
        self._consumers.append(consumer)
        return KafkaSubscription(consumer)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        for consumer in getattr(self, "_consumers", []):
            with contextlib.suppress(Exception):  # already disconnected
                await consumer.stop()
        self._consumers = []
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
