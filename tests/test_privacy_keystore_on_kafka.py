"""The person-keys store on a real broker: durable keys, racing writers, forgetting, rotation,
tampered records."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KTopicPartition
from pydantic import SecretStr

from hub.kafka.clients import librdkafka_config
from hub.privacy.datakeys import FORGOTTEN, record_key
from hub.privacy.kek import KekError, LocalKeyEncryptionKeys
from hub.privacy.keystore import KafkaPersonKeys, KeyRecordBroken, PersonKeysError, open_person_keys
from hub.privacy.sealing import KeyErased, KeyUnknown, open_value, seal_value
from hub.settings import HubSettings
from tests.conftest import hub_environment, settings_for

pytestmark = pytest.mark.kafka

OLD = "old:" + base64.b64encode(b"o" * 32).decode()
NEW = "new:" + base64.b64encode(b"n" * 32).decode()
REPO = Path(__file__).resolve().parents[1]


def subject(n: int = 0) -> str:
    return uuid.uuid4().hex[:32] if n == 0 else f"{n:032x}"


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> HubSettings:
    base = settings_for(kafka_bootstrap, partitions=3, kek=SecretStr(OLD))
    return base.model_copy(
        update={"topic_person_keys": f"test.person-keys.{uuid.uuid4().hex[:12]}"}
    )


@pytest.fixture
def keys(settings: HubSettings) -> Iterator[KafkaPersonKeys]:
    with open_person_keys(settings) as store:
        yield store


def raw_records(settings: HubSettings) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record of the person-keys topic (partition, offset, key, value)."""
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": "test-raw",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        meta = consumer.list_topics(settings.topic_person_keys, timeout=10)
        parts = sorted(meta.topics[settings.topic_person_keys].partitions)
        ends = {
            p: consumer.get_watermark_offsets(KTopicPartition(settings.topic_person_keys, p))[1]
            for p in parts
        }
        consumer.assign([KTopicPartition(settings.topic_person_keys, p, 0) for p in parts])
        out = []
        done = {p for p in parts if ends[p] == 0}
        while len(done) < len(parts):
            for message in consumer.consume(500, 1.0):
                if message.error() is not None:
                    if message.offset() >= ends[message.partition()]:
                        done.add(message.partition())
                    continue
                out.append((message.partition(), message.offset(), message.key(), message.value()))
        return out
    finally:
        consumer.close()


