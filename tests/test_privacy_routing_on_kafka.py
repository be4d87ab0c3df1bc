"""Sealed personal fields through ``hub route`` and ``hub deliver`` on a real broker.

Statements of several people are sealed at the edge with their data keys (the person-keys
topic: :class:`KafkaPersonKeys`) and routed by ``hub route`` to Kela, whose route grants the
identity code, and to reporting, which gets no personal field. ``hub deliver`` delivers Kela's
outbox to the local receivers. What must show:

* the receiver gets each statement's plaintext body exactly (the SHA-256 of the body it
  applied is that of the body built from the plaintext event), and no outbox topic's raw bytes
  hold an identity code or a name;
* a person forgotten before routing (``hub person forget``: marker and tombstones): their
  Kela records are dead letters of stage route with the reason, their reporting records and
  everyone else's records untouched; forgotten after routing, before delivery: dead letters of
  stage deliver; ``hub dlq list`` shows both reasons;
* the key-encryption key rotated (a new first key in HUB_KEK, ``hub keys rotate``, the old key
  removed): every earlier and later statement still opens and is delivered;
* records written before encryption, with the previous schema version (plaintext, its
  fingerprint), route and deliver unchanged; those of the forgotten person are held back.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.receivers.runner import LocalReceivers
from connectors.simulator import SimulationConfig, simulate
from hub.delivery.transport import json_body
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer
from hub.kafka.clients import make_producer
from hub.kafka.dead_letters import DeadLetter
from hub.kafka.publisher import encode_event
from hub.kafka.reading import read_topic
from hub.kafka.topics import ensure_topics, outbox_topic, person_keys_spec
from hub.privacy.datakeys import KeyDirectory
from hub.privacy.kek import LocalKeyEncryptionKeys
from hub.privacy.keystore import open_person_keys
from hub.routing.outbox import OutboxCodec
from hub.routing.router import LogRecord, RecordHandler, ensure_router_topics
from hub.routing.routes import load_routes
from hub.routing.state import PersonStates
from hub.serde import SingleObjectSerializer, default_catalog
from hub.serde.avro_body import encode_body
from hub.serde.framing import SINGLE_OBJECT_MAGIC
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT, hub_environment, settings_for
from tests.hub_process import hub_command

pytestmark = pytest.mark.kafka

SECRET = "privacy-on-kafka-secret-of-length"
STATEMENT = "LabourPolicyStatementIssued"
CODE_PATH = "payload.personal_identity_code"
KEK_OLD = "old:" + base64.b64encode(b"o" * 32).decode()
KEK_NEW = "new:" + base64.b64encode(b"n" * 32).decode()


def _routes(path: Path, port: int) -> Path:
    path.write_text(
        f"""
[destinations.kela]
transport = "webhook"
endpoint = {{ url = "http://127.0.0.1:{port}/kela" }}
retry_schedule_s = [0.2, 0.5, 1.0, 1.0, 1.0]

[destinations.reporting]
transport = "outbox"
retry_schedule_s = []

[[routes]]
name = "statement-to-kela"
types = ["{STATEMENT}"]
to = {{ destination = "kela" }}
basis = "Työttömyysturvalaki (1290/2002) 11 luku 4 §"
[routes.grants]
direct = "Työttömyysturvalaki (1290/2002) 13 luku: maksaja yksilöi henkilötunnuksella"

[[routes]]
name = "statement-to-reporting"
types = ["{STATEMENT}"]
to = {{ destination = "reporting" }}
""",
        encoding="utf-8",
    )
    return path


def _people(count: int) -> dict[str, list[CustomerPathEvent]]:
    """Statements of ``count`` simulated people, by pseudonym, in each person's order."""
    paths = simulate(SimulationConfig(jobseekers=60, seed=13), Pseudonymizer(SECRET))
    found: dict[str, list[CustomerPathEvent]] = {}
    for path in paths:
        statements = [e for e in path if e.event_type == STATEMENT]
        if statements:
            found[statements[0].envelope.subject] = statements
        if len(found) == count:
            return found
    raise AssertionError("not enough people with statements")


