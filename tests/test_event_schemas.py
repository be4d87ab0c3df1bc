"""The pydantic models and the shipped .avsc files are one source of truth."""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

import fastavro
import pytest

from hub.events import EVENT_TYPES, Sensitivity
from hub.events.avro_schema import avro_schema
from hub.events.schema_files import drifted, released_versions
from hub.events.sensitivity import sensitive_fields
from hub.serde import default_schemas_dir

EXPECTED_TYPES = {
    "JobseekerRegistered",
    "InitialInterviewHeld",
    "EmploymentPlanAgreed",
    "JobSearchConversationHeld",
    "JobOfferMade",
    "JobOfferOutcomeRecorded",
    "LabourPolicyStatementIssued",
    "StatementRequested",
    "BenefitDaysAccrued",
    "ServiceEnrolled",
    "ServiceParticipationReported",
    "EmploymentStarted",
    "JobSearchEnded",
}


def _fields(schema: Any, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(schema, list):
        for member in schema:
            found += _fields(member, prefix)
    elif isinstance(schema, dict):
        for field in schema.get("fields", ()):
            found.append((f"{prefix}{field['name']}", field))
            found += _fields(field["type"], f"{prefix}{field['name']}.")
    return found


def test_every_customer_path_type_has_a_model_and_a_schema_file() -> None:
    assert set(EVENT_TYPES) >= EXPECTED_TYPES
    assert {p.stem for p in default_schemas_dir().glob("*.avsc")} == set(EVENT_TYPES)


def test_shipped_schema_files_do_not_drift_from_the_models() -> None:
    assert drifted(default_schemas_dir()) == []


def test_every_type_is_released_and_its_latest_release_is_current() -> None:
    for name in EVENT_TYPES:
        versions = released_versions(default_schemas_dir(), name)
        assert versions, name
        latest = json.loads(versions[-1][1].read_text())
        assert latest == avro_schema(EVENT_TYPES[name])


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPES))
def test_every_field_has_a_doc_and_the_envelope_comes_first(name: str) -> None:
    schema = avro_schema(EVENT_TYPES[name])
    assert schema["doc"]
    assert [f["name"] for f in schema["fields"]] == ["envelope", "payload"]
    for path, field in _fields(schema):
        assert field.get("doc"), f"{name}.{path} has no doc"
    fastavro.parse_schema(schema)


def test_envelope_fields_use_logical_types() -> None:
    envelope = dict(_fields(avro_schema(EVENT_TYPES["JobSearchEnded"])))
    assert envelope["envelope.event_id"]["type"] == {"type": "string", "logicalType": "uuid"}
    assert envelope["envelope.occurred_at"]["type"]["logicalType"] == "timestamp-millis"
    assert envelope["envelope.recorded_at"]["type"]["logicalType"] == "timestamp-millis"
    assert envelope["envelope.causation_id"]["type"][0] == "null"
    assert envelope["envelope.causation_id"]["default"] is None


def test_sensitive_fields_are_declared_in_the_schema() -> None:
    registered = sensitive_fields(avro_schema(EVENT_TYPES["JobseekerRegistered"]))
    assert registered["payload.personal_identity_code"] is Sensitivity.DIRECT
    assert registered["payload.first_name"] is Sensitivity.DIRECT
    assert registered["payload.last_name"] is Sensitivity.DIRECT
    assert registered["payload.email"] is Sensitivity.CONTACT
    assert registered["payload.phone"] is Sensitivity.CONTACT
    assert registered["payload.reduced_work_ability"] is Sensitivity.HEALTH
    assert "envelope.subject" not in registered
    enrolled = sensitive_fields(avro_schema(EVENT_TYPES["ServiceEnrolled"]))
    assert enrolled["payload.participant_first_name"] is Sensitivity.DIRECT
    assert enrolled["payload.participant_email"] is Sensitivity.CONTACT


def test_obligation_is_bounded_zero_to_four_by_the_model() -> None:
    from pydantic import ValidationError

    from hub.events.customer_path import EmploymentPlanAgreedPayload

    field = EmploymentPlanAgreedPayload.model_fields["job_search_obligation_per_month"]
    assert field.default == 4
    with pytest.raises(ValidationError, match="less than or equal to 4"):
        EmploymentPlanAgreedPayload.model_validate(
            {
                "plan_id": "8f7c3a52-8a43-4e0e-9b0c-0d1f3f0b1c11",
                "plan_type": "EMPLOYMENT_PLAN",
                "agreed_on": "2026-01-05",
                "job_search_obligation_per_month": 5,
                "reporting_period_months": 1,
                "agreed_in_initial_interview": True,
                "handled_by": {"team_code": "08-T1", "expert_id": "08-E101"},
            }
        )


