"""The Confluent wire format end to end: register on deploy, publish, read back, on Kafka."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.paths import in_time_order
from hub.cli import cli
from hub.identity import Pseudonymizer
from hub.inspect.tail import read_log
from hub.kafka.publisher import open_publisher
from hub.kafka.topics import ensure_topics
from hub.serde import SingleObjectSerializer, build_serializer, default_catalog
from hub.serde.registry import SubjectNotFound
from hub.settings import HubSettings
from tests.registry_server import RunningRegistry, running_registry

pytestmark = pytest.mark.kafka


@pytest.fixture
def registry() -> Iterator[RunningRegistry]:
    with running_registry() as running:
        yield running


async def test_events_published_in_confluent_framing_decode_by_registry_id(
    hub_settings: HubSettings, registry: RunningRegistry
) -> None:
    registered = CliRunner().invoke(cli, ["schemas", "register", "--url", registry.url])
    assert registered.exit_code == 0, registered.output
    ids = {
        line.split(": id ")[0]: line.split(": id ")[1] for line in registered.output.splitlines()
    }
    assert len(ids) == 13

    settings = hub_settings.model_copy(update={"schema_registry_url": registry.url})
    await ensure_topics(settings)
    paths = list(simulate(SimulationConfig(jobseekers=60, seed=4), Pseudonymizer("k" * 32)))
    async with open_publisher(settings) as publisher:
        published = [event async for event, _ in publisher.publish_all(in_time_order(paths))]

    entries = [
        entry
        async for entry in read_log(
            settings,
            build_serializer(settings),
            default_catalog(),
            from_beginning=True,
            limit=None,
            follow=False,
        )
    ]
    assert [e.error for e in entries if e.error] == []
    assert {e.event["envelope"]["event_id"] for e in entries} == {
        p.envelope.event_id for p in published
    }
    for entry in entries:
        assert entry.writer_schema == ids[entry.type_name]
        assert entry.headers["ce_dataschema"] == f"urn:avro:schema:{ids[entry.type_name]}"

    # A reader without the registry reports every record as undecodable, and does not crash.
    plain = [
        entry
        async for entry in read_log(
            settings,
            SingleObjectSerializer(),
            default_catalog(),
            from_beginning=True,
            limit=5,
            follow=False,
        )
    ]
    assert all(e.error and "single-object" in e.error for e in plain)


async def test_publisher_refuses_to_start_when_schemas_are_not_registered(
    hub_settings: HubSettings, registry: RunningRegistry
) -> None:
    settings = hub_settings.model_copy(update={"schema_registry_url": registry.url})
    with pytest.raises(SubjectNotFound, match=r"Subject .fi\.te\.hub\.\w+. not found"):
        async with open_publisher(settings):
            pass
