"""The enrolment directory learns providers from the log, before and after it caught up."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest

from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.paths import in_time_order
from hub.events.customer_path import ServiceEnrolled
from hub.identity import Pseudonymizer
from hub.intake.enrolments import KafkaEnrolmentDirectory
from hub.kafka.publisher import open_publisher
from hub.kafka.topics import ensure_topics
from hub.settings import HubSettings

pytestmark = pytest.mark.kafka


async def test_providers_of_enrolments_before_and_after_catch_up(
    hub_settings: HubSettings,
) -> None:
    await ensure_topics(hub_settings)
    paths = list(simulate(SimulationConfig(jobseekers=120, seed=2), Pseudonymizer("e" * 32)))
    events = list(in_time_order(paths))
    enrolled = [e for e in events if isinstance(e, ServiceEnrolled)]
    later = enrolled.pop()
    assert enrolled
    async with open_publisher(hub_settings) as publisher:
        async for _ in publisher.publish_all(e for e in events if e is not later):
            pass
        directory = KafkaEnrolmentDirectory(hub_settings)
        directory.start()
        try:
            await asyncio.wait_for(directory.caught_up.wait(), 30)
            assert len(directory) == len(enrolled)
            for event in enrolled:
                provider = await directory.provider_of(event.payload.enrolment_id)
                assert provider == event.payload.provider_business_id
            assert await directory.provider_of(uuid4()) is None

            await publisher.publish(later)
            for _ in range(100):
                if await directory.provider_of(later.payload.enrolment_id):
                    break
                await asyncio.sleep(0.1)
            assert (
                await directory.provider_of(later.payload.enrolment_id)
                == later.payload.provider_business_id
            )
        finally:
            await directory.stop()
