"""The ingest API end to end over ASGI, with the in-memory sink and enrolment directory."""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any
from uuid import UUID

import httpx
import pytest
import structlog
from prometheus_client import CollectorRegistry

from connectors.rest_api.app import create_app
from connectors.rest_api.endpoints import ENDPOINTS
from connectors.rest_api.problems import PROBLEM_BASE
from hub.identity import Pseudonymizer
from hub.intake.examples import CORRECTIONS, ENROLMENT_ID, EXAMPLES, PERSON
from hub.logging import configure_logging
from hub.settings import HubSettings
from tests.ingest_fakes import (
    ESPOO_KEY,
    FUND_KEY,
    KELA_KEY,
    MUNICIPAL_KEY,
    NARROW_KEY,
    NOW,
    OTHER_PROVIDER_KEY,
    PROVIDER_KEY,
    FakeEnrolments,
    FakeSink,
    FixedClock,
    bearer,
    make_clients,
)

OTHER_PERSON = "010516B903X"
PATHS = {e.event_type: e.path for e in ENDPOINTS}
KEYS = {
    "ServiceParticipationReported": PROVIDER_KEY,
    "StatementRequested": KELA_KEY,
    "BenefitDaysAccrued": KELA_KEY,
}
SECRET = "test-secret-for-the-ingest-api"


