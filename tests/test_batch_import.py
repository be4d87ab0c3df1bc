"""The batch file connector: every valid row once in the log, every bad row in the report.

The handler tests run the import against an in-memory sink with the sink contract's dedupe
semantics; one test runs ``hub import`` as a subprocess against the real broker, kills it with
SIGKILL midway and runs it again: every event must then be in the log exactly once.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

import pytest
from click.testing import CliRunner

import connectors.batch.cli as batch_cli
from connectors.batch import (
    ALL_COLUMNS,
    FileChangedError,
    ImportInterrupted,
    ImportOptions,
    ImportSummary,
    ImportUsageError,
    import_file,
)
from hub.codes import municipalities
from hub.identity import IDENTITY_CODE_PATTERN, Pseudonymizer, make_test_identity_code
from hub.intake.convert import derived_event_id
from hub.intake.examples import EXAMPLES, PERSON, REGISTRATION_EVENT_ID
from hub.intake.requests import BULK_ITEM_ADAPTER, HELSINKI
from hub.kafka.reading import read_topic
from hub.kafka.topics import ensure_topics
from hub.serde import SingleObjectSerializer
from hub.settings import HubSettings, get_settings
from hub.sink import Receipt, Submission
from tests.conftest import hub_environment
from tests.poller_fakes import FakeSleep, MemorySink

SECRET = "batch-import-test-secret-0123456789"
#: The examples are dated in spring 2026: the handler tests look at them from the summer.
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
SOURCE = "urn:fi:te-hub:import:test"
PLAN_NAMESPACE = UUID("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0")
MAINLAND = sorted(code for code, m in municipalities().items() if m.is_mainland)


def _options(chunk_size: int = 500, sleep: FakeSleep | None = None) -> ImportOptions:
    return ImportOptions(
        pseudonymizer=Pseudonymizer(SECRET),
        source_system=SOURCE,
        chunk_size=chunk_size,
        clock=lambda: NOW,
        sleep=sleep or FakeSleep(),
        attempts=3,
    )


async def _import(path: Path, sink: Any, **options: Any) -> ImportSummary:
    return await import_file(path, sink, _options(**options))


# --- files ----------------------------------------------------------------------------------------


def jobseeker(n: int, start: date = date(2025, 9, 1)) -> dict[str, str]:
    """Register row *n*: a unique temporary identity code, a real municipality; every other
    row has a plan, every fifth plan a reduced obligation."""
    born = date(1962, 1, 1) + timedelta(days=(n // 100) * 431)
    started = start + timedelta(days=n % 60)
    age = started.year - born.year - ((started.month, started.day) < (born.month, born.day))
    row = {
        "personal_identity_code": make_test_identity_code(born, 900 + n % 100),
        "municipality_code": MAINLAND[n % len(MAINLAND)],
        "job_search_started_on": started.isoformat(),
        "registration_channel": ("ELECTRONIC", "FACE_TO_FACE", "PHONE")[n % 3],
        "labour_market_status": "UNEMPLOYED",
        "first_name": f"Etu{n}",
        "last_name": f"Suku{n}",
        "email": f"person{n}@example.fi" if n % 4 else "",
        "phone": "",
        "age_at_registration": str(age),
        "unemployment_fund_code": "",
    }
    if n % 2 == 0:
        reduced = n % 10 == 0
        row |= {
            "plan_id": str(uuid5(PLAN_NAMESPACE, str(n))),
            "plan_type": "EMPLOYMENT_PLAN",
            "plan_agreed_on": (started + timedelta(days=7)).isoformat(),
            "job_search_obligation_per_month": "2" if reduced else "4",
            "obligation_reduction": "PART_TIME_WORK" if reduced else "",
            "reporting_period_months": "1",
            "plan_agreed_in_initial_interview": "true",
            "plan_team_code": "T-1",
            "plan_expert_id": f"e{n % 7}",
        }
    return row


def write_csv(
    path: Path, rows: Sequence[dict[str, str]], columns: Sequence[str] = ALL_COLUMNS
) -> Path:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, columns, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def expected_csv_ids(path: Path, rows: Sequence[dict[str, str]]) -> list[UUID]:
    """Event ids the contract promises: uuid5 of ``import:<sha256>:<line>:<event type>``.

    Holds for files without quoted line breaks (one row a line, header on line 1)."""
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    ids = []
    for index, row in enumerate(rows):
        line = index + 2
        ids.append(derived_event_id(f"import:{sha}:{line}:JobseekerRegistered"))
        if row.get("plan_id"):
            ids.append(derived_event_id(f"import:{sha}:{line}:EmploymentPlanAgreed"))
    return ids


def item(event_type: str, **changes: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(EXAMPLES[event_type]))
    payload = changes.pop("payload", {})
    return {"event_type": event_type, **body, **changes, "payload": {**body["payload"], **payload}}


def write_ndjson(path: Path, lines: Sequence[dict[str, Any] | str | bytes]) -> Path:
    with path.open("wb") as file:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line, ensure_ascii=False)
            file.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
    return path


def report_rows(summary: ImportSummary) -> list[tuple[int, str, str]]:
    with summary.reject_report.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["line", "field", "reason"]
    return [(int(line), field, reason) for line, field, reason in rows[1:]]


def assert_no_identity_code(text: str, codes: Sequence[str] = ()) -> None:
    assert not IDENTITY_CODE_PATTERN.search(text)
    for code in codes:
        assert code not in text


def _vocabulary() -> frozenset[str]:
    """Every word of the published contract: names and values a report may name itself."""
    found: set[str] = set(ALL_COLUMNS) | set(EXAMPLES) | {"true", "false", "null"}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            found.add(node)

    walk(BULK_ITEM_ADAPTER.json_schema())
    return frozenset(found)


VOCABULARY = _vocabulary()


def submitted_strings(path: Path) -> set[str]:
    """What a file holds that is the sender's: every cell, JSON key and string value (for a line
    that is not JSON, the line and its string literals) of 4 characters or more, the contract's
    words aside."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                found.add(key)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            found.add(node)

    text = path.read_bytes().decode("utf-8", "replace")
    if path.suffix == ".csv" or path.suffix == ".txt":
        for row in csv.reader(io.StringIO(text, newline="")):
            found.update(row)
    else:
        for line in text.splitlines():
            try:
                walk(json.loads(line))
            except ValueError:  # the line itself and its string literals
                found.update([line.strip(), *re.findall(r'"((?:[^"\\]|\\.)*)"', line)])
    return {s for s in found if len(s) >= 4 and s not in VOCABULARY}