def _personal(events: Iterable[CustomerPathEvent], people: Iterable[str]) -> list[bytes]:
    """Identity codes and names of the people (the payload of a statement names no one else,
    so the registrations' names come from the same simulation)."""
    wanted = set(people)
    texts: set[str] = set()
    for event in events:
        payload = event.to_avro()["payload"]
        if event.envelope.subject in wanted and payload.get("personal_identity_code"):
            texts.add(str(payload["personal_identity_code"]))
    paths = simulate(SimulationConfig(jobseekers=60, seed=13), Pseudonymizer(SECRET))
    for path in paths:
        for event in path:
            if event.envelope.subject in wanted and event.event_type == "JobseekerRegistered":
                payload = event.to_avro()["payload"]
                texts.update(str(payload[k]) for k in ("first_name", "last_name") if payload[k])
    assert texts
    return [t.encode() for t in texts]


async def _publish(
    settings: HubSettings, events: list[CustomerPathEvent], sealed: bool = True
) -> None:
    """The events as the edge writes them: sealed with each person's data key."""
    serializer = SingleObjectSerializer()
    keys: dict[str, Any] = {}
    if sealed:
        with open_person_keys(settings) as store:
            keys = store.ensure({e.envelope.subject for e in events})
    producer = make_producer(settings)
    await producer.start()
    try:
        for event in events:
            encoded = encode_event(serializer, event, keys.get(event.envelope.subject))
            await producer.send_and_wait(
                settings.topic_customer_path,
                encoded.value,
                key=encoded.key,
                headers=list(encoded.headers),
            )
    finally:
        await producer.stop()


async def _publish_v2_plaintext(settings: HubSettings, events: list[CustomerPathEvent]) -> None:
    """Plaintext records written with the statement schema's version 2 (before encryption)."""
    catalog = default_catalog()
    old = next(v for v in catalog.event(STATEMENT).history if v.version == 2)
    assert old.fingerprint != catalog.current(STATEMENT).fingerprint
    serializer = SingleObjectSerializer()
    producer = make_producer(settings)
    await producer.start()
    try:
        for event in events:
            plain = encode_event(serializer, event, None)
            value = encode_body(
                SINGLE_OBJECT_MAGIC + old.fingerprint, old.parsed, old.type_name, event.to_avro()
            )
            headers = [(k, v) for k, v in plain.headers if k != "ce_dataschema"]
            await producer.send_and_wait(
                settings.topic_customer_path, value, key=plain.key, headers=headers
            )
    finally:
        await producer.stop()


def _expected_body_sha(settings: HubSettings, event: CustomerPathEvent) -> str:
    """SHA-256 of the body built from the plaintext event routed to kela."""
    config = load_routes(settings)
    handler = RecordHandler(
        settings,
        config,
        serializer=SingleObjectSerializer(),
        keys=KeyDirectory(LocalKeyEncryptionKeys.from_text(KEK_OLD)),
    )
    encoded = encode_event(SingleObjectSerializer(), event, None)
    record = LogRecord(settings.topic_customer_path, 0, 0, encoded.key, encoded.value)
    outcome = handler.handle(record, PersonStates().batch())
    [kela] = [r for r in outcome.records if r.topic == outbox_topic(settings, "kela")]
    decoded = OutboxCodec.for_routes(config).decode(kela.value or b"")
    return hashlib.sha256(json_body(STATEMENT, decoded.record)).hexdigest()


