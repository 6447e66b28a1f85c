"""The one publish/subscribe interface the consumer speaks; one adapter per broker.

Delivery is at least once: a message stays with the broker until ``Delivery.ack()``, and one
that is never acknowledged (the consumer died, its connection dropped) is delivered again.
``publish(..., key=...)`` names a message so a second publish under the same key (the same
input, redelivered) can be dropped by the broker where it can do that (NATS, Redis).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class BrokerOptions:
    """What every adapter may need from the settings (each uses the fields its broker has)."""

    group: str
    consumer_name: str
    redeliver_after_seconds: float
    dedup_window_seconds: float
    max_stream_length: int
    prefetch: int


class Delivery(ABC):
    """One received message: its bytes, where it sits in the broker, how often it came."""

    body: bytes
    position: str  # broker-side id (stream sequence, delivery tag, entry id, offset), for logs
    delivery_count: int  # 1 on the first delivery

    @abstractmethod
    async def ack(self) -> None:
        """Done with it: the broker forgets it."""

    @abstractmethod
    async def nack(self) -> None:
        """Not done: deliver it again (at once where the broker can, else after the redelivery delay)."""


class Subscription(ABC):
    @abstractmethod
    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages``; returns as soon as some arrived, or empty after ``timeout`` seconds."""

    async def lag(self) -> int | None:
        """Messages waiting for this group, where the broker says so."""
        return None


class Broker(ABC):
    scheme: ClassVar[str]

    def __init__(self, url: str, options: BrokerOptions) -> None:
        self.url = url
        self.options = options

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def publish(self, subject: str, body: bytes, *, key: str | None = None) -> None:
        """Returns once the broker has stored the message (publisher acknowledgement)."""

    @abstractmethod
    async def subscribe(self, subject: str) -> Subscription:
        """A durable subscription of ``options.group``: what it has not acknowledged survives it."""

    @abstractmethod
    async def close(self) -> None:
        """Safe to call twice and after a failed connect."""