@pytest.fixture(autouse=True)
def no_report_repeats_a_submitted_value(tmp_path: Path) -> Iterator[None]:
    """After every import test: no reject report repeats anything the test's files held."""
    yield
    reports = [p for p in tmp_path.rglob("*") if p.is_file() and _is_report(p)]
    inputs = [p for p in tmp_path.rglob("*") if p.is_file() and p not in reports]
    sent = set().union(*(submitted_strings(p) for p in inputs)) if inputs else set()
    for report in reports:
        text = report.read_text(encoding="utf-8")
        leaked = sorted(s for s in sent if s in text)
        assert not leaked, f"{report.name} repeats submitted values: {leaked[:5]}"


def _is_report(path: Path) -> bool:
    with path.open(encoding="utf-8", errors="replace") as file:
        return file.readline().strip() == "line,field,reason"


# --- happy paths ------------------------------------------------------------------------------


async def test_csv_rows_become_registrations_and_plans(tmp_path: Path) -> None:
    rows = [jobseeker(n) for n in range(6)]
    path = write_csv(tmp_path / "extract.csv", rows)
    sink = MemorySink()

    summary = await _import(path, sink)

    counts = summary.counts
    assert (counts.lines, counts.rows, counts.published, counts.rejected_rows) == (7, 6, 9, 0)
    assert report_rows(summary) == []
    assert summary.reject_report == tmp_path / "extract.csv.rejects.csv"
    assert [e.envelope.event_id for e in sink.log] == expected_csv_ids(path, rows)
    registration, plan = sink.log[0], sink.log[1]
    assert registration.event_type == "JobseekerRegistered"
    assert registration.envelope.occurred_at == datetime(2025, 9, 1, tzinfo=HELSINKI)
    assert registration.envelope.source_system == SOURCE
    assert registration.envelope.subject == Pseudonymizer(SECRET).pseudonym(
        rows[0]["personal_identity_code"]
    )
    assert plan.event_type == "EmploymentPlanAgreed"
    assert plan.envelope.occurred_at == datetime(2025, 9, 8, tzinfo=HELSINKI)
    assert plan.envelope.causation_id == registration.envelope.event_id
    assert plan.payload.handled_by.team_code == "T-1"  # type: ignore[attr-defined]


