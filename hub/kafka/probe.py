"""Whether a Kafka broker answers, and why not: for readiness probes, start-up and CLI errors."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.protocol.metadata import MetadataRequest

from hub.kafka.clients import make_admin, security_options
from hub.settings import HubSettings

T = TypeVar("T")


async def broker_answers(settings: HubSettings, timeout_s: float = 5.0) -> bool:
    """Whether the brokers of ``settings`` answer a metadata request listing at least one broker.

    The probe connects like every other hub client (same TLS and SASL settings), so "answers"
    also means "would let the hub in".
    """
    timeout_ms = int(timeout_s * 1000)
    admin = make_admin(settings, request_timeout_ms=timeout_ms, client_id="te-hub-probe")
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster: dict[str, Any] = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return bool(cluster.get("brokers"))
    except Exception:  # any failure means "not (yet) answering"
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


@dataclass(frozen=True)
class ConnectionProblem:
    """Why the hub cannot connect, in one line; ``refused``: a broker answered and said no."""

    message: str
    refused: bool


async def connection_problem(
    settings: HubSettings, timeout_s: float = 5.0
) -> ConnectionProblem | None:
    """Why no bootstrap server lets the hub in (None when one does).

    aiokafka's clients report every failed bootstrap as "Unable to bootstrap", whether the
    broker is down, refused the credentials or failed the TLS handshake; one direct connection
    with the same settings tells which. Never contains the password.
    """
    problems = []
    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"),
                    int(port),
                    request_timeout_ms=int(timeout_s * 1000),
                    client_id="te-hub-probe",
                    **security_options(settings),
                ),
                timeout_s,
            )
        except (
            SaslAuthenticationFailed,
            UnsupportedSaslMechanismError,
            IllegalSaslStateError,
        ) as e:
            return ConnectionProblem(
                f"Kafka at {server.strip()} refused the SASL login of user "
                f"{settings.kafka_sasl_username} ({settings.kafka_sasl_mechanism}): "
                f"{_sasl_reason(e)}; check HUB_KAFKA_SASL_USERNAME and the password",
                refused=True,
            )
        except ssl.SSLError as e:
            return ConnectionProblem(
                f"the TLS handshake with Kafka at {server.strip()} failed ({e.reason or e}); "
                "check HUB_KAFKA_SSL_CAFILE, HUB_KAFKA_SSL_CERTFILE and HUB_KAFKA_SSL_KEYFILE",
                refused=True,
            )
        except KafkaConnectionError:  # the TCP connection was made, then the broker closed it
            return _closed_on_us(server.strip(), settings)
        except (OSError, TimeoutError, KafkaError, ValueError) as e:
            problems.append(f"{server.strip()}: {type(e).__name__} {e}".rstrip())
            continue
        try:  # a plaintext client on a SASL or TLS listener only learns on its first request
            await asyncio.wait_for(conn.send(MetadataRequest([])), timeout_s)
        except (OSError, TimeoutError, KafkaError):
            return _closed_on_us(server.strip(), settings)
        finally:
            conn.close()
        return None
    return ConnectionProblem("; ".join(problems), refused=False)


def _closed_on_us(server: str, settings: HubSettings) -> ConnectionProblem:
    """A broker that accepts connections but drops ours wants something the settings lack."""
    wants = f"another protocol than HUB_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}"
    if settings.kafka_uses_tls and settings.kafka_ssl_certfile is None:
        wants = f"a client certificate (HUB_KAFKA_SSL_CERTFILE), or {wants}"
    return ConnectionProblem(
        f"Kafka at {server} accepts connections but closed ours: does it want {wants}?",
        refused=True,
    )


def _sasl_reason(error: KafkaError) -> str:
    """The broker's message without aiokafka's "[Error 58] Name:" prefix."""
    return str(error).split(": ", 1)[-1]


def kafka_answers(settings: HubSettings, timeout_s: float = 5.0) -> bool:
    """:func:`broker_answers` from synchronous code."""
    return _run_blocking(lambda: broker_answers(settings, timeout_s))


def _run_blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()
