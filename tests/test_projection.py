"""Projection by the schema's ``pii`` classes, the derived outbox schemas (names, evolution,
BACKWARD-transitive compatibility over schemas/history) and the OutboxCodec."""

from __future__ import annotations

import copy
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.validation import validate

from hub.events.sensitivity import Sensitivity, sensitive_fields
from hub.routing.cli import DerivedTarget, derived_targets
from hub.routing.outbox import OutboxCodec
from hub.routing.projection import (
    check_derived_compatibility,
    leaf_paths,
    project,
    projected_schema,
)
from hub.routing.resolve import Routed, route_event
from hub.routing.routes import field_paths, parse_routes
from hub.serde.base import EncodeError, UnknownSchemaFingerprint
from hub.serde.catalog import SchemaCatalog, default_catalog
from hub.serde.fingerprint import schema_fingerprint
from hub.serde.framing import SINGLE_OBJECT_MAGIC
from tests import serde_samples
from tests.test_routes import default_routes, sample

MEMBERSHIP = frozenset({Sensitivity.MEMBERSHIP})


def _named_types(node: Any, found: list[str] | None = None) -> list[str]:
    found = [] if found is None else found
    if isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed"):
            found.append(f"{node['namespace']}.{node['name']}")
        for value in node.values():
            _named_types(value, found)
    elif isinstance(node, list):
        for item in node:
            _named_types(item, found)
    return found


def test_a_class_without_a_grant_is_dropped_from_record_and_schema() -> None:
    schema = default_catalog().current("JobseekerRegistered").raw
    record = sample("JobseekerRegistered")
    projected = project(record, MEMBERSHIP, None, schema)
    assert set(projected["payload"]) == {
        "job_search_started_on",
        "registration_channel",
        "labour_market_status",
        "age_at_registration",
        "unemployment_fund_code",
    }
    assert projected["envelope"] == record["envelope"]
    derived = projected_schema(schema, MEMBERSHIP, None, "reporting")
    assert sensitive_fields(derived) == {"payload.unemployment_fund_code": Sensitivity.MEMBERSHIP}
    assert validate(projected, parse_schema(derived, named_schemas={}), raise_errors=True)
    assert record["payload"]["personal_identity_code"]  # the input is not changed


def test_fields_narrow_the_payload_to_nested_paths_and_keep_the_envelope_whole() -> None:
    schema = default_catalog().current("StatementRequested").raw
    record = sample("StatementRequested")
    fields = ("payload.payer.kind", "payload.request_id")
    projected = project(record, frozenset(), fields, schema)
    assert projected["payload"] == {
        "request_id": record["payload"]["request_id"],
        "payer": {"kind": record["payload"]["payer"]["kind"]},
    }
    assert projected["envelope"] == record["envelope"]
    derived = projected_schema(schema, frozenset(), fields, "kela")
    assert [p for p in leaf_paths(derived) if p.startswith("payload.")] == [
        "payload.request_id",
        "payload.payer.kind",
    ]


def test_a_field_of_a_granted_class_outside_fields_is_still_dropped() -> None:
    schema = default_catalog().current("ServiceEnrolled").raw
    everything = frozenset(Sensitivity)
    fields = ("payload.enrolment_id", "payload.participant_first_name")
    projected = project(sample("ServiceEnrolled"), everything, fields, schema)
    assert set(projected["payload"]) == {"enrolment_id", "participant_first_name"}


def test_derived_schemas_live_in_the_destinations_namespace() -> None:
    schema = default_catalog().current("ServiceEnrolled").raw
    derived = projected_schema(schema, frozenset(), None, "my-provider")
    names = _named_types(derived)
    assert "fi.te.hub.outbox.my_provider.ServiceEnrolled" in names
    assert "fi.te.hub.outbox.my_provider.ServiceType" in names
    assert all(name.startswith("fi.te.hub.outbox.my_provider.") for name in names)
    other = projected_schema(schema, frozenset(), None, "reporting")
    assert schema_fingerprint(derived) != schema_fingerprint(other)
    assert schema_fingerprint(other) != default_catalog().current("ServiceEnrolled").fingerprint