async def test_csv_without_plan_columns_and_with_a_bom(tmp_path: Path) -> None:
    rows = [jobseeker(n) for n in range(1, 6, 2)]  # odd rows have no plan
    path = write_csv(tmp_path / "plain.csv", rows, columns=[*rows[0]])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    sink = MemorySink()

    summary = await _import(path, sink)

    assert (summary.counts.published, summary.counts.rejected_rows) == (3, 0)
    assert {e.event_type for e in sink.log} == {"JobseekerRegistered"}


async def test_ndjson_items_of_every_type(tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "bulk.ndjson", [item(t) for t in EXAMPLES])
    path.write_bytes(path.read_bytes() + b"\n  \n")  # blank lines are no rows
    sink = MemorySink()

    summary = await _import(path, sink)

    assert (summary.counts.rows, summary.counts.published) == (len(EXAMPLES), len(EXAMPLES))
    assert [e.event_type for e in sink.log] == list(EXAMPLES)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    # A client's own event_id is kept and keys the event, as in the ingest API.
    assert sink.log[0].envelope.event_id == UUID(REGISTRATION_EVENT_ID)
    assert f"import:event-id:{REGISTRATION_EVENT_ID}" in sink.receipts
    assert sink.log[1].envelope.event_id == derived_event_id(f"import:{sha}:2:InitialInterviewHeld")


# --- corrections ------------------------------------------------------------------------------


async def test_csv_correction_rows_correct_and_retract_facts_imported_before(
    tmp_path: Path,
) -> None:
    rows = [jobseeker(0), jobseeker(2)]  # both with a plan
    first_file = write_csv(tmp_path / "extract.csv", rows)
    sink = MemorySink()
    await _import(first_file, sink)
    registration_0, plan_0, registration_2, plan_2 = expected_csv_ids(first_file, rows)
    corrections = [
        rows[0]
        | {
            "registration_channel": "PHONE",
            "job_search_obligation_per_month": "2",
            "obligation_reduction": "PART_TIME_WORK",
            "corrects_event_id": str(registration_0),
            "plan_corrects_event_id": str(plan_0),
        },
        rows[1]
        | {
            "corrects_event_id": str(registration_2),
            "retracted": "true",
            "plan_corrects_event_id": str(plan_2),
            "plan_retracted": "true",
        },
    ]
    second_file = write_csv(tmp_path / "corrections.csv", corrections)

    summary = await _import(second_file, sink)
    again = await _import(second_file, sink)

    assert report_rows(summary) == []
    assert (summary.counts.published, again.counts.published, again.counts.duplicates) == (4, 0, 4)
    fixes = sink.log[4:]
    assert len(sink.log) == 8
    assert [(e.event_type, e.envelope.corrects_event_id, e.envelope.retracted) for e in fixes] == [
        ("JobseekerRegistered", registration_0, False),
        ("EmploymentPlanAgreed", plan_0, False),
        ("JobseekerRegistered", registration_2, True),
        ("EmploymentPlanAgreed", plan_2, True),
    ]
    assert fixes[0].payload.registration_channel == "PHONE"  # type: ignore[attr-defined]
    assert fixes[1].payload.job_search_obligation_per_month == 2  # type: ignore[attr-defined]
    sha = hashlib.sha256(second_file.read_bytes()).hexdigest()
    assert f"import:{sha}:2:JobseekerRegistered:corrects:{registration_0}" in sink.receipts
    key = f"import:{sha}:3:EmploymentPlanAgreed:corrects:{plan_2}:retracted"
    assert key in sink.receipts
    assert fixes[3].envelope.event_id == derived_event_id(key)


