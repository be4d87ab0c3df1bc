"""``GET /v1/indicators`` of the ingest API: the reporting store's indicators as JSON.

The store is a real DuckDB file filled through the reporting route (``ReportingStore``) with a
scripted person whose initial interview is corrected after the as-of date; the figures are
worked out by hand (as in tests/test_indicators.py). Authentication is the API's own, with a
read scope; every refusal is a problem, never a 500.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from prometheus_client import CollectorRegistry

from connectors.rest_api.app import create_app
from connectors.rest_api.auth import IngestClients, hash_api_key
from connectors.rest_api.indicators import MAX_LIMIT
from connectors.rest_api.problems import PROBLEM_BASE
from hub.identity import Pseudonymizer
from hub.reporting.store import ReportingStore
from hub.settings import HubSettings
from tests.ingest_fakes import NOW, FakeEnrolments, FakeSink, FixedClock, bearer
from tests.test_indicators import Scenario

READER_KEY = "tehub_test-reader-bi-000000000000000000000000000"
MUNICIPAL_READER_KEY = "tehub_test-municipal-reader-0000000000000000000"
SENDER_KEY = "tehub_test-municipal-sender-0000000000000000000"
EXPERT_EMAIL = "maija.meikalainen@kunta.example.fi"

CLIENTS = f"""
[[clients]]
client_id = "keha-bi"
kind = "report_reader"
source_system = "urn:fi:keha:powerbi"
api_key_sha256 = "{hash_api_key(READER_KEY)}"
read_scopes = ["indicators:read"]

[[clients]]
client_id = "helsinki-finance"
kind = "municipal_system"
source_system = "urn:fi:kunta:091:finance"
api_key_sha256 = "{hash_api_key(MUNICIPAL_READER_KEY)}"
event_types = ["JobseekerRegistered"]
employment_areas = ["08"]
read_scopes = ["indicators:read"]

