"""Kafka client factories with the hub's delivery guarantees built in.

Every producer waits for all in-sync replicas (acks=all) and is idempotent, so a retry after a
lost acknowledgement never writes an event twice and per-key order survives retries.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hub.settings import HubSettings


def make_producer(settings: HubSettings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    if options["acks"] != "all" or not options["enable_idempotence"]:
        raise ValueError("hub producers must use acks=all and idempotence")
    return AIOKafkaProducer(**options)


def make_consumer(settings: HubSettings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)