def produce_raw(settings: HubSettings, partition: int, key: bytes, value: bytes | None) -> None:
    producer = Producer({**librdkafka_config(settings), "acks": "all"})
    producer.produce(settings.topic_person_keys, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0


def test_topic_is_compacted_and_a_restart_sees_the_keys(settings: HubSettings) -> None:
    person = subject()
    with open_person_keys(settings) as store:
        made = store.ensure([person])[person]
        again = store.ensure([person])[person]
        assert again.key_id == made.key_id
        assert again.secret == made.secret
    with open_person_keys(settings) as fresh:
        found = fresh.data_key(person, made.key_id)
        assert found.secret == made.secret
        assert fresh.ensure([person])[person].key_id == made.key_id
    from confluent_kafka.admin import AdminClient

    from hub.privacy.keystore import _topic_resource

    admin = AdminClient(librdkafka_config(settings))
    [future] = admin.describe_configs([_topic_resource(settings.topic_person_keys)]).values()
    configs = future.result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"
    assert configs["delete.retention.ms"].value == str(24 * 60 * 60 * 1000)
    assert float(configs["min.cleanable.dirty.ratio"].value) <= 0.01
    # Stored wrapped, never in the clear.
    values = b"".join(v or b"" for _, _, _, v in raw_records(settings))
    assert made.secret not in values
    assert base64.b64encode(made.secret) not in values


def test_a_delete_policy_topic_is_refused(settings: HubSettings) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient(librdkafka_config(settings))
    futures = admin.create_topics(
        [NewTopic(settings.topic_person_keys, 1, 1, config={"cleanup.policy": "delete"})]
    )
    futures[settings.topic_person_keys].result(timeout=30)
    store = KafkaPersonKeys(settings)
    with pytest.raises(PersonKeysError, match=r"cleanup\.policy=delete"):
        store.start()
    store.close()


def test_a_key_is_in_the_topic_when_ensure_returns(
    settings: HubSettings, keys: KafkaPersonKeys
) -> None:
    people = [subject() for _ in range(20)]
    made = keys.ensure(people)
    stored = {k.decode() for _, _, k, v in raw_records(settings) if k is not None and v is not None}
    assert {f"{p}/{made[p].key_id}" for p in people} <= stored
    # All records of a person in the partition of the pseudonym.
    by_key = {k.decode(): p for p, _, k, _ in raw_records(settings) if k is not None}
    for person in people:
        assert by_key[f"{person}/{made[person].key_id}"] == keys.partition_of(person)


def test_a_follower_catches_up_on_a_miss(settings: HubSettings) -> None:
    """A key acknowledged after the follower started is found by data_key (no KeyUnknown)."""
    person = subject()
    with open_person_keys(settings) as reader, open_person_keys(settings) as writer:
        made = writer.ensure([person])[person]
        found = reader.data_key(person, made.key_id)
        assert found.secret == made.secret
        with pytest.raises(KeyUnknown):
            reader.data_key(person, uuid.uuid4())


RACER = """
import sys
from hub.privacy.keystore import open_person_keys
from hub.settings import HubSettings
settings = HubSettings()
with open_person_keys(settings) as store:
    print("ready", flush=True)
    sys.stdin.readline()
    key = store.ensure([sys.argv[1]])[sys.argv[1]]
    print(key.key_id, flush=True)
"""


def test_two_processes_creating_a_key_for_one_person_both_get_valid_keys(
    settings: HubSettings,
) -> None:
    person = subject()
    env = hub_environment(settings)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, person],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    try:
        for racer in racers:
            assert racer.stdout is not None
            while (line := racer.stdout.readline()) and line.strip() != "ready":
                pass
            assert line.strip() == "ready"
        for racer in racers:  # both are started and have read the (empty) topic: now race
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        key_ids = []
        for racer in racers:
            out, _ = racer.communicate(timeout=60)
            assert racer.returncode == 0
            key_ids.append(UUID(out.strip().splitlines()[-1]))
    finally:
        for racer in racers:
            racer.kill()
    with open_person_keys(settings) as fresh:
        stored = {k.key_id for k in fresh.directory.stored(person)}
        # Both raced (each made one key, none saw the other's first) or one saw the other's.
        assert set(key_ids) <= stored
        for key_id in key_ids:
            key = fresh.data_key(person, key_id)
            sealed = seal_value(key, uuid.uuid4(), "payload.x", b"v")
            assert sealed[2:18] == key_id.bytes
        # New values go under one of them from now on, the newest.
        assert fresh.ensure([person])[person].key_id == fresh.directory.newest(person).key_id


def test_forget_then_a_fresh_follower_says_erased_with_the_time(
    settings: HubSettings, keys: KafkaPersonKeys
) -> None:
    person, other = subject(), subject()
    made = keys.ensure([person, other])
    event = uuid.uuid4()
    sealed = seal_value(made[person], event, "payload.name", b"Maija")
    result = keys.forget(person, "GDPR art. 17 request")
    assert result.key_ids == (made[person].key_id,)
    with pytest.raises(KeyErased):
        keys.data_key(person, made[person].key_id)
    with open_person_keys(settings) as fresh:
        with pytest.raises(KeyErased) as erased:
            fresh.data_key(person, made[person].key_id)
        assert erased.value.forgotten_at == result.forgotten_at
        mark = fresh.forgotten(person)
        assert mark is not None
        assert mark.reason == "GDPR art. 17 request"
        # Somebody else is not disturbed.
        assert fresh.data_key(other, made[other].key_id).secret == made[other].secret
        # A new event of the forgotten person gets a new key.
        renewed = fresh.ensure([person])[person]
        assert renewed.key_id != made[person].key_id
    # The wrapped key is gone from the topic's latest state: a tombstone after the key record.
    latest: dict[bytes, bytes | None] = {}
    for _, _, key, value in raw_records(settings):
        assert key is not None
        latest[key] = value
    assert latest[record_key(person, made[person].key_id)] is None
    assert json.loads(latest[record_key(person, FORGOTTEN)] or b"{}")["subject"] == person
    # The sealed value really cannot be opened without the key (and could with it).
    assert open_value(made[person], event, "payload.name", sealed) == b"Maija"