class Api:
    """The app, its fakes and an HTTP client."""

    def __init__(self, settings: HubSettings | None = None) -> None:
        self.sink = FakeSink()
        self.clock = FixedClock(NOW)
        self.pseudonymizer = Pseudonymizer(SECRET)
        self.enrolments = FakeEnrolments(self.pseudonymizer)
        self.app = create_app(
            settings or HubSettings(),
            self.sink,
            make_clients(),
            self.enrolments,
            self.clock,
            pseudonymizer=self.pseudonymizer,
            registry=CollectorRegistry(),
        )
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://hub.test"
        )

    async def post(
        self,
        event_type: str,
        body: Any = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body = EXAMPLES[event_type] if body is None else body
        auth = bearer(key or KEYS.get(event_type, MUNICIPAL_KEY))
        return await self.http.post(
            PATHS[event_type], json=body, headers={**auth, **(headers or {})}
        )

    async def bulk(
        self,
        items: list[dict[str, Any]],
        *,
        ndjson: bool = False,
        key: str = MUNICIPAL_KEY,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        if ndjson:
            content = "\n".join(json.dumps(item) for item in items).encode()
            media = "application/x-ndjson"
        else:
            content, media = json.dumps(items).encode(), "application/json"
        return await self.http.post(
            "/v1/bulk",
            content=content,
            headers={**bearer(key), "Content-Type": media, **(headers or {})},
        )


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    client = Api()
    async with client.http:
        yield client


def changed(event_type: str, **changes: Any) -> dict[str, Any]:
    """The example with top-level changes and ``payload__field`` changes."""
    body = copy.deepcopy(EXAMPLES[event_type])
    for key, value in changes.items():
        if key.startswith("payload__"):
            body["payload"][key.removeprefix("payload__")] = value
        else:
            body[key] = value
    return body


def item(event_type: str, **changes: Any) -> dict[str, Any]:
    return {"event_type": event_type, **changed(event_type, **changes)}


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The problem body, after checking status, media type, type URI and that no code leaked."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_BASE + slug, body
    assert body["status"] == status
    assert body["instance"] == f"urn:te-hub:request:{response.headers['x-request-id']}"
    assert PERSON not in response.text
    assert OTHER_PERSON not in response.text
    return body


def pointers(body: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e.get("pointer"), e["type"]) for e in body["errors"]]


# --- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
async def test_each_endpoint_accepts_its_example(api: Api, event_type: str) -> None:
    response = await api.post(event_type)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "accepted"
    assert "idempotent-replayed" not in response.headers
    [event] = api.sink.events
    envelope = event.envelope
    assert str(envelope.event_id) == body["event_id"]
    assert event.event_type == event_type
    assert envelope.subject == api.pseudonymizer.pseudonym(PERSON)
    assert envelope.employment_area_code == "08"
    assert envelope.recorded_at == NOW
    client = {
        PROVIDER_KEY: "https://valmennus.example/te-hub",
        KELA_KEY: "urn:fi:kela:payer-interface",
    }
    assert envelope.source_system == client.get(KEYS.get(event_type, ""), "urn:fi:kunta:091:crm")
    assert PERSON not in response.text


async def test_the_api_key_may_come_in_x_api_key(api: Api) -> None:
    response = await api.http.post(
        PATHS["JobSearchEnded"],
        json=EXAMPLES["JobSearchEnded"],
        headers={"X-API-Key": MUNICIPAL_KEY},
    )
    assert response.status_code == 202


async def test_a_fund_reports_as_itself(api: Api) -> None:
    body = changed(
        "BenefitDaysAccrued",
        payload__payer={"kind": "UNEMPLOYMENT_FUND", "fund_code": "ote"},
        payload__benefit="EARNINGS_RELATED_ALLOWANCE",
    )
    assert (await api.post("BenefitDaysAccrued", body, key=FUND_KEY)).status_code == 202


# --- authentication and authorisation ----------------------------------------------------------


async def test_no_key_is_401_with_a_challenge(api: Api) -> None:
    response = await api.http.post(PATHS["JobSearchEnded"], json=EXAMPLES["JobSearchEnded"])
    problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == 'Bearer realm="te-hub"'
    wrong = await api.post("JobSearchEnded", key="tehub_not-a-key")
    problem(wrong, 401, "unauthenticated")
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    basic = await api.http.post(
        PATHS["JobSearchEnded"],
        json=EXAMPLES["JobSearchEnded"],
        headers={"Authorization": "Basic eA=="},
    )
    problem(basic, 401, "unauthenticated")
    assert api.sink.calls == 0


async def test_authentication_comes_before_the_body(api: Api) -> None:
    response = await api.http.post(
        PATHS["JobSearchEnded"], content=b"{not json", headers={"Content-Type": "application/json"}
    )
    problem(response, 401, "unauthenticated")


async def test_a_missing_scope_is_403_naming_it(api: Api) -> None:
    response = await api.post("InitialInterviewHeld", key=NARROW_KEY)
    body = problem(response, 403, "insufficient-scope")
    assert body["missing_scope"] == "InitialInterviewHeld"
    assert 'scope="InitialInterviewHeld"' in response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    payer = await api.post("ServiceParticipationReported", key=KELA_KEY)
    assert (
        problem(payer, 403, "insufficient-scope")["missing_scope"] == "ServiceParticipationReported"
    )


async def test_a_municipal_system_reports_only_on_its_areas_residents(api: Api) -> None:
    body = problem(await api.post("JobSearchEnded", key=ESPOO_KEY), 403, "municipality-not-allowed")
    assert pointers(body) == [("#/municipality_code", "municipality-not-allowed")]
    espoo_resident = changed("JobSearchEnded", municipality_code="049")
    assert (await api.post("JobSearchEnded", espoo_resident, key=ESPOO_KEY)).status_code == 202
    kauniainen = changed("JobSearchEnded", municipality_code="235")
    assert (await api.post("JobSearchEnded", kauniainen, key=ESPOO_KEY)).status_code == 202


async def test_a_provider_reports_only_its_own_enrolments(api: Api) -> None:
    other = await api.post("ServiceParticipationReported", key=OTHER_PROVIDER_KEY)
    assert pointers(problem(other, 403, "provider-mismatch")) == [
        ("#/payload/provider_business_id", "provider-mismatch")
    ]
    theirs = changed("ServiceParticipationReported", payload__provider_business_id="2345678-0")
    not_theirs = problem(
        await api.post("ServiceParticipationReported", theirs, key=OTHER_PROVIDER_KEY),
        403,
        "enrolment-not-yours",
    )
    unknown = changed(
        "ServiceParticipationReported", payload__enrolment_id="00000000-0000-4000-8000-00000000000a"
    )
    not_known = problem(
        await api.post("ServiceParticipationReported", unknown, key=PROVIDER_KEY),
        403,
        "enrolment-not-yours",
    )
    # The same answer for someone else's and for an unknown enrolment: nothing to probe.
    assert not_theirs["detail"].replace("2345678-0", "X") == not_known["detail"].replace(
        "1234567-1", "X"
    )
    ours = api.enrolments.known[UUID(ENROLMENT_ID)]
    api.enrolments.known[UUID(ENROLMENT_ID)] = replace(ours, provider_business_id="2345678-0")
    assert (
        await api.post("ServiceParticipationReported", theirs, key=OTHER_PROVIDER_KEY)
    ).status_code == 202


async def test_a_payer_sends_only_as_itself(api: Api) -> None:
    as_fund = changed(
        "StatementRequested",
        payload__payer={"kind": "UNEMPLOYMENT_FUND", "fund_code": "ote"},
        payload__benefit="EARNINGS_RELATED_ALLOWANCE",
    )
    body = problem(
        await api.post("StatementRequested", as_fund, key=KELA_KEY), 403, "payer-mismatch"
    )
    assert pointers(body) == [("#/payload/payer", "payer-mismatch")]
    problem(await api.post("StatementRequested", key=FUND_KEY), 403, "payer-mismatch")
    assert (await api.post("StatementRequested", as_fund, key=FUND_KEY)).status_code == 202


# --- validation --------------------------------------------------------------------------------

RULE_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "JobseekerRegistered",
        {"payload__personal_identity_code": OTHER_PERSON},
        "#/payload/personal_identity_code",
        "identity_code_mismatch",
    ),
    (
        "JobseekerRegistered",
        {"occurred_at": "2026-07-01T12:06:00Z"},
        "#/occurred_at",
        "occurred_in_future",
    ),
    (
        "InitialInterviewHeld",
        {"payload__held_on": "2026-03-10"},
        "#/payload/held_on",
        "date_after_occurred_at",
    ),
    (
        "InitialInterviewHeld",
        {"payload__job_search_started_on": "2026-03-10", "payload__deadline": "2026-03-24"},
        "#/payload/held_on",
        "held_before_job_search_started",
    ),
    (
        "InitialInterviewHeld",
        {"payload__deadline": "2026-03-13"},
        "#/payload/deadline",
        "deadline_mismatch",
    ),
    (
        "InitialInterviewHeld",
        {"payload__within_deadline": False},
        "#/payload/within_deadline",
        "within_deadline_mismatch",
    ),
    (
        "ServiceEnrolled",
        {"payload__planned_end": "2026-04-01"},
        "#/payload/planned_end",
        "planned_end_before_start",
    ),
    (
        "BenefitDaysAccrued",
        {"payload__period_end": "2026-03-01"},
        "#/payload/period_end",
        "period_end_before_start",
    ),
    (
        "ServiceParticipationReported",
        {"payload__absence_days": 3},
        "#/payload/absence_days",
        "absence_days_not_allowed",
    ),
    (
        "ServiceParticipationReported",
        {"payload__interruption_reason": "ILLNESS"},
        "#/payload/interruption_reason",
        "interruption_reason_not_allowed",
    ),
    (
        "ServiceParticipationReported",
        {"payload__kind": "ABSENCE"},
        "#/payload/absence_days",
        "absence_days_missing",
    ),
    (
        "EmploymentStarted",
        {"payload__started_on": "2026-05-05"},
        "#/payload/started_on",
        "date_after_occurred_at",
    ),
]


