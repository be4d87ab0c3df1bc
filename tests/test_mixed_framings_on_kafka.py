"""A log with both framings reads whole, on a real broker and a real registry (Apicurio).

A deployment that switches a schema registry on keeps its history: the customer-path topic then
holds single-object values (``C3 01``, written before) and Confluent values (``00`` + id, written
after). Readers pick the framing from each value's marker byte, whatever the settings say.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.paths import in_time_order
from hub.events.customer_path import ServiceEnrolled
from hub.identity import Pseudonymizer
from hub.intake.enrolments import KafkaEnrolmentDirectory
from hub.kafka.publisher import open_publisher
from hub.kafka.topics import ensure_topics
from hub.serde import default_catalog
from hub.settings import HubSettings
from tests.hub_process import hub_command, register_schemas

pytestmark = pytest.mark.kafka


@dataclass(frozen=True)
class MixedLog:
    before: list[Any]
    """Events published before the registry was switched on (single-object)."""
    after: list[Any]
    """Events published after it (Confluent wire format)."""
    ids: dict[str, int]
    """Registry id of each event type's current schema."""
    with_registry: HubSettings


async def write_mixed_log(settings: HubSettings, registry_url: str, cwd: Path) -> MixedLog:
    """Half the events without a registry, then ``hub schemas register``, then the rest."""
    await ensure_topics(settings)
    paths = simulate(SimulationConfig(jobseekers=25, seed=11), Pseudonymizer("m" * 32))
    events = list(in_time_order(list(paths)))
    half = len(events) // 2
    async with open_publisher(settings) as publisher:
        before = [event async for event, _ in publisher.publish_all(events[:half])]
    ids = register_schemas(registry_url, cwd)
    with_registry = settings.model_copy(update={"schema_registry_url": registry_url})
    async with open_publisher(with_registry) as publisher:
        after = [event async for event, _ in publisher.publish_all(events[half:])]
    assert before
    assert after
    return MixedLog(before, after, ids, with_registry)


def tail(settings: HubSettings, cwd: Path, registry_url: str | None) -> tuple[int, list[Any], str]:
    """``hub tail --from-beginning`` as a person runs it; exit code, JSON lines, stderr."""
    env = {
        "HUB_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "HUB_TOPIC_CUSTOMER_PATH": settings.topic_customer_path,
        "HUB_LOG_JSON": "false",
    }
    if registry_url is not None:
        env["HUB_SCHEMA_REGISTRY_URL"] = registry_url
    result = hub_command("tail", "--from-beginning", env=env, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return (
        result.returncode,
        [json.loads(line) for line in result.stdout.splitlines()],
        result.stderr,
    )


def event_ids(events: list[Any]) -> set[str]:
    return {str(event.envelope.event_id) for event in events}


async def test_hub_tail_reads_both_framings_with_and_without_the_registry(
    hub_settings: HubSettings, schema_registry: str, tmp_path: Path
) -> None:
    log = await write_mixed_log(hub_settings, schema_registry, tmp_path)
    fingerprints = {e.full_name: e.current.fingerprint_hex for e in default_catalog()}

    # With the registry: every record decodes, each by its own framing.
    code, entries, stderr = tail(hub_settings, tmp_path, schema_registry)
    assert code == 0, stderr
    assert [e["error"] for e in entries if e["error"]] == []
    by_id = {e["event"]["envelope"]["event_id"]: e for e in entries}
    assert len(by_id) == len(entries) == len(log.before) + len(log.after)
    assert set(by_id) == event_ids(log.before) | event_ids(log.after)
    for event_id in event_ids(log.before):
        entry = by_id[event_id]
        assert entry["writer_schema"] == fingerprints[entry["type_name"]]  # single-object
    for event_id in event_ids(log.after):
        entry = by_id[event_id]
        assert entry["writer_schema"] == str(log.ids[entry["type_name"]])  # Confluent

    # Without it: the single-object records decode, each Confluent one is reported clearly.
    code, entries, stderr = tail(hub_settings, tmp_path, None)
    assert code == 1
    assert f"{len(log.after)} record(s) could not be decoded" in stderr
    decoded = [e for e in entries if e["error"] is None]
    failed = [e for e in entries if e["error"] is not None]
    assert {e["event"]["envelope"]["event_id"] for e in decoded} == event_ids(log.before)
    assert len(failed) == len(log.after)
    for entry in failed:
        schema_id = log.ids[entry["headers"]["ce_type"]]
        assert entry["event"] is None
        assert f"registry schema id {schema_id}: " in entry["error"]
        assert "needs the schema registry" in entry["error"]
        assert "HUB_SCHEMA_REGISTRY_URL" in entry["error"]


async def test_enrolment_directory_learns_enrolments_of_both_framings(
    hub_settings: HubSettings, schema_registry: str, tmp_path: Path
) -> None:
    log = await write_mixed_log(hub_settings, schema_registry, tmp_path)
    enrolled = {
        when: [UUID(str(e.payload.enrolment_id)) for e in events if isinstance(e, ServiceEnrolled)]
        for when, events in (("before", log.before), ("after", log.after))
    }
    assert enrolled["before"]
    assert enrolled["after"]
    directory = KafkaEnrolmentDirectory(log.with_registry)
    directory.start()
    try:
        found = await directory.enrolments(enrolled["before"] + enrolled["after"])
    finally:
        await directory.stop()
    assert set(found) == set(enrolled["before"]) | set(enrolled["after"])
