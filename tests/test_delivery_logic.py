"""The delivery rules without a broker: retry schedule, circuit breaker, offsets and order.

The Kafka tests (tests/test_delivery_on_kafka.py) prove the loop end to end; these pin each
rule where a failure names it exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch
from uuid import UUID

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from connectors.webhook.cli import _check_secrets
from connectors.webhook.transport import WebhookTransport
from connectors.xroad.client import XRoadClient, XRoadMember, XRoadService
from connectors.xroad.transport import XRoadTransport
from hub.delivery.breaker import BreakerState, CircuitBreaker
from hub.delivery.schedule import RetrySchedule
from hub.delivery.tracker import PartitionProgress
from hub.delivery.transport import (
    DeliveryRequest,
    DeliveryResult,
    Outcome,
    classify,
    counts_against_breaker,
    json_body,
    problem_from_body,
    static_headers,
)
from hub.delivery.worker import DeliveryTarget, DeliveryWorker, Settlement, _Channel
from hub.routing.routes import Destination, Endpoint, RoutesError
from hub.routing.routes import Transport as RouteTransport
from hub.settings import HubSettings

SVIX = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)

# -- schedule -------------------------------------------------------------------------------


def test_schedule_delays_stay_in_their_band_and_run_out() -> None:
    schedule = RetrySchedule(SVIX)
    rng = random.Random(1)
    assert schedule.max_attempts == 8
    for attempt in range(1, 8):
        low, high = schedule.band(attempt)
        delays = [schedule.delay_after(attempt, rng=rng) for _ in range(200)]
        assert all(d is not None and low <= d <= high for d in delays)
        assert (low, high) == (SVIX[attempt - 1] / 2, SVIX[attempt - 1])
        # Spread over the whole band, not bunched at one end.
        spread = [d for d in delays if d is not None]
        assert max(spread) - min(spread) > 0.8 * (high - low)
    assert schedule.delay_after(8, rng=rng) is None


def test_schedule_total_is_bounded_by_the_schedule_and_at_least_half_of_it() -> None:
    schedule = RetrySchedule(SVIX)
    rng = random.Random(2)
    totals = [
        sum(d for a in range(1, 8) if (d := schedule.delay_after(a, rng=rng)) is not None)
        for _ in range(100)
    ]
    floor = sum(schedule.band(a)[0] for a in range(1, 8))
    assert floor == sum(SVIX) / 2  # no jitter can shrink the schedule below half
    assert min(totals) >= floor
    assert max(totals) <= sum(SVIX)


def test_retry_after_is_a_floor_capped_at_the_longest_step() -> None:
    schedule = RetrySchedule((1.0, 2.0, 4.0))
    rng = random.Random(3)
    assert schedule.delay_after(1, retry_after_s=3.0, rng=rng) == 3.0
    assert schedule.delay_after(1, retry_after_s=10_000.0, rng=rng) == 4.0
    smaller = schedule.delay_after(2, retry_after_s=0.1, rng=rng)
    assert smaller is not None
    assert 1.0 <= smaller <= 2.0
    assert schedule.delay_after(4, retry_after_s=1.0, rng=rng) is None


def test_schedule_refuses_a_decreasing_or_negative_schedule() -> None:
    with pytest.raises(ValueError, match="decrease"):
        RetrySchedule((5.0, 1.0))
    with pytest.raises(ValueError, match="negative"):
        RetrySchedule((-1.0,))
    assert RetrySchedule(()).delay_after(1) is None  # no retries: the first failure gives up


# -- breaker --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _state(breaker: CircuitBreaker) -> BreakerState:
    """The state read afresh (mypy would narrow ``breaker.state`` across clock moves)."""
    return breaker.state


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, open_s=30.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # a success in between resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.retry_at() == 1030.0
    clock.now = 1029.9
    assert not breaker.allow()
    clock.now = 1030.0
    assert _state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # nobody else while the probe is out
    breaker.record_failure()  # probe failed: open again for another open_s
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_at() == 1060.0
    clock.now = 1060.0
    assert breaker.allow()
    breaker.record_success()
    assert _state(breaker) is BreakerState.CLOSED
    assert all(breaker.allow() for _ in range(10))
    assert breaker.opened_count == 2


def test_only_unwell_answers_count_against_the_breaker() -> None:
    assert counts_against_breaker(DeliveryResult(status=None))
    assert counts_against_breaker(DeliveryResult(status=503))
    assert counts_against_breaker(DeliveryResult(status=429))
    assert counts_against_breaker(DeliveryResult(status=408))
    assert not counts_against_breaker(DeliveryResult(status=409))
    assert not counts_against_breaker(DeliveryResult(status=422))
    assert not counts_against_breaker(DeliveryResult(status=200))


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (None, Outcome.RETRY),
        (408, Outcome.RETRY),
        (409, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (400, Outcome.REFUSED),
        (401, Outcome.REFUSED),
        (404, Outcome.REFUSED),
        (422, Outcome.REFUSED),
        (301, Outcome.REFUSED),
    ],
)
def test_classify(status: int | None, outcome: Outcome) -> None:
    assert classify(DeliveryResult(status=status)) is outcome


# -- tracker --------------------------------------------------------------------------------


def test_commit_only_up_to_the_lowest_unsettled_offset() -> None:
    progress: PartitionProgress[int] = PartitionProgress()
    assert progress.committable() is None
    for offset, key in [(10, b"a"), (11, b"b"), (12, b"c"), (13, b"d")]:
        assert progress.take(offset, key, offset)
    progress.settle(11, b"b")
    progress.settle(13, b"d")
    assert progress.committable() == 10  # 10 is still out: nothing past it counts yet
    progress.settle(10, b"a")
    assert progress.committable() == 12
    assert progress.buffered == 1
    progress.settle(12, b"c")
    assert progress.committable() == 14
    assert progress.commit_due() == 14
    progress.mark_committed(14)
    assert progress.commit_due() is None


def test_a_persons_later_records_wait_behind_the_first_and_others_flow() -> None:
    progress: PartitionProgress[int] = PartitionProgress()
    assert progress.take(0, b"anna", 0)
    assert progress.take(1, b"bert", 1)
    assert not progress.take(2, b"anna", 2)  # waits for offset 0
    assert not progress.take(3, b"anna", 3)
    assert progress.take(4, b"cara", 4)
    assert progress.waiting_keys() == 1
    assert progress.settle(1, b"bert") is None
    assert progress.settle(4, b"cara") is None
    assert progress.settle(0, b"anna") == 2  # released in offset order
    assert progress.settle(2, b"anna") == 3
    assert progress.settle(3, b"anna") is None
    assert progress.committable() == 5
    assert progress.take(5, None, 5)  # no key: no order to keep
    assert progress.take(6, None, 6)


def test_offsets_must_increase_and_settle_once() -> None:
    progress: PartitionProgress[int] = PartitionProgress()
    progress.take(5, b"a", 5)
    with pytest.raises(ValueError, match="taken after"):
        progress.take(5, b"b", 5)
    progress.settle(5, b"a")
    with pytest.raises(ValueError, match="twice"):
        progress.settle(5, b"a")


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.sampled_from([b"a", b"b", b"c", b"d"]), min_size=1, max_size=60),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_settle_orders_keep_every_rule(keys: list[bytes], seed: int) -> None:
    """Whatever order deliveries finish in: only a key's head is ever sendable, each key's
    records are sent in offset order, and the committable offset never passes an unsettled
    record nor moves back."""
    rng = random.Random(seed)
    progress: PartitionProgress[int] = PartitionProgress()
    sendable: list[int] = []
    for offset, key in enumerate(keys):
        if progress.take(offset, key, offset):
            sendable.append(offset)
    sent: list[int] = []
    settled: set[int] = set()
    last_commit = 0
    while sendable:
        offset = sendable.pop(rng.randrange(len(sendable)))
        assert all(keys[o] != keys[offset] for o in sendable)  # one in flight per key
        sent.append(offset)
        following = progress.settle(offset, keys[offset])
        settled.add(offset)
        if following is not None:
            sendable.append(following)
        commit = progress.committable()
        assert commit is not None
        assert commit >= last_commit
        assert all(o in settled for o in range(commit))
        last_commit = commit
    assert sorted(sent) == list(range(len(keys)))
    for key in set(keys):
        mine = [o for o in sent if keys[o] == key]
        assert mine == sorted(mine)
    assert progress.committable() == len(keys)
    assert progress.buffered == 0


# -- body and signature -----------------------------------------------------------------------


def _record() -> dict[str, object]:
    return {
        "envelope": {
            "event_id": UUID("a908d806-31f2-4862-a107-b391d6858bf9"),
            "event_type": "JobseekerRegistered",
            "occurred_at": datetime(2025, 12, 6, 10, 28, tzinfo=UTC),
            "subject": "821afc0b",
        },
        "payload": {"job_search_started_on": date(2025, 12, 6), "days": 3, "kind": "KELA"},
    }


def test_json_body_is_the_contract_shape() -> None:
    body = json.loads(json_body("JobseekerRegistered", _record()))
    assert body == {
        "type": "JobseekerRegistered",
        "timestamp": "2025-12-06T10:28:00.000Z",
        "data": {
            "envelope": {
                "event_id": "a908d806-31f2-4862-a107-b391d6858bf9",
                "event_type": "JobseekerRegistered",
                "occurred_at": "2025-12-06T10:28:00.000Z",
                "subject": "821afc0b",
            },
            "payload": {"job_search_started_on": "2025-12-06", "days": 3, "kind": "KELA"},
        },
    }


async def test_webhook_is_signed_per_standard_webhooks_at_each_attempt() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    seen: list[httpx.Request] = []
    answers = iter(
        [
            httpx.Response(
                503,
                headers={"Retry-After": "7", "Content-Type": "application/problem+json"},
                json={"title": "Down", "detail": "maintenance for 010190-123A"},
            ),
            httpx.Response(200, json={"duplicate": True}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    transport = WebhookTransport("http://receiver.test/kela", secret, client, owns_client=True)
    event_id = "a908d806-31f2-4862-a107-b391d6858bf9"
    body = json_body("JobseekerRegistered", _record())
    request = DeliveryRequest(event_id, "JobseekerRegistered", body, static_headers(event_id))
    first = await transport.send(request)
    second = await transport.send(request)
    await transport.aclose()
    assert first.status == 503
    assert first.retry_after_s == 7.0
    assert first.problem is not None
    assert "010190-123A" not in first.problem
    assert first.problem.startswith("Down: maintenance")
    assert second.status == 200
    assert second.duplicate
    for sent in seen:
        assert sent.headers["idempotency-key"] == event_id
        assert sent.headers["webhook-id"] == event_id
        assert sent.headers["content-type"] == "application/json"
        assert Webhook(secret).verify(sent.content, dict(sent.headers), json_parse=False) is None
        assert sent.content == body


async def test_no_answer_is_a_result_not_an_exception() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    transport = WebhookTransport("http://receiver.test/kela", "whsec_" + "a" * 32, client)
    result = await transport.send(DeliveryRequest("e", "T", b"{}", {}))
    await client.aclose()
    assert result.status is None
    assert result.problem == "ConnectError"
    assert classify(result) is Outcome.RETRY


def test_problem_text_is_redacted_and_short() -> None:
    text = problem_from_body(json.dumps({"title": "x" * 2000}).encode(), "application/json")
    assert text is not None
    assert len(text) == 300
    problem = problem_from_body(b'{"detail": "person 010190-123A unknown"}', "application/json")
    assert problem is not None
    assert "010190-123A" not in problem


async def test_xroad_transport_posts_to_the_service_with_the_client_header() -> None:
    seen: list[httpx.Request] = []
    answers = iter(
        [
            httpx.Response(201, json={"duplicate": False}),
            httpx.Response(500, headers={"X-Road-Error": "Server.ServerProxy.ServiceFailed"}),
            httpx.Response(403, text="access denied for 010190-123A"),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    client = XRoadClient(
        "https://ss.example.fi:8443",
        XRoadMember.parse("FI/GOV/0245437-2/hub"),
        transport=httpx.MockTransport(handler),
    )
    service = XRoadService.parse("FI/GOV/0245437-2/kela-etuudet/statements")
    transport = XRoadTransport(client, service)
    request = DeliveryRequest("e-1", "T", b'{"type":"T"}', static_headers("e-1"))
    delivered = await transport.send(request)
    failed = await transport.send(request)
    refused = await transport.send(request)
    await client.aclose()
    assert delivered.status == 201
    assert not delivered.duplicate
    assert classify(failed) is Outcome.RETRY
    assert failed.problem == "Server.ServerProxy.ServiceFailed"
    assert classify(refused) is Outcome.REFUSED
    assert refused.problem is None  # a plain-text body is not a problem document: not kept
    for sent in seen:
        assert sent.method == "POST"
        assert sent.url.path == "/r1/FI/GOV/0245437-2/kela-etuudet/statements"
        assert sent.headers["x-road-client"] == "FI/GOV/0245437-2/hub"
        assert sent.headers["idempotency-key"] == "e-1"
        assert sent.content == b'{"type":"T"}'
    assert len({sent.headers["x-road-id"] for sent in seen}) == 3  # a new message id per attempt


# -- the loop without a broker: breaker wakes, timer heap, rebalance, dead-letter writes ----


class _FlakyReceiver:
    """A transport that answers 503 until ``up`` and counts attempts per event id."""

    def __init__(self) -> None:
        self.up = False
        self.attempts: dict[str, int] = {}

    async def send(self, request: DeliveryRequest) -> DeliveryResult:
        self.attempts[request.event_id] = self.attempts.get(request.event_id, 0) + 1
        return DeliveryResult(status=200 if self.up else 503)

    async def aclose(self) -> None:
        return None


@dataclass
class _Decoded:
    type_name: str
    record: dict[str, Any]


class _Decoder:
    def decode(self, data: bytes) -> _Decoded:
        return _Decoded("fi.te.hub.JobSearchEnded", {"envelope": {"event_id": data.decode()}})


class _Consumer:
    def __init__(self, topics: set[str] | None = None) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self._topics = topics or set()

    async def commit(self, due: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(due))

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    async def topics(self) -> set[str]:
        return self._topics


class _Producer:
    def __init__(self, errors: list[Exception] | None = None) -> None:
        self.errors = list(errors or [])
        self.sent = 0

    async def send_and_wait(self, *args: object, **kwargs: object) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.sent += 1


class _Receipts:
    def __init__(self) -> None:
        self.written: list[tuple[int, int, str]] = []

    async def record(self, settlement: Settlement) -> None:
        self.written.append((settlement.partition, settlement.offset, settlement.status))

    def release(self, partition: int) -> None:
        return None

    def assign(self, partition: int) -> None:
        return None


def _worker(
    steps: tuple[float, ...],
    transport: Any,
    *,
    failures: int = 2,
    open_s: float = 0.2,
    producer: _Producer | None = None,
    consumer: _Consumer | None = None,
    receipts: _Receipts | None = None,
    transport_for: Callable[[str | None], Any] | None = None,
) -> DeliveryWorker:
    settings = HubSettings(pseudonym_secret=SecretStr("x" * 40), topic_outbox_prefix="t.")
    target = DeliveryTarget(
        "kela", RetrySchedule(steps), failures, open_s, transport_for or (lambda key: transport)
    )
    worker = DeliveryWorker(
        settings, target, _Decoder(), disclosures=receipts, commit_interval_s=0.1
    )
    worker._consumer = consumer or _Consumer()
    worker._producer = producer or _Producer()
    return worker


def _feed(worker: DeliveryWorker, partition: int, count: int, endpoint: str | None = None) -> None:
    """``count`` records of as many people on ``partition``, as the fetch loop registers them."""
    if partition not in worker._progress:
        worker._on_assigned([TopicPartition(worker.topic, partition)])
    progress = worker._progress[partition]
    now = time.monotonic()
    headers = [] if endpoint is None else [("hub-endpoint", endpoint.encode())]
    start = progress._next or 0
    for offset in range(start, start + count):
        record: Any = SimpleNamespace(
            partition=partition,
            offset=offset,
            key=f"person-{offset}".encode(),
            value=f"ev-{partition}-{offset}".encode(),
            headers=headers,
        )
        item = worker._prepare(progress, record)
        item.fetched_at = now
        if progress.take(offset, record.key, item):
            worker._push(now, item)
    worker._wake.set()


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def _stop(worker: DeliveryWorker, loop: asyncio.Task[None]) -> None:
    worker.stop()
    await loop
    await asyncio.gather(*worker._tasks, return_exceptions=True)


async def test_a_failed_probe_wakes_the_parked_after_the_open_time_not_its_retry() -> None:
    """The probe fails and re-opens the breaker: the records parked behind it go after
    ``breaker_open_s`` (0.2 s), not after the probe's own next step (a minute)."""
    receiver = _FlakyReceiver()
    worker = _worker((60.0, 60.0), receiver, failures=2, open_s=0.2)
    loop = asyncio.create_task(worker._dispatch_loop())
    _feed(worker, 0, 2)  # two failures open the breaker; their retries are a minute away
    await _until(lambda: worker._channels[None].breaker.opened_count == 1, 3, "it to open")
    _feed(worker, 1, 8)  # these park behind it
    await _until(lambda: worker._channels[None].breaker.opened_count == 2, 3, "a failed probe")
    receiver.up = True
    parked = [f"ev-1-{o}" for o in range(8) if f"ev-1-{o}" not in receiver.attempts]
    assert len(parked) == 7  # one went as the probe
    await _until(lambda: worker.stats.delivered == 7, 3, "the parked records' delivery")
    assert all(receiver.attempts[e] == 1 for e in parked)  # parking used no attempt
    assert not worker._channels[None].parked
    await _stop(worker, loop)


