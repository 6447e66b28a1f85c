"""Prometheus metrics of one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "productcat_requests", "HTTP requests answered", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "productcat_request_latency_seconds", "Time to answer a request", ["route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.predictions = Counter(
            "productcat_predictions", "Products classified, by predicted label", ["label"], registry=self.registry
        )
        self.needs_review = Counter(
            "productcat_needs_review", "Products answered needs_review (no category: sent to the review queue)",
            ["version"], registry=self.registry,
        )
        self.model_version = Gauge(
            "productcat_model_version", "Registry version of the model serving now (1 on the current one)",
            ["name", "version"], registry=self.registry,
        )
        self.model_failures = Counter(
            "productcat_model_failures", "Requests the model failed: it raised, or gave answers that were not valid",
            ["version", "kind"], registry=self.registry,
        )
        self.rollbacks = Counter(
            "productcat_model_rollbacks", "New champions swapped back out for failing in service",
            ["from_version", "to_version"], registry=self.registry,
        )
        self.throttled = Counter(
            "productcat_throttled", "Requests refused with 429, by the limit they hit", ["limit"],
            registry=self.registry,
        )
        self.shadow_scored = Counter(
            "productcat_shadow_scored", "Products the challenger scored in the champion's shadow", ["version"],
            registry=self.registry,
        )
        self.shadow_dropped = Counter(
            "productcat_shadow_dropped", "Products whose shadow scoring or shadow log row was given up, by why: "
            "queue_full (overload), failed (the challenger raised), not_logged (the database refused or was down)",
            ["reason"], registry=self.registry,
        )
        self.log_queue = Gauge("productcat_request_log_queue", "Request-log rows waiting to be written",
                               registry=self.registry)
        self.log_spooled = Gauge("productcat_request_log_spooled", "Request-log rows spooled to disk so far",
                                 registry=self.registry)

    def serving(self, name: str, version: str) -> None:
        self.model_version.clear()
        self.model_version.labels(name=name, version=version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
