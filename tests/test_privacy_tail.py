"""``hub tail`` holds no key; ``hub tail --reveal`` opens sealed fields only with key access.

A log on the real broker holds five people: one written in plaintext before field encryption,
one sealed with a live data key, one sealed and then forgotten, one written in plaintext before
field encryption and then forgotten, and one sealed whose processing is restricted (GDPR
art. 18). Expected values come from the simulated events the test wrote, never from the
command.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest

from connectors.simulator import SimulationConfig, simulate
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer
from hub.inspect.tail import (
    BYTES_PLACEHOLDER,
    RESTRICTED_PLACEHOLDER,
    STRAY_CODES,
    LogEntry,
    _with_stray_codes,
    mask_sensitive,
)
from hub.kafka.clients import make_admin, make_producer
from hub.kafka.reading import read_topic
from hub.kafka.topics import ensure_topics
from hub.privacy.datakeys import RESTRICTED, Restricted, encode_restricted, record_key
from hub.privacy.fields import SEALED_PLACEHOLDER, SealedFields
from hub.privacy.kek import LocalKeyEncryptionKeys
from hub.privacy.keystore import open_person_keys
from hub.privacy.sealing import DataKey, seal_value
from hub.serde import SingleObjectSerializer
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT, SIMULATION_SECRET, hub_environment, settings_for

KEK = "t1:" + base64.b64encode(b"k" * 32).decode()
MOVED = uuid.UUID("6b0f3c1e-9d2a-4c5b-8e7f-0a1b2c3d4e5f")
OTHER_KEK = "t2:" + base64.b64encode(b"o" * 32).decode()


# -- without a broker --------------------------------------------------------------------------


def test_a_sealed_value_is_never_masked_away_as_plaintext_and_bytes_never_print() -> None:
    key = DataKey("s", uuid.uuid4(), b"x" * 32, datetime.now(UTC))
    event_id = uuid.uuid4()
    sealed = seal_value(key, event_id, "payload.last_name", b"Virtanen")
    record = {"envelope": {"event_id": event_id}, "payload": {"last_name": sealed, "x": "a"}}
    masked = mask_sensitive(record, {"payload.last_name": None})
    assert masked["payload"]["last_name"] is sealed  # left for redact, which says <sealed>
    plain = mask_sensitive({"payload": {"last_name": "Virtanen"}}, {"payload.last_name": None})
    assert plain["payload"]["last_name"] == "***"
    entry = LogEntry("t", 0, 0, 0, None, {}, None, None, {"a": sealed, "b": b"\x00raw"}, None)
    shown = json.loads(entry.to_json())
    assert shown["event"] == {"a": SEALED_PLACEHOLDER, "b": BYTES_PLACEHOLDER}
    assert "revealed" not in shown
    assert "unopened" not in shown


def test_reveal_needs_a_reason_and_refuses_an_identity_code_in_it(tmp_path: Path) -> None:
    env = {**os.environ, "HUB_STATE_DIR": str(tmp_path), "HUB_KAFKA_BOOTSTRAP": "127.0.0.1:9"}
    for extra, said in (
        ([], "--reveal needs --reason"),
        (["--reason", "  "], "--reveal needs --reason"),
        (
            ["--reason", "asked by 010594Y9032"],
            "--reason must not hold personal data (identity code found)",
        ),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "hub", "tail", "--reveal", *extra],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert said in done.stderr
        assert done.stdout == ""
        assert "010594Y9032" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "hub", "tail", "--reason", "curious"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "go with --reveal" in done.stderr


# -- on the broker -----------------------------------------------------------------------------


@dataclass
class Log:
    settings: HubSettings
    plain: list[CustomerPathEvent]
    live: list[CustomerPathEvent]
    forgotten: list[CustomerPathEvent]
    plain_forgotten: list[CustomerPathEvent]
    restricted: list[CustomerPathEvent]
    codes: dict[str, str]
    """pseudonym → identity code"""
    names: dict[str, str]


def _people() -> list[list[CustomerPathEvent]]:
    paths = list(
        simulate(SimulationConfig(jobseekers=3, seed=93), Pseudonymizer(SIMULATION_SECRET))
    )
    paths += simulate(SimulationConfig(jobseekers=2, seed=94), Pseudonymizer(SIMULATION_SECRET))
    assert len({p[0].envelope.subject for p in paths}) == 5
    return paths


async def _write(settings: HubSettings, records: list[tuple[str, bytes]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        for subject, value in records:
            await producer.send_and_wait(
                settings.topic_customer_path, key=subject.encode(), value=value
            )
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def log(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Log:
    suffix = uuid.uuid4().hex[:10]
    settings = settings_for(
        kafka_bootstrap,
        state_dir=tmp_path_factory.mktemp("tail") / "hub-state",
        topic_person_keys=f"test.person-keys.{suffix}",
        kek=KEK,
    )
    asyncio.run(ensure_topics(settings))
    plain, live, forgotten, plain_forgotten, restricted = _people()
    serializer = SingleObjectSerializer()
    fields = SealedFields()
    records: list[tuple[str, bytes]] = []
    kek = LocalKeyEncryptionKeys.from_text(KEK)
    with open_person_keys(settings, kek) as keys:
        got = keys.ensure([p[0].envelope.subject for p in (live, forgotten, restricted)])
        for event in plain + plain_forgotten:  # written before field encryption
            records.append(
                (event.envelope.subject, serializer.encode(event.full_name(), event.to_avro()))
            )
        for event in live + forgotten + restricted:
            key = got[event.envelope.subject]
            sealed = fields.seal(event.full_name(), event.to_avro(), key)
            records.append((event.envelope.subject, serializer.encode(event.full_name(), sealed)))
        # The live person's sealed values moved into another event (a new event id): the
        # associated data no longer matches, so they must stay sealed even with the key.
        moved = live[0].model_copy(
            update={"envelope": live[0].envelope.model_copy(update={"event_id": MOVED})}
        )
        sealed = fields.seal(live[0].full_name(), live[0].to_avro(), got[live[0].envelope.subject])
        copied = {**sealed, "envelope": moved.to_avro()["envelope"]}
        records.append((live[0].envelope.subject, serializer.encode(moved.full_name(), copied)))
        asyncio.run(_write(settings, records))
        keys.forget(forgotten[0].envelope.subject, reason="test: forgotten on request")
        keys.forget(plain_forgotten[0].envelope.subject, reason="test: forgotten, no key")
        asyncio.run(_restrict(settings, restricted[0].envelope.subject))
    people = (plain, live, forgotten, plain_forgotten, restricted)
    codes = {p[0].envelope.subject: p[0].payload.personal_identity_code for p in people}  # type: ignore[attr-defined]
    names = {p[0].envelope.subject: p[0].payload.last_name for p in people}  # type: ignore[attr-defined]
    return Log(settings, plain, live, forgotten, plain_forgotten, restricted, codes, names)


async def _restrict(settings: HubSettings, subject: str) -> None:
    """The restriction marker of the person-keys topic, written as the key store writes it."""
    producer = make_producer(settings)
    await producer.start()
    try:
        mark = Restricted(subject, datetime.now(UTC), "GDPR art. 18: accuracy contested")
        await producer.send_and_wait(
            settings.topic_person_keys,
            key=record_key(subject, RESTRICTED),
            value=encode_restricted(mark),
        )
    finally:
        await producer.stop()


def _tail(log: Log, *extra: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = hub_environment(log.settings, HUB_LOG_LEVEL="WARNING", **variables)
    return subprocess.run(
        [sys.executable, "-m", "hub", "tail", "--from-beginning", *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _entries(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    found = {}
    for line in done.stdout.splitlines():
        entry = json.loads(line)
        found[entry["event"]["envelope"]["event_id"]] = entry
    return found


def _registration(entries: dict[str, dict[str, Any]], events: list[CustomerPathEvent]) -> Any:
    return entries[str(events[0].envelope.event_id)]["event"]["payload"]


@pytest.mark.kafka
def test_tail_without_reveal_shows_sealed_and_masked_values_and_needs_no_key(log: Log) -> None:
    # A broken KEK setting and an unreachable key topic change nothing: tail never asks.
    untouched = f"test.person-keys-untouched.{uuid.uuid4().hex[:8]}"
    done = _tail(log, HUB_KEK="not a keyring", HUB_TOPIC_PERSON_KEYS=untouched)
    assert done.returncode == 0, done.stderr
    entries = _entries(done)
    people = (log.plain, log.live, log.forgotten, log.plain_forgotten, log.restricted)
    assert len(entries) == sum(len(p) for p in people) + 1
    for code in log.codes.values():
        assert code not in done.stdout
    for name in log.names.values():
        assert f'"{name}"' not in done.stdout
    assert _registration(entries, log.live)["personal_identity_code"] == SEALED_PLACEHOLDER
    assert _registration(entries, log.forgotten)["last_name"] == SEALED_PLACEHOLDER
    assert _registration(entries, log.plain)["personal_identity_code"] == "***"
    assert "<erased>" not in done.stdout
    assert "disclosure" not in done.stderr
    assert untouched not in asyncio.run(_topics(log.settings))  # never even looked for


async def _topics(settings: HubSettings) -> set[str]:
    admin = make_admin(settings)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


@pytest.mark.kafka
def test_reveal_opens_live_keys_erases_the_forgotten_and_records_the_access(log: Log) -> None:
    reason = _unique_reason("test reveal")
    done = _tail(log, "--reveal", "--reason", reason, "--operator", "tester-e")
    assert done.returncode == 0, done.stderr
    assert "recorded in the disclosure log" in done.stderr
    assert "operator tester-e" in done.stderr
    entries = _entries(done)
    live, forgotten, plain = (s[0].envelope.subject for s in (log.live, log.forgotten, log.plain))
    assert _registration(entries, log.live)["personal_identity_code"] == log.codes[live]
    assert _registration(entries, log.live)["last_name"] == log.names[live]
    assert _registration(entries, log.plain)["personal_identity_code"] == log.codes[plain]
    erased = _registration(entries, log.forgotten)
    assert erased["personal_identity_code"] == "<erased>"
    assert erased["last_name"] == "<erased>"
    assert log.codes[forgotten] not in done.stdout
    assert log.names[forgotten] not in done.stdout
    moved = entries[str(MOVED)]["event"]["payload"]
    assert moved["personal_identity_code"] == SEALED_PLACEHOLDER  # moved: fails to open
    assert moved["last_name"] == SEALED_PLACEHOLDER
    assert re.search(r"[1-9][0-9]* other value\(s\) left sealed", done.stderr), done.stderr
    assert str(MOVED).encode() not in asyncio.run(_disclosure_bytes(log.settings))
    # The disclosure log names who, why and which events; never the values.
    disclosed = asyncio.run(_disclosure_bytes(log.settings))
    assert reason.encode() in disclosed
    assert b"tester-e" in disclosed
    assert str(log.live[0].envelope.event_id).encode() in disclosed
    assert str(log.plain[0].envelope.event_id).encode() in disclosed
    assert str(log.forgotten[0].envelope.event_id).encode() not in disclosed  # nothing shown
    assert b"personal_identity_code" in disclosed
    for code in log.codes.values():
        assert code.encode() not in disclosed
    for name in log.names.values():
        assert name.encode() not in disclosed


@pytest.mark.kafka
def test_reveal_refuses_without_a_usable_kek_or_key_topic(log: Log) -> None:
    bad = _tail(log, "--reveal", "--reason", "x", HUB_KEK="t1:not-base64!")
    assert bad.returncode == 1
    assert "cannot reveal: the key-encryption key" in bad.stderr
    assert bad.stdout == ""
    wrong = _tail(log, "--reveal", "--reason", "x", HUB_KEK=OTHER_KEK)
    assert wrong.returncode == 1, wrong.stderr
    assert "opens none of the 2 newest stored data keys" in wrong.stderr
    assert wrong.stdout == ""
    away = _tail(
        log,
        "--reveal",
        "--reason",
        "x",
        "--keys-timeout",
        "3",
        HUB_KAFKA_BOOTSTRAP="127.0.0.1:9",
    )
    assert away.returncode == 1, away.stderr
    assert "cannot reveal: person-keys topic" in away.stderr
    assert away.stdout == ""
    for done in (bad, wrong, away):
        assert "Traceback" not in done.stderr
        assert KEK.split(":")[1] not in done.stderr


async def _disclosure_bytes(settings: HubSettings) -> bytes:
    """Every record of the disclosure topic, keys, values and headers, as one byte string."""
    found = b""
    async for record in read_topic(settings, settings.topic_disclosures):
        found += (record.key or b"") + (record.value or b"")
        found += b"".join(value for _, value in record.headers)
    return found


def test_a_reveal_that_unmasks_a_stray_identity_code_records_it() -> None:
    record = {"envelope": {"subject": "s", "event_id": "e"}, "payload": {"note": "010594Y9032"}}
    entry = LogEntry("t", 0, 0, 0, None, {}, "X", None, record, None, revealed=())
    assert _with_stray_codes(entry).revealed == (STRAY_CODES,)
    clean = {"envelope": {"subject": "s", "event_id": "e"}, "payload": {"code": "010594Y9032"}}
    opened = LogEntry("t", 0, 0, 0, None, {}, "X", None, clean, None, revealed=("payload.code",))
    assert _with_stray_codes(opened).revealed == ("payload.code",)  # the opened field only


async def _reveal_receipts(settings: HubSettings, reason: str) -> dict[str, dict[str, Any]]:
    """The ``revealed`` receipts of one reveal (its reason), by person."""
    found = {}
    async for record in read_topic(settings, settings.topic_disclosures):
        entry = json.loads(record.value or b"{}")
        if entry.get("status") == "revealed" and entry.get("legal_basis") == {"reveal": reason}:
            found[entry["subject"]] = entry
    return found


@pytest.mark.kafka
def test_reveal_holds_back_the_restricted_and_forgotten_plaintext_and_receipts_are_per_person(
    log: Log,
) -> None:
    reason = _unique_reason("test held back")
    done = _tail(log, "--reveal", "--reason", reason, "--operator", "tester-g")
    assert done.returncode == 0, done.stderr
    entries = _entries(done)
    held = (log.plain_forgotten, log.restricted)
    for events in held:
        subject = events[0].envelope.subject
        payload = _registration(entries, events)
        assert payload["personal_identity_code"] == RESTRICTED_PLACEHOLDER
        assert payload["last_name"] == RESTRICTED_PLACEHOLDER
        assert log.codes[subject] not in done.stdout
        assert f'"{log.names[subject]}"' not in done.stdout
    assert re.search(r"[1-9][0-9]* value\(s\) held back as <restricted>", done.stderr)
    receipts = asyncio.run(_reveal_receipts(log.settings, reason))
    live, plain = log.live[0].envelope.subject, log.plain[0].envelope.subject
    assert receipts.keys() == {live, plain}  # nothing shown of the others: no receipt
    for subject, events in ((live, log.live), (plain, log.plain)):
        # The person's events that hold a personal value (the others reveal nothing).
        own = {str(e.envelope.event_id) for e in events if _pii_paths([e])}
        assert own
        assert set(receipts[subject]["event_ids"]) == own
        # Exactly the fields that person's events hold (the simulated events say which).
        assert receipts[subject]["fields"] == sorted(_pii_paths(events))
    assert _pii_paths(log.live) != _pii_paths(log.plain)  # a union would overstate one of them


def _unique_reason(text: str) -> str:
    """A reason this test's receipts are found by, its token in letters only: eight random hex
    digits are now and then all decimal, a phone number the reason check rightly refuses."""
    return f"{text} {uuid.uuid4().hex[:8].translate(str.maketrans('0123456789', 'ghijklmnop'))}"


def _pii_paths(events: list[CustomerPathEvent]) -> set[str]:
    """The personal field paths that hold a value in the events (from the catalog's pii)."""
    fields = SealedFields()
    found = set()
    for event in events:
        body = event.to_avro()
        for path in fields.paths(event.full_name()):
            node: Any = body
            for part in path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                found.add(path)
    return found


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("phoned by dmitri.ahonen219@example.fi", "e-mail"),
        ("call back +358 40 6045845", "phone"),
        ("asked about 131052-308T", "identity code"),
    ],
)
def test_a_reveal_reason_holding_personal_data_is_refused(reason: str, kind: str) -> None:
    """The reason is kept for good in the disclosure log: it must not become a copy of the
    personal data it is about (attack: an e-mail and a phone ended up there in clear)."""
    from hub.inspect.cli import _reveal_access

    with pytest.raises(click.UsageError, match=f"personal data \\({kind} found\\)") as caught:
        _reveal_access(reason, "operator")
    assert reason.split()[-1] not in str(caught.value)
    assert _reveal_access("audit of case 2026-12", "operator") == (
        "operator",
        "audit of case 2026-12",
    )
