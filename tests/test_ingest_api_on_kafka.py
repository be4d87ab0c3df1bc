"""The ingest API's delivery promises on the real Kafka sink AND on the in-memory one.

Accept, replay, conflict, bulk atomicity, a taken event id, an unwritable event and 503 are
properties of the sink as much as of the handlers, so each test runs twice: on
:class:`~hub.sink.kafka.KafkaEventSink` with the real broker, and on
``tests.ingest_fakes.FakeSink``, which the handler-logic tests use and which must keep exactly
the same promises.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prometheus_client import CollectorRegistry

from connectors.rest_api.app import create_app
from hub.broker.local import LocalKafka
from hub.identity import Pseudonymizer
from hub.intake.examples import EXAMPLES
from hub.kafka.reading import read_topic
from hub.kafka.topics import ensure_topics
from hub.privacy.sealing import is_sealed, new_data_key, seal_value
from hub.serde import EncodeError, SingleObjectSerializer, default_catalog
from hub.settings import HubSettings
from hub.sink import EventSink
from hub.sink.kafka import open_kafka_sink
from tests.conftest import event_ids_in_log, settings_for
from tests.ingest_fakes import (
    MUNICIPAL_KEY,
    NARROW_KEY,
    NOW,
    FakeEnrolments,
    FakeSink,
    FixedClock,
    bearer,
    make_clients,
)
from tests.test_ingest_api import PATH_ITEMS, PATHS, SECRET, changed, item, pointers, problem


class Delivery:
    """The app over one sink, an HTTP client, and the count of each event id in the log."""

    def __init__(
        self,
        sink: EventSink,
        logged: Callable[[], Awaitable[Counter[UUID]]],
        envelopes: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
    ) -> None:
        self.sink = sink
        self.logged = logged
        #: The envelopes in the log as the log's serializer decodes them, in log order.
        self.envelopes = envelopes
        pseudonymizer = Pseudonymizer(SECRET)
        app = create_app(
            HubSettings(),
            sink,
            make_clients(),
            FakeEnrolments(pseudonymizer),
            FixedClock(NOW),
            pseudonymizer=pseudonymizer,
            registry=CollectorRegistry(),
        )
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hub.test"
        )

    async def post(
        self, body: Any = None, *, key: str = MUNICIPAL_KEY, idempotency_key: str | None = None
    ) -> httpx.Response:
        headers = bearer(key)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return await self.http.post(
            PATHS["JobseekerRegistered"],
            json=EXAMPLES["JobseekerRegistered"] if body is None else body,
            headers=headers,
        )

    async def bulk(
        self, items: list[dict[str, Any]], idempotency_key: str | None = None
    ) -> httpx.Response:
        headers = bearer(MUNICIPAL_KEY)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return await self.http.post("/v1/bulk", json=items, headers=headers)


#: A first name the serializer of :func:`delivery` refuses, as a value the Avro schema cannot
#: hold that validation let through would be refused.
UNWRITABLE = "Unwritable"


class _RefusesOneName(SingleObjectSerializer):
    """The serializer sees personal values sealed only (never the name itself), so it refuses
    a first name sealed from as many bytes as UNWRITABLE has (the examples' "Maija" passes)."""

    def encode(self, type_name: str, record: dict[str, Any]) -> bytes:
        name = record["payload"].get("first_name")
        assert name is None or is_sealed(name), "a personal value reached the serializer unsealed"
        if name is not None and len(name) == len(seal_value(_PROBE, _PROBE_ID, "x", _NAME)):
            raise EncodeError(f"cannot encode {type_name}")
        return super().encode(type_name, record)


_NAME = UNWRITABLE.encode()
_PROBE = new_data_key("probe", UUID(int=1), NOW)
_PROBE_ID = UUID(int=2)


@pytest.fixture(params=["kafka", "memory"])
async def delivery(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Delivery]:
    serializer = _RefusesOneName(default_catalog())
    if request.param == "memory":
        fake = FakeSink()
        fake._serializer = serializer

        async def in_memory() -> Counter[UUID]:
            return Counter(e.envelope.event_id for e in fake.events)

        async def memory_envelopes() -> list[dict[str, Any]]:
            return [e.to_avro()["envelope"] for e in fake.events]

        client = Delivery(fake, in_memory, memory_envelopes)
        async with client.http:
            yield client
        return
    settings = settings_for(
        request.getfixturevalue("kafka_bootstrap"), state_dir=tmp_path / "hub-state"
    )
    await ensure_topics(settings)

    async def kafka_envelopes() -> list[dict[str, Any]]:
        decode = SingleObjectSerializer(default_catalog()).decode
        return [
            decode(record.value).record["envelope"]
            async for record in read_topic(settings, settings.topic_customer_path)
        ]

    async with open_kafka_sink(settings, serializer=serializer) as sink:
        client = Delivery(sink, lambda: event_ids_in_log(settings), kafka_envelopes)
        async with client.http:
            yield client


def _registration(**changes: Any) -> dict[str, Any]:
    return changed("JobseekerRegistered", **changes)


async def test_accept_then_replay_the_original(delivery: Delivery) -> None:
    first = await delivery.post(idempotency_key="k-1")
    again = await delivery.post(idempotency_key="k-1")
    assert first.status_code == 202, first.text
    assert again.status_code == 202, again.text
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await delivery.logged() == Counter({UUID(first.json()["event_id"]): 1})


async def test_the_same_key_for_another_request_is_a_conflict(delivery: Delivery) -> None:
    assert (await delivery.post(idempotency_key="k-1")).status_code == 202
    other = _registration(payload__phone=None)
    problem(await delivery.post(other, idempotency_key="k-1"), 422, "idempotency-conflict")
    assert sum((await delivery.logged()).values()) == 1


async def test_a_bulk_with_a_conflicting_item_writes_nothing(delivery: Delivery) -> None:
    await delivery.post()  # keyed by its client event_id
    conflicting = item("JobseekerRegistered", payload__phone=None)
    response = await delivery.bulk([item("JobSearchEnded"), conflicting])
    body = problem(response, 422, "idempotency-conflict")
    assert pointers(body) == [("#/1", "idempotency_conflict")]
    assert sum((await delivery.logged()).values()) == 1  # the new JobSearchEnded is not in


async def test_a_bulk_retry_with_one_more_item_writes_nothing(delivery: Delivery) -> None:
    first = await delivery.bulk(PATH_ITEMS[:3], idempotency_key="batch-1")
    assert first.status_code == 202, first.text
    again = await delivery.bulk(PATH_ITEMS[:3], idempotency_key="batch-1")
    assert again.json() == first.json()
    problem(
        await delivery.bulk(PATH_ITEMS[:4], idempotency_key="batch-1"), 422, "idempotency-conflict"
    )
    assert sum((await delivery.logged()).values()) == 3


async def test_one_key_singly_and_in_a_bulk_is_never_two_events(delivery: Delivery) -> None:
    single = await delivery.post(_registration(event_id=None), idempotency_key="k-single")
    assert single.status_code == 202, single.text
    registration = item("JobseekerRegistered", event_id=None)
    problem(
        await delivery.bulk([registration], idempotency_key="k-single"), 422, "idempotency-conflict"
    )
    bulk = await delivery.bulk([registration], idempotency_key="k-bulk")
    assert bulk.status_code == 202, bulk.text
    problem(
        await delivery.post(_registration(event_id=None), idempotency_key="k-bulk"),
        422,
        "idempotency-conflict",
    )
    assert sum((await delivery.logged()).values()) == 2


async def test_an_event_id_taken_for_another_fact_is_409_whoever_sends_it(
    delivery: Delivery,
) -> None:
    first = await delivery.post()
    assert first.status_code == 202, first.text
    other_fact = _registration(payload__phone="+358 50 1234567")
    for sender in (MUNICIPAL_KEY, NARROW_KEY):  # another key of the same client, another client
        response = await delivery.post(other_fact, key=sender, idempotency_key="another-key")
        body = problem(response, 409, "event-id-taken")
        assert pointers(body) == [("#/event_id", "event_id_taken")]
    bulk = await delivery.bulk(
        [item("JobSearchEnded"), {"event_type": "JobseekerRegistered", **other_fact}],
        idempotency_key="bulk-key",
    )
    assert pointers(problem(bulk, 409, "event-id-taken")) == [("#/1/event_id", "event_id_taken")]
    # The same fact from the other client is the same event: answered, not written again.
    same = await delivery.post(key=NARROW_KEY)
    assert same.json()["event_id"] == first.json()["event_id"]
    assert await delivery.logged() == Counter({UUID(first.json()["event_id"]): 1})


async def test_an_unwritable_event_is_its_own_422_and_the_next_is_written(
    delivery: Delivery,
) -> None:
    unwritable = _registration(event_id=None, payload__first_name=UNWRITABLE)
    body = problem(await delivery.post(unwritable), 422, "event-not-writable")
    assert UNWRITABLE not in json.dumps(body)
    bulk = await delivery.bulk(
        [item("JobSearchEnded"), {"event_type": "JobseekerRegistered", **unwritable}]
    )
    assert pointers(problem(bulk, 422, "event-not-writable")) == [("#/1", "event_not_writable")]
    accepted = await delivery.post()  # the sink goes on writing
    assert accepted.status_code == 202, accepted.text
    assert await delivery.logged() == Counter({UUID(accepted.json()["event_id"]): 1})


async def test_503_while_kafka_is_down_and_nothing_is_written(
    private_kafka: LocalKafka, tmp_path: Path
) -> None:
    settings = settings_for(
        private_kafka.bootstrap, ingest_write_timeout_s=3, state_dir=tmp_path / "hub-state"
    )
    await ensure_topics(settings)
    async with open_kafka_sink(settings) as sink:
        delivery = Delivery(sink, lambda: event_ids_in_log(settings))
        async with delivery.http:
            accepted = await delivery.post(idempotency_key="before")
            assert accepted.status_code == 202, accepted.text
            await asyncio.to_thread(private_kafka.stop)
            refused = await delivery.post(_registration(event_id=None), idempotency_key="during")
            problem(refused, 503, "sink-unavailable")
            assert int(refused.headers["Retry-After"]) >= 1
            problem(await delivery.http.get("/ready"), 503, "not-ready")
            await asyncio.to_thread(private_kafka.start)
            for _ in range(60):
                if (await delivery.http.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.5)
            retried = await delivery.post(_registration(event_id=None), idempotency_key="during")
            assert retried.status_code == 202, retried.text
            replay = await delivery.post(idempotency_key="before")
            assert replay.headers["idempotent-replayed"] == "true"
    for _ in range(40):  # an aborted transaction may hide later records for a while
        logged = await event_ids_in_log(settings)
        if len(logged) == 2:
            break
        await asyncio.sleep(1)
    assert set(map(str, logged)) == {accepted.json()["event_id"], retried.json()["event_id"]}
    assert set(logged.values()) == {1}


async def test_a_correction_and_a_retraction_land_in_the_log_with_their_fields(
    delivery: Delivery,
) -> None:
    """Under the original's Idempotency-Key: the original, its correction and its retraction
    are three events, each once however often it is sent, with the correction fields."""
    key = "crm-registration-4711"
    first = (await delivery.post(idempotency_key=key)).json()["event_id"]
    registration = EXAMPLES["JobseekerRegistered"]
    correction = _registration(
        event_id="0b6f2d1e-4c3a-4f5b-9d8e-7a6c5b4d3e2f",
        corrects_event_id=first,
        payload__phone=None,
    )
    fixed = await delivery.post(correction, idempotency_key=key)
    assert fixed.status_code == 202, fixed.text
    retraction = {**correction, "event_id": None, "retracted": True}
    gone = await delivery.post(retraction, idempotency_key=key)
    assert gone.status_code == 202, gone.text
    for body in (correction, retraction):
        again = await delivery.post(body, idempotency_key=key)
        assert again.headers["idempotent-replayed"] == "true"
    fixed_id, gone_id = fixed.json()["event_id"], gone.json()["event_id"]
    assert first == registration["event_id"]
    assert fixed_id == "0b6f2d1e-4c3a-4f5b-9d8e-7a6c5b4d3e2f"
    assert len({first, fixed_id, gone_id}) == 3
    assert await delivery.logged() == Counter({UUID(i): 1 for i in (first, fixed_id, gone_id)})
    assert delivery.envelopes is not None
    logged = {str(e["event_id"]): e for e in await delivery.envelopes()}
    assert [
        (logged[i]["corrects_event_id"], logged[i]["retracted"]) for i in (first, fixed_id, gone_id)
    ] == [
        (None, False),
        (UUID(first), False),
        (UUID(first), True),
    ]
    assert {e["recorded_at"] for e in logged.values()} == {NOW}
