"""``hub tail --reveal`` without a broker: what it holds back, whose receipt lists what, and how
many times it asks the KEK keeper.

The reveal logic (:func:`hub.inspect.tail.entries_of`) is fed records encoded exactly as the
log holds them (single-object Avro, sealed with :class:`SealedFields`), the person keys are
:class:`MemoryPersonKeys` (the same :class:`KeyDirectory` as the Kafka store), and expected
values come from the simulated events, never from the code under test.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from connectors.simulator import SimulationConfig, simulate
from hub.events import CustomerPathEvent
from hub.events.customer_path import JobseekerRegistered
from hub.identity import Pseudonymizer
from hub.inspect.cli import revealed_fields
from hub.inspect.tail import (
    ERASED_PLACEHOLDER,
    RESTRICTED_PLACEHOLDER,
    STRAY_CODES,
    LogEntry,
    entries_of,
)
from hub.privacy import access_log
from hub.privacy.datakeys import Forgotten, MemoryPersonKeys, encode_forgotten, record_key
from hub.privacy.fields import SealedFields
from hub.privacy.kek import LocalKeyEncryptionKeys, WrappedKey
from hub.serde import SingleObjectSerializer, default_catalog
from hub.settings import HubSettings
from tests.conftest import SIMULATION_SECRET

KEK = "r1:" + base64.b64encode(b"r" * 32).decode()
CODE = "personal_identity_code"


class CountingKek:
    """The local KEK, counting unwrap calls (what a Vault call per person would cost)."""

    name = "counting"

    def __init__(self) -> None:
        self.inner = LocalKeyEncryptionKeys.from_text(KEK)
        self.unwrap_calls = 0
        self.unwrapped = 0

    def wrap(self, secrets: Sequence[bytes], contexts: Sequence[bytes]) -> list[WrappedKey]:
        return self.inner.wrap(secrets, contexts)

    def unwrap(self, wrapped: Sequence[WrappedKey], contexts: Sequence[bytes]) -> list[bytes]:
        self.unwrap_calls += 1
        self.unwrapped += len(wrapped)
        return self.inner.unwrap(wrapped, contexts)

    def is_current(self, wrapped: WrappedKey) -> bool:
        return self.inner.is_current(wrapped)

    def rewrap(self, wrapped: Sequence[WrappedKey], contexts: Sequence[bytes]) -> list[WrappedKey]:
        return self.inner.rewrap(wrapped, contexts)

    def rotate_primary(self) -> str:
        return self.inner.rotate_primary()

    def close(self) -> None:
        return None


@dataclass
class Record:
    """What :func:`entries_of` reads of a Kafka record."""

    value: bytes
    key: bytes
    offset: int
    topic: str = "test.customer-path"
    partition: int = 0
    timestamp: int = 0
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def _paths(people: int, seed: int) -> list[list[CustomerPathEvent]]:
    paths = list(
        simulate(SimulationConfig(jobseekers=people, seed=seed), Pseudonymizer(SIMULATION_SECRET))
    )
    assert len({p[0].envelope.subject for p in paths}) == people
    return paths


def _registration(path: list[CustomerPathEvent]) -> JobseekerRegistered:
    found = next(e for e in path if isinstance(e, JobseekerRegistered))
    return found


def _encode(events: list[tuple[CustomerPathEvent, Any]]) -> list[Record]:
    """Each event plaintext (key None) or sealed with the given data key."""
    serializer, fields = SingleObjectSerializer(), SealedFields()
    records = []
    for offset, (event, key) in enumerate(events):
        body = event.to_avro()
        if key is not None:
            body = fields.seal(event.full_name(), body, key)
        value = serializer.encode(event.full_name(), body)
        records.append(Record(value, event.envelope.subject.encode(), offset))
    return records


async def _feed(records: list[Record]) -> AsyncIterator[Record]:
    for record in records:
        yield record


def _reveal(records: list[Record], keys: Any) -> list[LogEntry]:
    async def run() -> list[LogEntry]:
        return [
            e
            async for e in entries_of(
                _feed(records), SingleObjectSerializer(), default_catalog(), keys=keys
            )
        ]

    return asyncio.run(run())


def _by_id(entries: list[LogEntry]) -> dict[str, LogEntry]:
    return {str(e.event_id): e for e in entries}


def test_a_forgotten_persons_plaintext_of_before_encryption_is_held_back() -> None:
    [path] = _paths(1, seed=41)
    event = _registration(path)
    subject = event.envelope.subject
    later = event.model_copy(
        update={
            "envelope": event.envelope.model_copy(
                update={
                    "event_id": uuid.uuid4(),
                    "recorded_at": event.envelope.recorded_at + timedelta(days=30),
                }
            )
        }
    )
    keys = MemoryPersonKeys(LocalKeyEncryptionKeys.from_text(KEK))
    # Forgotten between the two plaintext records (written before field encryption).
    keys.forget(subject, "test: art. 17", at=event.envelope.recorded_at + timedelta(days=1))
    entries = _by_id(_reveal(_encode([(event, None), (later, None)]), keys))
    before, after = entries[str(event.envelope.event_id)], entries[str(later.envelope.event_id)]
    payload = before.event["payload"]  # type: ignore[index]
    assert payload[CODE] == RESTRICTED_PLACEHOLDER
    assert payload["last_name"] == RESTRICTED_PLACEHOLDER
    assert event.payload.personal_identity_code not in before.to_json()
    assert event.payload.last_name not in before.to_json()
    assert before.revealed == ()  # nothing shown: nothing to record
    assert f"payload.{CODE}" in before.withheld
    # Recorded after the person was forgotten: new data, shown as the routes would send it.
    assert after.event["payload"][CODE] == event.payload.personal_identity_code  # type: ignore[index]
    assert f"payload.{CODE}" in after.revealed


def test_a_restricted_person_shows_nothing_sealed_or_plaintext_and_their_key_is_not_unwrapped() -> (
    None
):
    restricted_path, other_path = _paths(2, seed=42)
    writer = MemoryPersonKeys(LocalKeyEncryptionKeys.from_text(KEK))
    subject = restricted_path[0].envelope.subject
    other = other_path[0].envelope.subject
    made = writer.ensure([subject, other])
    plain = _registration(restricted_path)
    sealed_events = [e for e in restricted_path if e is not plain]
    events = [(plain, None), *((e, made[subject]) for e in sealed_events)]
    events += [(e, made[other]) for e in other_path]
    # A stray identity code where no personal field is: a header of each of their records.
    records = _encode(events)
    for record in records:
        if record.key == subject.encode():
            record.headers.append(("note", plain.payload.personal_identity_code.encode()))
    writer.restrict(subject, "GDPR art. 18: accuracy contested")
    kek = CountingKek()
    reader = MemoryPersonKeys(kek)
    for key, value in writer.records:
        reader.directory.apply(key, value)

    entries = _reveal(records, reader)
    theirs = [e for e in entries if e.subject == subject]
    assert len(theirs) == len(restricted_path)
    for entry in theirs:
        assert entry.revealed == ()
        assert entry.unopened == ()
        text = entry.to_json()
        assert plain.payload.personal_identity_code not in text
        assert plain.payload.last_name not in text
        assert "<sealed>" not in text  # held back, not merely closed
    shown_plain = next(e for e in theirs if e.event_id == str(plain.envelope.event_id))
    assert shown_plain.event["payload"][CODE] == RESTRICTED_PLACEHOLDER  # type: ignore[index]
    assert f"payload.{CODE}" in shown_plain.withheld
    assert any(RESTRICTED_PLACEHOLDER in e.to_json() for e in theirs if e is not shown_plain)
    assert kek.unwrapped == 1  # the other person's key only
    assert revealed_fields(entries).keys() == {other}  # no receipt for the restricted person

    # Restriction lifted: the same records open.
    writer.lift_restriction(subject)
    reader.directory.apply(*writer.records[-1])
    opened = [e for e in _reveal(records, reader) if e.subject == subject]
    by_id = {e.event_id: e for e in opened}
    first = by_id[str(plain.envelope.event_id)]
    assert first.event["payload"][CODE] == plain.payload.personal_identity_code  # type: ignore[index]
    assert STRAY_CODES in first.revealed  # the header's code is shown now, and recorded


def test_the_keys_of_a_page_are_unwrapped_in_one_call() -> None:
    paths = _paths(40, seed=43)
    writer = MemoryPersonKeys(LocalKeyEncryptionKeys.from_text(KEK))
    made = writer.ensure(p[0].envelope.subject for p in paths)
    forgotten = paths[0][0].envelope.subject
    events = [(e, made[p[0].envelope.subject]) for p in paths for e in p]
    writer.forget(forgotten, "test")
    kek = CountingKek()
    reader = MemoryPersonKeys(kek)
    for key, value in writer.records:
        reader.directory.apply(key, value)
    records = _encode(events)
    assert len(records) < 500  # one page
    entries = _reveal(records, reader)
    assert len(entries) == len(records)
    assert kek.unwrap_calls == 1  # one call for the page, not one per person or record
    assert kek.unwrapped == len(paths) - 1  # the forgotten person's key is not asked for
    erased = [e for e in entries if e.subject == forgotten]
    assert erased
    assert all(e.revealed == () for e in erased)
    assert any(ERASED_PLACEHOLDER in e.to_json() for e in erased)
    # A second read finds them unwrapped already.
    _reveal(records, reader)
    assert kek.unwrap_calls == 1


def test_a_key_before_the_forgotten_marker_is_erased_whatever_the_clocks_say() -> None:
    """The marker's time is before the key's creation time (the forgetting host's clock behind
    the writer's) and its tombstone is not read yet: the key came before the marker, so it is
    erased; it is not unwrapped and nothing of the person is shown."""
    [path] = _paths(1, seed=47)
    subject = path[0].envelope.subject
    writer = MemoryPersonKeys(LocalKeyEncryptionKeys.from_text(KEK))
    key = writer.ensure([subject])[subject]
    [stored] = writer.directory.stored(subject)
    mark = Forgotten(subject, stored.created_at - timedelta(minutes=10), "clock behind")
    kek = CountingKek()
    reader = MemoryPersonKeys(kek)
    for record, value in [
        *writer.records,
        (record_key(subject, "forgotten"), encode_forgotten(mark)),
    ]:
        reader.directory.apply(record, value)
    entries = _reveal(_encode([(e, key) for e in path]), reader)
    assert kek.unwrapped == 0
    assert all(e.revealed == () for e in entries)
    assert any(ERASED_PLACEHOLDER in e.to_json() for e in entries)


def test_each_receipt_lists_only_the_fields_revealed_of_that_persons_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = _paths(2, seed=44)
    keys = MemoryPersonKeys(LocalKeyEncryptionKeys.from_text(KEK))
    made = keys.ensure([first[0].envelope.subject, second[0].envelope.subject])
    registration = _registration(first)
    others = [e for e in second if not isinstance(e, JobseekerRegistered)]
    assert others
    events: list[tuple[CustomerPathEvent, Any]] = [
        (registration, made[registration.envelope.subject])
    ]
    events += [(e, made[e.envelope.subject]) for e in others]
    entries = _reveal(_encode(events), keys)
    expected = {
        registration.envelope.subject: sorted(
            {p for e in entries if e.subject == registration.envelope.subject for p in e.revealed}
        ),
        second[0].envelope.subject: sorted(
            {p for e in entries if e.subject == second[0].envelope.subject for p in e.revealed}
        ),
    }
    only_first = set(expected[registration.envelope.subject]) - set(
        expected[second[0].envelope.subject]
    )
    only_second = set(expected[second[0].envelope.subject]) - set(
        expected[registration.envelope.subject]
    )
    assert "payload.last_name" in only_first
    assert only_second  # the union would overstate both receipts

    written: list[Any] = []

    async def ensure_log(settings: HubSettings) -> None:
        return None

    async def write_chain(settings: HubSettings, chain: str, items: Any) -> None:
        written.extend(entry for entry, _ in items)

    monkeypatch.setattr(access_log, "_ensure_log", ensure_log)
    monkeypatch.setattr(access_log, "_write_chain", write_chain)
    from hub.inspect.cli import _disclosure_recorder

    record = _disclosure_recorder()
    asyncio.run(record(HubSettings(), "tester-g", "test", [e for e in entries if e.revealed]))
    receipts = {d.subject: d for d in written}
    assert receipts.keys() == expected.keys()
    for subject, fields in expected.items():
        assert list(receipts[subject].fields) == fields
        own = {e.event_id for e in entries if e.subject == subject and e.revealed}
        assert set(receipts[subject].event_ids) == own