[[clients]]
client_id = "helsinki-crm"
kind = "municipal_system"
source_system = "urn:fi:kunta:091:crm"
api_key_sha256 = "{hash_api_key(SENDER_KEY)}"
event_types = ["JobseekerRegistered"]
employment_areas = ["08"]
"""


def fill_store(path: Path) -> None:
    """Two interviews in January 2026, one corrected on 10.2.2026.

    P1: start Fri 2.1.2026, recorded as held Wed 7.1 (5, 7 = 2 working days; 6.1 Epiphany),
    corrected on 10.2.2026 to Tue 20.1 (5,7,8,9,12,13,14,15,16,19,20 = 11 working days).
    P2: start Mon 5.1.2026, held Fri 9.1 (7, 8, 9 = 3 working days) by an expert whose staff id
    is an e-mail address.
    As of 5.2.2026: 2 and 3 → median 2.5. Now: 11 and 3 → median 7.
    """
    s = Scenario()
    p1 = s.person()
    original = p1.interview(date(2026, 1, 2), date(2026, 1, 7))
    p1.interview(
        date(2026, 1, 2),
        date(2026, 1, 20),
        recorded=datetime(2026, 2, 10, 8, tzinfo=UTC),
        corrects=original.envelope.event_id,
    )
    s.person().interview(date(2026, 1, 5), date(2026, 1, 9), expert=EXPERT_EMAIL)
    with ReportingStore(path) as store:
        assert store.load_events(s.events) == 3


class Api:
    def __init__(self, store: Path, min_cell: int = 5) -> None:
        pseudonymizer = Pseudonymizer("test-secret-for-the-indicators-api")
        self.app = create_app(
            HubSettings(reporting_store=store, report_min_cell=min_cell),
            FakeSink(),
            IngestClients.from_toml(CLIENTS),
            FakeEnrolments(pseudonymizer),
            FixedClock(NOW),
            pseudonymizer=pseudonymizer,
            registry=CollectorRegistry(),
        )
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://hub.test"
        )

    async def get(self, query: str, key: str = READER_KEY) -> httpx.Response:
        return await self.http.get(f"/v1/indicators?{query}", headers=bearer(key))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    fill_store(tmp_path / "store.duckdb")
    client = Api(tmp_path / "store.duckdb")
    async with client.http:
        yield client


@pytest.fixture
async def bare_api(tmp_path: Path) -> AsyncIterator[Api]:
    """No store: the parameters are checked before the store is asked."""
    client = Api(tmp_path / "no-store.duckdb")
    async with client.http:
        yield client


def _values(body: dict[str, Any], measure: str) -> dict[tuple[str, str, str], Any]:
    return {
        (r["level"], r["code"], r["breakdown"]): (r["value"], r["n"])
        for r in body["rows"]
        if r["measure"] == measure
    }


async def test_the_country_figure_now_and_as_of_an_earlier_day(api: Api) -> None:
    query = "indicator=initial_interview_access&level=country&period=2026-01"
    now = await api.get(query)
    assert now.status_code == 200, now.text
    body = now.json()
    assert body["as_of"] == "now"
    assert body["periods"] == ["2026-01"]
    assert {r["level"] for r in body["rows"]} == {"country"}
    assert _values(body, "median_working_days")[("country", "FI", "")] == (7.0, 2)
    assert _values(body, "interviews")[("country", "FI", "")] == (2.0, 2)

    before = (await api.get(query + "&as_of=2026-02-05")).json()
    assert before["as_of"] == "2026-02-05"
    assert _values(before, "median_working_days")[("country", "FI", "")] == (2.5, 2)
    # An instant before the correction was recorded (08:00 UTC on 10.2) sees the old version.
    early = (await api.get(query + "&as_of=2026-02-10T09:59:00%2B02:00")).json()
    assert _values(early, "median_working_days")[("country", "FI", "")] == (2.5, 2)
    # The moment in UTC, with its offset (a naive label reads as local time in a BI tool).
    assert early["as_of"] == "2026-02-10T07:59:00Z"
    assert {r["as_of"] for r in early["rows"]} == {"2026-02-10T07:59:00Z"}
    none = (await api.get(query + "&as_of=2026-02-10T09:59:00%2B02:00&code=nowhere")).json()
    assert (none["total"], none["as_of"]) == (0, "2026-02-10T07:59:00Z")
    # The rows are those of the report files: the same columns, sorted.
    row = body["rows"][0]
    assert list(row) == [
        "indicator",
        "measure",
        "level",
        "code",
        "period",
        "breakdown",
        "value",
        "n",
        "as_of",
        "suppressed",
    ]
    keys = [(r["measure"], r["breakdown"]) for r in body["rows"]]
    assert keys == sorted(keys)


MUNICIPALITY_QUERY = (
    "indicator=initial_interview_access&level=municipality&code=091&period=2026-01&breakdown="
)


async def test_a_municipal_client_with_the_read_scope_reads_too(api: Api) -> None:
    response = await api.get(MUNICIPALITY_QUERY, key=MUNICIPAL_READER_KEY)
    assert response.status_code == 200, response.text
    # Two people in the municipality: fewer than HUB_REPORT_MIN_CELL (5), suppressed.
    values = _values(response.json(), "median_working_days")
    assert values == {("municipality", "091", ""): (None, None)}
    assert all(r["suppressed"] for r in response.json()["rows"])
    # The country's figure of the same two people is shown.
    country = await api.get("indicator=initial_interview_access&level=country&period=2026-01")
    assert _values(country.json(), "median_working_days")[("country", "FI", "")] == (7.0, 2)
    assert not any(r["suppressed"] for r in country.json()["rows"])


async def test_a_minimum_cell_of_two_shows_the_municipality(tmp_path: Path) -> None:
    fill_store(tmp_path / "store.duckdb")
    api = Api(tmp_path / "store.duckdb", min_cell=2)
    async with api.http:
        response = await api.get(MUNICIPALITY_QUERY, key=MUNICIPAL_READER_KEY)
    values = _values(response.json(), "median_working_days")
    assert values == {("municipality", "091", ""): (7.0, 2)}
    assert not any(r["suppressed"] for r in response.json()["rows"])


async def test_codes_shaped_like_personal_data_are_redacted(api: Api) -> None:
    response = await api.get("indicator=initial_interview_access&level=expert&period=2026-01")
    assert response.status_code == 200
    assert EXPERT_EMAIL not in response.text
    assert {r["code"] for r in response.json()["rows"]} == {"E1", "[REDACTED:e-mail]"}
    # One interview each: every expert's cell is suppressed too.
    assert all(r["suppressed"] and r["n"] is None for r in response.json()["rows"] if r["n"] != 0)


async def test_pages_through_the_rows_with_limit_and_offset(api: Api) -> None:
    base = "indicator=initial_interview_access&period=2026-01"
    whole = (await api.get(base + f"&limit={MAX_LIMIT}")).json()
    total = whole["total"]
    assert total == len(whole["rows"]) > 5
    assert whole["next_offset"] is None
    first = (await api.get(base + "&limit=5")).json()
    assert first["next_offset"] == 5
    assert first["total"] == total
    second = (await api.get(base + "&limit=5&offset=5")).json()
    assert first["rows"] + second["rows"] == whole["rows"][:10]


async def test_authentication_and_the_read_scope(bare_api: Api) -> None:
    api = bare_api
    query = "period=2026-01"
    anonymous = await api.http.get(f"/v1/indicators?{query}")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    wrong = await api.get(query, key="tehub_not-a-key")
    assert wrong.status_code == 401
    sender = await api.get(query, key=SENDER_KEY)
    assert sender.status_code == 403
    assert sender.json()["type"] == PROBLEM_BASE + "insufficient-scope"
    assert sender.json()["missing_scope"] == "indicators:read"
    assert sender.json()["title"] == "The client lacks the scope this request needs"
    assert 'scope="indicators:read"' in sender.headers["www-authenticate"]
    # A reader sends nothing.
    posted = await api.http.post(
        "/v1/events/jobseeker-registered", json={}, headers=bearer(READER_KEY)
    )
    assert posted.status_code == 403


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("", ["period"]),
        ("period=2026-13", ["period"]),
        ("period=January", ["period"]),
        ("period=2026-01&indicator=nope", ["indicator"]),
        ("period=2026-01&level=galaxy", ["level"]),
        ("period=2026-01&code=%3Cscript%3E", ["code"]),
        ("period=2026-01&as_of=yesterday", ["as_of"]),
        ("period=2026-01&as_of=2026-02-05T12:00:00", ["as_of"]),  # no offset
        ("period=2026-01&limit=0", ["limit"]),
        (f"period=2026-01&limit={MAX_LIMIT + 1}", ["limit"]),
        ("period=2026-01&offset=-1", ["offset"]),
        ("period=2026-01&muncipality=091", ["muncipality"]),
        ("period=2026-01&period=2026-02", ["period"]),
        ("period=" + ",".join(["2026-01"] * 25), ["period"]),
        ("level=galaxy&limit=x", ["period", "level", "limit"]),
        # Out of 2000 … five years ahead: they took minutes (a calendar built day by day over
        # the span) or overflowed into a 503.
        ("period=1000-01,9999-11&limit=1", ["period"]),
        ("period=0001-01", ["period"]),
        ("period=0001-03", ["period"]),
        ("period=9999-12", ["period"]),
        ("period=1999-12-31", ["period"]),
        ("period=2000-01,2026-01", ["period"]),  # more than 120 months from first to last
        ("period=20260115", ["period"]),
        ("period=2026-W03-4", ["period"]),
        ("period=2026-01&as_of=0001-01-01T00:00:00%2B14:00", ["as_of"]),
        ("period=2026-01&as_of=9999-12-31", ["as_of"]),
        ("period=2026-01&as_of=1970-01-01", ["as_of"]),
        ("period=2026-01&as_of=2026-W06-4", ["as_of"]),
    ],
)
async def test_bad_parameters_are_400_naming_each_parameter(
    bare_api: Api, query: str, named: list[str]
) -> None:
    response = await bare_api.get(query)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"] == PROBLEM_BASE + "invalid-parameter"
    assert [e["loc"] for e in problem["errors"]] == [["query", name] for name in named]
    for name in named:
        assert name in problem["detail"]


async def test_a_missing_store_is_503_with_retry_after(tmp_path: Path) -> None:
    api = Api(tmp_path / "nothing-here.duckdb")
    async with api.http:
        response = await api.get("period=2026-01")
    assert response.status_code == 503
    assert response.json()["type"] == PROBLEM_BASE + "store-unavailable"
    assert int(response.headers["retry-after"]) > 0
    assert not (tmp_path / "nothing-here.duckdb").exists()  # reading creates nothing


async def test_a_store_locked_by_a_writer_is_503_with_retry_after(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    fill_store(path)
    api = Api(path)
    writer = duckdb.connect(str(path))  # a replay holding the store
    try:
        async with api.http:
            busy = await api.get("period=2026-01&indicator=initial_interview_access")
    finally:
        writer.close()
    assert busy.status_code == 503
    assert busy.json()["type"] == PROBLEM_BASE + "store-unavailable"
    assert busy.headers["retry-after"] == str(busy.json()["retry_after_s"])
    async with Api(path).http as http:
        again = await http.get(
            "/v1/indicators?period=2026-01&indicator=initial_interview_access",
            headers=bearer(READER_KEY),
        )
    assert again.status_code == 200


async def test_a_file_that_is_no_store_is_503_not_500(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    path.write_bytes(b"this is not a DuckDB database" * 100)
    api = Api(path)
    async with api.http:
        response = await api.get("period=2026-01")
    assert response.status_code == 503
    assert response.json()["type"] == PROBLEM_BASE + "store-unavailable"


async def test_the_endpoint_is_in_the_openapi_document(bare_api: Api) -> None:
    document = (await bare_api.http.get("/openapi.json")).json()
    operation = document["paths"]["/v1/indicators"]["get"]
    assert operation["operationId"] == "getIndicators"
    names = {p["name"] for p in operation["parameters"]}
    assert names == {
        "indicator",
        "level",
        "code",
        "period",
        "breakdown",
        "as_of",
        "limit",
        "offset",
    }
    assert {"400", "401", "403", "503"} <= set(operation["responses"])


REPO = Path(__file__).resolve().parent.parent
KILLED_WRITER = """
import itertools, os, sys
from datetime import date
from hub.reporting.store import ReportingStore
import tests.test_indicators as scripted