def _hub(settings: HubSettings, tmp_path: Path, *args: str, kek: str) -> str:
    env = hub_environment(settings, HUB_KEK=kek, HUB_LOG_LEVEL="WARNING")
    result = hub_command(
        *args, env={k: v for k, v in env.items() if k.startswith("HUB_")}, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class Deliverer:
    """``hub deliver --destination kela`` in a process of its own, stopped by SIGTERM."""

    def __init__(self, settings: HubSettings, tmp_path: Path, kek: str) -> None:
        env = hub_environment(
            settings, HUB_KEK=kek, HUB_LOG_LEVEL="WARNING", PYTHONPATH=str(REPO_ROOT)
        )
        self.log = tmp_path / f"deliver-{uuid.uuid4().hex[:6]}.log"
        self._out = self.log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub",
                "deliver",
                "--destination",
                "kela",
                "--commit-interval",
                "0.2",
            ],
            env=env,
            cwd=tmp_path,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self._out.close()
        text = self.log.read_text(errors="replace")
        assert code == 0, text[-3000:]
        return text


async def _until(condition: Callable[[], Any], what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _letters(settings: HubSettings) -> list[tuple[DeadLetter, bytes | None, bytes | None]]:
    return [
        (DeadLetter.from_headers(r.headers), r.key, r.value)
        async for r in read_topic(settings, settings.topic_dead_letter)
    ]


async def _raw(settings: HubSettings, topic: str) -> list[bytes]:
    """Every record of a topic as bytes: key, value and headers."""
    found = []
    async for r in read_topic(settings, topic):
        headers = b"".join(k.encode() + (v or b"") for k, v in (r.headers or ()))
        found.append((r.key or b"") + (r.value or b"") + headers)
    return found


async def test_sealed_statements_routed_delivered_forgotten_and_the_kek_rotated(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    base = settings_for(
        kafka_bootstrap,
        partitions=3,
        pseudonym_secret=SecretStr(SECRET),
        kek=SecretStr(KEK_OLD),
        topic_person_keys=f"test.person-keys.{uuid.uuid4().hex[:12]}",
        state_dir=tmp_path / "hub-state",
    )
    receivers = LocalReceivers(base).start()
    try:
        settings = base.model_copy(
            update={"routes_file": _routes(tmp_path / "routes.toml", receivers.port)}
        )
        await ensure_router_topics(settings, load_routes(settings))
        # Created here first: KafkaPersonKeys describes a topic it has just created, which a
        # fresh broker may not know yet (UNKNOWN_TOPIC_OR_PART).
        await ensure_topics(settings, extra=[person_keys_spec(settings)])
        people = _people(6)
        subjects = list(people)
        early, late = subjects[0], subjects[1]  # forgotten before routing / before delivery
        kept = subjects[2:5]
        newcomer = subjects[5]  # first seen after the rotation
        first = [e for s in subjects[:5] for e in people[s]]
        await _publish(settings, first)

        # -- forgotten before routing ------------------------------------------------------
        _hub(
            settings,
            tmp_path,
            "person",
            "forget",
            "--pseudonym",
            early,
            "--basis",
            "order",
            "--reason",
            "test: erasure ordered",
            kek=KEK_OLD,
        )
        routed = _hub(settings, tmp_path, "route", "--until-idle", kek=KEK_OLD)
        assert f"dead letters: route {len(people[early])}" in routed
        letters = await _letters(settings)
        assert len(letters) == len(people[early])
        for letter, key, value in letters:
            assert letter.stage == "route"
            assert letter.error_class == "PersonalDataErased"
            assert letter.destination == "kela"
            assert "route statement-to-kela: destination kela" in letter.reason
            assert CODE_PATH in letter.reason
            assert "was erased on 20" in letter.reason
            assert key == early.encode()
            assert value is not None  # the sealed log value: unreadable without the key
        reporting = await _raw(settings, outbox_topic(settings, "reporting"))
        assert len(reporting) == len(first), "reporting gets every statement, forgotten or not"

        # -- forgotten after routing, before delivery ---------------------------------------
        _hub(
            settings,
            tmp_path,
            "person",
            "forget",
            "--pseudonym",
            late,
            "--basis",
            "order",
            "--reason",
            "test: erasure ordered",
            kek=KEK_OLD,
        )
        deliverer = Deliverer(settings, tmp_path, KEK_OLD)
        expected = {
            str(e.envelope.event_id): _expected_body_sha(settings, e)
            for s in kept
            for e in people[s]
        }

        async def settled() -> bool:
            deliver_letters = [x for x in await _letters(settings) if x[0].stage == "deliver"]
            applied = receivers.applied("kela")
            return len(applied) >= len(expected) and len(deliver_letters) >= len(people[late])

        await _until(settled, "kela's statements delivered and the late person's dead letters")
        deliverer.stop()
        applied = receivers.applied("kela")
        assert {a["event_id"]: a["body_sha256"] for a in applied} == expected
        deliver_letters = [x for x in await _letters(settings) if x[0].stage == "deliver"]
        assert len(deliver_letters) == len(people[late])
        for letter, key, _ in deliver_letters:
            assert letter.error_class == "PersonalDataErased"
            assert "route statement-to-kela: destination kela" in letter.reason
            assert CODE_PATH in letter.reason
            assert key == late.encode()
        # Nothing in clear in the outboxes: routed and delivered from sealed records only.
        secrets = _personal(first, subjects)
        for destination in ("kela", "reporting"):
            for raw in await _raw(settings, outbox_topic(settings, destination)):
                assert not any(s in raw for s in secrets), f"personal data in clear: {destination}"
        listed = _hub(settings, tmp_path, "dlq", "list", "--json", kek=KEK_OLD)
        rows = [json.loads(line) for line in listed.splitlines() if line.startswith("{")]
        assert Counter((r["stage"], r["error_class"]) for r in rows) == {
            ("route", "PersonalDataErased"): len(people[early]),
            ("deliver", "PersonalDataErased"): len(people[late]),
        }
        assert all(CODE_PATH in r["reason"] and "kela" in r["reason"] for r in rows)

        # -- the KEK rotated, the old one removed; old plaintext (schema v2) ---------------
        _hub(settings, tmp_path, "keys", "rotate", kek=f"{KEK_NEW},{KEK_OLD}")
        rotated = settings.model_copy(update={"kek": SecretStr(KEK_NEW)})
        second = [*people[newcomer]]
        await _publish(rotated, second)
        old_plain = [people[kept[0]][0], people[early][0]]
        await _publish_v2_plaintext(rotated, old_plain)
        routed = _hub(rotated, tmp_path, "route", "--until-idle", kek=KEK_NEW)
        assert "dead letters: route 1" in routed  # the forgotten person's plaintext
        restricted = [
            x for x in await _letters(rotated) if x[0].error_class == "PersonalDataRestricted"
        ]
        assert [(x[1], x[2]) for x in restricted] == [(early.encode(), None)]
        deliverer = Deliverer(rotated, tmp_path, KEK_NEW)
        again = {str(e.envelope.event_id): _expected_body_sha(settings, e) for e in second}

        async def delivered_again() -> bool:
            return len(receivers.applied("kela")) >= len(expected) + len(again)

        await _until(delivered_again, "the statements routed after the rotation")
        # The plaintext v2 copy of a delivered statement has its event id: the receiver
        # drops it as a duplicate of the same body (a 409 would mean another body).
        await _until(
            lambda: _async(receivers.stats()["receivers"]["kela"]["duplicates"] >= 1),
            "the plaintext copy's duplicate",
        )
        deliverer.stop()
        stats = receivers.stats()["receivers"]["kela"]
        assert stats["conflicts"] == 0, "the plaintext v2 record's body equals the sealed one's"
        bodies = {a["event_id"]: a["body_sha256"] for a in receivers.applied("kela")}
        assert bodies == {**expected, **again}

        # Still nothing in clear but what the log held in clear before encryption (the v2
        # plaintext of one statement, copied as it is: its person is not forgotten).
        secrets = _personal(first + second, [s for s in subjects if s != kept[0]])
        for destination in ("kela", "reporting"):
            for raw in await _raw(settings, outbox_topic(settings, destination)):
                assert not any(s in raw for s in secrets), f"personal data in clear: {destination}"
    finally:
        receivers.stop()


async def _async(value: bool) -> bool:
    return value
