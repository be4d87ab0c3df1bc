"""The schema catalog: layout, look-ups by name and fingerprint, version numbering."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import hub
from hub.serde import SingleObjectSerializer, UnknownEventType
from hub.serde.catalog import (
    SchemaCatalog,
    SchemaCatalogError,
    default_catalog,
    default_schemas_dir,
)
from hub.serde.fake import fake_record
from hub.serde.fingerprint import canonical_form, crc64_avro

try:
    from tests.serde_samples import job_offer, jobseeker_v1, jobseeker_v2, write_schema_dir
except ImportError:  # tests/ on sys.path instead of the repository root
    from serde_samples import (  # type: ignore[no-redef]
        job_offer,
        jobseeker_v1,
        jobseeker_v2,
        write_schema_dir,
    )


@pytest.fixture
def catalog(tmp_path: Path) -> SchemaCatalog:
    return SchemaCatalog.from_directory(write_schema_dir(tmp_path / "schemas"))


def test_names_and_lookup_by_short_and_full_name(catalog: SchemaCatalog) -> None:
    assert catalog.names() == ["fi.te.hub.JobOfferMade", "fi.te.hub.JobseekerRegistered"]
    short = catalog.current("JobseekerRegistered")
    full = catalog.current("fi.te.hub.JobseekerRegistered")
    assert short is full
    assert full.type_name == "fi.te.hub.JobseekerRegistered"
    assert "JobOfferMade" in catalog
    assert "Nope" not in catalog
    with pytest.raises(UnknownEventType, match=r"Nope.*known types: fi\.te\.hub\.JobOfferMade"):
        catalog.current("Nope")


def test_versions_and_fingerprints(catalog: SchemaCatalog) -> None:
    event = catalog.event("JobseekerRegistered")
    assert [v.version for v in event.history] == [1, 2]
    # The current schema equals the released v2, so it takes that number.
    assert event.current.version == 2
    assert event.current.fingerprint == event.history[1].fingerprint
    assert event.history[0].fingerprint != event.current.fingerprint
    for version in (*event.history, event.current):
        assert version.fingerprint == crc64_avro(canonical_form(version.raw))
        assert len(version.fingerprint) == 8
    # Raw JSON keeps the custom attributes the routing needs.
    payload = event.current.raw["fields"][1]["type"]
    assert {f["name"]: f.get("pii") for f in payload["fields"]}["identity_code"] == "direct"


def test_writer_for_fingerprint_covers_history(catalog: SchemaCatalog) -> None:
    v1 = catalog.history("JobseekerRegistered")[0]
    name, writer = catalog.writer_for_fingerprint(v1.fingerprint)
    assert name == "fi.te.hub.JobseekerRegistered"
    assert writer is v1.parsed
    current = catalog.current("JobOfferMade")
    assert catalog.writer_for_fingerprint(current.fingerprint) == (
        "fi.te.hub.JobOfferMade",
        current.parsed,
    )
    with pytest.raises(KeyError):
        catalog.writer_for_fingerprint(b"\x00" * 8)
    assert len(catalog.fingerprints()) == 3


def test_unreleased_current_gets_next_version_number() -> None:
    catalog = SchemaCatalog.from_schemas(
        [jobseeker_v2(), job_offer()],
        history={"fi.te.hub.JobseekerRegistered": [jobseeker_v1()]},
    )
    event = catalog.event("JobseekerRegistered")
    assert event.current.version == 2
    assert [v.version for v in event.versions()] == [1, 2]
    assert catalog.current("JobOfferMade").version == 1


def test_history_of_another_type_is_refused(tmp_path: Path) -> None:
    root = write_schema_dir(tmp_path / "schemas")
    (root / "history" / "JobOfferMade" / "v2.avsc").write_text(json.dumps(jobseeker_v1()))
    with pytest.raises(SchemaCatalogError, match=r"history of fi\.te\.hub\.JobOfferMade"):
        SchemaCatalog.from_directory(root)


def test_bad_files_are_reported_with_their_path(tmp_path: Path) -> None:
    root = tmp_path / "schemas"
    root.mkdir()
    (root / "Broken.avsc").write_text("{not json")
    with pytest.raises(SchemaCatalogError, match=r"Broken\.avsc"):
        SchemaCatalog.from_directory(root)
    (root / "Broken.avsc").write_text(json.dumps({"type": "record", "name": "X", "fields": [1]}))
    with pytest.raises(SchemaCatalogError, match="invalid Avro schema"):
        SchemaCatalog.from_directory(root)
    with pytest.raises(SchemaCatalogError, match="does not exist"):
        SchemaCatalog.from_directory(tmp_path / "missing")


def test_default_schemas_dir_is_the_repository_folder_in_a_checkout() -> None:
    package = Path(hub.__file__).parent
    expected = (
        package / "_schemas" if (package / "_schemas").is_dir() else package.parent / "schemas"
    )
    assert default_schemas_dir() == expected


def test_shipped_schemas_load_and_round_trip() -> None:
    """Once the real schemas exist: every type loads, has envelope + payload, and round-trips."""
    catalog = default_catalog()
    if not catalog.names():
        pytest.skip("no schemas generated into schemas/ yet")
    serializer = SingleObjectSerializer(catalog)
    rng = random.Random(7)
    for event in catalog:
        fields = [f["name"] for f in event.current.raw["fields"]]
        assert fields[:2] == ["envelope", "payload"], event.full_name
        for version in event.history:
            assert version.type_name == event.full_name
        record = fake_record(event.current.parsed, rng)
        decoded = serializer.decode(serializer.encode(event.full_name, record))
        assert decoded.type_name == event.full_name
        assert decoded.record == record