def _synthetic() -> dict[str, Any]:
    """Named types defined inside a dropped field and used again later; arrays, maps, unions."""
    person = {
        "type": "record",
        "name": "Person",
        "fields": [
            {"name": "name", "type": "string", "pii": "direct"},
            {"name": "team", "type": "string"},
        ],
    }
    return {
        "type": "record",
        "name": "Thing",
        "namespace": "fi.te.hub",
        "fields": [
            {"name": "envelope", "type": serde_samples.envelope()},
            {
                "name": "payload",
                "type": {
                    "type": "record",
                    "name": "ThingPayload",
                    "fields": [
                        {"name": "secret_person", "type": person, "pii": "health"},
                        {"name": "people", "type": {"type": "array", "items": "Person"}},
                        {"name": "by_key", "type": {"type": "map", "values": "Person"}},
                        {"name": "maybe", "type": ["null", "Person"], "default": None},
                    ],
                },
            },
        ],
    }


def _synthetic_record() -> dict[str, Any]:
    one = {"name": "Maija", "team": "T1"}
    return {
        "envelope": serde_samples.envelope_record("Thing"),
        "payload": {
            "secret_person": dict(one),
            "people": [dict(one), {"name": "Matti", "team": "T2"}],
            "by_key": {"a": dict(one)},
            "maybe": dict(one),
        },
    }


def test_named_types_arrays_maps_and_unions_are_projected_everywhere() -> None:
    schema = _synthetic()
    derived = projected_schema(schema, frozenset(), None, "d")
    parsed = parse_schema(derived, named_schemas={})  # Person is defined where it is first used
    projected = project(_synthetic_record(), frozenset(), None, schema)
    assert projected["payload"] == {
        "people": [{"team": "T1"}, {"team": "T2"}],
        "by_key": {"a": {"team": "T1"}},
        "maybe": {"team": "T1"},
    }
    assert validate(projected, parsed, raise_errors=True)
    assert "name" not in str(leaf_paths(derived))
    with_direct = project(_synthetic_record(), frozenset({Sensitivity.DIRECT}), None, schema)
    assert with_direct["payload"]["people"][0] == {"name": "Maija", "team": "T1"}
    assert "secret_person" not in with_direct["payload"]


def test_every_default_routes_derived_schema_reads_every_released_version() -> None:
    targets = derived_targets(default_routes())
    assert len(targets) >= 20
    assert check_derived_compatibility(default_catalog(), targets) == []


# --- evolution, with the two-version sample schemas ----------------------------------------------


def _catalog(v2: dict[str, Any]) -> SchemaCatalog:
    v1 = serde_samples.jobseeker_v1()
    return SchemaCatalog.from_schemas([v2], {"fi.te.hub.JobseekerRegistered": [v1, v2]})


def _breaking_v2() -> dict[str, Any]:
    """v2 plus a required field without a default: BACKWARD-incompatible for the full schema."""
    schema = serde_samples.jobseeker_v2()
    schema["fields"][1]["type"]["fields"].append({"name": "new_required", "type": "string"})
    return schema


def test_derived_schemas_of_a_compatible_evolution_pass() -> None:
    catalog = _catalog(serde_samples.jobseeker_v2())
    targets: list[DerivedTarget] = [("stats", "JobseekerRegistered", frozenset(), None)]
    assert check_derived_compatibility(catalog, targets) == []


def test_a_breaking_change_is_reported_per_destination_unless_the_route_drops_it() -> None:
    catalog = _catalog(_breaking_v2())
    problems = check_derived_compatibility(
        catalog, [("stats", "JobseekerRegistered", frozenset(), None)]
    )
    assert len(problems) == 1
    assert problems[0].type_name == "stats/JobseekerRegistered"
    assert problems[0].version == 1
    assert "payload.new_required" in problems[0].field_paths
    narrowed = ("payload.registration_date", "payload.language")
    assert (
        check_derived_compatibility(
            catalog, [("stats", "JobseekerRegistered", frozenset(), narrowed)]
        )
        == []
    )