@pytest.mark.parametrize(
    ("event_type", "changes", "pointer", "rule"),
    RULE_CASES,
    ids=[f"{t}-{r}" for t, _, _, r in RULE_CASES],
)
async def test_each_rule_is_a_specific_problem(
    api: Api, event_type: str, changes: dict[str, Any], pointer: str, rule: str
) -> None:
    body = problem(
        await api.post(event_type, changed(event_type, **changes)), 422, "rule-violation"
    )
    assert (pointer, rule) in pointers(body)
    assert all(e["detail"] for e in body["errors"])
    assert api.sink.calls == 0


SCHEMA_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "JobSearchEnded",
        {"personal_identity_code": "010594Y9033"},
        "#/personal_identity_code",
        "value_error",
    ),
    (
        "JobSearchEnded",
        {"personal_identity_code": "0105941-9032"},
        "#/personal_identity_code",
        "value_error",
    ),
    ("JobSearchEnded", {"municipality_code": "478"}, "#/municipality_code", "value_error"),
    ("JobSearchEnded", {"municipality_code": "999"}, "#/municipality_code", "value_error"),
    ("JobSearchEnded", {"occurred_at": "2026-05-04T09:05:00"}, "#/occurred_at", "timezone_aware"),
    ("JobSearchEnded", {"payload__ended_on": 0}, "#/payload/ended_on", "date_type"),
    ("JobSearchEnded", {"payload__reason": "BORED"}, "#/payload/reason", "enum"),
    ("JobSearchEnded", {"payload__extra": 1}, "#/payload", "extra_forbidden"),
    (
        "JobOfferMade",
        {"payload__employer_business_id": "7654321-3"},
        "#/payload/employer_business_id",
        "value_error",
    ),
    ("BenefitDaysAccrued", {"payload__days_paid": "22"}, "#/payload/days_paid", "int_type"),
    (
        "StatementRequested",
        {"payload__payer": {"kind": "KELA", "fund_code": "nope"}},
        "#/payload/payer/fund_code",
        "value_error",
    ),
]


@pytest.mark.parametrize(
    ("event_type", "changes", "pointer", "error_type"),
    SCHEMA_CASES,
    ids=[f"{t}-{p}-{e}" for t, _, p, e in SCHEMA_CASES],
)
async def test_schema_errors_point_at_the_field_without_the_value(
    api: Api, event_type: str, changes: dict[str, Any], pointer: str, error_type: str
) -> None:
    response = await api.post(event_type, changed(event_type, **changes))
    body = problem(response, 422, "validation-error")
    assert (pointer, error_type) in pointers(body)
    for value in changes.values():
        if isinstance(value, str) and len(value) >= 3:
            assert value not in response.text


