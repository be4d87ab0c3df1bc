"""Avro single-object encoding: round trips, schema evolution and the errors of bad values."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime
from io import BytesIO
from pathlib import Path

import pytest
from fastavro import schemaless_writer

from hub.serde import (
    BadMagic,
    DecodedEvent,
    DecodeError,
    EncodeError,
    EventSerializer,
    RegistryRequired,
    SingleObjectSerializer,
    TrailingBytes,
    TruncatedPayload,
    UnknownEventType,
    UnknownSchemaFingerprint,
)
from hub.serde.catalog import SchemaCatalog
from hub.serde.fake import fake_record
from hub.serde.fingerprint import fingerprint_to_int

try:
    from tests.serde_samples import (
        job_offer_record,
        jobseeker_v1_record,
        jobseeker_v2_record,
        write_schema_dir,
    )
except ImportError:
    from serde_samples import (  # type: ignore[no-redef]
        job_offer_record,
        jobseeker_v1_record,
        jobseeker_v2_record,
        write_schema_dir,
    )


@pytest.fixture
def catalog(tmp_path: Path) -> SchemaCatalog:
    return SchemaCatalog.from_directory(write_schema_dir(tmp_path / "schemas"))


@pytest.fixture
def serde(catalog: SchemaCatalog) -> SingleObjectSerializer:
    return SingleObjectSerializer(catalog)


def test_is_an_event_serializer(serde: SingleObjectSerializer) -> None:
    assert isinstance(serde, EventSerializer)


async def test_adecode_matches_decode(serde: SingleObjectSerializer) -> None:
    data = serde.encode("JobOfferMade", job_offer_record())
    assert await serde.adecode(data) == serde.decode(data)


def test_frame_layout(serde: SingleObjectSerializer, catalog: SchemaCatalog) -> None:
    data = serde.encode("JobseekerRegistered", jobseeker_v2_record())
    current = catalog.current("JobseekerRegistered")
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == current.fingerprint
    assert int.from_bytes(data[2:10], "little", signed=True) == fingerprint_to_int(
        current.fingerprint
    )
    # The body is exactly what plain fastavro writes.
    body = BytesIO()
    schemaless_writer(body, current.parsed, jobseeker_v2_record())
    assert data[10:] == body.getvalue()
    assert serde.schema_ref("JobseekerRegistered") == current.fingerprint.hex()
    assert serde.fingerprint_of(data) == current.fingerprint


def test_round_trip_with_logical_types(serde: SingleObjectSerializer) -> None:
    record = jobseeker_v2_record()
    decoded = serde.decode(serde.encode("fi.te.hub.JobseekerRegistered", record))
    assert decoded == DecodedEvent(
        "fi.te.hub.JobseekerRegistered",
        record,
        serde.schema_ref("JobseekerRegistered"),
    )
    envelope = decoded.record["envelope"]
    assert isinstance(envelope["event_id"], uuid.UUID)
    assert envelope["occurred_at"] == datetime(2025, 3, 3, 8, 15, 30, 123000, tzinfo=UTC)
    assert envelope["occurred_at"].tzinfo is not None
    assert decoded.record["payload"]["registration_date"] == date(2025, 3, 3)
    assert decoded.record["payload"]["language"] == "EN"
    assert envelope["causation_id"] == uuid.UUID("11111111-2222-4333-8444-555555555555")


def test_round_trip_arrays_maps_optional_dates(serde: SingleObjectSerializer) -> None:
    record = job_offer_record()
    assert serde.decode(serde.encode("JobOfferMade", record)).record == record
    record["payload"]["deadline"] = None
    record["payload"]["occupation_codes"] = []
    assert serde.decode(serde.encode("JobOfferMade", record)).record == record


def test_round_trip_random_records(serde: SingleObjectSerializer, catalog: SchemaCatalog) -> None:
    rng = random.Random(42)
    for _ in range(200):
        name = rng.choice(catalog.names())
        record = fake_record(catalog.current(name).parsed, rng)
        assert serde.decode(serde.encode(name, record)).record == record


def test_old_version_decodes_into_current_reader(
    serde: SingleObjectSerializer, catalog: SchemaCatalog
) -> None:
    """A value written by a v1 producer reads as the current shape: new fields get defaults,
    removed fields disappear."""
    v1 = catalog.history("JobseekerRegistered")[0]
    buf = BytesIO()
    buf.write(b"\xc3\x01" + v1.fingerprint)
    schemaless_writer(buf, v1.parsed, jobseeker_v1_record())
    decoded = serde.decode(buf.getvalue())
    assert decoded.type_name == "fi.te.hub.JobseekerRegistered"
    assert decoded.writer_schema_ref == v1.fingerprint.hex()
    payload = decoded.record["payload"]
    assert payload["unemployment_fund"] is None
    assert payload["weekly_hours"] == 40
    assert "legacy_note" not in payload
    assert payload["language"] == "SV"
    assert decoded.record["envelope"] == jobseeker_v1_record()["envelope"]


def test_unknown_fingerprint(serde: SingleObjectSerializer) -> None:
    data = b"\xc3\x01" + bytes.fromhex("0102030405060708") + b"\x00"
    with pytest.raises(UnknownSchemaFingerprint, match="0102030405060708") as info:
        serde.decode(data)
    assert info.value.fingerprint == bytes.fromhex("0102030405060708")


@pytest.mark.parametrize(
    ("data", "found"), [(b"{}", "7b 7d"), (b"\xc3\x02", "c3 02"), (b"", "an empty value")]
)
def test_bad_magic(serde: SingleObjectSerializer, data: bytes, found: str) -> None:
    with pytest.raises(
        BadMagic, match=rf"expected marker c3 01 \(single-object\) or 00 .*, found {found}$"
    ):
        serde.decode(data)


async def test_a_confluent_value_needs_a_registry(serde: SingleObjectSerializer) -> None:
    """Without a registry a Confluent value is reported as such, naming its schema id."""
    data = b"\x00\x00\x00\x01\x2c\x02\x04"  # schema id 300
    for decode in (serde.decode, serde.fingerprint_of):
        with pytest.raises(RegistryRequired, match=r"schema id 300: .*HUB_SCHEMA_REGISTRY_URL"):
            decode(data)
    with pytest.raises(RegistryRequired) as error:
        await serde.adecode(data)
    assert error.value.schema_id == 300
    with pytest.raises(TruncatedPayload, match="5-byte header"):
        serde.decode(b"\x00\x00\x01")


def test_truncated_header_and_body(serde: SingleObjectSerializer) -> None:
    data = serde.encode("JobOfferMade", job_offer_record())
    with pytest.raises(TruncatedPayload, match="header"):
        serde.decode(data[:7])
    with pytest.raises(TruncatedPayload, match="ends early"):
        serde.decode(data[:-5])
    with pytest.raises(TrailingBytes, match="2 bytes left"):
        serde.decode(data + b"\x00\x00")


def test_corrupt_body(serde: SingleObjectSerializer) -> None:
    data = serde.encode("JobOfferMade", job_offer_record())
    corrupt = data[:10] + b"\xff" * 6 + data[16:]
    with pytest.raises((DecodeError, TruncatedPayload, TrailingBytes)):
        serde.decode(corrupt)


def test_accepts_bytearray_and_memoryview(serde: SingleObjectSerializer) -> None:
    data = serde.encode("JobOfferMade", job_offer_record())
    assert serde.decode(bytearray(data)).record == job_offer_record()
    assert serde.decode(memoryview(data)).record == job_offer_record()  # type: ignore[arg-type]


def test_encode_errors(serde: SingleObjectSerializer) -> None:
    with pytest.raises(UnknownEventType, match="NoSuchEvent"):
        serde.encode("NoSuchEvent", {})
    record = job_offer_record()
    del record["payload"]["occupation_codes"]
    with pytest.raises(EncodeError, match="cannot encode JobOfferMade"):
        serde.encode("JobOfferMade", record)
    record = job_offer_record()
    record["envelope"]["occurred_at"] = "yesterday"
    with pytest.raises(EncodeError):
        serde.encode("JobOfferMade", record)