_SAMPLE_ROUTES = """
[destinations.stats]
transport = "outbox"

[[routes]]
name = "jobseekers-to-stats"
types = ["JobseekerRegistered"]
to = { destination = "stats" }
"""


def test_the_codec_reads_values_written_with_an_older_derived_version() -> None:
    catalog = _catalog(serde_samples.jobseeker_v2())
    config = parse_routes(_SAMPLE_ROUTES, "sample.toml", catalog)
    codec = OutboxCodec.for_routes(config, catalog)
    old = projected_schema(serde_samples.jobseeker_v1(), frozenset(), None, "stats")
    old_record = project(
        serde_samples.jobseeker_v1_record(), frozenset(), None, serde_samples.jobseeker_v1()
    )
    buf = BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC + schema_fingerprint(old))
    schemaless_writer(buf, parse_schema(old, named_schemas={}), old_record)
    decoded = codec.decode(buf.getvalue())
    assert decoded.type_name == "JobseekerRegistered"
    assert decoded.destination == "stats"
    assert "identity_code" not in decoded.record["payload"]
    assert "unemployment_fund" not in decoded.record["payload"]  # membership not granted
    assert decoded.record["payload"]["weekly_hours"] == 40  # the default of the newer version
    assert "legacy_note" not in decoded.record["payload"]


def test_the_codec_round_trips_every_routed_sample_and_refuses_what_it_does_not_know() -> None:
    config = default_routes()
    codec = OutboxCodec.for_routes(config)
    seen = 0
    for event in default_catalog():
        for routed in _routable(config, event.short_name):
            value = codec.encode(routed, event.short_name)
            assert value[:2] == SINGLE_OBJECT_MAGIC
            decoded = codec.decode(value)
            assert decoded.record == routed.record
            assert decoded.destination == routed.destination
            seen += 1
    assert seen == 18  # 13 to reporting, 5 to payers, providers and municipal systems
    log_value = SINGLE_OBJECT_MAGIC + default_catalog().current("JobSearchEnded").fingerprint
    with pytest.raises(UnknownSchemaFingerprint):
        codec.decode(log_value + b"\x00")
    wrong = Routed("x", "providers", None, {}, (), {})
    with pytest.raises(EncodeError, match="no route sends JobSearchEnded to destination providers"):
        codec.encode(wrong, "JobSearchEnded")


def _routable(config: Any, type_name: str) -> list[Routed]:
    from connectors.simulator.population import simulator_providers
    from hub.routing.resolve import PersonState

    record = sample(type_name)
    if type_name == "ServiceEnrolled":
        record["payload"]["provider_business_id"] = simulator_providers()[0]
    if "payer" in record["payload"]:
        record["payload"]["payer"] = {"kind": "KELA", "fund_code": None}
    return route_event(config, type_name, record, PersonState("KELA", None))


def test_field_paths_lists_nested_paths() -> None:
    paths = field_paths(default_catalog().current("LabourPolicyStatementIssued").raw)
    assert {"payload.payer", "payload.payer.fund_code", "envelope.subject"} <= paths


def test_projection_does_not_share_nested_dicts_it_changed() -> None:
    schema = default_catalog().current("ServiceEnrolled").raw
    record = sample("ServiceEnrolled")
    before = copy.deepcopy(record)
    project(record, frozenset(), None, schema)
    assert record == before


def test_a_named_record_used_at_several_paths_is_projected_at_each() -> None:
    schema = _synthetic()
    grants = frozenset({Sensitivity.DIRECT})
    fields = ("payload.people", "payload.maybe.team")
    derived = projected_schema(schema, grants, fields, "d")
    parsed = parse_schema(derived, named_schemas={})
    projected = project(_synthetic_record(), grants, fields, schema)
    assert projected["payload"] == {
        "people": [{"name": "Maija", "team": "T1"}, {"name": "Matti", "team": "T2"}],
        "maybe": {"team": "T1"},
    }
    assert validate(projected, parsed, raise_errors=True)
    assert "fi.te.hub.outbox.d.Person_2" in _named_types(derived)
