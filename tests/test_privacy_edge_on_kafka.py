"""Encrypt at the edge, on the real broker: the log and the receipts hold no personal value in
clear, whoever wrote them (ingest API, batch import, register poller, simulator), and the
person's key opens them exactly.

The raw scans read every record of a topic with read_uncommitted (aborted transactions'
records too: they are in the log's bytes), keys, values and header values, and look for the
UTF-8 text of every value that was sent. A boolean has no text: the health flag is shown sealed
(bytes) and opened to what was sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from fastavro import schemaless_writer
from pydantic import SecretStr

from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.run import run_simulation
from hub.broker.local import LocalKafka
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer, make_test_identity_code
from hub.intake.examples import EXAMPLES
from hub.kafka.clients import make_consumer
from hub.kafka.reading import read_topic
from hub.kafka.topics import ensure_topics, partition_ids
from hub.privacy.datakeys import decode_record
from hub.privacy.fields import SealedFields
from hub.privacy.keystore import KafkaPersonKeys
from hub.privacy.sealing import DataKey, SealBroken, is_sealed, open_value
from hub.serde import SingleObjectSerializer, default_catalog
from hub.serde.fake import fake_record
from hub.serde.framing import SINGLE_OBJECT_MAGIC
from hub.settings import HubSettings
from hub.sink import SinkUnavailable, Submission
from hub.sink.kafka import open_kafka_sink
from tests.conftest import hub_environment, settings_for
from tests.hub_process import hub_command
from tests.test_ingest_api_on_kafka import Delivery
from tests.test_ingest_on_kafka import API_KEY, running_api
from tests.test_ingest_on_kafka import SECRET as API_SECRET

pytestmark = pytest.mark.kafka
FIELDS = SealedFields()
SERIALIZER = SingleObjectSerializer(default_catalog())
KEK_TEXT = "edge-test-1:" + base64.b64encode(b"edge-test-key-encryption-key-32b").decode()


def edge_settings(bootstrap: str, tmp_path: Path, **overrides: Any) -> HubSettings:
    """Settings of their own topics (person keys included) with a test KEK."""
    settings = settings_for(bootstrap, state_dir=tmp_path / "hub-state", **overrides)
    return settings.model_copy(
        update={
            "topic_person_keys": f"test.person-keys.{uuid.uuid4().hex[:12]}",
            "kek": SecretStr(KEK_TEXT),
        }
    )


@asynccontextmanager
async def person_keys(settings: HubSettings) -> AsyncIterator[KafkaPersonKeys]:
    keys = KafkaPersonKeys(settings)
    try:
        await asyncio.to_thread(keys.start)
        yield keys
    finally:
        await asyncio.to_thread(keys.close)


async def ensure_all_topics(settings: HubSettings) -> None:
    """The hub's topics and the person-keys topic, all ready."""
    await ensure_topics(settings)
    keys = KafkaPersonKeys(settings)
    await asyncio.to_thread(keys.start)
    await asyncio.to_thread(keys.close)


