"""The enrolment directory on the real log: first fact wins, answers are current, or a 503."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

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
from tests.ingest_fakes import (
    HELSINKI_CRM,
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
OTHER_SUBJECT = Pseudonymizer(SECRET).pseudonym("010516B903X")


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


def report_app(settings: HubSettings, directory: KafkaEnrolmentDirectory) -> httpx.AsyncClient:
    app = create_app(
        settings,
        FakeSink(),
        make_clients(),
        directory,
        FixedClock(NOW),
        pseudonymizer=Pseudonymizer(SECRET),
        registry=CollectorRegistry(),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test")


async def report(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post(
        "/v1/providers/participation",
        json=EXAMPLES["ServiceParticipationReported"],
        headers=bearer(PROVIDER_KEY),
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
        async with running(directory):
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