async def test_an_identity_code_in_any_field_is_never_echoed(api: Api) -> None:
    body = changed(
        "JobSearchEnded",
        municipality_code=PERSON,
        payload__reason=PERSON,
        payload__ended_on=PERSON,
        payload__extra_field=PERSON,
        event_id=PERSON,
    )
    body[PERSON] = PERSON
    response = await api.post("JobSearchEnded", body)
    problem(response, 422, "validation-error")
    assert PERSON.lower() not in response.text.lower()


async def test_malformed_bodies(api: Api) -> None:
    headers = {**bearer(MUNICIPAL_KEY), "Content-Type": "application/json"}
    path = PATHS["JobSearchEnded"]
    problem(await api.http.post(path, content=b'{"a": ', headers=headers), 400, "malformed-json")
    problem(
        await api.http.post(path, content=b"\xff\xfe{}", headers=headers), 400, "malformed-json"
    )
    problem(
        await api.http.post(path, content=b"[" * 100_000, headers=headers), 400, "malformed-json"
    )
    empty = problem(
        await api.http.post(path, content=b"", headers=headers), 422, "validation-error"
    )
    assert pointers(empty) == [("#", "missing")]
    array = problem(
        await api.http.post(path, content=b"[]", headers=headers), 422, "validation-error"
    )
    assert pointers(array)[0][0] == "#"
    text = {**headers, "Content-Type": "text/plain"}
    response = await api.http.post(path, content=b"{}", headers=text)
    problem(response, 415, "unsupported-media-type")
    assert response.headers["accept-post"] == "application/json"
    no_type = {"Authorization": f"Bearer {MUNICIPAL_KEY}"}
    problem(
        await api.http.post(path, content=b"{}", headers=no_type), 415, "unsupported-media-type"
    )
    big = {**headers, "Content-Length": str(10**7)}
    problem(await api.http.post(path, content=b"{}", headers=big), 413, "content-too-large")
    problem(
        await api.http.post(path, content=b" " * 300_000, headers=headers), 413, "content-too-large"
    )

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(40):
            yield b" " * 10_000

    response = await api.http.post(path, content=chunked(), headers=headers)
    assert "content-length" not in response.request.headers
    problem(response, 413, "content-too-large")
    assert api.sink.calls == 0


async def test_numbers_and_headers_no_parser_takes_are_problems_not_500(api: Api) -> None:
    """Python's int() refuses more than 4,300 digits with ValueError (not JSONDecodeError):
    the JSON-array bulk's first pass gave 500 for it."""
    huge = "1" * 5000
    body = json.dumps([item("JobSearchEnded")])[:-2] + f', "n": {huge}}}]'
    headers = {**bearer(MUNICIPAL_KEY), "Content-Type": "application/json"}
    found = problem(
        await api.http.post("/v1/bulk", content=body, headers=headers), 400, "malformed-json"
    )
    assert huge[:20] not in json.dumps(found)
    ndjson = {**headers, "Content-Type": "application/x-ndjson"}
    problem(
        await api.http.post("/v1/bulk", content=body[1:-1], headers=ndjson), 400, "malformed-json"
    )
    single = json.dumps(EXAMPLES["JobSearchEnded"])[:-1] + f', "n": {huge}}}'
    path = PATHS["JobSearchEnded"]
    problem(await api.http.post(path, content=single, headers=headers), 400, "malformed-json")
    for length in (b"9" * 5000, "²".encode("latin-1"), b"1e9"):  # "²".isdigit() holds
        response = await api.http.post(
            path, content=b"{}", headers={**headers, "Content-Length": length}
        )
        assert response.status_code < 500, response.text
    assert api.sink.calls == 0


async def test_unknown_paths_and_methods(api: Api) -> None:
    auth = bearer(MUNICIPAL_KEY)
    body = problem(
        await api.http.post("/v1/events/service-participation-reported", json={}, headers=auth),
        404,
        "unknown-event-type",
    )
    assert "/v1/providers/participation" in body["detail"]
    problem(
        await api.http.post("/v1/events/no-such-thing", json={}, headers=auth),
        404,
        "unknown-event-type",
    )
    problem(await api.http.get("/v2/anything"), 404, "not-found")
    response = await api.http.get(PATHS["JobSearchEnded"], headers=auth)
    problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "POST"


# --- idempotency and the sink ------------------------------------------------------------------


async def test_a_retry_with_the_same_key_gets_the_original_answer(api: Api) -> None:
    key = {"Idempotency-Key": "crm-4711"}
    first = await api.post("JobSearchEnded", headers=key)
    again = await api.post("JobSearchEnded", headers={"Idempotency-Key": '"crm-4711"'})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(api.sink.events) == 1
    other = changed("JobSearchEnded", payload__reason="EDUCATION")
    conflict = problem(
        await api.post("JobSearchEnded", other, headers=key), 422, "idempotency-conflict"
    )
    assert "different request" in conflict["detail"]
    assert len(api.sink.events) == 1
    # Keys belong to a client: the same key from another client is another submission.
    espoo = changed("JobSearchEnded", municipality_code="049")
    assert (await api.post("JobSearchEnded", espoo, key=ESPOO_KEY, headers=key)).status_code == 202


