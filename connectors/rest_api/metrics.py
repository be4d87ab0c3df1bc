"""Prometheus metrics of the ingest API."""

from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
)

_PUBLISH_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


# --- metrics ----------------------------------------------------------------------------------


class IngestMetrics:
    """Prometheus metrics of one app (own registry, so tests can build many apps)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "hub_ingest_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "hub_ingest_request_seconds",
            "Time to answer a request.",
            ["route"],
            registry=registry,
        )
        self.rejects = Counter(
            "hub_ingest_rejects",
            "Rejected requests by problem type.",
            ["reason"],
            registry=registry,
        )
        self.events = Counter(
            "hub_ingest_events",
            "Events by type: accepted (written now) or replayed (written before).",
            ["event_type", "outcome"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "hub_ingest_publish_seconds",
            "Time of one sink.submit (until the broker acknowledged), by outcome.",
            ["outcome"],
            buckets=_PUBLISH_BUCKETS,
            registry=registry,
        )

    def reject(self, slug: str) -> None:
        self.rejects.labels(reason=slug).inc()
