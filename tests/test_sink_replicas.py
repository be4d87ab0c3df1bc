"""Two `hub serve` replicas on one broker: a retry on the other replica is a duplicate, and a
restarted replica fences its dead predecessor.

Real subprocesses, real HTTP, the real broker; each replica has its own transactional id and
its own state folder (its receipts store), as the pods of a StatefulSet have.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition

from connectors.batch.cli import import_settings
from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.api_requests import registration_request
from hub.events.customer_path import JobseekerRegistered
from hub.identity import Pseudonymizer
from hub.kafka.clients import make_consumer
from hub.kafka.topics import ensure_topics, partition_ids
from hub.settings import HubSettings
from hub.sink.kafka import open_kafka_sink, writer_settings
from tests.conftest import event_ids_in_log
from tests.test_ingest_on_kafka import SECRET, Api, _clients_file, _post, _requests
from tests.test_kafka_sink import _events, _submission

pytestmark = pytest.mark.kafka
EXIT_WAIT_S = 10.0  # how long teardown waits for a replica to exit, per signal


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

    async def start(self) -> None:
        try:
            async with asyncio.timeout(60):
                await super().start()
        except TimeoutError:
            raise TimeoutError(f"{self.name} did not answer /health within 60 s") from None

    async def wait_ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            for _ in range(300):
                if (await http.get("/ready")).status_code == 200:
                    return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} did not get ready")

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    async def kill(self) -> None:
        """kill -9 (a SIGSTOPped process dies of it too) and reap it, within seconds."""
        assert self.process is not None
        with suppress(ProcessLookupError):
            self.process.kill()
        await self._reaped("SIGKILL")

    async def stop(self) -> None:
        """Teardown whatever state the replica is in: woken (it may be SIGSTOPped, and a stopped
        process never acts on SIGTERM), asked to exit, then SIGKILLed; never waited on without
        end, so a failed test cannot leave a replica behind or hang the next one."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), EXIT_WAIT_S)
        except TimeoutError:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.kill()
            await self._reaped("SIGKILL")

    async def _reaped(self, after: str) -> None:
        assert self.process is not None
        try:
            await asyncio.wait_for(self.process.wait(), EXIT_WAIT_S)
        except TimeoutError:
            pid = self.process.pid
            raise AssertionError(
                f"{self.name} (pid {pid}) did not exit {EXIT_WAIT_S} s after {after}"
            ) from None


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
    async with asyncio.timeout(30):
        await committed.start()
        await everything.start()
        try:
            stable = await committed.end_offsets(partitions)
            high = await everything.end_offsets(partitions)
        finally:
            await committed.stop()
            await everything.stop()
    return sum(stable[tp] < high[tp] for tp in partitions)


def _request_stream() -> Iterator[tuple[str, dict[str, Any]]]:
    """Registrations without end for a test's purposes (a million people, each made only when
    taken), each with an Idempotency-Key of its own."""
    people = simulate(SimulationConfig(jobseekers=1_000_000, seed=31), Pseudonymizer(SECRET))
    for path in people:
        if isinstance(path[0], JobseekerRegistered):
            yield str(uuid.uuid4()), registration_request(path[0])


async def _until(condition: Callable[[], bool], seconds: float, failure: Callable[[], str]) -> None:
    """Wait for ``condition``; fail with ``failure()`` if it is still false after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, failure()
        await asyncio.sleep(0.05)


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
    stream = _request_stream()  # no fixed count: A is never out of work before it is caught
    taken: list[str] = []  # the key of every request a client took from the stream
    accepted: dict[str, str] = {}
    flowing = asyncio.Event()  # set: clients take new requests from the stream
    flowing.set()
    calm = asyncio.Event()  # cleared: a client that got no answer waits before it retries
    calm.set()
    clients = asyncio.Semaphore(16)  # requests in flight; a waiting client gives its place up
    clock = asyncio.get_running_loop().time
    async with (
        replicas(settings, tmp_path, "te-hub-ingest-0", "te-hub-ingest-1") as (a, b),
        httpx.AsyncClient(base_url=a.url) as to_a,
        httpx.AsyncClient(base_url=b.url) as to_b,
        asyncio.TaskGroup() as load,  # on any failure its tasks are cancelled, not left running
    ):
        sends: set[asyncio.Task[None]] = set()

        async def send(key: str, body: dict[str, Any]) -> None:
            """To A; when it gives no answer (or 503), retry on B, then A again, and so on."""
            in_flight = True
            try:
                for attempt in range(200):
                    response = await _post((to_a, to_b)[attempt % 2], key, body)
                    if response is not None and response.status_code == 202:
                        assert (
                            accepted.setdefault(key, response.json()["event_id"])
                            == (response.json()["event_id"])
                        )
                        return
                    assert response is None or response.status_code == 503, response.text
                    if in_flight:  # the stream goes on while this one waits
                        in_flight = False
                        clients.release()
                    await calm.wait()
                    await asyncio.sleep(0.2)
            finally:
                if in_flight:
                    clients.release()
            raise AssertionError(f"request {key} never accepted in 200 attempts")

        async def feed() -> None:
            """The request stream: a new request whenever a client is free, while flowing."""
            while True:
                await flowing.wait()
                await clients.acquire()
                key, body = next(stream)
                taken.append(key)
                sends.add(load.create_task(send(key, body)))

        calm.clear()  # until A is dead and back, only A writes: an open transaction is A's
        feeder = load.create_task(feed())
        # Freeze A until it is caught with a transaction open, then kill it there.
        deadline = clock() + 45
        while True:
            assert clock() < deadline, (
                f"A was not caught with a transaction open within 45 s "
                f"({len(accepted)} of {len(taken)} requests accepted meanwhile)"
            )
            await asyncio.sleep(0.05)
            a.signal(signal.SIGSTOP)
            # Open twice, 0.3 s apart: a commit that A had sent just before it froze is
            # finished by the broker within milliseconds and would close it under us.
            if await _open_transactions(settings):
                await asyncio.sleep(0.3)
                if await _open_transactions(settings):
                    break
            a.signal(signal.SIGCONT)
        flowing.clear()  # no new requests while A is down: they would only pile up waiting
        await a.kill()
        assert await _open_transactions(settings), "its transaction should outlive it"

        await a.start()  # the same transactional id: its producer fences the dead one
        assert await _open_transactions(settings) == 0, "not aborted at the restart (fencing)"
        calm.set()
        flowing.set()  # the restarted A takes new writes under the same id
        before = len(accepted)
        await _until(
            lambda: len(accepted) >= before + 100,
            45,
            lambda: f"only {len(accepted) - before} requests accepted in 45 s after the restart",
        )
        feeder.cancel()  # the stream stops; every request taken is seen through to an answer
        await _until(
            lambda: all(task.done() for task in sends),
            60,
            lambda: (
                f"{sum(not task.done() for task in sends)} requests still unanswered 60 s "
                f"after the stream stopped ({len(accepted)} of {len(taken)} accepted)"
            ),
        )
    assert len(accepted) == len(taken)
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