async def test_without_a_key_identical_requests_are_one_event(api: Api) -> None:
    first = await api.post("JobSearchEnded")
    same = await api.post(
        "JobSearchEnded", dict(reversed(list(EXAMPLES["JobSearchEnded"].items())))
    )
    assert same.json() == first.json()
    assert same.headers["idempotent-replayed"] == "true"
    other = await api.post("JobSearchEnded", changed("JobSearchEnded", payload__reason="OTHER"))
    assert other.status_code == 202
    assert other.json()["event_id"] != first.json()["event_id"]
    assert len(api.sink.events) == 2


async def test_a_client_event_id_is_the_dedupe_key(api: Api) -> None:
    first = await api.post("JobseekerRegistered")
    assert first.json()["event_id"] == EXAMPLES["JobseekerRegistered"]["event_id"]
    other = changed("JobseekerRegistered", payload__phone=None)
    problem(await api.post("JobseekerRegistered", other), 422, "idempotency-conflict")


async def test_sink_unavailable_is_503_then_the_retry_succeeds(api: Api) -> None:
    api.sink.available = False
    response = await api.post("JobSearchEnded", headers={"Idempotency-Key": "k1"})
    body = problem(response, 503, "sink-unavailable")
    assert response.headers["retry-after"] == "7"
    assert body["retry_after_s"] == 7
    assert api.sink.events == []
    problem(await api.http.get("/ready"), 503, "not-ready")
    api.sink.available = True
    retry = await api.post("JobSearchEnded", headers={"Idempotency-Key": "k1"})
    assert retry.status_code == 202
    assert "idempotent-replayed" not in retry.headers
    assert len(api.sink.events) == 1
    assert (await api.http.get("/ready")).json() == {"status": "ready"}


async def test_not_ready_while_the_enrolment_directory_reads_the_log(api: Api) -> None:
    api.enrolments.catching_up = True
    body = problem(await api.http.get("/ready"), 503, "not-ready")
    assert "enrolment directory" in body["detail"]
    api.enrolments.catching_up = False
    assert (await api.http.get("/ready")).json() == {"status": "ready"}


async def test_an_unexpected_failure_is_a_500_without_internals(api: Api) -> None:
    async def broken(submissions: Any) -> Any:
        raise RuntimeError(f"secret internals of {PERSON}")

    api.sink.submit = broken  # type: ignore[method-assign]
    response = await api.post("JobSearchEnded")
    body = problem(response, 500, "internal-error")
    assert "secret" not in response.text
    assert "RuntimeError" not in response.text
    assert body["detail"]


# --- bulk --------------------------------------------------------------------------------------

PATH_ITEMS = [
    item(t)
    for t in EXAMPLES
    if t not in ("ServiceParticipationReported", "StatementRequested", "BenefitDaysAccrued")
]


@pytest.mark.parametrize("ndjson", [False, True], ids=["json", "ndjson"])
async def test_a_bulk_is_one_atomic_submission(api: Api, ndjson: bool) -> None:
    response = await api.bulk(PATH_ITEMS, ndjson=ndjson)
    assert response.status_code == 202, response.text
    ids = response.json()["event_ids"]
    assert api.sink.calls == 1
    assert [str(e.envelope.event_id) for e in api.sink.events] == ids
    assert [e.event_type for e in api.sink.events] == [i["event_type"] for i in PATH_ITEMS]
    again = await api.bulk(PATH_ITEMS, ndjson=not ndjson)
    assert again.json()["event_ids"] == ids
    assert again.headers["idempotent-replayed"] == "true"
    assert len(api.sink.events) == len(PATH_ITEMS)


async def test_bulk_items_dedupe_with_single_requests(api: Api) -> None:
    single = await api.post("JobSearchEnded")
    response = await api.bulk([item("JobSearchEnded"), item("JobOfferMade")])
    assert response.json()["event_ids"][0] == single.json()["event_id"]
    assert len(api.sink.events) == 2


