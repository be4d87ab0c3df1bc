"""The enrolment directory on the real log: first fact wins, answers are current, or a 503."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from connectors.rest_api.app import create_app
from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.paths import in_time_order
from hub.events.customer_path import ServiceEnrolled
from hub.identity import Pseudonymizer
from hub.intake.convert import to_event
from hub.intake.enrolments import DirectoryCatchingUp, Enrolment, KafkaEnrolmentDirectory
from hub.intake.examples import EXAMPLES
from hub.intake.requests import REQUEST_TYPES
from hub.kafka.publisher import EventPublisher, open_publisher
from hub.kafka.topics import ensure_topics
from hub.settings import HubSettings
from hub.sink import EventSink
from hub.sink.kafka import KafkaEventSink
from tests.conftest import event_ids_in_log
from tests.ingest_fakes import (
    ESPOO_KEY,
    HELSINKI_CRM,
    MUNICIPAL_KEY,
    NOW,
    PROVIDER_KEY,
    FakeSink,
    FixedClock,
    bearer,
    make_clients,
)

pytestmark = pytest.mark.kafka

SECRET = "e" * 32
OTHER_PROVIDER = "2345678-0"
OTHER = "010516B903X"
OTHER_SUBJECT = Pseudonymizer(SECRET).pseudonym(OTHER)


def owner(event: ServiceEnrolled) -> Enrolment:
    envelope = event.envelope
    return Enrolment(
        event.payload.provider_business_id,
        envelope.subject,
        envelope.source_system,
        envelope.municipality_code,
    )


def enrolled() -> list[ServiceEnrolled]:
    """Every ServiceEnrolled of a small simulation."""
    paths = simulate(SimulationConfig(jobseekers=120, seed=2), Pseudonymizer(SECRET))
    found = [e for e in in_time_order(paths) if isinstance(e, ServiceEnrolled)]
    assert len(found) > 2
    return found


@asynccontextmanager
async def running(directory: KafkaEnrolmentDirectory) -> AsyncIterator[KafkaEnrolmentDirectory]:
    directory.start()
    try:
        await asyncio.wait_for(directory.caught_up.wait(), 30)
        yield directory
    finally:
        await directory.stop()


async def publish(publisher: EventPublisher, events: list[ServiceEnrolled]) -> None:
    async for _ in publisher.publish_all(events):
        pass


async def test_owners_of_enrolments_are_current_after_catch_up(hub_settings: HubSettings) -> None:
    await ensure_topics(hub_settings)
    events = enrolled()
    later = events.pop()
    async with open_publisher(hub_settings) as publisher:
        await publish(publisher, events)
        async with running(KafkaEnrolmentDirectory(hub_settings)) as directory:
            assert len(directory) == len(events)
            ids = [e.payload.enrolment_id for e in events]
            assert await directory.enrolments(ids) == {
                e.payload.enrolment_id: owner(e) for e in events
            }
            assert await directory.enrolments([uuid4()]) == {}
            # Acknowledged now, known now: a look-up reads the log up to the moment it is asked.
            await publisher.publish(later)
            found = await directory.enrolments([later.payload.enrolment_id])
            assert found == {later.payload.enrolment_id: owner(later)}


def takeover(event: ServiceEnrolled, **envelope: Any) -> ServiceEnrolled:
    """Another client's ServiceEnrolled with *event*'s enrolment id and another provider."""
    return event.model_copy(
        update={
            "envelope": event.envelope.model_copy(
                update={"event_id": uuid4(), "source_system": "urn:fi:kunta:049:crm", **envelope}
            ),
            "payload": event.payload.model_copy(update={"provider_business_id": OTHER_PROVIDER}),
        }
    )


async def test_a_takeover_in_the_log_leaves_the_enrolment_with_its_first_maker(
    hub_settings: HubSettings,
) -> None:
    await ensure_topics(hub_settings)
    events = enrolled()
    first = events[0]
    # One takeover about the same person (same partition, later offset), one about another
    # person (likely another partition: the order is by record time there).
    takeovers = [takeover(first), takeover(first, subject=OTHER_SUBJECT, municipality_code="049")]
    async with open_publisher(hub_settings) as publisher:
        await publish(publisher, events)
        await asyncio.sleep(0.01)  # record times are in ms; make the takeovers' later, as in life
        await publish(publisher, takeovers)
    enrolment_id = first.payload.enrolment_id
    for _restart in range(2):
        with capture_logs() as logs:
            async with running(KafkaEnrolmentDirectory(hub_settings)) as directory:
                assert await directory.enrolments([enrolment_id]) == {enrolment_id: owner(first)}
                assert len(directory) == len(events)
        ignored = [e for e in logs if e["event"] == "enrolments.conflict_ignored"]
        assert sorted(e["differs"] for e in ignored) == [
            ["source_system", "person", "provider"],
            ["source_system", "provider"],
        ]
        assert {e["enrolment_id"] for e in ignored} == {str(enrolment_id)}


def report_app(
    settings: HubSettings, directory: KafkaEnrolmentDirectory, sink: EventSink | None = None
) -> httpx.AsyncClient:
    app = create_app(
        settings,
        sink or FakeSink(),
        make_clients(),
        directory,
        FixedClock(NOW),
        pseudonymizer=Pseudonymizer(SECRET),
        registry=CollectorRegistry(),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test")


async def report(http: httpx.AsyncClient, **changes: Any) -> httpx.Response:
    body = copy.deepcopy(EXAMPLES["ServiceParticipationReported"])
    body["payload"].update(changes.pop("payload", {}))
    return await http.post(
        "/v1/providers/participation", json=body | changes, headers=bearer(PROVIDER_KEY)
    )


async def test_a_directory_that_has_not_caught_up_answers_503_with_retry_after(
    hub_settings: HubSettings,
) -> None:
    await ensure_topics(hub_settings)
    directory = KafkaEnrolmentDirectory(hub_settings, sync_timeout_s=0.5)
    with pytest.raises(DirectoryCatchingUp):
        await directory.enrolments([uuid4()])
    async with report_app(hub_settings, directory) as http:
        waiting = await report(http)
        assert waiting.status_code == 503, waiting.text
        assert waiting.json()["type"].endswith("/directory-catching-up")
        assert waiting.headers["retry-after"] == "5"
        assert (await http.get("/ready")).status_code == 503
        async with running(directory):
            assert directory.ready()
            # Current, and the log holds no such enrolment: now a refusal is the answer.
            unknown = await report(http)
            assert unknown.status_code == 403, unknown.text
            assert unknown.json()["type"].endswith("/enrolment-not-yours")
            request = REQUEST_TYPES["ServiceEnrolled"].model_validate(EXAMPLES["ServiceEnrolled"])
            event = to_event(
                request,
                source_system=HELSINKI_CRM,
                pseudonymizer=Pseudonymizer(SECRET),
                recorded_at=NOW,
            )
            async with open_publisher(hub_settings) as publisher:
                await publisher.publish(event)
            accepted = await report(http)
            assert accepted.status_code == 202, accepted.text


async def test_on_kafka_an_enrolment_is_its_makers_from_the_moment_it_is_accepted(
    hub_settings: HubSettings,
) -> None:
    await ensure_topics(hub_settings)
    sink = KafkaEventSink(hub_settings)
    await sink.start()
    try:
        async with (
            running(KafkaEnrolmentDirectory(hub_settings)) as directory,
            report_app(hub_settings, directory, sink) as http,
        ):
            enrolment = copy.deepcopy(EXAMPLES["ServiceEnrolled"])
            enrolment["payload"]["enrolment_id"] = new_id = str(uuid4())
            path = "/v1/events/service-enrolled"
            made = await http.post(path, json=enrolment, headers=bearer(MUNICIPAL_KEY))
            assert made.status_code == 202, made.text
            # At once, without waiting for the directory: the look-up reads the log to its end.
            takeover = enrolment | {"municipality_code": "049", "personal_identity_code": OTHER}
            taken = await http.post(path, json=takeover, headers=bearer(ESPOO_KEY))
            assert taken.status_code == 403, taken.text
            assert taken.json()["type"].endswith("/enrolment-taken")
            bulk = await http.post(
                "/v1/bulk",
                json=[{"event_type": "ServiceEnrolled", **takeover}],
                headers=bearer(ESPOO_KEY),
            )
            assert bulk.status_code == 403, bulk.text
            assert [e["type"] for e in bulk.json()["errors"]] == ["enrolment-taken"]
            again = await http.post(path, json=enrolment, headers=bearer(MUNICIPAL_KEY))
            assert (again.status_code, again.json()) == (202, made.json())
            someone_else = await report(
                http, personal_identity_code=OTHER, payload={"enrolment_id": new_id}
            )
            assert someone_else.status_code == 403, someone_else.text
            assert someone_else.json()["type"].endswith("/enrolment-person-mismatch")
            reported = await report(http, payload={"enrolment_id": new_id})
            assert reported.status_code == 202, reported.text
    finally:
        await sink.stop()
    in_log = await event_ids_in_log(hub_settings)
    assert sorted(in_log.values()) == [1, 1]
    assert set(in_log) == {UUID(made.json()["event_id"]), UUID(reported.json()["event_id"])}
