"""Settings of the stream consumer (``PRODUCTCAT_STREAM_*``); the model store and the request log
come from the API's and ML settings, so /predict and the consumer share champion and log."""

from __future__ import annotations

import socket
from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SCHEMES = ("nats", "amqp", "redis", "kafka")


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRODUCTCAT_STREAM_", env_file=".env", extra="ignore")

    url: str = Field(
        "nats://127.0.0.1:4222",
        description="Broker URL; its scheme picks the adapter: nats:// (JetStream), amqp:// (RabbitMQ), "
        "redis:// (Redis Streams), kafka://host:port[,host:port] (Kafka).",
    )
    input: str = Field("products.in", description="Subject / queue / stream / topic the products arrive on.")
    output: str = Field("products.predictions", description="Where prediction messages go.")
    dead_letter: str = Field("products.dead_letter", description="Where malformed messages go, with the reason.")
    group: str = Field("productcat-scorer", description="Consumer group (NATS durable, Redis/Kafka group).")
    consumer_name: str = Field(
        default_factory=socket.gethostname, description="This consumer within its group (Redis Streams)."
    )
    batch_size: int = Field(32, ge=1, le=1024, description="Most products scored in one forward pass.")
    batch_window_ms: float = Field(
        50.0, ge=0, description="Longest the first message of a micro-batch waits for others to join it."
    )
    poll_seconds: float = Field(1.0, gt=0, description="Longest one fetch waits for a first message.")
    max_message_bytes: int = Field(
        131_072, ge=256, description="Larger messages are dead-lettered unread (a product's text is at most ~26 kB)."
    )
    top_k: int = Field(3, ge=1, le=20, description="Labels (with probabilities) in each prediction message.")
    redeliver_after_seconds: float = Field(
        30.0, gt=0, description="How long an unacknowledged message waits before it is delivered again "
        "(NATS ack_wait, Redis claim idle time; RabbitMQ redelivers as soon as the consumer's connection drops).",
    )
    max_deliveries: int = Field(
        5, ge=1, description="A message delivered this many times without an ack is dead-lettered, not retried.",
    )
    dedup_window_seconds: float = Field(
        600.0, gt=0, description="How long a published prediction's id is remembered, so a redelivered input "
        "publishes no second prediction (NATS Nats-Msg-Id, Redis).",
    )
    max_stream_length: int = Field(1_000_000, ge=1, description="Redis Streams: entries kept per stream (approx).")
    metrics_host: str = Field("127.0.0.1", description="Address of the /health and /metrics endpoint.")
    metrics_port: int = Field(9108, ge=0, le=65535, description="Port of /health and /metrics; 0 turns it off.")
    lag_interval_seconds: float = Field(5.0, gt=0, description="How often the broker is asked for the backlog.")
    reconnect_max_seconds: float = Field(10.0, gt=0, description="Longest pause between reconnection attempts.")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        _scheme(url)
        return url

    @property
    def scheme(self) -> str:
        """The broker's short name, also the request log's ``channel``: nats, amqp, redis or kafka."""
        return _scheme(self.url)


def _scheme(url: str) -> str:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    scheme = {"amqps": "amqp", "rediss": "redis"}.get(scheme, scheme)  # TLS variants: same broker
    if scheme not in SCHEMES:
        raise ValueError(f"the broker URL must start with one of {', '.join(s + '://' for s in SCHEMES)}")
    return scheme


@lru_cache
def get_stream_settings() -> StreamSettings:
    return StreamSettings()