async def test_bad_csv_correction_cells_are_reported_by_line_and_column(tmp_path: Path) -> None:
    some_id = "5e0c6a4f-3b2d-4c1e-9f8a-7b6c5d4e3f2a"
    good = [jobseeker(n) for n in range(7)]
    rows = [
        good[0] | {"corrects_event_id": "nope-nope"},  # 2
        good[1] | {"corrects_event_id": some_id, "retracted": "maybe"},  # 3
        good[2] | {"retracted": "true"},  # 4: a retraction names no fact
        good[4] | {"plan_corrects_event_id": some_id},  # 5: the registration is not corrected
        good[3] | {"corrects_event_id": some_id, "plan_corrects_event_id": some_id},  # 6: no plan
        good[6] | {"plan_corrects_event_id": "x", "corrects_event_id": some_id},  # 7
        good[5] | {"corrects_event_id": some_id},  # 8: good
    ]
    path = write_csv(tmp_path / "bad-corrections.csv", rows)
    sink = MemorySink()

    summary = await _import(path, sink)

    found = [(line, field, reason.split(":")[0]) for line, field, reason in report_rows(summary)]
    assert found == [
        (2, "corrects_event_id", "uuid_parsing"),
        (3, "retracted", "bool_parsing"),
        (4, "retracted", "retracted_without_corrects_event_id"),
        (5, "corrects_event_id", "registration_not_corrected"),
        (6, "plan_corrects_event_id", "correction_without_plan"),
        (7, "plan_corrects_event_id", "uuid_parsing"),
    ]
    assert [e.envelope.corrects_event_id for e in sink.log] == [UUID(some_id)]
    assert "maybe" not in summary.reject_report.read_text(encoding="utf-8")


async def test_ndjson_corrections_and_their_bad_values(tmp_path: Path) -> None:
    first = REGISTRATION_EVENT_ID
    fixed_id = "0b6f2d1e-4c3a-4f5b-9d8e-7a6c5b4d3e2f"
    offer = "2c7e5a19-8d3f-4b60-a4e2-71f0c9b3d856"
    lines: list[dict[str, Any] | str | bytes] = [
        item("JobseekerRegistered"),  # 1
        item(
            "JobseekerRegistered",
            event_id=fixed_id,
            corrects_event_id=first,
            payload={"phone": None},
        ),  # 2
        item("JobOfferMade", corrects_event_id=offer, retracted=True),  # 3
        item("JobOfferMade", corrects_event_id="not-a-uuid"),  # 4
        item("JobOfferMade", retracted=True),  # 5
        item("JobseekerRegistered", event_id=first, corrects_event_id=first),  # 6
        item("JobOfferMade", corrects_event_id=first, retracted="yes"),  # 7
    ]
    path = write_ndjson(tmp_path / "corrections.ndjson", lines)
    sink = MemorySink()

    summary = await _import(path, sink)
    again = await _import(path, sink)

    found = [(line, field, reason.split(":")[0]) for line, field, reason in report_rows(summary)]
    assert found == [
        (4, "corrects_event_id", "uuid_parsing"),
        (5, "retracted", "retracted_without_corrects_event_id"),
        (6, "corrects_event_id", "corrects_itself"),
        (7, "retracted", "bool_type"),
    ]
    assert (summary.counts.published, again.counts.duplicates) == (3, 3)
    assert [(e.envelope.corrects_event_id, e.envelope.retracted) for e in sink.log] == [
        (None, False),
        (UUID(first), False),
        (UUID(offer), True),
    ]
    assert sink.log[1].envelope.event_id == UUID(fixed_id)
    assert f"import:event-id:{fixed_id}:corrects:{first}" in sink.receipts


# --- rejects ------------------------------------------------------------------------------------


async def test_bad_csv_rows_are_reported_by_physical_line_without_values(tmp_path: Path) -> None:
    good = [jobseeker(n) for n in range(8)]
    # Quoted: lines 2-3. Not in a name: names may not hold line breaks (name_control_character).
    multi_line = good[0] | {"plan_team_code": "T-1\nB"}
    rows = [
        multi_line,  # line 2 (and 3)
        good[1] | {"personal_identity_code": good[1]["personal_identity_code"][:-1] + "X"},  # 4
        good[2] | {"municipality_code": "478"},  # 5: Åland
        good[3] | {"age_at_registration": "20"},  # 6: rule
        good[4] | {"job_search_obligation_per_month": "2"},  # 7: plan rule: no reduction
        good[6] | {"plan_agreed_on": "2025-02-30", "registration_channel": "FAX"},  # 8
        good[5] | {"last_name": ""},  # 9
        good[7],  # 10: good
    ]
    path = write_csv(tmp_path / "bad.csv", rows)
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "010594Y9032,091,oops\n", encoding="utf-8")  # 11: too few fields
    sink = MemorySink()

    summary = await _import(path, sink)

    found = report_rows(summary)
    assert [(line, field) for line, field, _ in found] == [
        (4, "personal_identity_code"),
        (5, "municipality_code"),
        (6, "age_at_registration"),
        (7, "obligation_reduction"),
        (8, "registration_channel"),
        (8, "plan_agreed_on"),
        (9, "last_name"),
        (11, ""),
    ]
    reasons = dict(((line, field), reason) for line, field, reason in found)
    assert reasons[6, "age_at_registration"].startswith("age_mismatch: ")
    assert reasons[7, "obligation_reduction"].startswith("obligation_reduction_missing: ")
    assert reasons[9, "last_name"].startswith("missing: ")
    assert reasons[11, ""].startswith("field_count: ")
    counts = summary.counts
    assert (counts.rows, counts.rejected_rows, counts.problems) == (9, 7, 8)
    # Rows 2-3 and 10 went through, the multi-line field intact; a bad plan rejects its row.
    assert counts.published == 3
    assert sink.log[1].payload.handled_by.team_code == "T-1\nB"  # type: ignore[attr-defined]
    report = summary.reject_report.read_text(encoding="utf-8")
    assert_no_identity_code(report, [r["personal_identity_code"] for r in rows])
    for value in ("478", "FAX", "2025-02-30"):
        assert value not in report


