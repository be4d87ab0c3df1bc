"""The reporting store: fed through the reporting route's projection, idempotent, Arrow-loaded."""

from __future__ import annotations

import copy
import io
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer

from hub.events.customer_path import (
    JobseekerRegistered,
    ServiceEnrolled,
    ServiceParticipationReported,
)
from hub.reporting.facts import DecodeMode, ReportingProjection
from hub.reporting.store import ReportingStore
from hub.reporting.tables import FACT_TABLES, TABLE_OF_TYPE
from hub.routing.routes import load_routes
from hub.serde import SingleObjectSerializer, default_catalog
from hub.serde.framing import SINGLE_OBJECT_MAGIC
from hub.settings import HubSettings

IDENTITY_CODE = "131052-308T"
FIRST, LAST = "Maija-Liisa", "Örnström"
EMAIL, PHONE = "maija-liisa.ornstrom@example.fi", "+358 40 7654321"
HEALTH = "HEALTH"  # ServiceParticipationReported.payload.interruption_reason (pii: health)


def _first_of(paths: list[list[Any]], kind: type) -> Any:
    return next(event for path in paths for event in path if isinstance(event, kind))


def _raw(event: Any) -> dict[str, Any]:
    return copy.deepcopy(event.to_avro())


def _varchar_values(store: ReportingStore) -> list[str]:
    values: list[str] = []
    for table in FACT_TABLES:
        for column in table.all_columns:
            if column.sql_type == "VARCHAR":
                rows = store.con.execute(f"SELECT DISTINCT {column.name} FROM {table.name}")
                values += [row[0] for row in rows.fetchall() if row[0] is not None]
    return values


def test_no_identity_name_contact_or_health_value_reaches_a_table(
    simulated_paths: list[list[Any]],
) -> None:
    registered = _raw(_first_of(simulated_paths, JobseekerRegistered))
    registered["payload"].update(
        personal_identity_code=IDENTITY_CODE,
        first_name=FIRST,
        last_name=LAST,
        email=EMAIL,
        phone=PHONE,
        reduced_work_ability=True,
    )
    enrolled = _raw(_first_of(simulated_paths, ServiceEnrolled))
    enrolled["payload"].update(
        participant_first_name=FIRST,
        participant_last_name=LAST,
        participant_email=EMAIL,
        participant_phone=PHONE,
    )
    participation = _raw(_first_of(simulated_paths, ServiceParticipationReported))
    participation["payload"].update(kind="INTERRUPTION", interruption_reason=HEALTH)
    store = ReportingStore(":memory:")
    added = store.load_records(
        [
            ("JobseekerRegistered", registered),
            ("ServiceEnrolled", enrolled),
            ("ServiceParticipationReported", participation),
        ]
    )
    assert added == 3
    values = _varchar_values(store)
    assert values, "the scan found no text at all"
    for secret in (IDENTITY_CODE, FIRST, LAST, EMAIL, PHONE, HEALTH):
        assert not [v for v in values if secret.lower() in v.lower()], secret
    names = {c.name for t in FACT_TABLES for c in t.all_columns}
    assert not names & {"reduced_work_ability", "interruption_reason", "first_name", "email"}
    # The pseudonym and the municipality did arrive.
    assert registered["envelope"]["subject"] in values
    store.close()


def test_a_row_holds_the_projected_values_converted(simulated_paths: list[list[Any]]) -> None:
    event = _first_of(simulated_paths, JobseekerRegistered)
    raw = _raw(event)
    helsinki = timezone(timedelta(hours=2))
    raw["envelope"]["occurred_at"] = datetime(2026, 1, 5, 9, 30, 15, 123000, tzinfo=helsinki)
    raw["envelope"]["recorded_at"] = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    raw["payload"]["job_search_started_on"] = date(2026, 1, 5)
    store = ReportingStore(":memory:")
    store.load_records([("JobseekerRegistered", raw)])
    row = store.con.execute(
        "SELECT event_id, fact_id, retracted, occurred_at, recorded_at, job_search_started_on, "
        "registration_channel, age_at_registration FROM spells"
    ).fetchone()
    event_id = str(event.envelope.event_id)
    assert row == (
        event_id,
        event_id,
        False,
        datetime(2026, 1, 5, 7, 30, 15, 123000),  # 09:30:15.123 +02:00 as naive UTC
        datetime(2026, 1, 5, 8, 0),
        date(2026, 1, 5),
        str(event.payload.registration_channel.value),
        event.payload.age_at_registration,
    )
    assert event_id == event_id.lower()
    assert len(event_id) == 36


