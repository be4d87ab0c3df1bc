"""Two `hub serve` replicas on one broker: a retry on the other replica is a duplicate, and a
restarted replica fences its dead predecessor.

Real subprocesses, real HTTP, the real broker; each replica has its own transactional id and
its own state folder (its receipts store), as the pods of a StatefulSet have.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition

from connectors.batch.cli import import_settings
from hub.kafka.clients import make_consumer
from hub.kafka.topics import ensure_topics, partition_ids
from hub.settings import HubSettings
from hub.sink.kafka import open_kafka_sink, writer_settings
from tests.conftest import event_ids_in_log
from tests.test_ingest_on_kafka import Api, _clients_file, _post, _requests
from tests.test_kafka_sink import _events, _submission

pytestmark = pytest.mark.kafka


class Replica(Api):
    """``hub serve`` with a transactional id and a state folder of its own."""

    def __init__(self, settings: HubSettings, clients_file: Path, name: str, folder: Path) -> None:
        super().__init__(settings, clients_file)
        self.name = name
        self._env.update(
            {
                "HUB_INGEST_TRANSACTIONAL_ID": name,
                "HUB_STATE_DIR": str(folder / name),
                "HUB_TOPIC_SOURCE_POSITIONS": settings.topic_source_positions,
            }
        )

    async def wait_ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.url) as http:
            for _ in range(300):
                if (await http.get("/ready")).status_code == 200:
                    return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} did not get ready")

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)


@asynccontextmanager
async def replicas(
    settings: HubSettings, folder: Path, *names: str
) -> AsyncIterator[list[Replica]]:
    clients_file = _clients_file(folder)
    async with AsyncExitStack() as stack:
        started = []
        for name in names:
            replica = Replica(settings, clients_file, name, folder)
            stack.push_async_callback(replica.stop)
            await replica.start()
            await replica.wait_ready()
            started.append(replica)
        yield started


async def _open_transactions(settings: HubSettings) -> int:
    """Partitions of the log whose last stable offset lags the high watermark (open txns)."""
    topic = settings.topic_customer_path
    partitions = [TopicPartition(topic, p) for p in await partition_ids(settings, topic)]
    committed = make_consumer(settings, group_id=None)
    everything = make_consumer(settings, group_id=None, isolation_level="read_uncommitted")
    await committed.start()
    await everything.start()
    try:
        stable = await committed.end_offsets(partitions)
        high = await everything.end_offsets(partitions)
    finally:
        await committed.stop()
        await everything.stop()
    return sum(stable[tp] < high[tp] for tp in partitions)


async def test_a_retry_on_the_other_replica_is_a_duplicate(
    hub_settings: HubSettings, tmp_path: Path
) -> None:
    await ensure_topics(hub_settings)
    requests = _requests(300)
    async with (
        replicas(hub_settings, tmp_path, "te-hub-ingest-0", "te-hub-ingest-1") as (a, b),
        httpx.AsyncClient(base_url=a.url) as to_a,
        httpx.AsyncClient(base_url=b.url) as to_b,
    ):
        semaphore = asyncio.Semaphore(16)  # both replicas write at once, transactions interleave

        async def send_then_retry(index: int, key: str, body: dict[str, Any]) -> None:
            first, retry = (to_a, to_b) if index % 2 else (to_b, to_a)
            async with semaphore:
                answer = await _post(first, key, body)
                again = await _post(retry, key, body)
            assert answer is not None
            assert again is not None
            assert answer.status_code == 202, answer.text
            assert again.status_code == 202, again.text
            assert again.headers.get("idempotent-replayed") == "true"
            assert again.json()["event_id"] == answer.json()["event_id"]

        await asyncio.gather(*(send_then_retry(i, k, b) for i, (k, b) in enumerate(requests)))
    in_log = await event_ids_in_log(hub_settings)
    assert len(in_log) == len(requests)
    assert set(in_log.values()) == {1}


async def test_a_restarted_replica_fences_its_dead_predecessor(
    hub_settings: HubSettings, tmp_path: Path
) -> None:
    """kill -9 a replica inside a transaction; the same id started again aborts it at once."""
    settings = hub_settings.model_copy(update={"ingest_write_timeout_s": 4.0})
    await ensure_topics(settings)
    requests = _requests(400)
    accepted: dict[str, str] = {}
    calm = asyncio.Event()  # cleared: a client that got no answer waits before it retries
    calm.set()
    async with (
        replicas(settings, tmp_path, "te-hub-ingest-0", "te-hub-ingest-1") as (a, b),
        httpx.AsyncClient(base_url=a.url) as to_a,
        httpx.AsyncClient(base_url=b.url) as to_b,
    ):
        semaphore = asyncio.Semaphore(16)

        async def send(key: str, body: dict[str, Any]) -> None:
            """To A; when it gives no answer (or 503), retry on B, then A again, and so on."""
            async with semaphore:
                for attempt in range(200):
                    response = await _post((to_a, to_b)[attempt % 2], key, body)
                    if response is not None and response.status_code == 202:
                        assert (
                            accepted.setdefault(key, response.json()["event_id"])
                            == (response.json()["event_id"])
                        )
                        return
                    assert response is None or response.status_code == 503, response.text
                    await calm.wait()
                    await asyncio.sleep(0.2)
            raise AssertionError("never accepted")

        load = asyncio.gather(*(send(k, body) for k, body in requests))
        calm.clear()
        # Freeze A until it is caught with a transaction open, then kill it there.
        while True:
            await asyncio.sleep(0.05)
            a.signal(signal.SIGSTOP)
            # Open twice, 0.3 s apart: a commit that A had sent just before it froze is
            # finished by the broker within milliseconds and would close it under us.
            if await _open_transactions(settings):
                await asyncio.sleep(0.3)
                if await _open_transactions(settings):
                    break
            a.signal(signal.SIGCONT)
        await a.kill()
        assert await _open_transactions(settings)  # its transaction outlives it

        await a.start()  # the same transactional id: its producer fences the dead one
        assert await _open_transactions(settings) == 0  # aborted now, not at a timeout
        calm.set()
        await load
    assert len(accepted) == len(requests)
    in_log = await event_ids_in_log(settings)
    assert set(map(str, in_log)) == set(accepted.values())
    assert set(in_log.values()) == {1}


async def test_poll_and_import_never_fence_the_api(hub_settings: HubSettings) -> None:
    """Each writer has its own transactional id; they write side by side, one store file."""
    await ensure_topics(hub_settings)
    poll = writer_settings(hub_settings, "poll", "FI/GOV/0245437-2/KEHA/jobseeker-changes")
    imports = import_settings(hub_settings, "ab" * 32)
    ids = {s.ingest_transactional_id for s in (hub_settings, poll, imports)}
    assert len(ids) == 3
    assert not any(
        i.startswith(hub_settings.ingest_transactional_id)
        for i in ids - {hub_settings.ingest_transactional_id}
    )
    events = _events(6)
    async with (
        open_kafka_sink(hub_settings) as api_sink,
        open_kafka_sink(poll) as poll_sink,
        open_kafka_sink(imports) as import_sink,
    ):
        sinks = [api_sink, poll_sink, import_sink]
        for round_ in range(2):  # interleaved: a shared id would have fenced the earlier ones
            for n, sink in enumerate(sinks):
                await sink.submit([_submission(events[round_ * 3 + n])])
    assert await event_ids_in_log(hub_settings) == {e.envelope.event_id: 1 for e in events[:6]}
