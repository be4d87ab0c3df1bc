"""Kafka client factories with the hub's delivery guarantees and connection security built in.

Every producer waits for all in-sync replicas (acks=all) and is idempotent, so a retry after a
lost acknowledgement never writes an event twice and per-key order survives retries. Every
client, producer, consumer or admin, connects with the same ``HUB_KAFKA_SECURITY_PROTOCOL``,
SASL and TLS settings: the log carries pseudonyms, names and health data, so no client of the
hub may fall back to plaintext because one factory forgot them.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from hub.settings import HubSettings


def security_options(settings: HubSettings) -> dict[str, Any]:
    """aiokafka's ``security_protocol``, ``ssl_context`` and ``sasl_*`` arguments."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_uses_tls:
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    if settings.kafka_uses_sasl:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password_value()
    return options


def librdkafka_config(settings: HubSettings) -> dict[str, str]:
    """The same connection as :func:`security_options`, for librdkafka (confluent-kafka).

    The router's loop runs on librdkafka (see :mod:`hub.routing.router`); it must connect as
    every other hub client does. Without a CA file TLS uses the system's CAs (``probe``: the
    wheel's OpenSSL is built in and knows no system path by itself); the broker's host name is
    verified, as aiokafka's default SSL context does. A key inside the certificate file is found
    there. The SASL password file is read now, when the client is made.
    """
    config: dict[str, str] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_uses_tls:
        config["ssl.ca.location"] = (
            str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile is not None else "probe"
        )
        config["ssl.endpoint.identification.algorithm"] = "https"
        if settings.kafka_ssl_certfile is not None:
            config["ssl.certificate.location"] = str(settings.kafka_ssl_certfile)
            config["ssl.key.location"] = str(
                settings.kafka_ssl_keyfile or settings.kafka_ssl_certfile
            )
    if settings.kafka_uses_sasl:
        config["sasl.mechanism"] = str(settings.kafka_sasl_mechanism)
        config["sasl.username"] = str(settings.kafka_sasl_username)
        config["sasl.password"] = settings.kafka_sasl_password_value() or ""
    return config


def make_producer(settings: HubSettings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30_000,
        **security_options(settings),
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
        **security_options(settings),
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def make_admin(settings: HubSettings, **overrides: Any) -> AIOKafkaAdminClient:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": "te-hub-admin",
        **security_options(settings),
    }
    options.update(overrides)
    return AIOKafkaAdminClient(**options)
