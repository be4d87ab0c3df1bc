"""`hub schemas check` stops a breaking change and names the type and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hub.cli import cli
from hub.events.schema_files import released_versions
from hub.serde import default_schemas_dir


@pytest.fixture
def schemas_copy(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(default_schemas_dir(), target)
    return target


def _payload_fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = schema["fields"][1]["type"]["fields"]
    return fields


def _edit(path: Path, change: Any) -> None:
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2))


def _check(schemas_dir: Path) -> Any:
    return CliRunner().invoke(cli, ["schemas", "check", "--dir", str(schemas_dir)])


def test_shipped_schemas_pass_the_check() -> None:
    result = _check(default_schemas_dir())
    assert result.exit_code == 0, result.output
    assert "13 event types" in result.output


def test_changing_a_field_type_fails_naming_type_and_field(schemas_copy: Path) -> None:
    def retype(schema: dict[str, Any]) -> None:
        for field in _payload_fields(schema):
            if field["name"] == "job_search_obligation_per_month":
                field["type"] = "string"

    _edit(schemas_copy / "EmploymentPlanAgreed.avsc", retype)
    result = _check(schemas_copy)
    assert result.exit_code == 1
    assert "EmploymentPlanAgreed" in result.output
    assert "payload.job_search_obligation_per_month" in result.output
    assert "cannot read v1 data" in result.output


def test_new_field_without_default_fails(schemas_copy: Path) -> None:
    def add_required(schema: dict[str, Any]) -> None:
        _payload_fields(schema).append({"name": "review_due", "type": "string", "doc": "x"})

    _edit(schemas_copy / "JobOfferOutcomeRecorded.avsc", add_required)
    result = _check(schemas_copy)
    assert result.exit_code == 1
    assert "JobOfferOutcomeRecorded" in result.output
    assert "payload.review_due" in result.output
    assert "no default" in result.output


def test_removing_an_enum_symbol_fails(schemas_copy: Path) -> None:
    def drop_symbol(schema: dict[str, Any]) -> None:
        for field in _payload_fields(schema):
            if field["name"] == "channel":
                field["type"]["symbols"].remove("VIDEO")

    _edit(schemas_copy / "InitialInterviewHeld.avsc", drop_symbol)
    result = _check(schemas_copy)
    assert result.exit_code == 1
    assert "payload.channel" in result.output


def test_compatible_change_passes_compatibility_and_releases_the_next_version(
    schemas_copy: Path,
) -> None:
    def add_optional(schema: dict[str, Any]) -> None:
        _payload_fields(schema).append(
            {"name": "note", "type": ["null", "string"], "default": None, "doc": "Free note."}
        )

    shipped = [v for v, _ in released_versions(schemas_copy, "JobOfferOutcomeRecorded")]
    assert shipped == [1, 2]  # v2: the envelope's corrects_event_id and retracted
    _edit(schemas_copy / "JobOfferOutcomeRecorded.avsc", add_optional)
    result = CliRunner().invoke(cli, ["schemas", "release", "--dir", str(schemas_copy)])
    assert result.exit_code == 0, result.output
    assert result.output == "released JobOfferOutcomeRecorded v3\n"
    assert [v for v, _ in released_versions(schemas_copy, "JobOfferOutcomeRecorded")] == [1, 2, 3]
    # the edited file no longer matches the models, which the check reports as drift only
    check = _check(schemas_copy)
    drift = "JobOfferOutcomeRecorded: schemas/JobOfferOutcomeRecorded.avsc differs from the models"
    assert drift in check.output
    assert "cannot read" not in check.output


def test_breaking_change_against_an_older_release_is_caught_transitively(
    schemas_copy: Path,
) -> None:
    """v3 added a field with a default; dropping the default reads v3 data but not v1 or v2."""
    history = schemas_copy / "history" / "JobOfferMade"
    v3 = json.loads((history / "v2.avsc").read_text())
    _payload_fields(v3).append(
        {"name": "remote", "type": "boolean", "default": False, "doc": "Remote work."}
    )
    (history / "v3.avsc").write_text(json.dumps(v3))
    current = json.loads(json.dumps(v3))
    del _payload_fields(current)[-1]["default"]
    (schemas_copy / "JobOfferMade.avsc").write_text(json.dumps(current))
    result = _check(schemas_copy)
    assert result.exit_code == 1
    assert "JobOfferMade: the current schema cannot read v1 data" in result.output
    assert "JobOfferMade: the current schema cannot read v2 data" in result.output
    assert "payload.remote" in result.output
    assert "cannot read v3 data" not in result.output