async def test_a_dead_lettered_probe_does_not_strand_the_parked() -> None:
    """The probe's schedule runs out while the receiver is down (a dead letter): the rest
    are woken at the breaker's retry time and the partition's commit reaches the end once
    the receiver is back."""
    receiver = _FlakyReceiver()
    producer = _Producer()
    worker = _worker((), receiver, failures=2, open_s=0.2, producer=producer)
    loop = asyncio.create_task(worker._dispatch_loop())
    _feed(worker, 0, 2)
    await _until(lambda: worker._channels[None].breaker.opened_count == 1, 3, "it to open")
    _feed(worker, 0, 8)
    await _until(lambda: worker._channels[None].breaker.opened_count == 2, 3, "a failed probe")
    receiver.up = True
    progress = worker._progress[0]
    await _until(lambda: progress.committable() == 10, 3, "every record settled")
    assert worker.stats.dead_letters == 3  # the first two and the probe
    assert worker.stats.delivered == 7
    assert producer.sent == 3
    await _stop(worker, loop)


def test_a_non_finite_schedule_or_breaker_is_refused_and_delays_stay_finite() -> None:
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite"):
            RetrySchedule((0.1, bad))
        with pytest.raises(ValueError, match="finite"):
            CircuitBreaker(3, bad)
        with pytest.raises(ValueError, match="finite"):
            DeliveryTarget("kela", RetrySchedule((1.0,)), 3, bad, lambda key: None)  # type: ignore[arg-type,return-value]
    schedule = RetrySchedule((1.0, 2.0))
    for retry_after in (float("inf"), float("nan"), -5.0, 1e300):
        delay = schedule.delay_after(1, retry_after_s=retry_after, rng=random.Random(1))
        assert delay is not None
        assert math.isfinite(delay)
        assert 0.5 <= delay <= 2.0


