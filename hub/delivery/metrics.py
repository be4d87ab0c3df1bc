"""Prometheus metrics of the delivery workers, per destination and endpoint.

One :class:`DeliveryMetrics` per process (its own registry, so tests build many); the workers of
``hub deliver --all`` share it and tell themselves apart by the ``destination`` label. Endpoint
labels are directory keys (a fund code, a provider's business ID, an area code), never anything
about a person. Latency is measured from the event's ``recorded_at`` (when the source system
recorded it) to the receiver's 2xx: what a payer experiences, queueing and retries included.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: From a fast local hop to a schedule that ran for a day.
LATENCY_BUCKETS: Final = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
    3600.0,
    4 * 3600.0,
    12 * 3600.0,
    24 * 3600.0,
    48 * 3600.0,
)


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ["destination", "endpoint"]
        self.delivered = Counter(
            "hub_delivery_delivered",
            "Events a receiver answered with a 2xx (duplicates included).",
            labels,
            registry=self.registry,
        )
        self.retried = Counter(
            "hub_delivery_retried",
            "Failed attempts that were scheduled again, by the answer (status or no-answer).",
            [*labels, "reason"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "hub_delivery_dead_letters",
            "Events written to the dead-letter topic, by why: refused (a 4xx), exhausted "
            "(schedule used up), undecodable, unknown-endpoint.",
            [*labels, "reason"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "hub_delivery_duplicates",
            'Deliveries the receiver answered {"duplicate": true}: sent again after a crash or '
            "rebalance and dropped by Idempotency-Key.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "hub_delivery_latency_seconds",
            "Event recorded_at to the receiver's 2xx.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "hub_delivery_breaker_state",
            "Circuit breaker per endpoint: 0 closed, 1 open, 2 half-open.",
            labels,
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "hub_delivery_consumer_lag",
            "Outbox records per partition not settled yet: log end minus the committable offset.",
            ["destination", "partition"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "hub_delivery_in_flight",
            "Requests outstanding now.",
            ["destination"],
            registry=self.registry,
        )
        self.buffered = Gauge(
            "hub_delivery_buffered",
            "Records fetched and not settled (sending, waiting for a retry or for an earlier "
            "event of the same person).",
            ["destination"],
            registry=self.registry,
        )
