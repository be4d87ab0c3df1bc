"""The delivery worker opens exactly the granted sealed fields, in memory, right before the body.

Outbox records are the router's (a :class:`RecordHandler` with the person keys routes sealed
statements); the worker runs its dispatch loop with fake Kafka clients and a transport that
keeps what it was sent. What must hold: the receiver gets the plaintext, byte for byte the body
of the plaintext event; a person forgotten before delivery, or while the record waits for a
retry, is a dead letter (stage deliver) with the reason, not a retry loop; a sealed value
changed, or moved from another event, does not open and is a dead letter; the key keeper
being away is waited out, never a dead letter; the keys of a batch are fetched in one call.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import pytest
from aiokafka import TopicPartition
from pydantic import SecretStr

from connectors.simulator import SimulationConfig, simulate
from hub.delivery.schedule import RetrySchedule
from hub.delivery.transport import DeliveryRequest, DeliveryResult, json_body
from hub.delivery.worker import DeliveryTarget, DeliveryWorker
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer
from hub.kafka.dead_letters import DeadLetter, DeadLetterStage
from hub.kafka.publisher import encode_event
from hub.privacy.datakeys import Forgotten, MemoryPersonKeys, encode_forgotten, record_key
from hub.privacy.fields import SealedFields
from hub.privacy.kek import DEV_KEK, KekUnavailable, LocalKeyEncryptionKeys
from hub.privacy.sealing import DataKey
from hub.routing.router import DESTINATION_HEADER, LogRecord, OutRecord, RecordHandler
from hub.routing.routes import RoutesConfig, load_routes
from hub.routing.state import PersonStates
from hub.serde import SingleObjectSerializer
from hub.settings import HubSettings

SECRET = "privacy-delivery-secret-of-length"
STATEMENT = "LabourPolicyStatementIssued"
CODE_PATH = "payload.personal_identity_code"


class Keys:
    """The person keys (a key directory), counting batch calls; ``down``: the keeper is away."""

    def __init__(self) -> None:
        self.memory = MemoryPersonKeys(LocalKeyEncryptionKeys.from_text(DEV_KEK))
        self.calls = 0
        self.down = False
        self.reader: Any = None
        """A directory that unwraps with another keyring (None: the writer's)."""

    def data_keys(self, pairs: Iterable[tuple[str, UUID]]) -> dict[tuple[str, UUID], DataKey]:
        self.calls += 1
        if self.down:
            raise KekUnavailable("the key keeper did not answer (test)")
        return (self.reader or self.memory.directory).data_keys(pairs)

    def forgotten(self, subject: str) -> Forgotten | None:
        return self.memory.directory.forgotten(subject)

    def is_erased(self, subject: str, key_id: UUID) -> bool:
        return self.memory.directory.is_erased(subject, key_id)

    def restricted(self, subject: str) -> Any:
        return self.memory.directory.restricted(subject)

    def read_with(self, keyring: str) -> None:
        from hub.privacy.datakeys import KeyDirectory

        self.reader = KeyDirectory(LocalKeyEncryptionKeys.from_text(keyring))
        for key, value in self.memory.records:
            self.reader.apply(key, value)


class Receiver:
    """A transport keeping the bodies it was sent; ``answer`` decides the status."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.answer = 200

    async def send(self, request: DeliveryRequest) -> DeliveryResult:
        self.bodies.append(request.body)
        return DeliveryResult(status=self.answer)

    async def aclose(self) -> None:
        return None


class Consumer:
    async def commit(self, due: dict[TopicPartition, int]) -> None:
        return None

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


class Producer:
    def __init__(self) -> None:
        self.letters: list[tuple[DeadLetter, bytes | None]] = []

    async def send_and_wait(self, topic: str, **kwargs: Any) -> None:
        self.letters.append((DeadLetter.from_headers(kwargs["headers"]), kwargs["value"]))


@pytest.fixture(scope="module")
def settings() -> HubSettings:
    return HubSettings(
        pseudonym_secret=SecretStr(SECRET),
        topic_outbox_prefix="t.outbox.",
        topic_dead_letter="t.dlq",
        topic_customer_path="t.log",
    )


@pytest.fixture(scope="module")
def config(settings: HubSettings) -> RoutesConfig:
    return load_routes(settings)


@pytest.fixture(scope="module")
def statements() -> list[CustomerPathEvent]:
    paths = simulate(SimulationConfig(jobseekers=60, seed=9), Pseudonymizer(SECRET))
    found = [e for path in paths for e in path if e.event_type == STATEMENT]
    kela = [e for e in found if e.to_avro()["payload"]["payer"]["kind"] == "KELA"]
    assert len({e.envelope.subject for e in kela}) >= 3
    return kela


def _outbox(
    settings: HubSettings,
    config: RoutesConfig,
    events: list[CustomerPathEvent],
    keys: Keys | None,
) -> list[OutRecord]:
    """The kela outbox records the router writes for ``events`` (sealed when ``keys``)."""
    handler = RecordHandler(
        settings,
        config,
        serializer=SingleObjectSerializer(),
        keys=(keys or Keys()).memory.directory,
    )
    serializer = SingleObjectSerializer()
    out: list[OutRecord] = []
    for offset, event in enumerate(events):
        subject = event.envelope.subject
        key = None if keys is None else keys.memory.ensure([subject])[subject]
        encoded = encode_event(serializer, event, key)
        record = LogRecord("t.log", 0, offset, encoded.key, encoded.value, encoded.headers)
        outcome = handler.handle(record, PersonStates().batch())
        out += [r for r in outcome.records if dict(r.headers).get(DESTINATION_HEADER) == b"kela"]
    assert len(out) == len(events)
    return out


def _worker(
    settings: HubSettings, config: RoutesConfig, receiver: Receiver, keys: Keys | None
) -> DeliveryWorker:
    target = DeliveryTarget(
        "kela", RetrySchedule((0.05, 0.05, 0.05)), 1000, 1.0, lambda _: receiver
    )
    from hub.routing.outbox import OutboxCodec

    worker = DeliveryWorker(
        settings, target, OutboxCodec.for_routes(config), keys=keys, commit_interval_s=0.1
    )
    worker._consumer = Consumer()
    worker._producer = Producer()
    worker._on_assigned([TopicPartition(worker.topic, 0)])
    return worker


async def _feed(worker: DeliveryWorker, records: list[OutRecord]) -> None:
    """The records as the fetch loop takes one batch of them (one key look-up)."""
    progress = worker._progress[0]
    items = [
        worker._prepare(
            progress,
            SimpleNamespace(
                partition=0, offset=o, key=r.key, value=r.value, headers=list(r.headers)
            ),
        )
        for o, r in enumerate(records)
    ]
    waiting = [i for i in items if i.pairs and i.failure is None]
    if waiting:
        await worker._open_sealed(waiting)
    now = time.monotonic()
    for item in items:
        item.fetched_at = now
        if progress.take(item.offset, item.key, item):
            worker._push(now, item)
    worker._wake.set()


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _letters(worker: DeliveryWorker) -> list[tuple[DeadLetter, bytes | None]]:
    producer = worker._producer
    assert isinstance(producer, Producer)
    return producer.letters


async def test_the_receiver_gets_the_plaintext_body_exactly_and_keys_come_in_one_call(
    settings: HubSettings, config: RoutesConfig, statements: list[CustomerPathEvent]
) -> None:
    keys = Keys()
    sealed = _outbox(settings, config, statements, keys)
    plain = _outbox(settings, config, statements, None)
    assert all(s.value != p.value for s, p in zip(sealed, plain, strict=True))
    receiver = Receiver()
    worker = _worker(settings, config, receiver, keys)
    loop = asyncio.create_task(worker._dispatch_loop())
    keys.calls = 0
    await _feed(worker, sealed)
    assert keys.calls == 1, "one batch call for every record's data key"
    await _until(lambda: worker.stats.delivered == len(sealed), "every statement delivered")
    expected = set()
    for record in plain:
        decoded = worker.decoder.decode(record.value or b"")
        expected.add(json_body(STATEMENT, decoded.record))
    assert set(receiver.bodies) == expected, "the plaintext body, byte for byte"
    for event in statements:
        code = event.to_avro()["payload"]["personal_identity_code"]
        assert any(
            json.loads(b)["data"]["payload"]["personal_identity_code"] == code
            for b in receiver.bodies
        )
    worker.stop()
    await loop


async def test_a_person_forgotten_before_delivery_is_a_dead_letter_with_the_reason(
    settings: HubSettings, config: RoutesConfig, statements: list[CustomerPathEvent]
) -> None:
    keys = Keys()
    sealed = _outbox(settings, config, statements, keys)
    forgotten = statements[0].envelope.subject
    keys.memory.forget(forgotten, "test")
    receiver = Receiver()
    worker = _worker(settings, config, receiver, keys)
    loop = asyncio.create_task(worker._dispatch_loop())
    await _feed(worker, sealed)
    theirs = sum(e.envelope.subject == forgotten for e in statements)
    await _until(
        lambda: worker.stats.delivered + worker.stats.dead_letters == len(sealed), "all settled"
    )
    assert worker.stats.dead_letters == theirs
    assert worker.stats.retried == 0, "an erased key is not retried"
    for letter, value in _letters(worker):
        assert letter.stage is DeadLetterStage.DELIVER
        assert letter.error_class == "PersonalDataErased"
        assert letter.attempts == 0
        assert "route statement-to-payer: destination kela" in letter.reason
        assert CODE_PATH in letter.reason
        assert value in {r.value for r in sealed}  # the sealed outbox value, as it was
    assert len(receiver.bodies) == len(sealed) - theirs
    worker.stop()
    await loop


def _forget_now(keys: Keys, subject: str) -> None:
    keys.memory.forget(subject, "test")


def _forget_with_a_clock_behind(keys: Keys, subject: str) -> None:
    """The marker's time is before the key's creation time (the forgetting host's clock behind
    the writer's), but it comes after the key record: the key is erased all the same."""
    [key] = keys.memory.directory.stored(subject)
    mark = Forgotten(subject, key.created_at - timedelta(minutes=10), "clock behind")
    keys.memory.directory.apply(record_key(subject, "forgotten"), encode_forgotten(mark))


@pytest.mark.parametrize("forget", [_forget_now, _forget_with_a_clock_behind])
async def test_a_person_forgotten_while_their_record_waits_for_a_retry_is_not_sent(
    settings: HubSettings,
    config: RoutesConfig,
    statements: list[CustomerPathEvent],
    forget: Callable[[Keys, str], None],
) -> None:
    keys = Keys()
    [record] = _outbox(settings, config, statements[:1], keys)
    receiver = Receiver()
    receiver.answer = 503
    worker = _worker(settings, config, receiver, keys)
    loop = asyncio.create_task(worker._dispatch_loop())
    await _feed(worker, [record])
    await _until(lambda: worker.stats.retried >= 1, "a retry")
    forget(keys, statements[0].envelope.subject)
    receiver.answer = 200
    await _until(lambda: worker.stats.dead_letters == 1, "the dead letter")
    assert worker.stats.delivered == 0
    assert len(receiver.bodies) == 1  # the first try only
    [(letter, _)] = _letters(worker)
    assert letter.error_class == "PersonalDataErased"
    assert "data key was erased" in letter.reason
    assert letter.attempts >= 1
    worker.stop()
    await loop


def _splice(value: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new)
    assert value.count(old) == 1
    return value.replace(old, new)


async def test_a_changed_or_moved_sealed_value_does_not_open_and_is_never_sent(
    settings: HubSettings, config: RoutesConfig, statements: list[CustomerPathEvent]
) -> None:
    keys = Keys()
    event = statements[0]
    [record] = _outbox(settings, config, [event], keys)
    worker = _worker(settings, config, Receiver(), keys)
    decoded = worker.decoder.decode(record.value or b"").record
    sealed = decoded["payload"]["personal_identity_code"]
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    subject = event.envelope.subject
    key = keys.memory.ensure([subject])[subject]
    # The same person's identity code sealed for another event: same key, other event id.
    other = dict(event.to_avro())
    other["envelope"] = {**other["envelope"], "event_id": uuid.uuid4()}
    moved = SealedFields().seal(STATEMENT, other, key)["payload"]["personal_identity_code"]
    receiver = Receiver()
    worker = _worker(settings, config, receiver, keys)
    loop = asyncio.create_task(worker._dispatch_loop())
    value = record.value or b""
    forged = [
        record._replace(value=_splice(value, sealed, tampered)),
        record._replace(value=_splice(value, sealed, moved)),
    ]
    await _feed(worker, forged)
    await _until(lambda: worker.stats.dead_letters == 2, "two dead letters")
    assert receiver.bodies == []
    for letter, _ in _letters(worker):
        assert letter.error_class == "SealBroken"
        assert CODE_PATH in letter.reason
    worker.stop()
    await loop


OTHER_KEK = "new:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="


def _keeper_away(keys: Keys) -> Callable[[], None]:
    """The key keeper does not answer (KekUnavailable); back when the returned call is made."""
    keys.down = True
    return lambda: setattr(keys, "down", False)


def _keyring_without_the_kek(keys: Keys) -> Callable[[], None]:
    """This worker's own configuration: the keys are wrapped by a KEK id its keyring does not
    hold (KeysMisconfigured); fixed when the keyring holds it too."""
    keys.read_with(OTHER_KEK)
    return lambda: keys.read_with(f"{OTHER_KEK},{DEV_KEK}")


@pytest.mark.parametrize("fault", [_keeper_away, _keyring_without_the_kek])
async def test_keys_not_to_be_had_are_waited_out_not_dead_letters(
    settings: HubSettings,
    config: RoutesConfig,
    statements: list[CustomerPathEvent],
    fault: Callable[[Keys], Callable[[], None]],
) -> None:
    """The same for every person, so back-pressure: the records wait, nothing is sent or
    dead-lettered, and all go once the fault is mended."""
    keys = Keys()
    records = _outbox(settings, config, statements[:3], keys)
    mend = fault(keys)
    receiver = Receiver()
    worker = _worker(settings, config, receiver, keys)
    loop = asyncio.create_task(worker._dispatch_loop())
    await _feed(worker, records)
    await _until(lambda: keys.calls >= 2, "a second try for the keys")
    assert worker.stats.dead_letters == 0
    assert receiver.bodies == []
    mend()
    await _until(lambda: worker.stats.delivered == 3, "delivery once the fault is mended", 10)
    assert worker.stats.dead_letters == 0
    worker.stop()
    await loop


async def test_without_key_access_a_sealed_record_is_a_dead_letter_not_sent_sealed(
    settings: HubSettings, config: RoutesConfig, statements: list[CustomerPathEvent]
) -> None:
    keys = Keys()
    records = _outbox(settings, config, statements[:1], keys)
    receiver = Receiver()
    worker = _worker(settings, config, receiver, None)
    loop = asyncio.create_task(worker._dispatch_loop())
    await _feed(worker, records)
    await _until(lambda: worker.stats.dead_letters == 1, "the dead letter")
    assert receiver.bodies == []
    [(letter, _)] = _letters(worker)
    assert letter.error_class == "DataKeyUnreadable"
    worker.stop()
    await loop


async def test_a_restriction_after_routing_holds_the_record_back_and_lifted_it_delivers(
    settings: HubSettings, config: RoutesConfig, statements: list[CustomerPathEvent]
) -> None:
    """The person's processing restricted between routing and delivery: the record is a dead
    letter (PersonalDataRestricted, the basis and since when), nothing is sent; lifted, the
    replayed letter (the same outbox record again) is delivered."""
    from datetime import UTC, datetime

    keys = Keys()
    records = _outbox(settings, config, statements[:1], keys)
    subject = statements[0].envelope.subject
    keys.memory.restrict(subject, "objection-pending", at=datetime(2026, 5, 6, 7, 8, tzinfo=UTC))
    receiver = Receiver()
    worker = _worker(settings, config, receiver, keys)
    loop = asyncio.create_task(worker._dispatch_loop())
    await _feed(worker, records)
    await _until(lambda: worker.stats.dead_letters == 1, "the dead letter")
    assert receiver.bodies == []
    [(letter, value)] = _letters(worker)
    assert letter.error_class == "PersonalDataRestricted"
    assert "objection-pending" in letter.reason
    assert "2026-05-06T07:08:00+00:00" in letter.reason
    assert subject not in letter.reason
    assert value == records[0].value  # sealed: safe to keep for the replay
    keys.memory.lift_restriction(subject)
    replay = _worker(settings, config, receiver, keys)
    again = asyncio.create_task(replay._dispatch_loop())
    await _feed(replay, records)
    await _until(lambda: replay.stats.delivered == 1, "delivery once lifted")
    worker.stop()
    replay.stop()
    await loop
    await again


async def test_a_restriction_while_the_record_waits_for_a_retry_is_not_sent(
    settings: HubSettings, config: RoutesConfig, statements: list[CustomerPathEvent]
) -> None:
    keys = Keys()
    records = _outbox(settings, config, statements[:1], keys)
    receiver = Receiver()
    receiver.answer = 503
    worker = _worker(settings, config, receiver, keys)
    loop = asyncio.create_task(worker._dispatch_loop())
    await _feed(worker, records)
    await _until(lambda: len(receiver.bodies) >= 1, "a first attempt")
    keys.memory.restrict(statements[0].envelope.subject, "order")
    receiver.answer = 200
    await _until(lambda: worker.stats.dead_letters == 1, "the dead letter")
    assert worker.stats.delivered == 0
    [(letter, _)] = _letters(worker)
    assert letter.error_class == "PersonalDataRestricted"
    worker.stop()
    await loop
