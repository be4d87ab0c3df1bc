"""The router on a real broker: exactly once into the outboxes, through kills and rebalances.

Every test counts event ids in (what the pure routing says each event should become, from the
routes and the person's earlier events) and out (what the outboxes hold under read_committed).
The kill tests run ``hub route`` as a subprocess and SIGKILL it while a transaction of it is
open: seen as an outbox whose high watermark is past its last stable offset.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from pydantic import SecretStr

from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.paths import in_time_order
from hub.broker.local import LocalKafka
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer, make_business_id
from hub.kafka.clients import make_admin, make_consumer, make_producer
from hub.kafka.dead_letters import DeadLetter, DeadLetterStage
from hub.kafka.publisher import encode_event, open_publisher
from hub.kafka.reading import read_topic
from hub.kafka.topics import outbox_topic
from hub.routing.resolve import PersonState, Unroutable, next_state, route_event
from hub.routing.router import (
    DESTINATION_HEADER,
    SOURCE_HEADER,
    ensure_router_topics,
    router_group_id,
    run_router,
)
from hub.routing.routes import RoutesConfig, load_routes
from hub.routing.state import restore_partitions
from hub.serde import SingleObjectSerializer
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT, SIMULATION_SECRET, hub_environment, settings_for

pytestmark = pytest.mark.kafka

PARTITIONS = 6


@pytest.fixture(scope="module")
def routes() -> RoutesConfig:
    return load_routes(HubSettings())


def _settings(bootstrap: str, tmp_path: Path, **overrides: Any) -> HubSettings:
    return settings_for(
        bootstrap,
        partitions=PARTITIONS,
        state_dir=tmp_path / "hub-state",
        pseudonym_secret=SecretStr(SIMULATION_SECRET),
        **overrides,
    )


def _events(jobseekers: int, seed: int) -> list[CustomerPathEvent]:
    config = SimulationConfig(jobseekers=jobseekers, seed=seed)
    return list(in_time_order(list(simulate(config, Pseudonymizer(SIMULATION_SECRET)))))


def expected_outbox(routes: RoutesConfig, events: Iterable[CustomerPathEvent]) -> Counter[Any]:
    """(destination, event id) → how often the pure routing sends it, in each person's order."""
    states: dict[str, PersonState | None] = {}
    expected: Counter[tuple[str, str]] = Counter()
    for event in events:
        record = event.to_avro()
        subject = event.envelope.subject
        state = next_state(states.get(subject), event.event_type, record)
        states[subject] = state
        for routed in route_event(routes, event.event_type, record, state):
            expected[(routed.destination, str(event.envelope.event_id))] += 1
    return expected


async def publish(settings: HubSettings, routes: RoutesConfig, events: list[Any]) -> None:
    """The events into the log (aiokafka, acks=all), raw ``(key, value)`` pairs among them."""
    await ensure_router_topics(settings, routes)
    async with open_publisher(settings) as publisher:
        models = [e for e in events if isinstance(e, CustomerPathEvent)]
        raw = [e for e in events if not isinstance(e, CustomerPathEvent)]
        async for _ in publisher.publish_all(models):
            pass
    if raw:
        producer = make_producer(settings)
        await producer.start()
        try:
            for key, value in raw:
                await producer.send_and_wait(settings.topic_customer_path, value, key=key)
        finally:
            await producer.stop()


@dataclass(frozen=True)
class OutboxRecord:
    destination: str
    partition: int
    offset: int
    key: bytes
    headers: dict[str, bytes]

    @property
    def event_id(self) -> str:
        return self.headers["ce_id"].decode()

    @property
    def source(self) -> tuple[int, int]:
        _topic, partition, offset = self.headers[SOURCE_HEADER].decode().rsplit("/", 2)
        return int(partition), int(offset)


async def read_outboxes(settings: HubSettings, routes: RoutesConfig) -> list[OutboxRecord]:
    """Every committed outbox record (read_committed), in offset order per partition."""
    found: list[OutboxRecord] = []
    for destination in sorted(routes.destinations):
        async for record in read_topic(settings, outbox_topic(settings, destination)):
            headers = dict(record.headers)
            assert headers[DESTINATION_HEADER] == destination.encode()
            found.append(
                OutboxRecord(destination, record.partition, record.offset, record.key, headers)
            )
    return found