async def test_bad_ndjson_lines_are_reported_and_the_rest_published(tmp_path: Path) -> None:
    interview = EXAMPLES["InitialInterviewHeld"]["payload"]
    lines: list[dict[str, Any] | str | bytes] = [
        item("JobseekerRegistered"),  # 1
        "{not json",  # 2
        item("JobseekerRegistered") | {"event_type": "JobseekerDeregistered"},  # 3
        item("JobSearchEnded", payload={"reason": None}),  # 4
        item("InitialInterviewHeld", payload={"deadline": "2026-03-20"}),  # 5
        # 6: before the registration on line 1 (same person, same chunk)
        item("InitialInterviewHeld", occurred_at="2026-03-02T08:00:00+02:00")
        | {"payload": interview | {"held_on": "2026-03-02"}},
        b'{"event_type": "JobSearchEnded", "x": "\xff"}',  # 7
        "[1, 2]",  # 8
        item("JobSearchEnded", personal_identity_code="010594Y9033"),  # 9: bad check character
        item("EmploymentStarted"),  # 10
    ]
    path = write_ndjson(tmp_path / "bulk.jsonl", lines)
    sink = MemorySink()

    summary = await _import(path, sink)

    found = report_rows(summary)
    assert [(line, field, reason.split(":")[0]) for line, field, reason in found] == [
        (2, "", "json_invalid"),
        (3, "event_type", "union_tag_invalid"),
        (4, "payload.reason", "enum"),
        (5, "payload.deadline", "deadline_mismatch"),
        (6, "occurred_at", "interview_before_registration"),
        (7, "", "invalid_utf8"),
        (8, "", "dict_type"),
        (9, "personal_identity_code", "value_error"),
    ]
    assert [e.event_type for e in sink.log] == ["JobseekerRegistered", "EmploymentStarted"]
    assert summary.counts.rejected_rows == 8
    report = summary.reject_report.read_text(encoding="utf-8")
    assert_no_identity_code(report, [PERSON, "010594Y9033"])
    assert "JobseekerDeregistered" not in report


async def test_an_event_id_reused_for_other_content_is_rejected(tmp_path: Path) -> None:
    first = write_ndjson(tmp_path / "a.ndjson", [item("JobseekerRegistered")])
    other = item("JobseekerRegistered", payload={"first_name": "Liisa"})
    second = write_ndjson(tmp_path / "b.ndjson", [item("JobseekerRegistered"), other])
    sink = MemorySink()

    await _import(first, sink)
    summary = await _import(second, sink)

    counts = summary.counts
    assert (counts.published, counts.duplicates, counts.rejected_rows) == (0, 1, 1)
    assert report_rows(summary)[0][:2] == (2, "event_id")
    assert len(sink.log) == 1