async def test_a_non_finite_due_time_neither_blocks_others_nor_spins() -> None:
    """Whatever slipped into the heap: a NaN due time is pushed a minute ahead, the loop's
    wait stays finite and positive, and everyone else is delivered."""
    receiver = _FlakyReceiver()
    receiver.up = True
    worker = _worker((1.0,), receiver)
    loop = asyncio.create_task(worker._dispatch_loop())
    worker._push(float("nan"), worker._channel(None))
    assert math.isfinite(worker._heap[0][0])
    _feed(worker, 1, 20)
    await _until(lambda: worker.stats.delivered == 20, 3, "the others' deliveries")
    cpu = time.process_time()
    await asyncio.sleep(0.5)
    assert time.process_time() - cpu < 0.25  # idle, not a busy loop (it was 0.5 of 0.5)
    await _stop(worker, loop)


async def test_a_revoke_purges_the_partitions_retries_and_parked_records() -> None:
    receiver = _FlakyReceiver()
    worker = _worker((3600.0, 3600.0), receiver, failures=3, open_s=3600.0)
    loop = asyncio.create_task(worker._dispatch_loop())
    _feed(worker, 0, 3)  # these open the breaker; their retries are an hour away
    await _until(lambda: worker._channels[None].breaker.opened_count == 1, 3, "it to open")
    _feed(worker, 0, 200)
    _feed(worker, 1, 5)
    await _until(lambda: len(worker._channels[None].parked) == 205, 3, "records to park")
    assert sum(1 for _, _, e in worker._heap if not isinstance(e, _Channel)) == 3
    await worker._on_revoked([TopicPartition(worker.topic, 0)])
    left = [e for _, _, e in worker._heap if not isinstance(e, _Channel)]
    assert all(e.partition == 1 for e in left)
    assert all(e.partition == 1 for e in worker._channels[None].parked)
    assert len(worker._heap) <= worker._buffered() + 1  # what backpressure counts, + the wake
    await _stop(worker, loop)


