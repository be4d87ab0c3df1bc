"""The delivery rules without a broker: retry schedule, circuit breaker, offsets and order.

The Kafka tests (tests/test_delivery_on_kafka.py) prove the loop end to end; these pin each
rule where a failure names it exactly.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime
from uuid import UUID

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

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
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # nobody else while the probe is out
    breaker.record_failure()  # probe failed: open again for another open_s
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_at() == 1060.0
    clock.now = 1060.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
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
    text = problem_from_body(("x" * 2000).encode(), "text/plain")
    assert text is not None
    assert len(text) == 500
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
    assert refused.problem is not None
    assert "010190-123A" not in refused.problem
    for sent in seen:
        assert sent.method == "POST"
        assert sent.url.path == "/r1/FI/GOV/0245437-2/kela-etuudet/statements"
        assert sent.headers["x-road-client"] == "FI/GOV/0245437-2/hub"
        assert sent.headers["idempotency-key"] == "e-1"
        assert sent.content == b'{"type":"T"}'
    assert len({sent.headers["x-road-id"] for sent in seen}) == 3  # a new message id per attempt