async def test_ndjson_errors_name_the_line(api: Api) -> None:
    lines = [
        json.dumps(item("JobseekerRegistered")),
        "",
        json.dumps(item("JobSearchEnded", payload__ended_on="yesterday")),
        json.dumps(item("JobOfferMade", municipality_code="12")),
    ]
    headers = {**bearer(MUNICIPAL_KEY), "Content-Type": "application/x-ndjson"}
    response = await api.http.post("/v1/bulk", content="\n".join(lines), headers=headers)
    body = problem(response, 422, "validation-error")
    found = [(e["line"], e["pointer"]) for e in body["errors"]]
    assert found == [(3, "#/1/payload/ended_on"), (4, "#/2/municipality_code")]
    broken = "\n".join([lines[0], '{"event_type": ', lines[0]])
    body = problem(
        await api.http.post("/v1/bulk", content=broken, headers=headers), 400, "malformed-json"
    )
    assert [e["line"] for e in body["errors"]] == [2]
    unknown = json.dumps({**item("JobSearchEnded"), "event_type": "Nope"})
    body = problem(
        await api.http.post("/v1/bulk", content=unknown, headers=headers), 422, "validation-error"
    )
    assert pointers(body) == [("#/0", "union_tag_invalid")]
    assert "Nope" not in response.text
    assert api.sink.calls == 0


async def test_bulk_json_errors_point_into_the_array(api: Api) -> None:
    items = [item("JobSearchEnded"), item("JobOfferMade", payload__binding="yes")]
    body = problem(await api.bulk(items), 422, "validation-error")
    assert pointers(body) == [("#/1/payload/binding", "bool_type")]
    body = problem(await api.bulk({"not": "an array"}), 422, "validation-error")  # type: ignore[arg-type]
    problem(await api.bulk([]), 422, "validation-error")


async def test_bulk_interview_before_registration_is_refused(api: Api) -> None:
    early_interview = item(
        "InitialInterviewHeld",
        occurred_at="2026-03-02T09:00:00+02:00",
        payload__held_on="2026-03-02",
    )
    for ndjson in (False, True):
        response = await api.bulk([item("JobseekerRegistered"), early_interview], ndjson=ndjson)
        body = problem(response, 422, "rule-violation")
        assert pointers(body) == [("#/1/occurred_at", "interview_before_registration")]
        assert body["errors"][0].get("line") == (2 if ndjson else None)
    assert api.sink.calls == 0


async def test_bulk_limits_and_scopes() -> None:
    small = Api(HubSettings(ingest_bulk_max_items=3))
    async with small.http:
        problem(await small.bulk([item("JobSearchEnded")] * 4), 422, "too-many-items")
        problem(await small.bulk([item("JobSearchEnded")] * 4, ndjson=True), 422, "too-many-items")
        items = [item("JobseekerRegistered"), item("InitialInterviewHeld")]
        response = await small.bulk(items, key=NARROW_KEY)
        body = problem(response, 403, "forbidden-items")
        assert body["missing_scope"] == "InitialInterviewHeld"
        assert [(e["loc"], e["type"]) for e in body["errors"]] == [
            ([1, "event_type"], "insufficient-scope")
        ]
        problem(await small.bulk(items, key=ESPOO_KEY), 403, "forbidden-items")
        assert small.sink.calls == 0


async def test_bulk_conflict_writes_nothing_and_names_the_item(api: Api) -> None:
    await api.post("JobseekerRegistered")
    changed_registration = item("JobseekerRegistered", payload__phone=None)
    response = await api.bulk([item("JobSearchEnded"), changed_registration])
    body = problem(response, 422, "idempotency-conflict")
    assert pointers(body) == [("#/1", "idempotency_conflict")]
    assert len(api.sink.events) == 1  # all or none: the new JobSearchEnded is not written


async def test_bulk_under_one_idempotency_key(api: Api) -> None:
    key = {"Idempotency-Key": "batch-2026-03-02"}
    first = await api.bulk(PATH_ITEMS[:3], headers=key)
    again = await api.bulk(PATH_ITEMS[:3], headers=key)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    problem(await api.bulk(PATH_ITEMS[1:4], headers=key), 422, "idempotency-conflict")


async def test_a_bulk_is_not_written_while_the_sink_is_down(api: Api) -> None:
    api.sink.available = False
    problem(await api.bulk(PATH_ITEMS), 503, "sink-unavailable")
    assert api.sink.events == []
    api.sink.available = True
    assert (await api.bulk(PATH_ITEMS)).status_code == 202


# --- operations --------------------------------------------------------------------------------


async def test_request_ids(api: Api) -> None:
    response = await api.http.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"] == "abc-123"
    for bad in (PERSON, "x" * 200, "a b"):
        echoed = (await api.http.get("/health", headers={"X-Request-ID": bad})).headers[
            "x-request-id"
        ]
        assert echoed != bad
        assert len(echoed) == 32


async def test_metrics(api: Api) -> None:
    await api.post("JobSearchEnded")
    await api.post("JobSearchEnded", changed("JobSearchEnded", payload__reason="BORED"))
    await api.http.get("/nowhere/at/all")
    text = (await api.http.get("/metrics")).text
    route = 'route="/v1/events/job-search-ended"'
    assert f'hub_ingest_requests_total{{method="POST",{route},status="202"}} 1.0' in text
    assert 'hub_ingest_rejects_total{reason="validation-error"} 1.0' in text
    assert 'hub_ingest_events_total{event_type="JobSearchEnded",outcome="accepted"} 1.0' in text
    assert 'hub_ingest_publish_seconds_count{outcome="ok"} 1.0' in text
    assert 'route="unmatched"' in text
    assert "/nowhere" not in text