async def test_settling_after_the_partition_moved_writes_no_receipt() -> None:
    """A request that outlived the revoke wait: its result writes no receipt (the new owner
    appends to that chain now) and no dead letter."""
    receipts = _Receipts()
    release = asyncio.Event()

    class Slow(_FlakyReceiver):
        async def send(self, request: DeliveryRequest) -> DeliveryResult:
            await release.wait()
            return DeliveryResult(status=200)

    worker = _worker((1.0,), Slow(), receipts=receipts)
    loop = asyncio.create_task(worker._dispatch_loop())
    _feed(worker, 3, 1)
    await _until(lambda: bool(worker._tasks), 2, "the request in flight")
    with patch("hub.delivery.worker.REVOKE_WAIT_S", 0.05):
        await worker._on_revoked([TopicPartition(worker.topic, 3)])
    release.set()
    await asyncio.gather(*worker._tasks)
    assert receipts.written == []
    await _stop(worker, loop)


@pytest.mark.parametrize(
    "error",
    [TopicAuthorizationFailedError(), MessageSizeTooLargeError(), UnknownTopicOrPartitionError()],
)
async def test_a_dead_letter_that_cannot_be_written_stops_the_worker_loudly(
    error: Exception,
) -> None:
    """Not authorized, too large, or no such topic (the broker says so): no retry loop
    holding the slot and the commit, but a stop with a one-line reason."""
    producer = _Producer([error] * 1000)
    worker = _worker((), _FlakyReceiver(), producer=producer)
    loop = asyncio.create_task(worker._dispatch_loop())
    _feed(worker, 0, 1)
    await asyncio.wait_for(loop, 5)
    await asyncio.gather(*worker._tasks)
    assert worker._fatal is not None
    assert type(error).__name__ in worker._fatal
    assert "\n" not in worker._fatal
    assert worker._progress[0].committable() == 0  # not settled: sent again after the fix
    assert len(producer.errors) == 999  # one try, no spin


