"""The sealed-field format, the schema evolution, the local key-encryption keys and the key
directory: pure logic, no broker (the Kafka-backed store has its own tests)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any
from uuid import UUID, uuid4

import fastavro
import pytest

from hub.events.customer_path import EVENT_TYPES
from hub.privacy.datakeys import (
    Forgotten,
    KeyDirectory,
    MemoryPersonKeys,
    context_of,
    encode_forgotten,
    encode_stored,
    record_key,
)
from hub.privacy.fields import SEALED_PLACEHOLDER, SealedFields
from hub.privacy.kek import KekError, LocalKeyEncryptionKeys, key_context, parse_keyring
from hub.privacy.sealing import (
    KeyErased,
    KeyUnknown,
    SealBroken,
    is_sealed,
    new_data_key,
    open_value,
    seal_value,
    sealed_key_id,
)
from hub.serde import SingleObjectSerializer, default_catalog

SUBJECT = "0" * 31 + "a"
OTHER = "1" * 31 + "b"


def _kek(*ids: str) -> LocalKeyEncryptionKeys:
    return LocalKeyEncryptionKeys(
        [(kek_id, bytes([i]) * 32) for i, kek_id in enumerate(ids or ("k1",), start=1)]
    )


def _registration(simulated_paths: list[list[Any]]) -> Any:
    return next(
        e
        for path in simulated_paths
        for e in path
        if type(e).__name__ == "JobseekerRegistered" and e.payload.email and e.payload.phone
    )


def _plain_values(record: dict[str, Any], paths: tuple[str, ...]) -> list[str]:
    values = []
    for path in paths:
        node: Any = record
        for part in path.split("."):
            node = node[part]
        if isinstance(node, str):
            values.append(node)
    return values


# -- the schema -----------------------------------------------------------------------------------


def test_every_pii_field_is_a_union_with_bytes_and_nothing_else_is() -> None:
    catalog = default_catalog()
    sealed = SealedFields(catalog)
    for name in EVENT_TYPES:
        raw = catalog.current(name).raw
        fields = {f.path: f for f in sealed.fields(name)}
        payload = next(f for f in raw["fields"] if f["name"] == "payload")["type"]
        for field in payload["fields"]:
            path = f"payload.{field['name']}"
            if "pii" in field:
                assert isinstance(field["type"], list), path
                assert field["type"][-1] == "bytes", path
                assert path in fields
            else:
                assert path not in fields
                assert "bytes" not in (field["type"] if isinstance(field["type"], list) else [])
    assert len(sealed.paths("JobseekerRegistered")) == 7
    assert sealed.paths("JobSearchConversationHeld") == ()


def test_a_plaintext_record_of_the_release_before_sealing_reads_as_plaintext(
    simulated_paths: list[list[Any]],
) -> None:
    """Data written before field encryption (the previous release, plaintext strings) decodes
    with the current schema: the values come back as str/bool, not bytes, and validate."""
    catalog = default_catalog()
    serde = SingleObjectSerializer(catalog)
    sealed = SealedFields(catalog)
    seen = 0
    for path in simulated_paths[:40]:
        for event in path:
            name = type(event).__name__
            if not sealed.paths(name):
                continue
            previous = catalog.history(name)[-2]
            assert "bytes" not in json.dumps(previous.raw["fields"][1]["type"]["fields"]), name
            buffer = BytesIO()
            buffer.write(b"\xc3\x01" + previous.fingerprint)
            fastavro.schemaless_writer(buffer, previous.parsed, event.to_avro())
            decoded = serde.decode(buffer.getvalue())
            assert not list(sealed.sealed_values(name, decoded.record))
            assert type(event).from_avro(decoded.record) == event
            seen += 1
    assert seen > 10


def test_sealed_values_survive_the_wire_and_open_to_the_original(
    simulated_paths: list[list[Any]],
) -> None:
    serde = SingleObjectSerializer()
    sealed = SealedFields()
    keys = MemoryPersonKeys(_kek())
    event = _registration(simulated_paths)
    record = event.to_avro()
    subject = record["envelope"]["subject"]
    key = keys.ensure([subject])[subject]

    value = serde.encode("JobseekerRegistered", sealed.seal("JobseekerRegistered", record, key))

    plain = _plain_values(record, sealed.paths("JobseekerRegistered"))
    assert len(plain) >= 5  # identity code, names, e-mail, phone, fund
    for text in plain:
        assert text.encode() not in value
    decoded = serde.decode(value).record
    assert all(is_sealed(v) for _, v in sealed.sealed_values("JobseekerRegistered", decoded))
    opened = sealed.open("JobseekerRegistered", decoded, keys)
    assert opened.failed == ()
    assert opened.error is None
    assert type(event).from_avro(opened.record) == event
    assert record == event.to_avro()  # the caller's record was never changed


def test_none_stays_none_booleans_and_enums_round_trip() -> None:
    sealed = SealedFields()
    keys = MemoryPersonKeys(_kek())
    key = keys.ensure([SUBJECT])[SUBJECT]
    record = {
        "envelope": {"event_id": str(uuid4()), "subject": SUBJECT},
        "payload": {"interruption_reason": "illness", "other": 1},
    }
    out = sealed.seal("ServiceParticipationReported", record, key)
    assert is_sealed(out["payload"]["interruption_reason"])
    assert sealed.open("ServiceParticipationReported", out, keys).record == record
    assert sealed.seal("ServiceParticipationReported", out, key) == out  # idempotent
    none = {**record, "payload": {"interruption_reason": None}}
    assert sealed.seal("ServiceParticipationReported", none, key) == none
    flags = {"envelope": record["envelope"], "payload": {"reduced_work_ability": False}}
    opened = sealed.open(
        "JobseekerRegistered", sealed.seal("JobseekerRegistered", flags, key), keys
    )
    assert opened.record["payload"]["reduced_work_ability"] is False


# -- the format and its associated data -----------------------------------------------------------


def test_a_sealed_value_opens_only_in_its_own_event_and_field() -> None:
    key = new_data_key(SUBJECT, uuid4(), datetime.now(UTC))
    event_id = uuid4()
    value = seal_value(key, event_id, "payload.first_name", b"Aino")

    assert open_value(key, event_id, "payload.first_name", value) == b"Aino"
    assert open_value(key, str(event_id), "payload.first_name", value) == b"Aino"
    with pytest.raises(SealBroken, match="moved from another event or field"):
        open_value(key, uuid4(), "payload.first_name", value)
    with pytest.raises(SealBroken, match="moved from another event or field"):
        open_value(key, event_id, "payload.last_name", value)
    tampered = value[:-1] + bytes([value[-1] ^ 1])
    with pytest.raises(SealBroken):
        open_value(key, event_id, "payload.first_name", tampered)
    other = new_data_key(SUBJECT, uuid4(), datetime.now(UTC))
    with pytest.raises(SealBroken, match="another data key"):
        open_value(other, event_id, "payload.first_name", value)
    assert sealed_key_id(value) == key.key_id
    assert b"Aino" not in value
    assert len(value) == 2 + 16 + 12 + len(b"Aino") + 16


def test_only_bytes_with_the_marker_are_sealed_values() -> None:
    assert not is_sealed("\xa5\x01 text")
    assert not is_sealed(b"plain bytes")
    assert is_sealed(b"\xa5\x01" + bytes(44))
    with pytest.raises(SealBroken):
        sealed_key_id(b"\xa5\x01short")
    with pytest.raises(UnicodeDecodeError):
        b"\xa5\x01".decode()  # never valid UTF-8, so never a plaintext string


def test_a_value_sealed_for_another_person_does_not_open_in_this_persons_event() -> None:
    """Moving a sealed value from one person's event into another's: the key it names is
    looked up under the subject of the event it sits in, so it is unknown there."""
    sealed = SealedFields()
    keys = MemoryPersonKeys(_kek())
    mine, theirs = keys.ensure([SUBJECT, OTHER]).values()
    event_id = str(uuid4())
    theirs_sealed = sealed.seal(
        "StatementRequested",
        {
            "envelope": {"event_id": event_id, "subject": OTHER},
            "payload": {"personal_identity_code": "131052-308T"},
        },
        theirs,
    )
    moved = {**theirs_sealed, "envelope": {"event_id": event_id, "subject": SUBJECT}}
    opened = sealed.open("StatementRequested", moved, keys)
    assert opened.failed == ("payload.personal_identity_code",)
    assert isinstance(opened.error, KeyUnknown)
    assert "131052" not in str(opened.error)
    redacted = sealed.redact("StatementRequested", moved)
    assert redacted["payload"]["personal_identity_code"] == SEALED_PLACEHOLDER
    assert mine.key_id != theirs.key_id


def test_a_data_key_never_prints_its_secret() -> None:
    key = new_data_key(SUBJECT, uuid4(), datetime.now(UTC))
    assert key.secret.hex() not in repr(key)
    assert str(key.secret) not in repr(key)


# -- local key-encryption keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key-encryption key"),
        ("k1", "written '<id>:<base64"),
        ("k 1:" + base64.b64encode(bytes(32)).decode(), "written '<id>:<base64"),
        ("k1:not base64!", "not base64"),
        ("k1:" + base64.b64encode(bytes(16)).decode(), "16 bytes, AES-256 needs 32"),
        ("k1:{0},k1:{0}".format(base64.b64encode(bytes(32)).decode()), "given twice"),
    ],
)
def test_a_bad_keyring_is_refused_without_quoting_key_material(text: str, message: str) -> None:
    with pytest.raises(KekError, match=message) as caught:
        parse_keyring(text)
    secret = text.partition(":")[2]
    assert not secret or secret not in str(caught.value)


def test_keyring_lines_comments_and_the_first_key_wraps() -> None:
    a, b = base64.b64encode(b"a" * 32).decode(), base64.b64encode(b"b" * 32).decode()
    assert parse_keyring(f"# rotated 2026-12\nnew:{b}\n old:{a} \n") == [
        ("new", b"b" * 32),
        ("old", b"a" * 32),
    ]
    assert LocalKeyEncryptionKeys.from_text(f"new:{b},old:{a}").primary == "new"


def test_a_wrapped_key_is_bound_to_its_person_and_key_id() -> None:
    kek = _kek()
    key_id = uuid4().bytes
    [wrapped] = kek.wrap([b"s" * 32], [key_context(SUBJECT, key_id)])
    assert kek.unwrap([wrapped], [key_context(SUBJECT, key_id)]) == [b"s" * 32]
    with pytest.raises(KekError, match="fails authentication"):
        kek.unwrap([wrapped], [key_context(OTHER, key_id)])
    with pytest.raises(KekError, match="fails authentication"):
        kek.unwrap([wrapped], [key_context(SUBJECT, uuid4().bytes)])


def test_rotation_rewraps_so_the_old_key_encryption_key_can_be_removed() -> None:
    old = _kek("2026-11")
    store = MemoryPersonKeys(old)
    made = store.ensure([SUBJECT, OTHER])
    rotated = LocalKeyEncryptionKeys([("2026-12", b"\x09" * 32), ("2026-11", b"\x01" * 32)])
    directory = KeyDirectory(rotated)
    for key, value in store.records:
        directory.apply(key, value)
    stale = [k for k in directory.all_stored() if not rotated.is_current(k.wrapped)]
    assert len(stale) == 2
    rewrapped = rotated.rewrap([k.wrapped for k in stale], [context_of(k) for k in stale])
    new_only = KeyDirectory(LocalKeyEncryptionKeys([("2026-12", b"\x09" * 32)]))
    for stored, wrapped in zip(stale, rewrapped, strict=True):
        assert wrapped.kek == "local:2026-12"
        new_only.apply(
            record_key(stored.subject, stored.key_id),
            encode_stored(type(stored)(stored.subject, stored.key_id, wrapped, stored.created_at)),
        )
    for subject, key in made.items():
        assert new_only.data_key(subject, key.key_id).secret == key.secret
    without_rewrap = KeyDirectory(LocalKeyEncryptionKeys([("2026-12", b"\x09" * 32)]))
    for key, value in store.records:
        without_rewrap.apply(key, value)
    with pytest.raises(KekError, match="local:2026-11, which this keyring does not hold"):
        without_rewrap.data_key(SUBJECT, made[SUBJECT].key_id)


# -- the key directory ----------------------------------------------------------------------------


def test_forgetting_erases_every_key_and_a_later_key_is_live() -> None:
    store = MemoryPersonKeys(_kek())
    first = store.ensure([SUBJECT])[SUBJECT]
    assert store.ensure([SUBJECT])[SUBJECT] == first  # the same key while live
    assert store.forget(SUBJECT, "GDPR art. 17 request") == [first.key_id]
    with pytest.raises(KeyErased) as caught:
        store.data_key(SUBJECT, first.key_id)
    assert caught.value.forgotten_at is not None
    later = store.ensure([SUBJECT])[SUBJECT]
    assert later.key_id != first.key_id
    assert store.data_key(SUBJECT, later.key_id) == later


def test_a_forgotten_mark_erases_keys_whose_tombstones_are_not_read_yet() -> None:
    """forget writes the mark first: a crash before the tombstones leaves the person erased."""
    store = MemoryPersonKeys(_kek())
    key = store.ensure([SUBJECT])[SUBJECT]
    fresh = KeyDirectory(store.directory.kek)
    for record, value in store.records:
        fresh.apply(record, value)
    mark = Forgotten(SUBJECT, datetime.now(UTC) + timedelta(seconds=1), "retention")
    fresh.apply(record_key(SUBJECT, "forgotten"), encode_forgotten(mark))
    with pytest.raises(KeyErased):
        fresh.data_key(SUBJECT, key.key_id)
    assert fresh.newest(SUBJECT) is None


def test_a_tombstone_drops_the_unwrapped_key_from_the_cache() -> None:
    store = MemoryPersonKeys(_kek())
    key = store.ensure([SUBJECT])[SUBJECT]
    assert store.directory.cached(SUBJECT, key.key_id) is not None
    store.directory.apply(record_key(SUBJECT, key.key_id), None)
    assert store.directory.cached(SUBJECT, key.key_id) is None
    with pytest.raises(KeyErased):
        store.data_key(SUBJECT, key.key_id)


def test_two_keys_of_one_person_both_open_and_the_newest_seals() -> None:
    """Two writers creating a key for a new person at once: both keys stay valid."""
    kek = _kek()
    a, b = MemoryPersonKeys(kek), MemoryPersonKeys(kek)
    key_a = a.ensure([SUBJECT])[SUBJECT]
    key_b = b.ensure([SUBJECT])[SUBJECT]
    merged = KeyDirectory(kek)
    for record, value in a.records + b.records:
        merged.apply(record, value)
    assert merged.data_key(SUBJECT, key_a.key_id).secret == key_a.secret
    assert merged.data_key(SUBJECT, key_b.key_id).secret == key_b.secret
    newest = merged.newest(SUBJECT)
    assert newest is not None
    assert newest.key_id in (key_a.key_id, key_b.key_id)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (b"no-slash", b"{}", "record key is <pseudonym>/<key id>"),
        (
            f"{SUBJECT}/{UUID(int=7)}".encode(),
            json.dumps({"subject": OTHER}).encode(),
            "names another subject",
        ),
        (f"{SUBJECT}/{UUID(int=7)}".encode(), b"not json", "Expecting value"),
    ],
)
def test_a_record_of_another_shape_is_refused(key: bytes, value: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyDirectory(_kek()).apply(key, value)


def test_an_unknown_key_is_unknown_not_erased() -> None:
    with pytest.raises(KeyUnknown):
        KeyDirectory(_kek()).data_key(SUBJECT, UUID(int=1))


def test_a_running_reader_drops_a_cached_key_as_soon_as_it_reads_the_forgotten_mark() -> None:
    """A router that opened a person's values keeps the key cached; the mark alone (a forget
    that crashed before its tombstones) must erase it in that process too."""
    store = MemoryPersonKeys(_kek())
    key = store.ensure([SUBJECT])[SUBJECT]
    other = store.ensure([OTHER])[OTHER]
    assert store.data_key(SUBJECT, key.key_id) == key  # cached now
    mark = Forgotten(SUBJECT, datetime.now(UTC) + timedelta(seconds=1), "retention")
    store.directory.apply(record_key(SUBJECT, "forgotten"), encode_forgotten(mark))
    assert store.directory.cached(SUBJECT, key.key_id) is None
    with pytest.raises(KeyErased):
        store.data_key(SUBJECT, key.key_id)
    assert store.data_key(OTHER, other.key_id) == other


def test_a_cached_key_older_than_a_mark_is_refused_even_if_it_stayed_in_the_cache() -> None:
    store = MemoryPersonKeys(_kek())
    key = store.ensure([SUBJECT])[SUBJECT]
    person = store.directory._people[SUBJECT]
    person.forgotten = Forgotten(SUBJECT, datetime.now(UTC) + timedelta(seconds=1), "test")
    with pytest.raises(KeyErased):
        store.data_key(SUBJECT, key.key_id)


def test_a_restriction_is_recorded_and_lifted_and_keeps_the_keys() -> None:
    store = MemoryPersonKeys(_kek())
    key = store.ensure([SUBJECT])[SUBJECT]
    store.restrict(SUBJECT, "GDPR art. 18(1)(a): accuracy contested")
    mark = store.directory.restricted(SUBJECT)
    assert mark is not None
    assert mark.basis.startswith("GDPR art. 18")
    assert store.data_key(SUBJECT, key.key_id) == key
    assert store.directory.restricted(OTHER) is None
    fresh = KeyDirectory(store.directory.kek)
    for record, value in store.records:
        fresh.apply(record, value)
    assert fresh.restricted(SUBJECT) is not None
    store.lift_restriction(SUBJECT)
    assert store.directory.restricted(SUBJECT) is None


def test_opening_looks_each_key_up_once_per_record() -> None:
    """A remote keeper must not be asked once per sealed value (seven in a registration)."""
    store = MemoryPersonKeys(_kek())
    key = store.ensure([SUBJECT])[SUBJECT]
    calls: list[UUID] = []

    class Counting:
        def data_key(self, subject: str, key_id: UUID) -> Any:
            calls.append(key_id)
            return store.data_key(subject, key_id)

    sealed = SealedFields()
    record = {
        "envelope": {"event_id": uuid4(), "subject": SUBJECT},
        "payload": {
            "personal_identity_code": "131052-308T",
            "first_name": "Aino",
            "last_name": "Virtanen",
            "email": "aino@example.fi",
            "phone": "0401234567",
            "unemployment_fund_code": "X",
            "reduced_work_ability": True,
        },
    }
    out = sealed.open(
        "JobseekerRegistered", sealed.seal("JobseekerRegistered", record, key), Counting()
    )
    assert out.record == record
    assert calls == [key.key_id]


def test_erasure_is_by_position_not_by_the_clocks_of_two_hosts() -> None:
    """A writer whose clock runs ahead makes a key "after" the forget by its time, but its
    record came before the mark in the partition: it is erased (and gets a tombstone)."""
    store = MemoryPersonKeys(_kek())
    key = store.ensure([SUBJECT])[SUBJECT]
    record, value = store.records[-1]
    skewed = store.directory.stored(SUBJECT)[0]
    fresh = KeyDirectory(store.directory.kek)
    fresh.apply(record, value)
    mark = Forgotten(SUBJECT, skewed.created_at - timedelta(minutes=10), "clock behind")
    fresh.apply(record_key(SUBJECT, "forgotten"), encode_forgotten(mark))
    assert fresh.is_erased(SUBJECT, key.key_id)
    assert [k.key_id for k in fresh.erased_stored(SUBJECT)] == [key.key_id]
    assert fresh.newest(SUBJECT) is None
    with pytest.raises(KeyErased):
        fresh.data_key(SUBJECT, key.key_id)


def test_a_key_record_written_again_after_its_tombstone_stays_erased() -> None:
    """Someone re-producing an erased key's old record (before compaction removed it, or with
    a new creation time) brings nothing back."""
    store = MemoryPersonKeys(_kek())
    key = store.ensure([SUBJECT])[SUBJECT]
    original = store.records[-1]
    store.forget(SUBJECT, "test")
    store.directory.apply(*original)
    with pytest.raises(KeyErased):
        store.data_key(SUBJECT, key.key_id)
    assert store.directory.newest(SUBJECT) is None
    body = json.loads(original[1])
    body["created_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    fresh = KeyDirectory(store.directory.kek)
    fresh.apply(original[0], json.dumps(body).encode())
    with pytest.raises(KekError, match="fails authentication"):
        fresh.data_key(SUBJECT, key.key_id)


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("forgotten", {"forgotten_at": "2020-01-01T00:00:00", "reason": "x"}, "no time zone"),
        ("forgotten", {"reason": "x"}, "forgotten_at is missing"),
        ("restricted", {"restricted_at": 5, "basis": "x"}, "restricted_at is missing or not"),
    ],
)
def test_markers_need_aware_times_and_text(name: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyDirectory(_kek()).apply(
            record_key(SUBJECT, name), json.dumps({"subject": SUBJECT, **body}).encode()
        )


def test_a_huge_or_deeply_nested_value_is_refused_unparsed() -> None:
    directory = KeyDirectory(_kek())
    with pytest.raises(ValueError, match="at most"):
        directory.apply(record_key(SUBJECT, "forgotten"), b"[" * 400_000 + b"]" * 400_000)
    with pytest.raises(ValueError, match="nested too deep"):
        directory.apply(record_key(SUBJECT, "forgotten"), b"[" * 8000 + b"]" * 8000)


def test_a_key_encryption_key_that_opens_no_stored_key_is_refused() -> None:
    store = MemoryPersonKeys(_kek("right"))
    store.ensure([SUBJECT, OTHER])
    store.directory.check_kek()  # the right one passes
    wrong = KeyDirectory(_kek("wrong"))
    for record, value in store.records:
        wrong.apply(record, value)
    with pytest.raises(KekError, match="opens none of the 2 newest stored data keys"):
        wrong.check_kek()
    KeyDirectory(_kek("wrong")).check_kek()  # an empty topic: nothing to check against