async def raw_records(settings: HubSettings, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its end now, aborted transactions included."""
    partitions = [TopicPartition(topic, p) for p in await partition_ids(settings, topic)]
    consumer = make_consumer(settings, group_id=None, isolation_level="read_uncommitted")
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[Any] = []
        behind = list(partitions)
        while behind:
            batches = await consumer.getmany(*behind, timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
            behind = [tp for tp in behind if await consumer.position(tp) < end[tp]]
        return records
    finally:
        await consumer.stop()


async def raw_bytes(settings: HubSettings, *topics: str) -> bytes:
    """Keys, values and header values of every record of ``topics``, concatenated."""
    parts: list[bytes] = []
    for topic in topics:
        for record in await raw_records(settings, topic):
            parts.extend([record.key or b"", record.value or b""])
            parts.extend(value for _, value in record.headers or ())
    return b"\x00".join(parts)


def in_clear(raw: bytes, values: Iterable[Any]) -> int:
    """How many of the values (their UTF-8 text) are in ``raw``: a count, so that a failing
    test never prints a personal value."""
    return sum(v.encode() in raw for v in {v for v in values if isinstance(v, str) and v})


async def log_records(settings: HubSettings) -> list[dict[str, Any]]:
    """The decoded records of the log (read_committed)."""
    return [
        SERIALIZER.decode(r.value).record
        async for r in read_topic(settings, settings.topic_customer_path)
    ]


def personal_values(event_type: str, record: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for path in FIELDS.paths(event_type):
        node: Any = record
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[path] = node
    return out


def assert_sealed_and_opens_to(
    event_type: str, record: dict[str, Any], keys: KafkaPersonKeys, expected: dict[str, Any]
) -> set[uuid.UUID]:
    """Every personal value present is sealed bytes and opens to ``expected`` (by path);
    returns the key ids used."""
    sealed = personal_values(event_type, record)
    for path, value in sealed.items():
        assert value is None or is_sealed(value), f"{path} is not sealed"
    opened = FIELDS.open(event_type, record, keys)
    assert opened.failed == (), opened.error
    got = personal_values(event_type, opened.record)
    differing = sorted(p for p in set(got) | set(expected) if got.get(p) != expected.get(p))
    assert differing == [], "opened values differ at these paths (values not shown)"
    return FIELDS.key_ids(event_type, record)


# -- the ingest API as deployed ------------------------------------------------------------------


def registration(code: str, born: date, started: date, **payload: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(EXAMPLES["JobseekerRegistered"]))
    age = started.year - born.year - ((started.month, started.day) < (born.month, born.day))
    body["event_id"] = str(uuid.uuid4())
    body["personal_identity_code"] = code
    body["occurred_at"] = f"{started.isoformat()}T09:45:00+02:00"
    body["payload"] |= {
        "personal_identity_code": code,
        "job_search_started_on": started.isoformat(),
        "age_at_registration": age,
        **payload,
    }
    return body


PERSON_A = {
    "first_name": "Saimaa-Edgetest",
    "last_name": "Kivikallio-Edgetest",
    "email": "saimaa.edgetest@example.fi",
    "phone": "+358501112233",
    "unemployment_fund_code": "palvelualojen",
    "reduced_work_ability": True,
}
BORN_A, BORN_B, STARTED = date(1990, 4, 12), date(1985, 8, 30), date(2026, 3, 2)
CODE_A = make_test_identity_code(BORN_A, 917)
CODE_B = make_test_identity_code(BORN_B, 923)


def expected_values(body: dict[str, Any]) -> dict[str, Any]:
    payload = body["payload"]
    return {f"payload.{name}": payload.get(name) for name in (
        "personal_identity_code", "first_name", "last_name", "email", "phone",
        "unemployment_fund_code", "reduced_work_ability",
    )}  # fmt: skip


async def test_a_registration_through_hub_serve_is_sealed_in_the_log_and_the_receipts(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = edge_settings(kafka_bootstrap, tmp_path)
    await ensure_all_topics(settings)
    body = registration(CODE_A, BORN_A, STARTED, **PERSON_A)
    mismatched = registration(CODE_A, BORN_A, STARTED, **PERSON_A)
    mismatched["payload"]["personal_identity_code"] = CODE_B  # one request, two people
    # Another person's identity code (B's, everywhere): B's event, sealed with B's key.
    as_b = registration(CODE_B, BORN_B, STARTED, **PERSON_A)
    async with running_api(settings, tmp_path) as api, httpx.AsyncClient(base_url=api.url) as http:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        path = "/v1/events/jobseeker-registered"
        accepted = await http.post(path, json=body, headers=headers, timeout=30)
        assert accepted.status_code == 202, accepted.text
        refused = await http.post(path, json=mismatched, headers=headers, timeout=30)
        assert refused.status_code == 422, refused.text
        other = await http.post(path, json=as_b, headers=headers, timeout=30)
        assert other.status_code == 202, other.text

    raw = await raw_bytes(settings, settings.topic_customer_path, settings.topic_ingest_receipts)
    sent = [CODE_A, CODE_B, *(v for v in PERSON_A.values() if isinstance(v, str))]
    found = in_clear(raw, sent)
    assert found == 0, "a personal value is in clear in the log or receipts"
    found = in_clear(raw, ["Saimaa", "Kivikallio", "edgetest@", "palvelualojen"])
    assert found == 0

    pseudonyms = Pseudonymizer(API_SECRET)
    subject_a, subject_b = pseudonyms.pseudonym(CODE_A), pseudonyms.pseudonym(CODE_B)
    found = in_clear(raw, [subject_a, subject_b, "urn:fi:te-hub:test"])
    assert found == 3  # the scan sees the records
    records = {r["envelope"]["subject"]: r for r in await log_records(settings)}
    assert set(records) == {subject_a, subject_b}  # the mismatched request wrote nothing
    async with person_keys(settings) as keys:
        used_a = assert_sealed_and_opens_to(
            "JobseekerRegistered", records[subject_a], keys, expected_values(body)
        )
        used_b = assert_sealed_and_opens_to(
            "JobseekerRegistered", records[subject_b], keys, expected_values(as_b)
        )
        key_a, key_b = keys.directory.newest(subject_a), keys.directory.newest(subject_b)
        assert key_a is not None
        assert key_b is not None
        assert used_a == {key_a.key_id}
        assert used_b == {key_b.key_id}
        assert used_a != used_b
        # A's key does not open B's values (however alike the rest of the request is).
        value = records[subject_b]["payload"]["first_name"]
        with pytest.raises(SealBroken):
            open_value(
                keys.data_key(subject_a, key_a.key_id),
                records[subject_b]["envelope"]["event_id"],
                "payload.first_name",
                value,
            )
    # The wrapped keys are all that the key topic holds: no value of the person either.
    key_raw = await raw_bytes(settings, settings.topic_person_keys)
    found = in_clear(key_raw, sent)
    assert found == 0


# -- keys that cannot be had ---------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _nothing_written(settings: HubSettings) -> None:
    assert await raw_records(settings, settings.topic_customer_path) == []
    assert await raw_records(settings, settings.topic_ingest_receipts) == []


async def test_vault_down_is_503_and_nothing_is_written(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = edge_settings(kafka_bootstrap, tmp_path, ingest_write_timeout_s=5).model_copy(
        update={
            "kms": "vault",
            "vault_addr": f"http://127.0.0.1:{_closed_port()}",
            "vault_token": SecretStr("hvs.edge-test-token"),
            "vault_timeout_s": 2.0,
        }
    )
    await ensure_all_topics(settings)
    async with open_kafka_sink(settings) as sink:
        delivery = Delivery(sink, lambda: _never())
        async with delivery.http:
            refused = await delivery.post(idempotency_key="vault-down")
    assert refused.status_code == 503, refused.text
    assert refused.json()["type"].endswith("sink-unavailable")
    assert int(refused.headers["Retry-After"]) >= 1
    await _nothing_written(settings)
    assert await raw_records(settings, settings.topic_person_keys) == []


async def _never() -> Counter[uuid.UUID]:
    return Counter()


async def test_the_key_topic_down_is_503_nothing_is_written_and_the_retry_is_sealed(
    kafka_bootstrap: str, private_kafka: LocalKafka, tmp_path: Path
) -> None:
    """The key topic on a broker of its own that stops: the log's broker stays up."""
    settings = edge_settings(kafka_bootstrap, tmp_path, ingest_write_timeout_s=3)
    key_settings = settings.model_copy(update={"kafka_bootstrap": private_kafka.bootstrap})
    await ensure_all_topics(settings)
    async with (
        person_keys(key_settings) as keys,
        open_kafka_sink(settings, person_keys=keys) as sink,
    ):
        delivery = Delivery(sink, lambda: _never())
        async with delivery.http:
            await asyncio.to_thread(private_kafka.stop)
            refused = await delivery.post(idempotency_key="keys-down")
            assert refused.status_code == 503, refused.text
            assert refused.json()["type"].endswith("sink-unavailable")
            await _nothing_written(settings)
            await asyncio.to_thread(private_kafka.start)
            for _ in range(120):  # the retry of a client that honours Retry-After
                retried = await delivery.post(idempotency_key="keys-down")
                if retried.status_code == 202:
                    break
                assert retried.status_code == 503, retried.text
                await asyncio.sleep(int(retried.headers["Retry-After"]))
            assert retried.status_code == 202, retried.text
        (record,) = await log_records(settings)
        sent = EXAMPLES["JobseekerRegistered"]
        assert_sealed_and_opens_to(
            "JobseekerRegistered", record, keys, expected_values(sent) | {
                "payload.reduced_work_ability": None
            },
        )  # fmt: skip


# -- a crash between the key write and the event write, and a huge batch ----------------------


class CrashesAfterTheKeyWrite:
    """The real key store; its first ensure stores the keys, then the writer 'crashes'."""

    def __init__(self, keys: KafkaPersonKeys) -> None:
        self.keys = keys
        self.calls: list[int] = []

    def ensure(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        wanted = list(subjects)
        self.calls.append(len(wanted))
        found = self.keys.ensure(wanted)
        if len(self.calls) == 1:
            raise RuntimeError("killed after the key record was acknowledged")
        return found


def submissions(events: list[CustomerPathEvent]) -> list[Submission]:
    return [Submission(f"edge:{e.envelope.event_id}", "digest", e) for e in events]


async def _key_records(settings: HubSettings) -> Counter[str]:
    """Key records (not markers, not tombstones) per subject in the key topic."""
    found: Counter[str] = Counter()
    for record in await raw_records(settings, settings.topic_person_keys):
        subject, name, body = decode_record(record.key, record.value)
        if body is not None and name != "forgotten":
            found[subject] += 1
    return found


async def test_a_crash_after_the_key_write_leaves_an_orphan_key_that_the_retry_reuses(
    kafka_bootstrap: str, tmp_path: Path, simulated_paths: list[list[CustomerPathEvent]]
) -> None:
    settings = edge_settings(kafka_bootstrap, tmp_path)
    await ensure_all_topics(settings)
    events = simulated_paths[7][:3]
    subject = events[0].envelope.subject
    async with person_keys(settings) as keys:
        crashing = CrashesAfterTheKeyWrite(keys)
        async with open_kafka_sink(settings, person_keys=crashing) as sink:
            with pytest.raises(SinkUnavailable):
                await sink.submit(submissions(events))
        orphan = keys.directory.newest(subject)
    assert orphan is not None
    await _nothing_written(settings)  # the key is stored, no event: harmless
    assert await _key_records(settings) == Counter({subject: 1})

    # The retry, by a new process (new key store reading the topic, new sink).
    async with person_keys(settings) as keys, open_kafka_sink(settings, person_keys=keys) as sink:
        receipts = await sink.submit(submissions(events))
        assert [r.duplicate for r in receipts] == [False] * 3
        records = await log_records(settings)
        used = set().union(*(FIELDS.key_ids(r["envelope"]["event_type"], r) for r in records))
    assert used == {orphan.key_id}  # sealed with the orphaned key, not a second one
    assert await _key_records(settings) == Counter({subject: 1})


class CountingKeys:
    def __init__(self, keys: KafkaPersonKeys) -> None:
        self.keys = keys
        self.calls: list[int] = []

    async def aensure(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        wanted = list(subjects)
        self.calls.append(len(wanted))
        return await self.keys.aensure(wanted)

    def ensure(self, subjects: Iterable[str]) -> dict[str, DataKey]:
        raise AssertionError("the sink asks for keys off its event loop (aensure)")


async def test_a_huge_batch_gets_its_keys_in_one_call_and_is_sealed_whole(
    kafka_bootstrap: str, tmp_path: Path, simulated_paths: list[list[CustomerPathEvent]]
) -> None:
    settings = edge_settings(kafka_bootstrap, tmp_path)
    await ensure_all_topics(settings)
    events = [e for path in simulated_paths for e in path][:4000]
    people = {e.envelope.subject for e in events}
    async with person_keys(settings) as keys:
        counting = CountingKeys(keys)
        async with open_kafka_sink(settings, person_keys=counting) as sink:
            receipts = await sink.submit(submissions(events))
            assert len(receipts) == len(events)
            assert counting.calls == [len(people)]  # one call for the whole batch
            again = await sink.submit(submissions(events[:10]))  # answered from the receipts
            assert all(r.duplicate for r in again)
            assert counting.calls == [len(people)]
        records = await log_records(settings)
        assert len(records) == len(events)
        plain = {e.envelope.event_id: e for e in events}
        for record in records:
            event = plain[record["envelope"]["event_id"]]
            expected = personal_values(event.event_type, event.to_avro())
            assert_sealed_and_opens_to(event.event_type, record, keys, expected)
    assert set(await _key_records(settings)) == people


# -- old plaintext records still read ------------------------------------------------------------


def _plaintext_versions() -> Iterator[tuple[str, Any]]:
    """Every earlier schema version of a type with personal fields whose personal fields were
    plaintext (no bytes member)."""
    for schemas in default_catalog():
        paths = FIELDS.paths(schemas.full_name)
        if not paths:
            continue
        for version in schemas.history:
            if version.fingerprint == schemas.current.fingerprint:
                continue
            pii_types = list(_pii_types(version.raw))
            if pii_types and all("bytes" not in json.dumps(t) for t in pii_types):
                yield schemas.full_name, version


def _pii_types(schema: Any) -> Iterator[Any]:
    """The Avro types of the fields with a ``pii`` attribute, anywhere in ``schema``."""
    if isinstance(schema, list):
        for member in schema:
            yield from _pii_types(member)
    elif isinstance(schema, dict) and schema.get("type") == "record":
        for field in schema["fields"]:
            if "pii" in field:
                yield field["type"]
            else:
                yield from _pii_types(field["type"])


async def test_old_plaintext_records_of_earlier_schema_versions_still_read(
    kafka_bootstrap: str, tmp_path: Path, simulated_paths: list[list[CustomerPathEvent]]
) -> None:
    settings = edge_settings(kafka_bootstrap, tmp_path)
    await ensure_all_topics(settings)
    rng = random.Random(9)
    old: dict[uuid.UUID, tuple[str, str, dict[str, Any]]] = {}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for type_name, version in _plaintext_versions():
            record = fake_record(version.parsed, rng)
            event_id = uuid.uuid4()
            record["envelope"]["event_id"] = event_id
            record["envelope"]["subject"] = f"{rng.getrandbits(256):064x}"
            buf = BytesIO()
            buf.write(SINGLE_OBJECT_MAGIC + version.fingerprint)
            schemaless_writer(buf, version.parsed, record)
            await producer.send_and_wait(settings.topic_customer_path, buf.getvalue(), key=b"old")
            old[event_id] = (type_name, version.fingerprint.hex(), record)
    finally:
        await producer.stop()
    versions = Counter(type_name.rsplit(".", 1)[-1] for type_name, _, _ in old.values())
    assert versions["JobseekerRegistered"] >= 2  # v1 and v2 (v3 has the bytes member)
    new_events = [e for e in simulated_paths[3] if FIELDS.paths(e.event_type)][:2]
    async with person_keys(settings) as keys, open_kafka_sink(settings, person_keys=keys) as sink:
        await sink.submit(submissions(new_events))
        decoded = [
            SERIALIZER.decode(r.value)
            for r in await raw_records(settings, settings.topic_customer_path)
        ]
        assert len(decoded) == len(old) + len(new_events)
        for event in decoded:
            event_id = event.record["envelope"]["event_id"]
            if event_id in old:
                type_name, fingerprint, written = old[event_id]
                assert event.writer_schema_ref == fingerprint
                for path, value in personal_values(type_name, event.record).items():
                    assert value is None or type(value) in (str, bool), path
                    assert value == personal_values(type_name, written)[path]
                # Nothing to open: plaintext stays what it was.
                assert FIELDS.open(type_name, event.record, keys).opened == ()
            else:
                values = personal_values(event.type_name, event.record)
                assert any(type(v) is bytes for v in values.values())
                assert all(v is None or type(v) is bytes for v in values.values())
                assert FIELDS.open(event.type_name, event.record, keys).failed == ()


# -- batch import, register poller, simulator ---------------------------------------------------


async def test_hub_import_seals_the_rows(kafka_bootstrap: str, tmp_path: Path) -> None:
    from tests.test_batch_import import SECRET as IMPORT_SECRET
    from tests.test_batch_import import jobseeker, write_csv

    settings = edge_settings(kafka_bootstrap, tmp_path)
    await ensure_all_topics(settings)
    rows = [jobseeker(n) for n in range(3)]
    path = write_csv(tmp_path / "jobseekers.csv", rows)
    result = await asyncio.to_thread(
        hub_command,
        "import",
        str(path),
        env=_hub_env(settings, IMPORT_SECRET),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    raw = await raw_bytes(settings, settings.topic_customer_path, settings.topic_ingest_receipts)
    values = [row[name] for row in rows for name in row if name in _CSV_PERSONAL]
    assert len([v for v in values if v]) >= 9
    found = in_clear(raw, values)
    assert found == 0
    by_code = {row["personal_identity_code"]: row for row in rows}
    async with person_keys(settings) as keys:
        registrations = [
            r for r in await log_records(settings)
            if r["envelope"]["event_type"] == "JobseekerRegistered"
        ]  # fmt: skip
        assert len(registrations) == len(rows)
        for record in registrations:
            opened = FIELDS.open("JobseekerRegistered", record, keys)
            assert opened.failed == ()
            payload = opened.record["payload"]
            row = by_code[payload["personal_identity_code"]]
            for name in ("first_name", "last_name", "email"):
                assert payload[name] == (row[name] or None)
            assert_sealed_and_opens_to(
                "JobseekerRegistered",
                record,
                keys,
                personal_values("JobseekerRegistered", opened.record),
            )


_CSV_PERSONAL = ("personal_identity_code", "first_name", "last_name", "email", "phone")


def _hub_env(settings: HubSettings, secret: str, **more: str) -> dict[str, str]:
    env = hub_environment(settings, HUB_PSEUDONYM_SECRET=secret, HUB_LOG_LEVEL="WARNING", **more)
    return {k: v for k, v in env.items() if k.startswith("HUB_")}


async def test_hub_poll_seals_the_register_rows(kafka_bootstrap: str, tmp_path: Path) -> None:
    from connectors.xroad import XRoadService
    from tests.poller_fakes import CLIENT_ID, SERVICE_ID, feed_fixture
    from tests.xroad_feed_server import FeedState, running_feed

    settings = edge_settings(kafka_bootstrap, tmp_path)
    await ensure_all_topics(settings)
    feed = feed_fixture()
    items = [i for i in feed.items if isinstance(i, dict) and i.get("plan") is None][:8]
    state = FeedState(service_path=XRoadService.parse(SERVICE_ID).path, items=items)
    with running_feed(state) as server:
        env = _hub_env(
            settings,
            "poller-edge-secret-0123456789abcdef",
            HUB_XROAD_SECURITY_SERVER_URL=server.url,
            HUB_XROAD_CLIENT=CLIENT_ID,
        )
        result = await asyncio.to_thread(
            hub_command, "poll", "--service", SERVICE_ID, "--until-idle", env=env, cwd=tmp_path
        )
    assert result.returncode == 0, result.stderr
    raw = await raw_bytes(settings, settings.topic_customer_path, settings.topic_ingest_receipts)
    values = [item[name] for item in items for name in _CSV_PERSONAL if item.get(name)]
    assert len(values) == 5 * len(items)
    found = in_clear(raw, values)
    assert found == 0
    by_code = {item["personal_identity_code"]: item for item in items}
    async with person_keys(settings) as keys:
        records = await log_records(settings)
        assert len(records) == len(items)
        for record in records:
            opened = FIELDS.open(record["envelope"]["event_type"], record, keys)
            assert opened.failed == ()
            payload = opened.record["payload"]
            item = by_code[payload["personal_identity_code"]]
            for name in ("first_name", "last_name", "email", "phone", "reduced_work_ability"):
                assert payload[name] == item[name], name


_SIMULATED_SCANNED = {
    "personal_identity_code", "first_name", "last_name", "email", "phone",
    "participant_first_name", "participant_last_name", "participant_email", "participant_phone",
}  # fmt: skip


async def test_hub_simulate_seals_every_personal_field(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = edge_settings(kafka_bootstrap, tmp_path)
    await ensure_all_topics(settings)
    config = SimulationConfig(jobseekers=15, seed=12)
    summary = await run_simulation(settings, config)
    paths = list(simulate(config, Pseudonymizer.from_settings(settings)))
    events = {e.envelope.event_id: e for path in paths for e in path}
    assert summary.total == len(events)
    raw = await raw_bytes(settings, settings.topic_customer_path)
    values = [
        v
        for e in events.values()
        for path, v in personal_values(e.event_type, e.to_avro()).items()
        # Identifiers and contact details (the fund is also the payer of BenefitDaysAccrued
        # and StatementRequested, named there in clear by design: not scanned for).
        if path.rsplit(".", 1)[-1] in _SIMULATED_SCANNED and isinstance(v, str)
    ]
    assert len(values) > 30
    found = in_clear(raw, values)
    assert found == 0
    async with person_keys(settings) as keys:
        for record in await log_records(settings):
            event = events[record["envelope"]["event_id"]]
            expected = personal_values(event.event_type, event.to_avro())
            assert_sealed_and_opens_to(event.event_type, record, keys, expected)


async def test_a_writer_with_a_key_encryption_key_that_opens_no_stored_key_is_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Attack: a writer started with a wrong HUB_KEK made keys for new people that no reader
    could unwrap (their data lost) and exited 0. Now it refuses before writing anything."""
    from hub.privacy.kek import KekError
    from hub.sink.sealing import start_person_keys

    settings = edge_settings(kafka_bootstrap, tmp_path)
    keys = await start_person_keys(settings)
    try:
        await keys.aensure(["a" * 32])
    finally:
        await asyncio.to_thread(keys.close)
    wrong = settings.model_copy(
        update={"kek": SecretStr("wrong:" + base64.b64encode(bytes(32)).decode())}
    )
    with pytest.raises(KekError, match="opens none of the 1 newest stored data keys"):
        await start_person_keys(wrong)
    right = await start_person_keys(settings)  # the right key still starts
    await asyncio.to_thread(right.close)