def test_loading_twice_adds_nothing_and_repeats_in_one_load_count_once(
    simulated_paths: list[list[Any]],
) -> None:
    events = [event for path in simulated_paths[:60] for event in path]
    expected = Counter(TABLE_OF_TYPE[e.event_type].name for e in events)
    store = ReportingStore(":memory:")
    assert store.load_events(events + events[:25]) == len(events)
    assert store.load_events(events) == 0
    assert {k: v for k, v in store.counts().items() if v} == dict(expected)
    store.close()


def test_the_store_file_keeps_its_rows_and_opens_read_only(
    tmp_path: Path, simulated_paths: list[list[Any]]
) -> None:
    events = list(simulated_paths[0])
    path = tmp_path / "store" / "reporting.duckdb"
    with ReportingStore(path) as store:
        store.load_events(events)
    with ReportingStore(path) as again:
        assert again.load_events(events) == 0
    with ReportingStore(path, read_only=True) as reader:
        assert sum(reader.counts().values()) == len(events)


def _version(raw: dict[str, Any], corrects: str | None, recorded_h: int) -> dict[str, Any]:
    new = copy.deepcopy(raw)
    new["envelope"]["event_id"] = uuid.uuid4()
    new["envelope"]["corrects_event_id"] = uuid.UUID(corrects) if corrects else None
    new["envelope"]["recorded_at"] = raw["envelope"]["recorded_at"] + timedelta(hours=recorded_h)
    return new


def test_fact_ids_follow_the_correction_chain_whatever_the_load_order(
    simulated_paths: list[list[Any]],
) -> None:
    first = _raw(_first_of(simulated_paths, JobseekerRegistered))
    first["envelope"].pop("corrects_event_id", None)  # a log written before the field existed
    first["envelope"].pop("retracted", None)
    a = str(first["envelope"]["event_id"])
    second = _version(first, a, 1)
    b = str(second["envelope"]["event_id"])
    third = _version(first, b, 2)  # names the later version, not the first
    c = str(third["envelope"]["event_id"])
    third["envelope"]["retracted"] = True
    expected = {a: (a, False), b: (a, False), c: (a, True)}
    for order in ([third], [first], [second]), ([second, third, first],), ([first, second, third],):
        store = ReportingStore(":memory:")
        for load in order:
            store.load_records([("JobseekerRegistered", r) for r in load])
        rows = store.con.execute("SELECT event_id, fact_id, retracted FROM spells").fetchall()
        assert {e: (f, r) for e, f, r in rows} == expected, order
        store.close()


@pytest.mark.parametrize("mode", ["project", "derived"])
def test_the_fast_decoder_gives_the_rows_of_the_projection(
    simulated_paths: list[list[Any]], mode: DecodeMode
) -> None:
    events = [event for path in simulated_paths[:80] for event in path]
    serializer = SingleObjectSerializer()
    values = [serializer.encode(e.event_type, e.to_avro()) for e in events]
    slow, fast = ReportingStore(":memory:"), ReportingStore(":memory:")
    slow.load_records(
        (decoded.type_name, decoded.record) for decoded in map(serializer.decode, values)
    )
    decode = ReportingProjection(load_routes(HubSettings())).decoder(mode)
    fast.load_projected(filter(None, map(decode, values)))
    assert fast.export() == slow.export()
    assert sum(fast.counts().values()) == len(events)


def test_another_destination_can_be_named() -> None:
    with pytest.raises(ValueError, match="no destination nowhere"):
        ReportingStore(":memory:", destination="nowhere").load_records([])


@pytest.mark.parametrize("mode", ["project", "derived"])
def test_a_value_written_with_the_first_schema_version_reads_as_an_original_version(
    simulated_paths: list[list[Any]], mode: DecodeMode
) -> None:
    first = default_catalog().history("JobseekerRegistered")[0]
    event = _first_of(simulated_paths, JobseekerRegistered)
    raw = _raw(event)
    fields = {f["name"] for f in first.raw["fields"][0]["type"]["fields"]}
    assert "corrects_event_id" not in fields  # the version before corrections
    raw["envelope"] = {k: v for k, v in raw["envelope"].items() if k in fields}
    body = io.BytesIO()
    schemaless_writer(body, first.parsed, raw)
    value = SINGLE_OBJECT_MAGIC + first.fingerprint + body.getvalue()
    decode = ReportingProjection(load_routes(HubSettings())).decoder(mode)
    fast, slow = ReportingStore(":memory:"), ReportingStore(":memory:")
    fast.load_projected(filter(None, [decode(value)]))
    decoded = SingleObjectSerializer().decode(value)
    slow.load_records([(decoded.type_name, decoded.record)])
    assert fast.export() == slow.export()
    event_id = str(event.envelope.event_id)
    assert fast.con.execute("SELECT event_id, fact_id, retracted FROM spells").fetchall() == [
        (event_id, event_id, False)
    ]
