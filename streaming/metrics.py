"""Prometheus metrics and a /health answer for the stream consumer, on a small HTTP port of its own
(a thread: the consumer's event loop never waits on a scrape)."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)


class StreamMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("productcat_stream_consumed", "Messages received from the input.", registry=r)
        self.published = Counter("productcat_stream_published", "Prediction messages published.", registry=r)
        self.dead_lettered = Counter("productcat_stream_dead_lettered", "Messages sent to the dead-letter subject.",
                                     ["kind"], registry=r)
        self.redelivered = Counter("productcat_stream_redelivered", "Messages received more than once.", registry=r)
        self.batch_size = Histogram("productcat_stream_batch_size", "Messages per micro-batch.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.batch_seconds = Histogram("productcat_stream_batch_seconds", "Time to score, publish, log and ack a "
                                       "micro-batch.", registry=r)
        self.lag = Gauge("productcat_stream_lag", "Messages waiting for this group, as the broker reports it.",
                         registry=r)
        self.reconnects = Counter("productcat_stream_reconnects", "Broker connections lost and retried.", registry=r)
        self.model_failures = Counter("productcat_stream_model_failures", "Micro-batches the model failed to score.",
                                      registry=r)
        # The challenger alias, scored off the consumer's path (api/shadow.py): as the API counts them.
        self.shadow_scored = Counter("productcat_shadow_scored", "Products the challenger scored in the champion's "
                                     "shadow", ["version"], registry=r)
        self.shadow_dropped = Counter("productcat_shadow_dropped", "Products whose shadow scoring or shadow log row "
                                      "was given up, by why", ["reason"], registry=r)


@dataclass
class Health:
    """What /health reports; the consumer updates it."""

    broker: str
    connected: bool = False
    model_version: str | None = None
    last_error: str | None = None
    last_batch_at: float | None = None

    def body(self) -> tuple[int, dict[str, Any]]:
        ok = self.connected and self.model_version is not None
        return (200 if ok else 503), {
            "status": "ok" if ok else "unavailable", "broker": self.broker, "connected": self.connected,
            "model_version": self.model_version, "last_error": self.last_error,
            "seconds_since_last_batch": None if self.last_batch_at is None else round(
                time.monotonic() - self.last_batch_at, 3),
        }


def serve(*, host: str, port: int, metrics: StreamMetrics, health: Health) -> ThreadingHTTPServer:
    """Start /health and /metrics on a daemon thread; ``shutdown()`` the returned server to stop it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/metrics":
                self._answer(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path == "/health":
                status, body = health.body()
                self._answer(status, json.dumps(body).encode(), "application/json")
            else:
                self._answer(404, b'{"detail": "not found"}', "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line each
            log.debug(format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="stream-metrics", daemon=True).start()
    log.info("stream consumer: /health and /metrics on http://%s:%d", host, server.server_address[1])
    return server