async def test_a_retriable_dead_letter_write_failure_backs_off_and_then_settles() -> None:
    producer = _Producer([NotLeaderForPartitionError(), KafkaTimeoutError()])
    worker = _worker((), _FlakyReceiver(), producer=producer, consumer=_Consumer())
    loop = asyncio.create_task(worker._dispatch_loop())
    with patch("hub.delivery.worker._KAFKA_RETRY_S", 0.01):
        _feed(worker, 0, 1)
        await _until(lambda: worker._progress[0].committable() == 1, 3, "the dead letter")
    assert producer.sent == 1
    assert worker._fatal is None
    await _stop(worker, loop)


async def test_an_endpoint_whose_transport_cannot_be_built_is_contained() -> None:
    """A secret the signer refuses (``whsec_`` alone) for one endpoint: its records are dead
    letters naming the endpoint (not the secret); the fetch goes on for the others."""
    good = _FlakyReceiver()
    good.up = True

    def transport_for(key: str | None) -> Any:
        if key == "broken":
            return WebhookTransport("http://r.test/", "whsec_", httpx.AsyncClient())
        return good

    worker = _worker((1.0,), good, transport_for=transport_for)
    _feed(worker, 0, 2, endpoint="broken")
    _feed(worker, 0, 2, endpoint="fine")
    items = [e for _, _, e in worker._heap if not isinstance(e, _Channel)]
    broken = [i for i in items if i.endpoint == "broken"]
    assert len(broken) == 2
    for item in broken:
        assert item.failure is not None
        assert item.failure.error_class == "EndpointUnusable"
        assert "broken" in item.failure.reason
        assert "whsec_" not in item.failure.reason
    loop = asyncio.create_task(worker._dispatch_loop())
    await _until(lambda: worker._progress[0].committable() == 4, 3, "all four settled")
    assert worker.stats.dead_letters == 2
    assert worker.stats.delivered == 2
    await _stop(worker, loop)