def test_models_round_trip_through_fastavro(simulated_paths: list[list[Any]]) -> None:
    seen: set[str] = set()
    for path in simulated_paths:
        for event in path:
            schema = fastavro.parse_schema(avro_schema(type(event)))
            buffer = BytesIO()
            fastavro.schemaless_writer(buffer, schema, event.to_avro())
            buffer.seek(0)
            back = type(event).from_avro(fastavro.schemaless_reader(buffer, schema, schema))
            assert back == event
            seen.add(event.event_type)
    assert seen == EXPECTED_TYPES


def _without_correction_fields(record: dict[str, Any]) -> dict[str, Any]:
    envelope = {
        k: v for k, v in record["envelope"].items() if k not in {"corrects_event_id", "retracted"}
    }
    return {**record, "envelope": envelope}


def test_a_record_of_the_release_before_corrections_reads_as_an_original_version(
    simulated_paths: list[list[Any]],
) -> None:
    """Every type's last release before the correction fields: its records decode through the
    shipped catalog with corrects_event_id None and retracted False, and validate as the
    model."""
    from hub.serde import SingleObjectSerializer, default_catalog

    catalog = default_catalog()
    serde = SingleObjectSerializer(catalog)
    one_per_type = {type(e).__name__: e for path in simulated_paths for e in path}
    assert set(one_per_type) == EXPECTED_TYPES
    for name, event in sorted(one_per_type.items()):
        before = [
            version
            for version in catalog.history(name)
            if not {path for path, _ in _fields(json.loads(version.json))}
            & {"envelope.corrects_event_id", "envelope.retracted"}
        ]
        assert before, name
        previous = before[-1]
        buffer = BytesIO()
        buffer.write(b"\xc3\x01" + previous.fingerprint)
        old_record = _without_correction_fields(event.to_avro())
        fastavro.schemaless_writer(buffer, previous.parsed, old_record)
        decoded = serde.decode(buffer.getvalue())
        assert decoded.writer_schema_ref == previous.fingerprint.hex()
        assert decoded.record["envelope"]["corrects_event_id"] is None, name
        assert decoded.record["envelope"]["retracted"] is False, name
        assert type(event).from_avro(decoded.record) == event


def test_a_correction_and_a_retraction_round_trip_with_their_fields(
    simulated_paths: list[list[Any]],
) -> None:
    from uuid import uuid4

    from hub.serde import SingleObjectSerializer, default_catalog

    serde = SingleObjectSerializer(default_catalog())
    original = simulated_paths[0][0]
    correction = original.model_copy(
        update={
            "envelope": original.envelope.model_copy(
                update={"event_id": uuid4(), "corrects_event_id": original.envelope.event_id}
            )
        }
    )
    retraction = correction.model_copy(
        update={"envelope": correction.envelope.model_copy(update={"retracted": True})}
    )
    for event in (correction, retraction):
        name = type(event).__name__
        record = serde.decode(serde.encode(name, event.to_avro())).record
        assert record["envelope"]["corrects_event_id"] == original.envelope.event_id
        assert record["envelope"]["retracted"] is (event is retraction)
        assert type(event).from_avro(record) == event


def test_the_envelope_refuses_an_inconsistent_correction(
    simulated_paths: list[list[Any]],
) -> None:
    from pydantic import ValidationError

    from hub.events.base import Envelope

    record = simulated_paths[0][0].envelope.model_dump()

    with pytest.raises(ValidationError) as retracted:
        Envelope.model_validate(record | {"retracted": True})
    assert [e["loc"] for e in retracted.value.errors()] == [("retracted",)]
    assert "requires corrects_event_id" in str(retracted.value)
    with pytest.raises(ValidationError) as itself:
        Envelope.model_validate(record | {"corrects_event_id": record["event_id"]})
    assert [e["loc"] for e in itself.value.errors()] == [("corrects_event_id",)]
    assert "must differ from event_id" in str(itself.value)
    with pytest.raises(ValidationError) as not_uuid:
        Envelope.model_validate(record | {"corrects_event_id": "not-a-uuid", "retracted": True})
    assert [e["loc"] for e in not_uuid.value.errors()] == [("corrects_event_id",)]
