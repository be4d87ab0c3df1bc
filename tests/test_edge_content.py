"""The content rules hold at every inbound connector, and ``hub tail`` masks stray codes.

One definition (``hub.intake.requests.content_violations``) refuses identity codes outside
``pii`` fields, implausible dates, future-born identity codes and blank or control-character
names; these tests show each connector applies it: the API, the batch import and the poller.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from connectors.batch.importer import ImportOptions, import_file
from connectors.poller.mapping import ChangeMapper
from connectors.rest_api.app import create_app
from connectors.rest_api.endpoints import ENDPOINTS
from connectors.xroad.client import XRoadService
from hub.events.base import Envelope
from hub.events.customer_path import CaseWorker, JobOfferMade, JobOfferMadePayload
from hub.identity import Pseudonymizer, make_test_identity_code
from hub.intake.examples import EXAMPLES, PERSON
from hub.kafka.clients import make_producer
from hub.kafka.topics import ensure_topics
from hub.logging import REDACTED_IDENTITY_CODE
from hub.serde import SingleObjectSerializer, default_catalog
from hub.settings import HubSettings
from tests.conftest import hub_environment
from tests.ingest_fakes import (
    MUNICIPAL_KEY,
    NOW,
    FakeEnrolments,
    FakeSink,
    FixedClock,
    bearer,
    make_clients,
)
from tests.poller_fakes import SERVICE_ID, MemorySink, feed_fixture

SECRET = "edge-content-test-secret-0123456789"
#: A valid code, not the examples' person, where no code belongs.
STRAY = "131052-308T"
FUTURE_BORN = make_test_identity_code(date(2026, 7, 2), 950, modern_sign=True)
PATHS = {e.event_type: e.path for e in ENDPOINTS}


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(text.splitlines()))[1:]


def _changed(event_type: str, **payload: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLES[event_type])
    body["payload"].update(payload)
    return body


# --- API ---------------------------------------------------------------------------------------


@pytest.fixture
async def http() -> Any:
    pseudonymizer = Pseudonymizer(SECRET)
    app = create_app(
        HubSettings(),
        FakeSink(),
        make_clients(),
        FakeEnrolments(pseudonymizer),
        FixedClock(NOW),
        pseudonymizer=pseudonymizer,
        registry=CollectorRegistry(),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hub.test"
    ) as client:
        yield client


@pytest.mark.parametrize(
    ("event_type", "body", "pointer", "rule"),
    [
        (
            "JobOfferMade",
            _changed("JobOfferMade", handled_by={"team_code": "T1", "expert_id": STRAY}),
            "#/payload/handled_by/expert_id",
            "identity_code_outside_pii_field",
        ),
        (
            "JobOfferMade",
            _changed("JobOfferMade", vacancy_id=f"TMT{STRAY[:6]}Y{STRAY[7:10]}X"),
            None,
            None,
        ),
        (
            "JobOfferMade",
            _changed("JobOfferMade", apply_by="9999-12-31"),
            "#/payload/apply_by",
            "date_too_late",
        ),
        (
            "JobSearchConversationHeld",
            {**EXAMPLES["JobSearchConversationHeld"], "personal_identity_code": FUTURE_BORN},
            "#/personal_identity_code",
            "identity_code_birth_date_in_future",
        ),
        (
            "JobseekerRegistered",
            _changed("JobseekerRegistered", first_name="\u200b \u200b"),
            "#/payload/first_name",
            "name_empty",
        ),
        (
            "JobseekerRegistered",
            _changed("JobseekerRegistered", last_name="Virta\x00nen"),
            "#/payload/last_name",
            "name_control_character",
        ),
    ],
)
async def test_the_api_refuses_content_against_the_rules(
    http: httpx.AsyncClient,
    event_type: str,
    body: dict[str, Any],
    pointer: str | None,
    rule: str | None,
) -> None:
    response = await http.post(PATHS[event_type], json=body, headers=bearer(MUNICIPAL_KEY))
    if rule is None:  # a code-shaped run with a wrong check character, glued: not a code
        assert response.status_code == 202, response.text
        return
    assert response.status_code == 422, response.text
    problem = response.json()
    assert (pointer, rule) in [(e["pointer"], e["type"]) for e in problem["errors"]]
    for secret in (STRAY, FUTURE_BORN, PERSON, "\u200b", "\\u200b", "\x00", "\\u0000", "9999"):
        assert secret not in response.text


# --- batch import ------------------------------------------------------------------------------


async def test_the_import_reports_the_same_rules_without_the_values(tmp_path: Path) -> None:
    def line(event_type: str, body: dict[str, Any]) -> str:
        return json.dumps({"event_type": event_type, **body}, ensure_ascii=False)

    path = tmp_path / "batch.ndjson"
    bad_expert = _changed("JobOfferMade", handled_by={"team_code": "T1", "expert_id": STRAY})
    lines = [
        line("JobOfferMade", bad_expert),
        line("JobseekerRegistered", _changed("JobseekerRegistered", first_name="  ")),
        line("JobSearchEnded", {**EXAMPLES["JobSearchEnded"], "occurred_at": "1999-06-01T10:00Z"}),
        line("JobOfferMade", EXAMPLES["JobOfferMade"]),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sink = MemorySink()
    options = ImportOptions(
        pseudonymizer=Pseudonymizer(SECRET),
        source_system="urn:fi:te-hub:import:test",
        clock=lambda: NOW,
    )

    summary = await import_file(path, sink, options)

    report = summary.reject_report.read_text(encoding="utf-8")
    rows = {(line, field, reason.split(":")[0]) for line, field, reason in csv_rows(report)}
    assert ("1", "payload.handled_by.expert_id", "identity_code_outside_pii_field") in rows
    assert ("2", "payload.first_name", "name_empty") in rows
    assert ("3", "occurred_at", "occurred_before_earliest") in rows
    assert STRAY not in report
    assert summary.counts.published == 1


# --- poller ------------------------------------------------------------------------------------


def _row() -> dict[str, Any]:
    rows = [i for i in feed_fixture(valid_rows=20).items if isinstance(i, dict) and i.get("plan")]
    return copy.deepcopy(rows[0])


def test_the_poller_rejects_rows_against_the_rules_and_maps_the_rest() -> None:
    mapper = ChangeMapper(XRoadService.parse(SERVICE_ID), Pseudonymizer(SECRET))
    good = _row()
    stray_expert = _row() | {"id": "stray-expert"}
    stray_expert["plan"]["expert_id"] = f"E{STRAY}"
    items = [
        stray_expert,
        _row() | {"id": f"row-{STRAY}"},
        _row() | {"id": "nul-name", "first_name": "Ai\x00no"},
        _row() | {"id": "year-one", "job_search_started_on": "0001-01-01"},
        _row() | {"id": "year-9999-plan"},
        good,
    ]
    items[4]["plan"]["valid_until"] = "9999-12-31"

    page = mapper.map_items(items)

    reasons = {r.item_id: r.reason for r in page.rejections}
    assert (
        "payload.handled_by.expert_id: identity_code_outside_pii_field" in reasons["stray-expert"]
    )
    assert f"row-{REDACTED_IDENTITY_CODE}" in reasons
    assert "id: identity_code_outside_pii_field" in reasons[f"row-{REDACTED_IDENTITY_CODE}"]
    assert "payload.first_name: name_control_character" in reasons["nul-name"]
    assert "year-one" in reasons  # rejected, not a crash of the page
    assert "payload.valid_until: date_too_late" in reasons["year-9999-plan"]
    assert len(page.rejections) == 5
    assert [s.event.envelope.event_id for s in page.submissions] == [
        mapper.event_id(good["id"], "registered"),
        mapper.event_id(good["id"], f"plan:{good['plan']['plan_id']}"),
    ]
    assert STRAY not in json.dumps([r.__dict__ for r in page.rejections])


# --- hub tail ----------------------------------------------------------------------------------


@pytest.mark.kafka
async def test_tail_masks_identity_codes_anywhere_unless_revealed(
    hub_settings: HubSettings, tmp_path: Path
) -> None:
    """Records written past the edge (an old writer, another tool) may hold a code anywhere."""
    example = EXAMPLES["JobOfferMade"]
    event = JobOfferMade(
        envelope=Envelope(
            event_id="6f1b0a52-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
            event_type="JobOfferMade",
            occurred_at=datetime(2026, 3, 18, 9, 20, tzinfo=UTC),
            recorded_at=datetime(2026, 3, 18, 9, 21, tzinfo=UTC),
            source_system="urn:fi:kunta:091:crm",
            subject="0123456789abcdef0123456789abcdef",
            municipality_code="091",
            employment_area_code="08",
            correlation_id="7a2c1b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        ),
        payload=JobOfferMadePayload.model_validate(
            {**example["payload"], "handled_by": CaseWorker(team_code="T1", expert_id=STRAY)}
        ),
    )
    value = SingleObjectSerializer(default_catalog()).encode("JobOfferMade", event.to_avro())
    await ensure_topics(hub_settings)
    producer = make_producer(hub_settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            hub_settings.topic_customer_path,
            key=b"0123456789abcdef0123456789abcdef",
            value=value,
            headers=[("x-note", f"about{STRAY}".encode())],
        )
        # Not decodable: the entry's error may quote the bytes, which hold the code too.
        await producer.send_and_wait(
            hub_settings.topic_customer_path, key=STRAY.encode(), value=b"\xff" + STRAY.encode()
        )
    finally:
        await producer.stop()
    # Every topic of the test's own (a reveal is recorded in its disclosure log).
    env = hub_environment(hub_settings, HUB_STATE_DIR=str(tmp_path))

    def tail(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hub", "tail", "--from-beginning", "--limit", "2", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    masked = tail()
    entries = [json.loads(line) for line in masked.stdout.splitlines()]
    assert len(entries) == 2, masked.stderr
    assert STRAY not in masked.stdout
    decoded = next(e for e in entries if e["event"] is not None)
    assert decoded["event"]["payload"]["handled_by"]["expert_id"] == REDACTED_IDENTITY_CODE
    assert decoded["headers"]["x-note"] == f"about{REDACTED_IDENTITY_CODE}"
    assert any(e["key"] == REDACTED_IDENTITY_CODE for e in entries)
    revealed = tail("--reveal", "--reason", "test: stray codes are shown")
    assert STRAY in revealed.stdout, revealed.stderr


# --- ids that name requests and sources -----------------------------------------------------


async def test_a_request_id_with_a_glued_code_is_replaced(http: httpx.AsyncClient) -> None:
    for sent in (f"req{STRAY}", f"req-{PERSON}x", f"{PERSON}0"):
        echoed = (await http.get("/health", headers={"X-Request-ID": sent})).headers["x-request-id"]
        assert echoed != sent
        assert len(echoed) == 32


@pytest.mark.parametrize(
    ("name", "source"),
    [(f"export{PERSON}.ndjson", None), ("export.ndjson", f"urn:fi:kunta:091:{PERSON}")],
)
def test_the_import_refuses_a_source_that_would_put_a_code_in_every_event(
    tmp_path: Path, name: str, source: str | None
) -> None:
    path = tmp_path / name
    path.write_text(json.dumps({"event_type": "JobOfferMade", **EXAMPLES["JobOfferMade"]}) + "\n")
    args = [sys.executable, "-m", "hub", "import", str(path)]
    result = subprocess.run(
        [*args, *(["--source", source] if source else [])],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HUB_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
    )
    assert result.returncode == 2, result.stderr
    assert "shaped like an identity code" in result.stderr
    assert PERSON not in result.stderr