def test_a_crash_between_marker_and_tombstones_still_erases(
    settings: HubSettings, keys: KafkaPersonKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = subject()
    made = keys.ensure([person])[person]

    def crash(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed between marker and tombstones")

    monkeypatch.setattr(KafkaPersonKeys, "_tombstone", crash)
    with pytest.raises(SystemExit):
        keys.forget(person, "test")
    monkeypatch.undo()
    with open_person_keys(settings) as fresh:
        stored = [k.key_id for k in fresh.directory.erased_stored(person)]
        assert stored == [made.key_id]  # the wrapped key is still in the topic, erased
        with pytest.raises(KeyErased):
            fresh.data_key(person, made.key_id)
        assert fresh.status().awaiting_tombstone == 1
        assert fresh.ensure([person])[person].key_id != made.key_id
        result = fresh.rotate()
        assert result.erased == 1
        assert made.key_id not in [k.key_id for k in fresh.directory.stored(person)]
    latest = {k: v for _, _, k, v in raw_records(settings)}
    assert latest[record_key(person, made.key_id)] is None


def test_rotate_then_the_old_kek_can_go(settings: HubSettings) -> None:
    people = [subject() for _ in range(30)]
    with open_person_keys(settings) as store:
        made = store.ensure(people)
        forgotten = people[0]
        store.forget(forgotten, "test")
    rotated_settings = settings.model_copy(update={"kek": SecretStr(f"{NEW},{OLD}")})
    seen: list[tuple[int, int]] = []
    with open_person_keys(rotated_settings) as store:
        status = store.status()
        assert status.not_current == 29
        assert status.keys_by_kek == {"local:old": 29}
        result = store.rotate(progress=lambda done, total: seen.append((done, total)))
        assert (result.rewrapped, result.already_current, result.failed) == (29, 0, ())
        assert seen[-1] == (29, 29)
        assert store.status().keys_by_kek == {"local:new": 29}
        assert store.rotate().rewrapped == 0
    new_only = settings.model_copy(update={"kek": SecretStr(NEW)})
    with open_person_keys(new_only) as store:
        for person in people[1:]:
            assert store.data_key(person, made[person].key_id).secret == made[person].secret
        with pytest.raises(KeyErased):
            store.data_key(forgotten, made[forgotten].key_id)
    with open_person_keys(settings) as old_only, pytest.raises(KeyRecordBroken, match="local:new"):
        old_only.data_key(people[1], made[people[1]].key_id)


def test_a_wrapped_key_copied_to_another_person_does_not_unwrap(
    settings: HubSettings, keys: KafkaPersonKeys
) -> None:
    victim, thief = subject(), subject()
    made = keys.ensure([victim])[victim]
    record = json.loads(
        next(v for _, _, k, v in raw_records(settings) if k == record_key(victim, made.key_id))
        or b"{}"
    )
    record["subject"] = thief
    produce_raw(
        settings,
        keys.partition_of(thief),
        record_key(thief, made.key_id),
        json.dumps(record).encode(),
    )
    with open_person_keys(settings) as fresh:
        with pytest.raises(KeyRecordBroken, match="fails authentication"):
            fresh.data_key(thief, made.key_id)
        assert fresh.data_key(victim, made.key_id).secret == made.secret


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (b"nokey", b"{}", "<pseudonym>/<key id>"),
        (b"%s/not-a-uuid", b'{"v":1,"subject":"%s"}', "not a UUID"),
        (
            b"%s/" + str(uuid.UUID(int=7)).encode(),
            b'{"v":1,"subject":"%s"}',
            "kek is missing or not text",
        ),
        (b"%s/" + str(uuid.UUID(int=7)).encode(), b"\xff\xfe not json", "not UTF-8"),
        (b"%s/" + str(uuid.UUID(int=7)).encode(), b"[1, 2]", "another subject"),
        (
            b"%s/" + str(uuid.UUID(int=7)).encode(),
            b'{"v":1,"subject":"%s","key_id":"x","kek":"local:old","wrapped":"AAAA",'
            b'"created_at":"yesterday"}',
            "ISO 8601",
        ),
    ],
)
def test_tampered_records_are_reported_not_fatal(
    settings: HubSettings, keys: KafkaPersonKeys, key: bytes, value: bytes, problem: str
) -> None:
    person = subject()
    made = keys.ensure([person])[person]
    raw_key = key.replace(b"%s", person.encode())
    produce_raw(settings, keys.partition_of(person), raw_key, value.replace(b"%s", person.encode()))
    with open_person_keys(settings) as fresh:
        status = fresh.status()
        assert status.bad_records == 1
        assert problem in status.bad_examples[0].problem
        assert person not in status.bad_examples[0].problem
        assert fresh.data_key(person, made.key_id).secret == made.secret
    assert keys.catch_up()
    assert keys.bad_records == 1


