"""``hub person expire`` on the real broker: only the person whose relationship ended longer ago
than the rule allows is forgotten, and their keys then refuse as erased.

Four people in a reporting store: A's only spell ended in 2015, B's ended a month before the
check, C's has been open since 2020, D never had a spell: only a service enrolment in 2016 and a
participation report of 2017. The check day is 1.12.2026; the rule in force then keeps data
five years (``personal_data_retention.csv``), so A and D have expired.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from connectors.simulator import SimulationConfig, simulate
from hub.events import CustomerPathEvent
from hub.events.customer_path import (
    JobSearchEnded,
    JobseekerRegistered,
    ServiceEnrolled,
    ServiceParticipationReported,
)
from hub.identity import Pseudonymizer
from hub.kafka.reading import read_topic
from hub.kafka.topics import ensure_topics
from hub.privacy.kek import LocalKeyEncryptionKeys
from hub.privacy.keystore import open_person_keys
from hub.privacy.sealing import KeyErased
from hub.reporting.store import ReportingStore
from hub.rules.retention import retention_rule
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT, SIMULATION_SECRET, hub_environment, settings_for

pytestmark = pytest.mark.kafka

KEK = "e1:" + base64.b64encode(b"e" * 32).decode()
AS_OF = date(2026, 12, 1)


def _spell(
    registration: JobseekerRegistered, template: JobSearchEnded, started: date, ended: date | None
) -> list[CustomerPathEvent]:
    """A registration on ``started`` and, when ``ended``, its end: the simulated events moved."""
    at = datetime(started.year, started.month, started.day, 9, tzinfo=UTC)
    envelope = registration.envelope.model_copy(
        update={
            "event_id": uuid.uuid4(),
            "correlation_id": uuid.uuid4(),  # a spell of its own
            "occurred_at": at,
            "recorded_at": at,
        }
    )
    payload = registration.payload.model_copy(update={"job_search_started_on": started})
    events: list[CustomerPathEvent] = [
        registration.model_copy(update={"envelope": envelope, "payload": payload})
    ]
    if ended is not None:
        end_at = datetime(ended.year, ended.month, ended.day, 9, tzinfo=UTC)
        end_envelope = template.envelope.model_copy(
            update={
                "event_id": uuid.uuid4(),
                "subject": envelope.subject,
                "correlation_id": envelope.correlation_id,
                "causation_id": envelope.event_id,
                "occurred_at": end_at,
                "recorded_at": end_at,
            }
        )
        end_payload = template.payload.model_copy(update={"ended_on": ended})
        events.append(
            template.model_copy(update={"envelope": end_envelope, "payload": end_payload})
        )
    return events


@dataclass
class World:
    settings: HubSettings
    store: Path
    old: str
    recent: str
    open: str
    keys: dict[str, UUID]
    no_spell: str = ""


@pytest.fixture
def world(kafka_bootstrap: str, tmp_path: Path) -> World:
    settings = settings_for(
        kafka_bootstrap,
        state_dir=tmp_path / "hub-state",
        topic_person_keys=f"test.person-keys.{uuid.uuid4().hex[:10]}",
        kek=KEK,
    )
    asyncio.run(ensure_topics(settings))
    config = SimulationConfig(jobseekers=30, seed=97)
    events = [e for p in simulate(config, Pseudonymizer(SIMULATION_SECRET)) for e in p]
    registrations = [e for e in events if isinstance(e, JobseekerRegistered)][:4]
    template = next(e for e in events if isinstance(e, JobSearchEnded))
    old, recent, still, without = registrations
    enrolment = next(e for e in events if isinstance(e, ServiceEnrolled))
    participation = next(e for e in events if isinstance(e, ServiceParticipationReported))
    store_events = [
        *_spell(old, template, date(2014, 2, 3), date(2015, 6, 30)),
        *_spell(recent, template, date(2019, 1, 7), date(2020, 1, 31)),
        *_spell(recent, template, date(2026, 3, 2), AS_OF - timedelta(days=30)),  # a new spell
        *_spell(still, template, date(2020, 5, 4), None),
        _moved(enrolment, without.envelope.subject, date(2016, 5, 3)),
        _moved(participation, without.envelope.subject, date(2017, 3, 31)),
    ]
    path = tmp_path / "store.duckdb"
    with ReportingStore(path) as store:
        assert store.load_events(store_events) == len(store_events)
    subjects = [r.envelope.subject for r in registrations]
    with open_person_keys(settings, LocalKeyEncryptionKeys.from_text(KEK)) as keys:
        made = keys.ensure(subjects)
    return World(
        settings, path, subjects[0], subjects[1], subjects[2],
        keys={s: k.key_id for s, k in made.items()}, no_spell=subjects[3],
    )  # fmt: skip


def _moved(event: CustomerPathEvent, subject: str, day: date) -> CustomerPathEvent:
    """A simulated event of another person, on ``day`` (a fact that is not a spell)."""
    at = datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
    envelope = event.envelope.model_copy(
        update={"event_id": uuid.uuid4(), "subject": subject, "occurred_at": at, "recorded_at": at}
    )
    return event.model_copy(update={"envelope": envelope})


def _expire(world: World, *extra: str) -> subprocess.CompletedProcess[str]:
    env = hub_environment(world.settings, HUB_LOG_LEVEL="WARNING", HUB_KEK="not a keyring")
    return subprocess.run(
        [sys.executable, "-m", "hub", "person", "expire", "--as-of", AS_OF.isoformat(),
         "--store", str(world.store), *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip


async def _disclosures(settings: HubSettings) -> bytes:
    found = b""
    async for record in read_topic(settings, settings.topic_disclosures):
        found += (record.key or b"") + (record.value or b"")
    return found


def test_only_the_person_whose_relationship_ended_long_ago_is_forgotten(world: World) -> None:
    rule = retention_rule(AS_OF).value
    assert rule.years == 5  # the hand-computed cases above assume the rule in force
    # An unverified rule is not applied without saying so: nothing is forgotten.
    refused = _expire(world)
    if not rule.verified:
        assert refused.returncode == 1, refused.stderr
        assert "not verified against the statute" in refused.stderr
    dry = _expire(world, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "checked 4 person(s): 2 expired (would forget them), 0 already forgotten" in dry.stdout
    assert "1 with an open spell, 1 within the retention period" in dry.stdout
    for subject in (world.old, world.recent, world.open, world.no_spell):
        assert subject not in dry.stdout + dry.stderr  # counts only
    with open_person_keys(world.settings, LocalKeyEncryptionKeys.from_text(KEK)) as keys:
        assert keys.forgotten(world.old) is None  # the dry run forgot nobody
        assert keys.forgotten(world.no_spell) is None

    done = _expire(world, "--accept-unverified-rule")
    assert done.returncode == 0, done.stderr
    assert "checked 4 person(s): 2 expired (forgot them), 0 already forgotten" in done.stdout
    assert "erasures recorded" in done.stdout
    assert "forgot 2 person(s), erasures recorded (2 forgotten so far)" in done.stderr

    with open_person_keys(world.settings, LocalKeyEncryptionKeys.from_text(KEK)) as keys:
        mark = keys.forgotten(world.old)
        assert mark is not None
        assert mark.reason == rule.reason()
        with pytest.raises(KeyErased):  # what a route needing A's fields dead-letters with
            keys.data_key(world.old, world.keys[world.old])
        assert keys.forgotten(world.no_spell) is not None  # no spell: ended on the last fact
        with pytest.raises(KeyErased):
            keys.data_key(world.no_spell, world.keys[world.no_spell])
        assert keys.forgotten(world.recent) is None
        assert keys.forgotten(world.open) is None
        assert keys.data_key(world.recent, world.keys[world.recent]).subject == world.recent
        assert keys.data_key(world.open, world.keys[world.open]).subject == world.open

    disclosed = asyncio.run(_disclosures(world.settings))
    assert world.old.encode() in disclosed
    assert world.no_spell.encode() in disclosed
    assert rule.rule_id.encode() in disclosed
    assert world.recent.encode() not in disclosed
    assert world.open.encode() not in disclosed

    again = _expire(world, "--accept-unverified-rule")
    assert again.returncode == 0, again.stderr
    assert "0 expired (forgot them), 2 already forgotten" in again.stdout


def test_expire_refuses_a_missing_store_and_an_unreachable_key_topic(
    world: World, tmp_path: Path
) -> None:
    missing = _expire(world, "--dry-run", "--store", str(tmp_path / "none.duckdb"))
    assert missing.returncode == 1
    assert "no reporting store" in missing.stderr
    env_world = World(
        world.settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:9"}),
        world.store, world.old, world.recent, world.open, world.keys,
    )  # fmt: skip
    away = _expire(env_world, "--dry-run", "--keys-timeout", "3")
    assert away.returncode == 1, away.stderr
    assert "person-keys topic" in away.stderr
    assert "Traceback" not in away.stderr
