"""Clients file, API keys and the data-dependent limits of each kind of client (the API-level
rules on enrolments are in tests/test_enrolment_rules.py)."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field, ValidationError
from structlog.testing import capture_logs

from connectors.rest_api.auth import (
    PROVIDER_EVENT_TYPES,
    IngestClients,
    MunicipalSystemClient,
    hash_api_key,
    new_api_key,
    uncoded_health_fields,
)
from connectors.rest_api.cli import clients as clients_command
from hub.events.enums import InterruptionReason
from hub.events.sensitivity import Sensitivity, pii
from hub.intake.enrolments import Enrolment, EnrolmentBook
from hub.intake.requests import REQUEST_TYPES
from tests.ingest_fakes import CLIENTS_TOML, MUNICIPAL_KEY, make_clients

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_FILE = ROOT / "deploy" / "ingest-clients.example.toml"
HASH = "0" * 64


def test_new_keys_are_long_random_and_only_their_hash_is_kept() -> None:
    keys = {new_api_key() for _ in range(20)}
    assert len(keys) == 20
    for key, digest in keys:
        assert key.startswith("tehub_")
        assert len(key) >= 40
        assert digest == hash_api_key(key)
        assert len(digest) == 64


def test_authenticate_finds_the_client_of_a_key() -> None:
    clients = make_clients()
    found = clients.authenticate(MUNICIPAL_KEY)
    assert found is not None
    assert found.client_id == "helsinki-crm"
    assert clients.authenticate(MUNICIPAL_KEY + "x") is None
    assert clients.authenticate("") is None
    assert IngestClients.from_file(None).authenticate(MUNICIPAL_KEY) is None
    assert "api_key_sha256" not in repr(found) or hash_api_key(MUNICIPAL_KEY) not in repr(found)


def test_the_example_file_is_valid() -> None:
    clients = IngestClients.from_file(EXAMPLE_FILE)
    assert {c.kind for c in clients} == {"municipal_system", "service_provider", "payer"}
    kela = clients.authenticate("tehub_example-kela")
    assert kela is not None
    assert kela.client_id == "kela"


def _municipal(**fields: object) -> MunicipalSystemClient:
    base: dict[str, object] = {
        "client_id": "x-crm",
        "source_system": "urn:fi:kunta:091:crm",
        "api_key_sha256": HASH,
        "event_types": ["JobseekerRegistered"],
        "employment_areas": ["08"],
    }
    return MunicipalSystemClient.model_validate({**base, **fields})


def test_a_municipal_system_is_limited_to_its_areas() -> None:
    helsinki = _municipal()
    assert helsinki.may_report_on("091")
    assert not helsinki.may_report_on("049")
    narrow = _municipal(employment_areas=["01"], municipalities=["235"])
    assert narrow.may_report_on("235")
    assert not narrow.may_report_on("049")
    with pytest.raises(ValidationError, match="employment_areas"):
        _municipal(employment_areas=None)
    with pytest.raises(ValidationError, match="outside the client's employment areas"):
        _municipal(municipalities=["049"])
    with pytest.raises(ValidationError, match="not for a municipal_system client"):
        _municipal(event_types=["ServiceParticipationReported"])
    with pytest.raises(ValidationError):
        _municipal(source_system="not a uri")


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        (
            'kind = "payer"\npayer_kind = "UNEMPLOYMENT_FUND"\n'
            'event_types = ["BenefitDaysAccrued"]',
            "fund_code is required",
        ),
        (
            'kind = "payer"\npayer_kind = "KELA"\nevent_types = ["JobseekerRegistered"]',
            "not for a payer client",
        ),
        (
            'kind = "service_provider"\nbusiness_id = "1234567-2"\n'
            'event_types = ["ServiceParticipationReported"]',
            "check digit",
        ),
        ('kind = "robot"\nevent_types = ["JobseekerRegistered"]', "kind"),
    ],
)
def test_invalid_clients_are_refused_at_load(snippet: str, message: str) -> None:
    text = f'[[clients]]\nclient_id = "cc"\nsource_system = "urn:x:c"\napi_key_sha256 = "{HASH}"\n'
    with pytest.raises(ValidationError, match=message):
        IngestClients.from_toml(text + snippet)


def test_client_ids_and_keys_are_unique() -> None:
    first = CLIENTS_TOML.split("[[clients]]")[1]
    with pytest.raises(ValidationError, match="client_id must be unique"):
        IngestClients.from_toml(f"[[clients]]{first}[[clients]]{first}")


def test_cli_new_key_and_check(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(clients_command, ["new-key", "--client-id", "valmennus-oy"])
    assert made.exit_code == 0
    key = made.output.splitlines()[1].strip()
    assert f'api_key_sha256 = "{hash_api_key(key)}"' in made.output
    checked = runner.invoke(clients_command, ["check", str(EXAMPLE_FILE)])
    assert checked.exit_code == 0
    assert "helsinki-crm" in checked.output
    broken = tmp_path / "clients.toml"
    broken.write_text("[[clients]]\nclient_id = 1\n")
    failed = runner.invoke(clients_command, ["check", str(broken)])
    assert failed.exit_code == 1
    assert "not a valid clients file" in failed.output


def test_source_systems_are_unique() -> None:
    # The enrolments a client made are recognised by its source_system.
    first, second = CLIENTS_TOML.split("[[clients]]")[1:3]
    copied = second.replace('"urn:fi:kunta:049:crm"', '"urn:fi:kunta:091:crm"')
    with pytest.raises(ValidationError, match="source_system must be unique"):
        IngestClients.from_toml(f"[[clients]]{first}[[clients]]{copied}")


# --- enrolments: the first fact owns the id --------------------------------------------------

MINE = Enrolment("1234567-1", "pseudonym-a", "urn:fi:kunta:091:crm", "091")
THEIRS = Enrolment("2345678-0", "pseudonym-b", "urn:fi:kunta:049:crm", "049")


@pytest.mark.parametrize("arrival", [(0, 1), (1, 0)])
def test_the_first_record_of_an_enrolment_wins_in_whatever_order_it_is_read(
    arrival: tuple[int, int],
) -> None:
    enrolment_id = uuid4()
    # The takeover lies on a lower partition but was written later (record time).
    records = [(MINE, (1_000, 4, 7)), (THEIRS, (1_001, 0, 3))]
    book = EnrolmentBook()
    with capture_logs() as logs:
        for index in arrival:
            enrolment, order = records[index]
            book.learn(enrolment_id, enrolment, order)
    assert book.get(enrolment_id) == MINE
    assert len(book) == 1
    assert [(e["event"], e["differs"], e["partition"]) for e in logs] == [
        ("enrolments.conflict_ignored", ["source_system", "person", "provider"], 0)
    ]


def test_a_later_record_of_the_same_enrolment_is_no_conflict() -> None:
    enrolment_id = uuid4()
    moved = Enrolment(MINE.provider_business_id, MINE.subject, MINE.source_system, "092")
    book = EnrolmentBook()
    with capture_logs() as logs:
        book.learn(enrolment_id, MINE, (1, 0, 0))
        book.learn(enrolment_id, moved, (2, 0, 1))
    assert book.get(enrolment_id) == MINE
    assert logs == []


# --- what a provider may send about health ---------------------------------------------------


def test_providers_send_health_data_only_as_codes() -> None:
    for event_type in PROVIDER_EVENT_TYPES:
        assert uncoded_health_fields(REQUEST_TYPES[event_type].event_class) == []
    health = pii(Sensitivity.HEALTH)

    class Note(BaseModel):
        reason: InterruptionReason | None = Field(default=None, json_schema_extra=health)
        text: str | None = Field(default=None, json_schema_extra=health)

    class Report(BaseModel):
        note: Note
        days: list[str] = Field(json_schema_extra=health)

    assert uncoded_health_fields(Report) == ["note.text", "days"]