async def test_what_a_line_holds_is_never_repeated_and_no_parse_error_escapes(
    tmp_path: Path,
) -> None:
    """A 5,000-digit number made the import die with a traceback (ValueError, not
    JSONDecodeError), nothing published; values were quoted in the reasons."""
    huge = "1" * 5000
    lines: list[dict[str, Any] | str | bytes] = [
        item("JobseekerRegistered"),  # 1
        json.dumps(item("JobSearchEnded"))[:-1] + f', "n": {huge}}}',  # 2
        item("JobOfferMade", payload={"employer_business_id": "Matti Meikalainen"}),  # 3
        item("JobSearchEnded", payload={"Matti_Meikalainen_note": "x"}),  # 4: unknown key
        item("JobSearchEnded", personal_identity_code="310290-9022"),  # 5: 31.2. is no date
        item("JobSearchEnded", personal_identity_code="010594Y9033"),  # 6: check character
        item("EmploymentStarted"),  # 7
    ]
    path = write_ndjson(tmp_path / "echo.ndjson", lines)
    sink = MemorySink()

    summary = await _import(path, sink)

    found = report_rows(summary)
    assert [(line, field, reason.split(":")[0]) for line, field, reason in found] == [
        (2, "", "json_invalid"),
        (3, "payload.employer_business_id", "value_error"),
        (4, "payload", "extra_forbidden"),
        (5, "personal_identity_code", "value_error"),
        (6, "personal_identity_code", "value_error"),
    ]
    assert [e.event_type for e in sink.log] == ["JobseekerRegistered", "EmploymentStarted"]
    report = summary.reject_report.read_text(encoding="utf-8")
    for part in ("Matti", "Meikalainen", "31.02", "1990", "expected", huge[:10]):
        assert part not in report


def test_a_csv_without_a_header_is_refused_without_its_first_row(tmp_path: Path) -> None:
    rows = [jobseeker(n) for n in range(3)]
    with_header = write_csv(tmp_path / "x.csv", rows)
    path = tmp_path / "no-header.csv"
    path.write_text(with_header.read_text().split("\n", 1)[1])
    cells = [c for c in rows[0].values() if len(c) >= 2]
    repeated = tmp_path / "repeated.csv"
    repeated.write_text(",".join([*ALL_COLUMNS, "Etu0", "Etu0"]) + "\n")

    for refused, reason in ((path, "lacks column"), (repeated, None)):
        with pytest.raises(ImportUsageError, match=reason or "position") as raised:
            asyncio.run(_import(refused, MemorySink()))
        message = str(raised.value)
        assert not [c for c in cells if c in message], message
    assert "Etu0" not in message
    n = len(ALL_COLUMNS)
    assert f"position {n + 1}, the column at position {n + 2}" in message


# --- exactly once -------------------------------------------------------------------------------


async def test_running_the_same_file_again_publishes_nothing(tmp_path: Path) -> None:
    rows = [jobseeker(n) for n in range(40)]
    path = write_csv(tmp_path / "again.csv", rows)
    sink = MemorySink()

    first = await _import(path, sink, chunk_size=7)
    again = await _import(path, sink, chunk_size=50)

    assert first.counts.published == 60
    assert (again.counts.published, again.counts.duplicates) == (0, 60)
    assert sink.event_id_counts() == Counter({i: 1 for i in expected_csv_ids(path, rows)})


class CrashingSink:
    """Passes submits to *inner* until submit number *crash_on*, which dies like a killed
    process: before writing, or after writing but before the answer came back."""

    def __init__(self, inner: MemorySink, crash_on: int, *, after_write: bool) -> None:
        self.inner = inner
        self.crash_on = crash_on
        self.after_write = after_write
        self.calls = 0

    async def submit(self, submissions: Sequence[Submission]) -> list[Receipt]:
        self.calls += 1
        if self.calls == self.crash_on:
            if self.after_write:
                await self.inner.submit(submissions)
            raise RuntimeError("killed")
        return await self.inner.submit(submissions)

    async def ready(self) -> bool:
        return True


@pytest.mark.parametrize("after_write", [False, True], ids=["before-write", "after-write"])
async def test_a_crash_midway_is_resumed_by_running_again(
    tmp_path: Path, after_write: bool
) -> None:
    rows = [jobseeker(n) for n in range(100)]
    path = write_csv(tmp_path / "crash.csv", rows)
    log = MemorySink()

    with pytest.raises(RuntimeError, match="killed"):
        await _import(path, CrashingSink(log, crash_on=4, after_write=after_write), chunk_size=20)
    written = len(log.log)
    assert 0 < written < 150
    summary = await _import(path, log, chunk_size=20)

    assert summary.counts.duplicates == written
    assert summary.counts.published == 150 - written
    assert log.event_id_counts() == Counter({i: 1 for i in expected_csv_ids(path, rows)})


