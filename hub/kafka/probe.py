"""Whether a Kafka broker answers: for readiness probes and for waiting on a broker to start."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient

T = TypeVar("T")


async def broker_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request listing at least one broker."""
    timeout_ms = int(timeout_s * 1000)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, client_id="te-hub-probe"
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster: dict[str, Any] = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return bool(cluster.get("brokers"))
    except Exception:  # any failure means "not (yet) answering"
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def kafka_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """:func:`broker_answers` from synchronous code."""
    return _run_blocking(lambda: broker_answers(bootstrap, timeout_s))


def _run_blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()