scripted._ids = itertools.count(10_000)  # ids of its own, none of the store's
s = scripted.Scenario()
s.person(), s.person()  # the store's two people
s.person().interview(date(2026, 1, 12), date(2026, 1, 14))
store = ReportingStore(sys.argv[1])
assert store.load_events(s.events) == 1
os._exit(0)  # killed: no close, no checkpoint; the new fact is in store.duckdb.wal only
"""


async def test_a_writer_killed_before_closing_the_store_is_not_served_stale(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.duckdb"
    fill_store(path)
    api = Api(path)
    query = "indicator=initial_interview_access&level=country&period=2026-01&breakdown="
    async with api.http:
        before = (await api.get(query)).json()
        assert _values(before, "interviews")[("country", "FI", "")] == (2.0, 2)
        main = path.stat()
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", KILLED_WRITER, str(path)],
            check=True,
            cwd=REPO,
            timeout=120,
        )
        # The attack's condition: the main file as it was, the fact in the write-ahead log.
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (main.st_size, main.st_mtime_ns)
        assert path.with_name("store.duckdb.wal").stat().st_size > 0
        after = (await api.get(query)).json()
    # A third interview (Mon 12.1 → Wed 14.1: 2 working days): 2, 3, 11 → median 3.
    assert _values(after, "interviews")[("country", "FI", "")] == (3.0, 3)
    assert _values(after, "median_working_days")[("country", "FI", "")] == (3.0, 3)


async def test_a_query_string_too_long_is_414(bare_api: Api) -> None:
    response = await bare_api.get("period=2026-01&code=" + "A" * 9000)
    assert response.status_code == 414
    assert response.json()["type"] == PROBLEM_BASE + "uri-too-long"
    assert "A" * 20 not in response.text