async def test_an_unavailable_sink_is_retried_then_the_import_stops(tmp_path: Path) -> None:
    rows = [jobseeker(n) for n in range(30)]
    path = write_csv(tmp_path / "outage.csv", rows)
    sink = MemorySink()
    sink.unavailable_on = {2, 3}  # second chunk: two failures, the third attempt goes through
    sleep = FakeSleep()

    summary = await _import(path, sink, chunk_size=10, sleep=sleep)

    assert summary.counts.published == 45
    assert sleep.delays == [1.0, 2.0]  # the fake's retry_after_s is 1: plain backoff

    broken = MemorySink()
    broken.unavailable_on = set(range(3, 100))
    with pytest.raises(ImportInterrupted, match="run the same command again") as stopped:
        await _import(path, broken, chunk_size=10)
    assert "lines 16-22 " in str(stopped.value)  # chunks close at 10 events: 11, 10, 11, ...
    assert len(broken.log) == 21
    broken.unavailable_on = set()
    await _import(path, broken, chunk_size=10)
    assert broken.event_id_counts() == Counter({i: 1 for i in expected_csv_ids(path, rows)})


async def test_a_file_that_changes_during_the_import_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "growing.csv", [jobseeker(n) for n in range(200)])
    extra = path.read_text(encoding="utf-8").splitlines()[-1]
    inner = MemorySink()

    class AppendingSink:
        async def submit(self, submissions: Sequence[Submission]) -> list[Receipt]:
            if not inner.attempts:
                with path.open("a", encoding="utf-8") as file:
                    file.write(extra + "\n")
            return await inner.submit(submissions)

        async def ready(self) -> bool:
            return True

    with pytest.raises(FileChangedError, match="changed while it was imported"):
        await _import(path, AppendingSink(), chunk_size=10)


# --- usage errors -------------------------------------------------------------------------------


