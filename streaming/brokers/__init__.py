"""Broker adapters behind one interface (``streaming.brokers.base``), chosen by the URL's scheme."""

from __future__ import annotations

from streaming.brokers.base import Broker, BrokerOptions, Delivery, Subscription
from streaming.settings import StreamSettings

__all__ = ["Broker", "BrokerOptions", "Delivery", "Subscription", "make_broker"]


def make_broker(settings: StreamSettings, *, group: str | None = None) -> Broker:
    """The adapter for ``settings.url`` (imported lazily: each needs only its own client library)."""
    options = BrokerOptions(
        group=group or settings.group, consumer_name=settings.consumer_name,
        redeliver_after_seconds=settings.redeliver_after_seconds,
        dedup_window_seconds=settings.dedup_window_seconds, max_stream_length=settings.max_stream_length,
        prefetch=settings.batch_size * 2,
    )
    scheme = settings.scheme
    if scheme == "nats":
        from streaming.brokers.nats_jetstream import NatsBroker

        return NatsBroker(settings.url, options)
    if scheme == "amqp":
        from streaming.brokers.rabbitmq import RabbitBroker

        return RabbitBroker(settings.url, options)
    if scheme == "redis":
        from streaming.brokers.redis_streams import RedisBroker

        return RedisBroker(settings.url, options)
    from streaming.brokers.kafka import KafkaBroker

    return KafkaBroker(settings.url, options)