def assert_exactly_once_in_order(
    found: list[OutboxRecord], expected: Counter[Any], log_partitions: dict[str, int]
) -> None:
    got = Counter((r.destination, r.event_id) for r in found)
    missing = expected - got
    extra = got - expected
    assert not missing, f"{sum(missing.values())} routed event(s) missing, e.g. {list(missing)[:3]}"
    assert not extra, f"{sum(extra.values())} duplicate or unexpected, e.g. {list(extra)[:3]}"
    by_person: dict[tuple[str, bytes], list[OutboxRecord]] = defaultdict(list)
    for record in found:
        # murmur2 like the log (aiokafka): the outbox partition is the log record's partition.
        assert record.partition == record.source[0] == log_partitions[record.event_id]
        by_person[(record.destination, record.key)].append(record)
    for records in by_person.values():
        offsets = [r.offset for r in records]
        assert offsets == sorted(offsets)
        sources = [r.source[1] for r in records]
        assert sources == sorted(sources), "a person's events left the outbox out of log order"


async def log_partitions(settings: HubSettings) -> dict[str, int]:
    partitions: dict[str, int] = {}
    async for record in read_topic(settings, settings.topic_customer_path):
        for key, value in record.headers:
            if key == "ce_id":
                partitions[value.decode()] = record.partition
    return partitions