def test_a_changed_wrapped_key_is_a_clear_error(
    settings: HubSettings, keys: KafkaPersonKeys
) -> None:
    person = subject()
    made = keys.ensure([person])[person]
    value = next(v for _, _, k, v in raw_records(settings) if k == record_key(person, made.key_id))
    record = json.loads(value or b"{}")
    wrapped = bytearray(base64.b64decode(record["wrapped"]))
    wrapped[20] ^= 1
    record["wrapped"] = base64.b64encode(bytes(wrapped)).decode()
    produce_raw(
        settings,
        keys.partition_of(person),
        record_key(person, made.key_id),
        json.dumps(record).encode(),
    )
    with open_person_keys(settings) as fresh, pytest.raises(KeyRecordBroken) as broken:
        fresh.data_key(person, made.key_id)
    assert "fails authentication" in str(broken.value)
    assert isinstance(broken.value.__cause__, KekError) or broken.value.__cause__ is None


def test_ensure_from_an_event_loop_does_not_block_it(keys: KafkaPersonKeys) -> None:
    import asyncio

    async def main() -> tuple[int, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        made = await keys.aensure([subject() for _ in range(50)])
        ticker.cancel()
        return len(made), ticks

    made, ticks = asyncio.run(main())
    assert made == 50
    assert ticks > 1


def test_local_keyring_without_the_key_is_a_clear_error(settings: HubSettings) -> None:
    person = subject()
    with open_person_keys(settings) as store:
        made = store.ensure([person])[person]
    other = LocalKeyEncryptionKeys.from_text(NEW)
    with (
        open_person_keys(settings, kek=other) as store,
        pytest.raises(KeyRecordBroken, match="does not hold"),
    ):
        store.data_key(person, made.key_id)


def test_threads_ensuring_one_new_person_make_one_key(keys: KafkaPersonKeys) -> None:
    from concurrent.futures import ThreadPoolExecutor

    person = subject()
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: keys.ensure([person])[person].key_id, range(16)))
    assert len(set(made)) == 1
    assert [k.key_id for k in keys.directory.stored(person)] == made[:1]


def test_many_people_at_once(settings: HubSettings, capsys: pytest.CaptureFixture[str]) -> None:
    """20 000 new people in one ensure; a fresh follower reads them and unwraps them in one go
    (figures printed with -s; no timing is asserted)."""
    import time

    people = [subject() for _ in range(20_000)]
    with open_person_keys(settings) as store:
        started = time.perf_counter()
        made = store.ensure(people)
        made_s = time.perf_counter() - started
    started = time.perf_counter()
    with open_person_keys(settings) as fresh:
        loaded_s = time.perf_counter() - started
        assert fresh.status().people_with_keys == 20_000
        started = time.perf_counter()
        found = fresh.data_keys([(p, made[p].key_id) for p in people])
        unwrap_s = time.perf_counter() - started
        assert all(found[(p, made[p].key_id)].secret == made[p].secret for p in people)
    with capsys.disabled():
        print(
            f"\n[person keys] 20000 new keys acknowledged in {made_s:.2f} s, topic read by a "
            f"fresh follower in {loaded_s:.2f} s, 20000 unwrapped in {unwrap_s:.2f} s"
        )