async def test_openapi_documents_the_contract(api: Api) -> None:
    document = (await api.http.get("/openapi.json")).json()
    assert document["info"]["title"] == "TE hub ingest API"
    assert set(document["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
    schemas = document["components"]["schemas"]
    for endpoint in ENDPOINTS:
        operation = document["paths"][endpoint.path]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        model = ref.rsplit("/", 1)[-1]
        assert model == f"{endpoint.event_type}Request"
        correction = CORRECTIONS.get(endpoint.event_type)
        expected = [EXAMPLES[endpoint.event_type], *([correction] if correction else [])]
        assert schemas[model]["examples"] == expected
        assert "application/problem+json" in operation["responses"]["422"]["content"]
        assert operation["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}]
    bulk = document["paths"]["/v1/bulk"]["post"]["requestBody"]["content"]
    assert set(bulk) == {"application/json", "application/x-ndjson"}
    assert bulk["application/json"]["schema"]["maxItems"] == 5000
    interview = schemas["InitialInterviewHeldRequest"]["properties"]
    assert interview["corrects_event_id"]["anyOf"][0] == {"format": "uuid", "type": "string"}
    assert interview["retracted"]["default"] is False
    assert "recorded last wins" in interview["corrects_event_id"]["description"]


# --- corrections ---------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(CORRECTIONS))
async def test_each_correction_example_is_accepted_with_its_fields(
    api: Api, event_type: str
) -> None:
    response = await api.post(event_type, CORRECTIONS[event_type])
    assert response.status_code == 202, response.text
    [event] = api.sink.events
    assert str(event.envelope.event_id) == response.json()["event_id"]
    assert str(event.envelope.corrects_event_id) == CORRECTIONS[event_type]["corrects_event_id"]
    assert event.envelope.retracted is CORRECTIONS[event_type].get("retracted", False)


async def test_a_first_version_has_no_correction_fields(api: Api) -> None:
    await api.post("JobSearchEnded")
    [event] = api.sink.events
    assert event.envelope.corrects_event_id is None
    assert event.envelope.retracted is False


async def test_a_correction_under_the_originals_idempotency_key_is_a_new_version(
    api: Api,
) -> None:
    """Keys by business id: original, correction and retraction share an Idempotency-Key; each
    is written once, a resend of each is answered with its own receipt."""
    key = {"Idempotency-Key": "crm-end-4711"}
    first = (await api.post("JobSearchEnded", headers=key)).json()["event_id"]
    correction = changed("JobSearchEnded", corrects_event_id=first, payload__reason="EDUCATION")
    fixed = await api.post("JobSearchEnded", correction, headers=key)
    assert fixed.status_code == 202, fixed.text
    assert "idempotent-replayed" not in fixed.headers
    fixed_id = fixed.json()["event_id"]
    assert fixed_id != first
    again = await api.post("JobSearchEnded", correction, headers=key)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["event_id"] == fixed_id
    retraction = {**correction, "retracted": True}
    gone = await api.post("JobSearchEnded", retraction, headers=key)
    assert gone.status_code == 202, gone.text
    assert gone.json()["event_id"] not in (first, fixed_id)
    assert (await api.post("JobSearchEnded", retraction, headers=key)).headers[
        "idempotent-replayed"
    ] == "true"
    envelopes = [e.envelope for e in api.sink.events]
    assert [str(e.event_id) for e in envelopes] == [first, fixed_id, gone.json()["event_id"]]
    assert [e.corrects_event_id for e in envelopes] == [None, UUID(first), UUID(first)]
    assert [e.retracted for e in envelopes] == [False, False, True]
    assert api.sink.events[1].payload.model_dump()["reason"] == "EDUCATION"
    # Another correction of the same fact under the same key is another request: a conflict.
    other = changed("JobSearchEnded", corrects_event_id=first, payload__reason="OTHER")
    problem(await api.post("JobSearchEnded", other, headers=key), 422, "idempotency-conflict")


async def test_without_a_key_a_correction_with_the_same_content_is_not_its_original(
    api: Api,
) -> None:
    first = (await api.post("JobSearchEnded")).json()["event_id"]
    same_content = changed("JobSearchEnded", corrects_event_id=first)
    fixed = await api.post("JobSearchEnded", same_content)
    assert fixed.status_code == 202
    assert "idempotent-replayed" not in fixed.headers
    assert fixed.json()["event_id"] != first
    assert (await api.post("JobSearchEnded", same_content)).json() == fixed.json()
    assert len(api.sink.events) == 2


async def test_a_client_event_id_correction_names_the_first_version(api: Api) -> None:
    first = EXAMPLES["JobseekerRegistered"]["event_id"]
    await api.post("JobseekerRegistered")
    correction = changed(
        "JobseekerRegistered",
        event_id="0b6f2d1e-4c3a-4f5b-9d8e-7a6c5b4d3e2f",
        corrects_event_id=first,
        payload__phone=None,
    )
    response = await api.post("JobseekerRegistered", correction)
    assert response.status_code == 202, response.text
    assert response.json()["event_id"] == "0b6f2d1e-4c3a-4f5b-9d8e-7a6c5b4d3e2f"
    assert api.sink.events[1].envelope.corrects_event_id == UUID(first)
    assert api.sink.events[1].payload.model_dump()["phone"] is None


CORRECTION_CASES: list[tuple[dict[str, Any], int, str, str, str]] = [
    (
        {"corrects_event_id": "not-a-uuid"},
        422,
        "validation-error",
        "#/corrects_event_id",
        "uuid_parsing",
    ),
    ({"corrects_event_id": 17}, 422, "validation-error", "#/corrects_event_id", "uuid_type"),
    ({"retracted": "true"}, 422, "validation-error", "#/retracted", "bool_type"),
    (
        {"retracted": True},
        422,
        "rule-violation",
        "#/retracted",
        "retracted_without_corrects_event_id",
    ),
    (
        {
            "event_id": EXAMPLES["JobseekerRegistered"]["event_id"],
            "corrects_event_id": EXAMPLES["JobseekerRegistered"]["event_id"],
        },
        422,
        "rule-violation",
        "#/corrects_event_id",
        "corrects_itself",
    ),
]


@pytest.mark.parametrize(
    ("changes", "status", "slug", "pointer", "error_type"),
    CORRECTION_CASES,
    ids=[e for *_, e in CORRECTION_CASES],
)
async def test_bad_correction_fields_are_specific_problems(
    api: Api, changes: dict[str, Any], status: int, slug: str, pointer: str, error_type: str
) -> None:
    body = problem(
        await api.post("JobSearchEnded", changed("JobSearchEnded", **changes)), status, slug
    )
    assert pointers(body) == [(pointer, error_type)]
    assert all(e["detail"] for e in body["errors"])
    bulk = problem(
        await api.bulk([item("JobOfferMade"), item("JobSearchEnded", **changes)]), status, slug
    )
    assert pointers(bulk) == [("#/1" + pointer[1:], error_type)]
    assert api.sink.calls == 0


async def test_a_bulk_of_corrections_under_the_originals_key(api: Api) -> None:
    key = {"Idempotency-Key": "batch-2026-03-09"}
    items = [item("JobSearchConversationHeld"), item("JobOfferMade")]
    first = (await api.bulk(items, headers=key)).json()["event_ids"]
    corrections = [
        item("JobSearchConversationHeld", corrects_event_id=first[0], payload__channel="VIDEO"),
        item("JobOfferMade", corrects_event_id=first[1], retracted=True),
    ]
    for ndjson in (False, True):
        response = await api.bulk(corrections, headers=key, ndjson=ndjson)
        assert response.status_code == 202, response.text
        assert not set(response.json()["event_ids"]) & set(first)
    assert response.headers["idempotent-replayed"] == "true"  # the second time: a resend
    fixed, gone = api.sink.events[2:]
    assert len(api.sink.events) == 4
    assert (str(fixed.envelope.corrects_event_id), fixed.envelope.retracted) == (first[0], False)
    assert fixed.payload.model_dump()["channel"] == "VIDEO"
    assert (str(gone.envelope.corrects_event_id), gone.envelope.retracted) == (first[1], True)


# --- logs --------------------------------------------------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging(HubSettings(log_level="DEBUG"), stream=stream)
    yield stream
    for handler in [h for h in root.handlers if h.get_name() == "hub"]:
        root.removeHandler(handler)
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


async def test_logs_carry_ids_but_never_identity_codes_or_names(
    api: Api, log_stream: io.StringIO
) -> None:
    accepted = await api.post("JobseekerRegistered", headers={"X-Request-ID": "req-1"})
    await api.post(
        "JobseekerRegistered", changed("JobseekerRegistered", personal_identity_code="010594Y9033")
    )
    await api.bulk([item("JobSearchEnded")], ndjson=True)
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    event_line = next(line for line in lines if line["event"] == "event accepted")
    assert event_line["request_id"] == "req-1"
    assert event_line["event_id"] == accepted.json()["event_id"]
    assert event_line["client_id"] == "helsinki-crm"
    assert "correlation_id" in event_line
    text = log_stream.getvalue()
    for secret in (PERSON, "010594Y9033", "Meikäläinen", "maija.meikalainen"):
        assert secret not in text