async def routed_to_the_end(settings: HubSettings) -> bool:
    """The router group's committed offsets are at the log's end on every partition."""
    consumer = make_consumer(settings, group_id=None)
    admin = make_admin(settings)
    await consumer.start()
    await admin.start()
    try:
        tps = [TopicPartition(settings.topic_customer_path, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(router_group_id(settings))
        return all(
            tp in committed and committed[tp].offset >= ends[tp] for tp in tps if ends[tp] > 0
        )
    finally:
        await admin.close()
        await consumer.stop()


async def wait_routed(settings: HubSettings, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await routed_to_the_end(settings):
        assert time.monotonic() < deadline, f"log not routed to its end in {timeout_s} s"
        await asyncio.sleep(0.3)


class TransactionWatch:
    """Sees a router transaction open: an outbox whose high watermark is past its LSO."""

    def __init__(self, settings: HubSettings) -> None:
        topic = outbox_topic(settings, "reporting")  # every event goes there
        self.partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.uncommitted = make_consumer(
            settings, group_id=None, isolation_level="read_uncommitted"
        )
        self.committed = make_consumer(settings, group_id=None)

    async def __aenter__(self) -> TransactionWatch:
        await self.uncommitted.start()
        await self.committed.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.uncommitted.stop()
        await self.committed.stop()

    async def open(self) -> bool:
        high = await self.uncommitted.end_offsets(self.partitions)
        stable = await self.committed.end_offsets(self.partitions)
        return any(high[tp] > stable[tp] for tp in self.partitions)

    async def wait_open(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.open():
                return True
            await asyncio.sleep(0.01)
        return False

    async def uncommitted_records(self) -> int:
        """Records on the wire, committed or not (read_uncommitted), in the reporting outbox."""
        high = await self.uncommitted.end_offsets(self.partitions)
        return sum(high.values())


class RouterProcess:
    """``hub route`` as an operator runs it, its output in a file."""

    def __init__(
        self,
        settings: HubSettings,
        workdir: Path,
        name: str,
        *args: str,
        **env: str,
    ) -> None:
        self.log_path = workdir / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        environment = hub_environment(
            settings,
            HUB_LOG_LEVEL="INFO",
            PYTHONPATH=str(REPO_ROOT),
            PYTHONFAULTHANDLER="1",
            **env,
        )
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub",
                "route",
                "--progress-every",
                "1",
                "--batch-size",
                "200",
                *args,
            ],
            env=environment,
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            assert self.process.poll() is None, f"router exited: {self.output()[-2000:]}"
            assert time.monotonic() < deadline, f"no {text!r} in: {self.output()[-2000:]}"
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self._log.close()
        return code


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


# -- (a) and (d): one log with simulated events, a poison record and an unroutable enrolment --


@dataclass
class RoutedLog:
    settings: HubSettings
    expected: Counter[Any]
    found: list[OutboxRecord]
    partitions: dict[str, int]
    dead_letters: list[tuple[bytes | None, bytes | None, DeadLetter]]
    poison: tuple[bytes, bytes]
    unroutable: CustomerPathEvent
    unroutable_reason: str
    mis_keyed: CustomerPathEvent


@pytest.fixture(scope="module")
async def routed_log(
    kafka_bootstrap: str, routes: RoutesConfig, tmp_path_factory: pytest.TempPathFactory
) -> RoutedLog:
    settings = _settings(kafka_bootstrap, tmp_path_factory.mktemp("routed"))
    events: list[Any] = _events(jobseekers=300, seed=7)
    enrolment = next(e for e in events if e.event_type == "ServiceEnrolled")
    unknown = make_business_id(9_876_543)
    unroutable = enrolment.model_copy(
        update={
            "envelope": enrolment.envelope.model_copy(update={"event_id": uuid.uuid4()}),
            "payload": enrolment.payload.model_copy(update={"provider_business_id": unknown}),
        }
    )
    try:
        route_event(routes, "ServiceEnrolled", unroutable.to_avro(), None)
        raise AssertionError("the enrolment should be unroutable")
    except Unroutable as error:
        reason = error.reason
    poison = (b"poison-key", b"\xc3\x01 not an event at all")
    # A copy of an event keyed by the person's identity code: never an outbox key.
    copy = events[5].model_copy(
        update={"envelope": events[5].envelope.model_copy(update={"event_id": uuid.uuid4()})}
    )
    identity_code = str(cast(Any, copy.payload).personal_identity_code)
    mis_keyed = (identity_code.encode(), encode_event(SingleObjectSerializer(), copy, None).value)
    expected = expected_outbox(routes, events)
    log = [*events[:1000], poison, *events[1000:2000], unroutable, mis_keyed, *events[2000:]]
    await publish(settings, routes, log)
    stats = await asyncio.to_thread(run_router, settings, routes, until_idle=True)
    assert stats.records == len(log)
    letters = [
        (r.key, r.value, DeadLetter.from_headers(r.headers))
        async for r in read_topic(settings, settings.topic_dead_letter)
    ]
    return RoutedLog(
        settings,
        expected,
        await read_outboxes(settings, routes),
        await log_partitions(settings),
        letters,
        poison,
        unroutable,
        reason,
        copy,
    )


async def test_simulated_events_reach_each_outbox_exactly_once_in_person_order(
    routed_log: RoutedLog,
) -> None:
    assert sum(routed_log.expected.values()) > 3000
    assert {d for d, _ in routed_log.expected} == {
        "kela",
        "funds",
        "providers",
        "municipal",
        "reporting",
    }
    assert_exactly_once_in_order(routed_log.found, routed_log.expected, routed_log.partitions)


async def test_a_poison_record_and_an_unroutable_event_are_dead_letters_and_the_rest_flows(
    routed_log: RoutedLog,
) -> None:
    by_stage = {
        letter.stage: (key, value, letter) for key, value, letter in routed_log.dead_letters
    }
    assert len(routed_log.dead_letters) == 3
    key, value, decode = by_stage[DeadLetterStage.DECODE]
    assert key is None  # the log key is not a pseudonym and no subject could be decoded
    assert value == routed_log.poison[1]
    assert decode.source_topic == routed_log.settings.topic_customer_path
    assert decode.error_class
    assert decode.reason
    [(key, value, route)] = [
        letter
        for letter in routed_log.dead_letters
        if letter[2].stage is DeadLetterStage.ROUTE and letter[2].error_class == "Unroutable"
    ]
    event = routed_log.unroutable
    assert key == event.envelope.subject.encode()
    assert value is not None
    assert value[:2] == b"\xc3\x01"  # the log record's own bytes
    assert route.error_class == "Unroutable"
    assert routed_log.unroutable_reason in route.reason
    assert route.event_id == str(event.envelope.event_id)
    assert route.event_type == "ServiceEnrolled"
    # The unroutable enrolment went nowhere, not even to reporting; the rest flowed.
    assert all(r.event_id != str(event.envelope.event_id) for r in routed_log.found)
    sources = {r.source for r in routed_log.found}
    assert (route.source_partition, route.source_offset) not in sources
    assert (decode.source_partition, decode.source_offset) not in sources
    # Keyed by an identity code: a route dead letter keyed by the subject, routed nowhere.
    copy = routed_log.mis_keyed
    [(key, _value, bad_key)] = [
        letter for letter in routed_log.dead_letters if letter[2].error_class == "BadKey"
    ]
    assert key == copy.envelope.subject.encode()
    assert bad_key.stage is DeadLetterStage.ROUTE
    assert bad_key.event_id == str(copy.envelope.event_id)
    assert "not a pseudonym" in bad_key.reason
    assert all(r.event_id != str(copy.envelope.event_id) for r in routed_log.found)
    assert {len(r.key) for r in routed_log.found} == {32}


# -- (b): a router SIGKILLed mid-transaction 5 times -----------------------------------------


async def test_a_router_killed_mid_transaction_five_times_routes_each_event_once(
    kafka_bootstrap: str, routes: RoutesConfig, tmp_path: Path, workdir: Path
) -> None:
    settings = _settings(kafka_bootstrap, tmp_path, router_transaction_timeout_s=10)
    events = _events(jobseekers=1500, seed=3)
    await publish(settings, routes, list(events))
    expected = expected_outbox(routes, events)
    rng = random.Random(11)
    kills_mid_transaction = 0
    async with TransactionWatch(settings) as watch:
        for kill in range(5):
            router = RouterProcess(settings, workdir, f"router-{kill}")
            assert await watch.wait_open(60), router.output()[-2000:]
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            if await watch.wait_open(5):  # kill only while a transaction is open
                kills_mid_transaction += 1
            router.kill()
            assert not await routed_to_the_end(settings), "the log was routed before kill 5"
        port = _free_port()
        final = RouterProcess(settings, workdir, "router-final", "--metrics-port", str(port))
        await wait_routed(settings, 60)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
        assert final.stop() == 0, final.output()[-2000:]
        on_the_wire = await watch.uncommitted_records()
    assert kills_mid_transaction == 5
    routed_metric = re.search(
        r'^hub_router_routed_total\{destination="reporting"\} (\S+)$', metrics, re.M
    )
    assert routed_metric is not None
    assert float(routed_metric.group(1)) > 0
    assert "# TYPE hub_router_lag gauge" in metrics
    found = await read_outboxes(settings, routes)
    assert_exactly_once_in_order(found, expected, await log_partitions(settings))
    reporting = sum(1 for r in found if r.destination == "reporting")
    # Records of the killed transactions were written and aborted: on the wire, never read.
    assert on_the_wire > reporting
    print(
        f"kill test: {len(events)} events, {len(found)} outbox records, {on_the_wire - reporting}"
    )


# -- (c): two routers in one group, one killed during the rebalance ------------------------


async def test_two_routers_one_killed_during_a_rebalance_route_each_event_once(
    kafka_bootstrap: str, routes: RoutesConfig, tmp_path: Path, workdir: Path
) -> None:
    settings = _settings(
        kafka_bootstrap, tmp_path, router_transaction_timeout_s=5, router_session_timeout_s=6
    )
    events = _events(jobseekers=700, seed=4)
    await publish(settings, routes, list(events))
    expected = expected_outbox(routes, events)
    first_id = f"{settings.router_transactional_id}-a"
    second_id = f"{settings.router_transactional_id}-b"
    async with TransactionWatch(settings) as watch:
        # Small batches keep a at work for the seconds b takes to start.
        first = RouterProcess(
            settings, workdir, "a", "--batch-size", "20", HUB_ROUTER_TRANSACTIONAL_ID=first_id
        )
        assert await watch.wait_open(60), first.output()[-2000:]  # a is mid-batch
        second = RouterProcess(settings, workdir, "b", HUB_ROUTER_TRANSACTIONAL_ID=second_id)
        await second.wait_for("router.started", 30)  # b joins: the group rebalances
        await first.wait_for("router.revoked", 30)  # a gives partitions up for b
        first.kill()
        assert not await routed_to_the_end(settings), "a routed the log before the kill"
        await wait_routed(settings, 90)
        assert second.stop() == 0, second.output()[-2000:]
    assert "router.assigned" in second.output()
    owned = [
        json.loads(line)["owned"]
        for line in second.output().splitlines()
        if '"router.assigned"' in line
    ]
    assert owned[-1] == list(range(PARTITIONS))  # b took over what a held when killed
    found = await read_outboxes(settings, routes)
    assert_exactly_once_in_order(found, expected, await log_partitions(settings))


# -- (e): a zombie: a second process with the same transactional id fences the first ----------


async def test_a_router_fenced_by_a_newer_process_with_its_id_exits_and_commits_nothing_late(
    kafka_bootstrap: str, routes: RoutesConfig, tmp_path: Path, workdir: Path
) -> None:
    settings = _settings(kafka_bootstrap, tmp_path, router_transaction_timeout_s=10)
    events = _events(jobseekers=600, seed=8)
    await publish(settings, routes, list(events))
    expected = expected_outbox(routes, events)
    async with TransactionWatch(settings) as watch:
        zombie = RouterProcess(settings, workdir, "zombie", "--batch-size", "20")
        assert await watch.wait_open(60), zombie.output()[-2000:]
        successor = RouterProcess(settings, workdir, "successor")  # the same id: a restart
        code = zombie.process.wait(60)
        await wait_routed(settings, 60)
        assert successor.stop() == 0, successor.output()[-2000:]
    assert code == 3, zombie.output()[-2000:]  # EXIT_FATAL: the supervisor starts a fresh one
    assert "router.fatal" in zombie.output()
    found = await read_outboxes(settings, routes)
    assert_exactly_once_in_order(found, expected, await log_partitions(settings))


# -- (f): the broker restarts under the router -----------------------------------------------


async def test_the_router_rides_out_a_broker_restart_and_routes_each_event_once(
    private_kafka: LocalKafka, routes: RoutesConfig, tmp_path: Path, workdir: Path
) -> None:
    """A supervisor's view: whenever ``hub route`` exits (3 when its producer was fenced or
    failed for good), it is started again; in the end each event is in its outbox once."""
    settings = _settings(private_kafka.bootstrap, tmp_path, router_transaction_timeout_s=5)
    events = _events(jobseekers=500, seed=9)
    await publish(settings, routes, list(events))
    expected = expected_outbox(routes, events)
    exits: list[int] = []
    async with TransactionWatch(settings) as watch:
        router = RouterProcess(settings, workdir, "router-0", "--batch-size", "50")
        assert await watch.wait_open(60), router.output()[-2000:]
    private_kafka.stop()
    await asyncio.sleep(1)
    private_kafka.start(timeout_s=120)
    deadline = time.monotonic() + 90
    while not await routed_to_the_end(settings):
        if time.monotonic() > deadline:
            router.process.send_signal(signal.SIGABRT)
            router.process.wait(10)
            raise AssertionError(router.output()[-6000:])
        code = router.process.poll()
        if code is not None:  # the supervisor restarts it
            exits.append(code)
            router = RouterProcess(settings, workdir, f"router-{len(exits)}")
        await asyncio.sleep(0.3)
    assert router.stop() == 0, router.output()[-2000:]
    assert all(code == 3 for code in exits), exits
    found = await read_outboxes(settings, routes)
    assert_exactly_once_in_order(found, expected, await log_partitions(settings))
    print(f"broker restart: router exits {exits}")


# -- a corrupt router-state record ----------------------------------------------------------------


async def test_a_corrupt_router_state_record_is_skipped_not_a_crash_loop(
    kafka_bootstrap: str, routes: RoutesConfig, tmp_path: Path
) -> None:
    """restore_partitions runs in on_assign: raising there would fail every restart. A record
    the router cannot read is skipped (logged with its partition and offset, counted), and
    the person it belongs to has no state until their next payer event."""
    settings = _settings(kafka_bootstrap, tmp_path)
    await ensure_router_topics(settings, routes)
    kela = PersonState("KELA", None).to_bytes()
    fund = PersonState("UNEMPLOYMENT_FUND", "X1").to_bytes()
    a, b, c = (f"{i:032x}".encode() for i in (0xA, 0xB, 0xC))
    written = [
        (a, kela),
        (b, kela),
        (b, b"{not json"),  # b's latest state is unreadable: b is unknown
        (b"\xff\xfe", kela),  # a key that is not UTF-8
        (c, b'{"v":1,"payer_kind":7}'),
        (c, fund),
        (a, b'{"v":2}'),
        (a, fund),
    ]
    producer = make_producer(settings)
    await producer.start()
    try:
        for key, value in written:
            await producer.send_and_wait(settings.topic_router_state, value, key=key, partition=2)
    finally:
        await producer.stop()
    before = REGISTRY.get_sample_value("hub_router_state_corrupt_total") or 0.0
    restored = await asyncio.to_thread(restore_partitions, settings, [2], timeout_s=30)
    assert restored == {
        2: {
            a.decode(): PersonState("UNEMPLOYMENT_FUND", "X1"),
            c.decode(): PersonState("UNEMPLOYMENT_FUND", "X1"),
        }
    }
    after = REGISTRY.get_sample_value("hub_router_state_corrupt_total")
    assert after == before + 4