def test_check_secrets_refuses_an_unusable_secret_naming_the_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUB_TEST_SECRET_BAD", "whsec_")
    settings = HubSettings.model_construct(
        **{
            **HubSettings(pseudonym_secret=SecretStr("x" * 40)).__dict__,
            "environment": "production",
        }
    )
    destination = Destination(
        name="funds",
        transport=RouteTransport.WEBHOOK,
        endpoints={"bad": Endpoint(url="http://r.test/fund/bad", secret_env="HUB_TEST_SECRET_BAD")},
    )
    with pytest.raises(RoutesError) as caught:
        _check_secrets(settings, destination)
    assert "funds/bad" in str(caught.value)
    assert "HUB_TEST_SECRET_BAD" in str(caught.value)
    monkeypatch.setenv("HUB_TEST_SECRET_BAD", "whsec_" + "QUJD" * 8)
    _check_secrets(settings, destination)


# -- the receiver's answer: deadlines, sizes, what of it is kept ----------------------------


async def test_an_attempt_has_a_total_deadline_and_reads_at_most_64_kib() -> None:
    """A receiver trickling its answer a byte every 0.2 s is cut at the deadline (httpx's
    timeout alone is per read); a 20 MB answer is not read whole: the connection closes."""
    written: list[int] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(40):
                await asyncio.sleep(0.2)
                writer.write(b"x")
                await writer.drain()
        writer.close()

    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        size = 20 * 1024 * 1024
        writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: %d\r\n\r\n" % size)
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < size:
                writer.write(b"y" * 65536)
                await writer.drain()
                sent += 65536
        written.append(sent)
        writer.close()

    request = DeliveryRequest("e", "T", b"{}", {})
    secret = "whsec_" + "QUJD" * 8
    servers = [await asyncio.start_server(h, "127.0.0.1", 0) for h in (slow, huge)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    client = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
    trickled = WebhookTransport(f"http://127.0.0.1:{ports[0]}/", secret, client, deadline_s=0.8)
    started = time.monotonic()
    result = await trickled.send(request)
    assert result.status is None
    assert result.problem == "TimeoutError"
    assert time.monotonic() - started < 4.0  # the 8 s trickle was cut (generous bound)
    flooded = WebhookTransport(f"http://127.0.0.1:{ports[1]}/", secret, client, deadline_s=10)
    result = await flooded.send(request)
    assert result.status == 503
    await _until(lambda: bool(written), 5, "the flooding server to be cut off")
    assert written[0] < 20 * 1024 * 1024
    await client.aclose()
    for server in servers:
        server.close()


def test_a_problem_echoing_the_body_keeps_no_personal_data() -> None:
    """A receiver that echoes what it got: every value of the sent record, e-mail addresses,
    phone numbers and identity codes are cut; the event id, the type and the title stay."""
    record = {
        "envelope": {"event_id": "a908d806-31f2-4862-a107-b391d6858bf9", "subject": "821afc0b"},
        "payload": {
            "first_name": "Matti",
            "last_name": "Meikäläinen",
            "email": "matti.m@example.fi",
            "phone": "+358 40 1234567",
            "street": "Kotikatu 5 B",
        },
    }
    sent = json_body("JobseekerRegistered", record)
    echo = json.dumps(
        {
            "type": "https://receiver.example/problems/invalid",
            "title": "Unprocessable",
            "detail": f"event a908d806-31f2-4862-a107-b391d6858bf9: {sent.decode()} also "
            "MEIKÄLÄINEN, Matti <other@mail.example> 040-7654321 hetu 010101-123N",
        }
    ).encode()
    problem = problem_from_body(echo, "application/problem+json", sent)
    assert problem is not None
    assert len(problem) <= 300
    for secret in (
        "Matti",
        "Meikäl",
        "MEIKÄL",
        "matti.m",
        "other@",
        "1234567",
        "7654321",
        "010101",
        "Kotikatu",
        "821afc0b",
    ):
        assert secret not in problem, (secret, problem)
    assert problem.startswith("Unprocessable: event a908d806-31f2-4862-a107-b391d6858bf9")
    short = problem_from_body(
        json.dumps({"type": "https://r.example/p", "title": "Gone", "detail": "x"}).encode(),
        "application/problem+json",
        sent,
    )
    assert short == "Gone: x [https://r.example/p]"
    # Not a problem document (an HTML page, a plain echo): only the status is kept.
    assert problem_from_body(b"Matti Meikalainen unknown", "text/plain", sent) is None
