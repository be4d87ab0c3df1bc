"""Encrypt at the edge, without Kafka: what the sink's encoding and the publisher write.

Every personal field of every event written is sealed with the key of the event's own person,
the keys of a write come from ONE call of the key store, and when keys cannot be had nothing
is encoded or sent (never plaintext). The same code runs in the Kafka sink and the simulator;
``tests/test_privacy_edge_on_kafka.py`` shows it on the real broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from hub.events import CustomerPathEvent
from hub.kafka.publisher import EncodedEvent, EventPublisher, encode_event
from hub.privacy.datakeys import MemoryPersonKeys
from hub.privacy.fields import SealedFields
from hub.privacy.kek import KekError, KekUnavailable, LocalKeyEncryptionKeys
from hub.privacy.sealing import DataKey, SealBroken, is_sealed, open_value, sealed_key_id
from hub.serde import SingleObjectSerializer
from hub.sink import Receipt, SinkUnavailable, Submission
from hub.sink.encoding import encode_new, subjects_to_seal
from hub.sink.sealing import KeysRefused, KeysUnavailable, ensure_keys

KEK = LocalKeyEncryptionKeys.from_text(
    "edge-test:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="
)
FIELDS = SealedFields()
SERIALIZER = SingleObjectSerializer()


class CountingKeys(MemoryPersonKeys):
    """MemoryPersonKeys that counts the calls and the persons asked for."""

    def __init__(self) -> None:
        super().__init__(KEK)
        self.calls: list[list[str]] = []

    def ensure(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        wanted = list(subjects)
        self.calls.append(wanted)
        return super().ensure(wanted)


class FailingKeys:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def ensure(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        raise self.error


class SlowKeys(CountingKeys):
    async def aensure(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        await asyncio.sleep(30)
        return self.ensure(subjects)


class ForgetfulKeys(CountingKeys):
    """Answers without the key of one person (a store bug must not make plaintext)."""

    def ensure(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        found = super().ensure(subjects)
        found.pop(sorted(found)[0])
        return found


def events_of(paths: list[list[CustomerPathEvent]], people: int) -> list[CustomerPathEvent]:
    return [event for path in paths[:people] for event in path]


def submissions_of(events: list[CustomerPathEvent]) -> list[tuple[Submission, Receipt]]:
    out = []
    for n, event in enumerate(events):
        submission = Submission(f"k{n}", "digest", event)
        out.append((submission, Receipt(f"k{n}", event.envelope.event_id, "digest", False)))
    return out


def decoded(encoded: EncodedEvent) -> dict[str, Any]:
    return SERIALIZER.decode(encoded.value).record


def test_every_personal_value_of_every_type_is_sealed_with_its_persons_key_and_opens_exactly(
    simulated_paths: list[list[CustomerPathEvent]],
) -> None:
    events = events_of(simulated_paths, 40)
    new = submissions_of(events)
    keys = CountingKeys()
    found = keys.ensure(subjects_to_seal(s for s, _ in new))
    encoded = encode_new(SERIALIZER, [s for s, _ in new], new, found)

    sealed_types = set()
    for event, record in zip(events, map(decoded, encoded), strict=True):
        paths = FIELDS.paths(event.event_type)
        sealed = dict(FIELDS.sealed_values(event.event_type, record))
        plain = event.to_avro()
        present = [p for p in paths if _get(plain, p) is not None]
        assert sorted(sealed) == sorted(present), event.event_type  # nothing left in clear
        own = found[event.envelope.subject].key_id
        assert {sealed_key_id(v) for v in sealed.values()} <= {own}
        opened = FIELDS.open(event.event_type, record, keys)
        assert opened.failed == ()
        assert opened.record == SERIALIZER.decode(SERIALIZER.encode(event.event_type, plain)).record
        if sealed:
            sealed_types.add(event.event_type)
    # The simulator's mix reaches the types with personal fields (JobseekerRegistered: 7).
    assert {"JobseekerRegistered", "ServiceEnrolled", "JobSearchEnded"} <= sealed_types


def test_a_subject_without_a_key_in_the_write_fails_it_and_nothing_is_encoded(
    simulated_paths: list[list[CustomerPathEvent]],
) -> None:
    events = events_of(simulated_paths, 3)
    new = submissions_of(events)
    last = events[-1].envelope.subject
    keys = CountingKeys().ensure({e.envelope.subject for e in events} - {last})
    with pytest.raises(KeysUnavailable):
        encode_new(SERIALIZER, [s for s, _ in new], new, keys)


def test_a_value_is_never_sealed_with_another_persons_key(
    simulated_paths: list[list[CustomerPathEvent]],
) -> None:
    mine, other = simulated_paths[0][0], simulated_paths[1][0]
    keys = CountingKeys().ensure([mine.envelope.subject, other.envelope.subject])
    with pytest.raises(ValueError, match="not the key of the event's person"):
        encode_event(SERIALIZER, mine, keys[other.envelope.subject])
    record = decoded(encode_event(SERIALIZER, mine, keys[mine.envelope.subject]))
    value = dict(FIELDS.sealed_values(mine.event_type, record))["payload.personal_identity_code"]
    # Opening with the other person's key fails (not a wrong plaintext).
    with pytest.raises(SealBroken):
        open_value(
            keys[other.envelope.subject],
            record["envelope"]["event_id"],
            "payload.personal_identity_code",
            value,
        )


def test_a_huge_write_gets_its_keys_in_one_call(
    simulated_paths: list[list[CustomerPathEvent]],
) -> None:
    events = events_of(simulated_paths, 400)
    assert len(events) > 3000
    keys = CountingKeys()
    found = asyncio.run(
        ensure_keys(keys, subjects_to_seal(Submission("k", "d", e) for e in events), 30)
    )
    assert len(keys.calls) == 1
    assert set(keys.calls[0]) == {e.envelope.subject for e in events} == set(found)


def test_answered_submissions_need_no_key() -> None:
    event_a, event_b = _two_events()
    subjects = subjects_to_seal(
        [Submission("known", "d", event_a), Submission("new", "d", event_b)], ["known"]
    )
    assert subjects == {event_b.envelope.subject}


@pytest.mark.parametrize(
    "keys",
    [
        FailingKeys(KekUnavailable("vault did not answer")),
        FailingKeys(KekError("no such key-encryption key")),
        FailingKeys(OSError("connection refused")),
        FailingKeys(RuntimeError("person-keys topic not writable")),
        SlowKeys(),
        ForgetfulKeys(),
    ],
    ids=["kek-unavailable", "kek-refused", "os-error", "store-error", "timeout", "missing"],
)
def test_keys_that_cannot_be_had_are_sink_unavailable(keys: Any) -> None:
    with pytest.raises(SinkUnavailable) as raised:
        asyncio.run(ensure_keys(keys, ["a" * 64, "b" * 64], 0.5))
    assert isinstance(raised.value, KeysUnavailable)
    assert raised.value.retry_after_s >= 1
    assert "a" * 64 not in str(raised.value)  # no pseudonym (nor any value) in the message


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes, headers: Any) -> Any:
        self.sent.append((topic, key, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(_Meta())
        return future


class _Meta:
    partition = 0
    offset = 0


def test_the_publisher_seals_every_event_with_one_key_call_per_window(
    simulated_paths: list[list[CustomerPathEvent]],
) -> None:
    events = events_of(simulated_paths, 60)
    keys = CountingKeys()
    producer = FakeProducer()

    async def publish() -> int:
        publisher = EventPublisher(producer, SERIALIZER, "log", keys)  # type: ignore[arg-type]
        return len([e async for e in publisher.publish_all(events, window=200)])

    assert asyncio.run(publish()) == len(events)
    assert len(keys.calls) == -(-len(events) // 200)  # one call per window
    for event, (_, key, value) in zip(events, producer.sent, strict=True):
        assert key == event.envelope.subject.encode()
        record = SERIALIZER.decode(value).record
        for path in FIELDS.paths(event.event_type):
            found = _get(record, path)
            assert found is None or is_sealed(found), path
        assert FIELDS.open(event.event_type, record, keys).failed == ()


def test_the_publisher_sends_nothing_when_keys_cannot_be_had(
    simulated_paths: list[list[CustomerPathEvent]],
) -> None:
    events = events_of(simulated_paths, 5)
    producer = FakeProducer()

    async def publish(error: Exception) -> None:
        keys = FailingKeys(error)
        publisher = EventPublisher(producer, SERIALIZER, "log", keys, 2.5)  # type: ignore[arg-type]
        async for _ in publisher.publish_all(events):
            pass

    with pytest.raises(KeysUnavailable):
        asyncio.run(publish(KekUnavailable("down")))  # asked again until the time is up
    with pytest.raises(KeysRefused):
        asyncio.run(publish(KekError("refused")))  # not asked again
    assert producer.sent == []


class DownOnce(CountingKeys):
    """The key store does not answer the first time (a broker restarting), then does."""

    def ensure(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        found = super().ensure(subjects)
        if len(self.calls) == 1:
            raise OSError("connection refused")
        return found


def test_the_publisher_waits_for_a_key_store_that_comes_back(
    simulated_paths: list[list[CustomerPathEvent]],
) -> None:
    events = events_of(simulated_paths, 5)
    producer = FakeProducer()
    keys = DownOnce()

    async def publish() -> int:
        publisher = EventPublisher(producer, SERIALIZER, "log", keys, 30)  # type: ignore[arg-type]
        return len([e async for e in publisher.publish_all(events)])

    assert asyncio.run(publish()) == len(events)
    assert len(keys.calls) == 2
    assert len(producer.sent) == len(events)


def _two_events() -> tuple[CustomerPathEvent, CustomerPathEvent]:
    from connectors.simulator import SimulationConfig, simulate
    from hub.identity import Pseudonymizer

    paths = list(simulate(SimulationConfig(jobseekers=2, seed=3), Pseudonymizer("s" * 32)))
    return paths[0][0], paths[1][0]


def _get(record: dict[str, Any], path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def test_plaintext_encoding_stays_possible_only_without_a_key() -> None:
    """encode_event without a key writes the records of before field encryption (tests and
    tools that write old records on purpose); every hub writer passes a key."""
    event, _ = _two_events()
    record = decoded(encode_event(SERIALIZER, event, None))
    assert (
        record["payload"]["personal_identity_code"]
        == event.to_avro()["payload"]["personal_identity_code"]
    )
    assert list(FIELDS.sealed_values(event.event_type, record)) == []