async def test_a_header_without_required_columns_is_refused_up_front(tmp_path: Path) -> None:
    columns = [c for c in ALL_COLUMNS if c not in ("age_at_registration", "plan_team_code")]
    path = write_csv(tmp_path / "old.csv", [jobseeker(0)], columns=columns)
    sink = MemorySink()

    with pytest.raises(ImportUsageError, match=r"lacks column\(s\): age_at_registration, plan_"):
        await _import(path, sink)
    assert sink.attempts == 0
    assert not (tmp_path / "old.csv.rejects.csv").exists()


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MemorySink]:
    """The command with its Kafka calls replaced by the in-memory sink."""
    sink = MemorySink()

    @asynccontextmanager
    async def fake_kafka_sink(settings: HubSettings) -> AsyncIterator[MemorySink]:
        yield sink

    async def nothing(settings: HubSettings) -> None:
        return None

    monkeypatch.setattr(batch_cli, "open_kafka_sink", fake_kafka_sink)
    monkeypatch.setattr(batch_cli, "ensure_topics", nothing)
    # The command's own logging setup would keep CliRunner's closed stream after the test.
    monkeypatch.setattr(batch_cli, "configure_logging", lambda settings, stream: None)
    monkeypatch.setenv("HUB_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield sink
    get_settings.cache_clear()


def test_command_exit_codes(tmp_path: Path, fake_kafka: MemorySink) -> None:
    good = write_csv(tmp_path / "good.csv", [jobseeker(n) for n in range(4)])
    bad = write_csv(tmp_path / "bad.txt", [jobseeker(5) | {"age_at_registration": "99"}])
    no_header = write_csv(tmp_path / "short.csv", [], columns=["personal_identity_code"])
    runner = CliRunner()

    ok = runner.invoke(batch_cli.import_command, [str(good)])
    rejected = runner.invoke(
        batch_cli.import_command,
        [str(bad), "--format", "csv", "--rejects", str(tmp_path / "r.csv"), "--source", "urn:x"],
    )
    unknown_format = runner.invoke(batch_cli.import_command, [str(bad)])
    missing_columns = runner.invoke(batch_cli.import_command, [str(no_header)])
    no_file = runner.invoke(batch_cli.import_command, [str(tmp_path / "nope.csv")])
    named = good.rename(tmp_path / f"{PERSON}.csv")
    person_named = runner.invoke(batch_cli.import_command, [str(named)])
    good = named.rename(tmp_path / "good.csv")
    no_folder = runner.invoke(
        batch_cli.import_command, [str(good), "--rejects", str(tmp_path / "no" / "r.csv")]
    )
    again = runner.invoke(batch_cli.import_command, [str(good), "--chunk-size", "1"])

    assert ok.exit_code == 0, ok.output
    assert "events published    6" in ok.output
    assert rejected.exit_code == 1, rejected.output
    assert "rows rejected       1" in rejected.output
    assert (tmp_path / "r.csv").read_text().startswith("line,field,reason")
    assert unknown_format.exit_code == 2
    assert "--format" in unknown_format.output
    assert missing_columns.exit_code == 2
    assert "lacks column(s): municipality_code, job_search_started_on" in missing_columns.output
    assert no_file.exit_code == 2
    assert no_folder.exit_code == 2
    assert person_named.exit_code == 2
    assert "--source" in person_named.output
    assert PERSON not in person_named.output
    assert again.exit_code == 0
    assert "duplicates skipped  6" in again.output
    assert len(fake_kafka.log) == 6
    assert {e.envelope.source_system for e in fake_kafka.log} == {"urn:fi:te-hub:import:good.csv"}


def test_the_command_reports_a_line_no_parser_takes(tmp_path: Path, fake_kafka: MemorySink) -> None:
    huge = "1" * 5000
    path = write_ndjson(
        tmp_path / "huge.ndjson",
        [json.dumps(item("JobSearchEnded"))[:-1] + f', "n": {huge}}}', item("EmploymentStarted")],
    )

    result = CliRunner().invoke(batch_cli.import_command, [str(path)])

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "events published    1" in result.output
    assert "rows rejected       1" in result.output
    assert len(fake_kafka.log) == 1


# --- on the real broker ---------------------------------------------------------------------------


def _env(settings: HubSettings) -> dict[str, str]:
    return hub_environment(
        settings, HUB_PSEUDONYM_SECRET=SECRET, HUB_LOG_LEVEL="DEBUG", HUB_LOG_JSON="true"
    )


async def _chunks_logged(stream: asyncio.StreamReader, wanted: int) -> int:
    """Read the import's JSON log until *wanted* chunks were acknowledged."""
    seen = 0
    while seen < wanted:
        line = await stream.readline()
        if not line:
            break
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("event") == "import.chunk":
            seen += 1
    return seen


def _count(summary: str, name: str) -> int:
    line = next(line for line in summary.splitlines() if line.strip().startswith(name))
    return int(line.split()[-1].replace(",", ""))


async def _event_ids_in_log(settings: HubSettings) -> Counter[UUID]:
    serializer = SingleObjectSerializer()
    return Counter(
        [
            serializer.decode(record.value).record["envelope"]["event_id"]
            async for record in read_topic(settings, settings.topic_customer_path)
            if record.value is not None
        ]
    )


@pytest.mark.kafka
async def test_import_killed_midway_then_run_again_puts_every_event_in_the_log_once(
    hub_settings: HubSettings, tmp_path: Path
) -> None:
    await ensure_topics(hub_settings)
    rows = [jobseeker(n) for n in range(2000)]
    path = write_csv(tmp_path / "jobseekers.csv", rows)
    expected = expected_csv_ids(path, rows)
    command = [sys.executable, "-m", "hub", "import", str(path), "--chunk-size", "100"]

    killed = await asyncio.create_subprocess_exec(
        *command,
        env=_env(hub_settings),
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert killed.stderr is not None
    try:
        chunks = await asyncio.wait_for(_chunks_logged(killed.stderr, 5), timeout=60)
    finally:
        killed.send_signal(signal.SIGKILL)
        await killed.wait()
    assert chunks == 5
    assert killed.returncode == -signal.SIGKILL
    before = await _event_ids_in_log(hub_settings)
    assert 500 <= sum(before.values()) < len(expected)

    started = asyncio.get_running_loop().time()
    again = await asyncio.create_subprocess_exec(
        *command,
        env=_env(hub_settings) | {"HUB_LOG_LEVEL": "INFO"},
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(again.communicate(), timeout=120)
    elapsed = asyncio.get_running_loop().time() - started
    assert again.returncode == 0, err.decode()[-3000:]
    summary = out.decode()
    published, duplicates = (_count(summary, name) for name in ("events published", "duplicates"))
    assert published + duplicates == len(expected)
    assert duplicates >= sum(before.values())  # a commit under way at the kill may add some

    assert await _event_ids_in_log(hub_settings) == Counter({i: 1 for i in expected})
    assert_no_identity_code(err.decode() + summary)
    print(f"re-run: {len(rows)} rows, {len(expected)} events in {elapsed:.1f} s (incl. start-up)")
