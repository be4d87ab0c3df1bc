"""The register poller against a real HTTP feed on 127.0.0.1 that fails, throttles and goes down.

What must hold whatever happens: every feed item becomes its events exactly once in the sink
(counted by event id), a corrected row becomes one correction event, the cursor is committed with
the events and survives restarts with an empty state directory, bad items are rejected with a
reason and never stop the rest, and every request has its own X-Road-Id. Sleeps are faked so
that backoff costs no wall time. The same on the real broker: tests/test_poller_on_kafka.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

import connectors.poller.cli as poller_cli
from connectors.poller import (
    Backoff,
    ChangeMapper,
    CursorFileError,
    JobseekerChange,
    LegacyCursorFile,
    RegisterPoller,
)
from connectors.poller.mapping import HELSINKI, POLLER_NAMESPACE
from connectors.xroad import XRoadClient, XRoadRefused, XRoadService, XRoadTLSError, tls_verify
from hub.codes import employment_area_of
from hub.identity import IDENTITY_CODE_PATTERN, Pseudonymizer
from hub.serde.registry import SchemaRegistryClient, SchemaRegistryError
from hub.settings import HubSettings, get_settings
from hub.sink import EventNotWritable, Receipt, SourcePosition, Submission
from tests.poller_fakes import (
    CLIENT_ID,
    SERVICE_ID,
    FakeSleep,
    MemorySink,
    feed_fixture,
)
from tests.xroad_feed_server import (
    FeedServer,
    FeedState,
    refusing_client_without_certificate,
    running_feed,
)

SERVICE = XRoadService.parse(SERVICE_ID)
FEED = feed_fixture()
PAGE = 20
PAGES = -(-len(FEED.items) // PAGE)


MAPPER = ChangeMapper(SERVICE, Pseudonymizer.from_settings(HubSettings()))
SOURCE = f"poller:{SERVICE_ID}"


def correction_ids(corrected_rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
    """The event ids the corrections of these row versions must have."""
    ids = set()
    for row in corrected_rows:
        mapped = MAPPER.map_items([row])
        (registered,) = mapped.submissions
        ids.add(MAPPER.correction_of(registered, mapped.origins[0]).event.envelope.event_id)
    return ids


def assert_exactly_once(
    sink: MemorySink,
    expected: set[tuple[str, str]] = FEED.expected,
    corrected_rows: Sequence[dict[str, Any]] = FEED.corrections,
) -> None:
    counts = sink.event_id_counts()
    assert [event_id for event_id, n in counts.items() if n > 1] == []
    first = {MAPPER.event_id(item_id, kind) for item_id, kind in expected}
    assert set(counts) == first | correction_ids(corrected_rows)


@pytest.fixture
def feed() -> Iterator[FeedServer]:
    with running_feed(FeedState(service_path=SERVICE.path, items=list(FEED.items))) as server:
        yield server


def settings_for(url: str, state_dir: Path, **overrides: Any) -> HubSettings:
    values: dict[str, Any] = {
        "state_dir": state_dir,
        "xroad_security_server_url": url,
        "xroad_client": CLIENT_ID,
        "poller_page_size": PAGE,
        "poller_interval_s": 5.0,
        "poller_backoff_initial_s": 1.0,
        "poller_backoff_max_s": 60.0,
        **overrides,
    }
    return HubSettings.model_validate(values)


@asynccontextmanager
async def poller_for(
    settings: HubSettings,
    sink: MemorySink,
    sleep: FakeSleep | None = None,
    uniform: float = 1.0,
) -> AsyncIterator[RegisterPoller]:
    """A fresh poller (as after a process restart) with its own X-Road client."""
    async with XRoadClient.from_settings(settings) as client:
        yield RegisterPoller.from_settings(
            settings,
            client=client,
            service=SERVICE,
            sink=sink,
            sleep=sleep or FakeSleep(),
            uniform=lambda: uniform,
        )


def saved_cursor(sink: MemorySink) -> str | None:
    """The cursor the sink committed with the events."""
    return sink.positions.get(SOURCE)


# --- X-Road --------------------------------------------------------------------------------------


def test_service_id_gives_path_source_uri_and_file_name() -> None:
    assert SERVICE.path == "/r1/FI-TEST/GOV/0245437-2/KEHA/jobseeker-changes"
    assert SERVICE.uri == "urn:fi:x-road:FI-TEST/GOV/0245437-2/KEHA/jobseeker-changes"
    assert SERVICE.slug == "FI-TEST.GOV.0245437-2.KEHA.jobseeker-changes"
    for bad in ("FI/GOV/0245437-2/KEHA", "FI/GOV/0245437-2/KEHA/a b", "FI/GOV//KEHA/svc"):
        with pytest.raises(ValueError, match="X-Road"):
            XRoadService.parse(bad)


async def test_requests_carry_client_user_and_a_fresh_x_road_id(
    feed: FeedServer, tmp_path: Path
) -> None:
    async with httpx.AsyncClient() as plain:
        answer = await plain.get(f"{feed.url}{SERVICE.path}")
    assert answer.status_code == 400  # no X-Road-Client: the security server refuses

    settings = settings_for(feed.url, tmp_path, xroad_user_id="te-hub-poller")
    with capture_logs() as logs:
        async with XRoadClient.from_settings(settings) as client:
            for _ in range(3):
                page = await client.get_json(SERVICE, {"limit": 1})
    assert len(page["items"]) == 1
    state = feed.state
    assert state.clients == [CLIENT_ID] * 3
    assert state.user_ids == ["te-hub-poller"] * 3
    assert len(set(state.x_road_ids)) == 3
    assert all(uuid.UUID(x).version == 4 for x in state.x_road_ids)
    logged = [line["x_road_id"] for line in logs if line["event"] == "xroad.request"]
    assert logged == state.x_road_ids


# --- exactly once ---------------------------------------------------------------------------------


class _GoesDownAfter(MemorySink):
    """Takes the feed server down right after acknowledging its Nth page."""

    def __init__(self, server: FeedServer, after_pages: int) -> None:
        super().__init__()
        self.server = server
        self.after_pages = after_pages
        self.acked = 0

    async def submit(
        self, submissions: Sequence[Submission], position: SourcePosition | None = None
    ) -> list[Receipt]:
        receipts = await super().submit(submissions, position)
        self.acked += 1
        if self.acked == self.after_pages:
            self.server.stop()
        return receipts


async def test_every_item_once_across_failures_throttling_and_downtime(
    feed: FeedServer, tmp_path: Path
) -> None:
    feed.state.fail_every = 7  # 500 and 503 + Retry-After: 2, alternately
    feed.state.faults = {3: 429}  # Retry-After: 2 as well
    sink = _GoesDownAfter(feed, after_pages=4)
    sink.unavailable_on = {1, 9}  # the broker is away twice (retry_after_s=1), on page 1 first
    down_sleeps = 0

    def bring_back(_: int, __: float) -> None:
        nonlocal down_sleeps
        if not feed.running:
            down_sleeps += 1
            if down_sleeps == 4:
                feed.start()

    sleep = FakeSleep(bring_back)
    # No jitter (uniform 0): every delay is then exactly the Retry-After that was honoured.
    async with poller_for(settings_for(feed.url, tmp_path), sink, sleep, uniform=0.0) as poller:
        stats = await poller.run(until_idle=True)

    assert_exactly_once(sink)
    assert stats.written == len(FEED.expected) + len(FEED.corrections)
    assert stats.corrections == len(FEED.corrections)
    assert stats.duplicates == FEED.returning
    assert stats.rejected == len(FEED.bad_ids)
    assert stats.items == len(FEED.items)
    assert down_sleeps == 4
    statuses = feed.state.statuses
    assert {429, 500, 503} <= set(statuses)
    failed_requests = len(statuses) - statuses.count(200)
    assert stats.errors == len(sleep.delays) == failed_requests + down_sleeps + 2
    assert statuses.count(200) == PAGES + 2  # the two pages the sink could not take, again
    # Retry-After honoured: 2 s per 429/503, 1 s per sink outage, no delay otherwise.
    assert sleep.delays.count(2.0) == statuses.count(429) + statuses.count(503)
    assert sleep.delays.count(1.0) == 2
    assert len(set(feed.state.x_road_ids)) == feed.state.requests == len(statuses)
    assert saved_cursor(sink) == f"c{len(FEED.items)}"
    # Rejects are recorded before the commit, yet once although page 1 was tried twice.
    reject_file = tmp_path / "poller" / f"{SERVICE.slug}.rejected.jsonl"
    recorded = [json.loads(line)["item_id"] for line in reject_file.read_text().splitlines()]
    assert recorded == FEED.bad_ids


async def test_cursor_survives_a_restart_and_new_items_are_picked_up(
    feed: FeedServer, tmp_path: Path
) -> None:
    sink = MemorySink()
    settings = settings_for(feed.url, tmp_path / "pod-1")
    async with poller_for(settings, sink) as first:
        first_stats = await first.run(max_pages=3)
    assert first_stats.pages == 3
    assert saved_cursor(sink) == f"c{3 * PAGE}"
    assert not list((tmp_path / "pod-1").rglob("*.json"))  # no cursor file any more

    # A new pod: nothing of the first one's state directory, only the sink's position.
    settings = settings_for(feed.url, tmp_path / "pod-2")
    async with poller_for(settings, sink) as second:
        await second.resume()
        assert second.cursor == f"c{3 * PAGE}"
        second_stats = await second.run(until_idle=True)
    assert feed.state.pages_after[3] == f"c{3 * PAGE}"  # resumed where the first stopped
    assert len(set(feed.state.pages_after)) == len(feed.state.pages_after)  # none read twice
    assert second_stats.duplicates == FEED.returning  # only the rows that came back
    assert_exactly_once(sink)

    more = feed_fixture(valid_rows=10, returning=0, corrected=0, seed=99)
    new_rows = [
        {**item, "id": f"new-{item['id']}"}
        for item in more.items
        if isinstance(item, dict) and str(item.get("id")).startswith("row-")
    ]
    expected_new = {(f"new-{item_id}", kind) for item_id, kind in more.expected}
    feed.state.items.extend(new_rows)
    async with poller_for(settings, sink) as third:
        third_stats = await third.run(until_idle=True)
    assert feed.state.pages_after[-1] == f"c{len(FEED.items)}"
    assert third_stats.written == len(expected_new)
    assert third_stats.duplicates == 0
    assert_exactly_once(sink, FEED.expected | expected_new)
    assert saved_cursor(sink) == f"c{len(feed.state.items)}"


class _CrashAfterCommit(MemorySink):
    """The process dies right after the sink committed a page (events and cursor)."""

    def __init__(self, crash_on: int) -> None:
        super().__init__()
        self.crash_on: int | None = crash_on
        self.committed_before_crash = 0

    async def submit(
        self, submissions: Sequence[Submission], position: SourcePosition | None = None
    ) -> list[Receipt]:
        receipts = await super().submit(submissions, position)
        if self.attempts == self.crash_on:
            self.committed_before_crash = sum(not r.duplicate for r in receipts)
            raise RuntimeError("simulated crash after the sink's commit")
        return receipts


async def test_a_crash_after_the_commit_resumes_after_that_page_from_the_sink(
    feed: FeedServer, tmp_path: Path
) -> None:
    sink = _CrashAfterCommit(crash_on=3)
    async with poller_for(settings_for(feed.url, tmp_path / "pod-1"), sink) as doomed:
        with pytest.raises(RuntimeError, match="simulated crash"):
            await doomed.run(until_idle=True)
    assert saved_cursor(sink) == f"c{3 * PAGE}"  # page 3 was committed with its cursor
    assert sink.committed_before_crash > 0

    sink.crash_on = None  # the log (its receipts and positions) outlives the poller process
    async with poller_for(settings_for(feed.url, tmp_path / "pod-2"), sink) as restarted:
        stats = await restarted.run(until_idle=True)
    assert feed.state.pages_after[:4] == [None, f"c{PAGE}", f"c{2 * PAGE}", f"c{3 * PAGE}"]
    assert len(set(feed.state.pages_after)) == len(feed.state.pages_after)  # none read twice
    assert stats.duplicates == FEED.returning
    assert_exactly_once(sink)


# --- backoff -------------------------------------------------------------------------------------


def test_backoff_grows_to_the_cap_honours_retry_after_and_resets() -> None:
    backoff = Backoff(1.0, 60.0, uniform=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    backoff.reset()
    assert backoff.next_delay() == 1
    assert backoff.next_delay(at_least_s=5) == 5  # Retry-After above the jittered delay
    assert backoff.next_delay(at_least_s=500) == 60  # ... but never beyond the cap
    jittered = Backoff(1.0, 60.0)
    for _ in range(200):
        ceiling = jittered.ceiling_s
        assert 0 <= jittered.next_delay() <= ceiling
    with pytest.raises(ValueError, match="backoff"):
        Backoff(10.0, 1.0)


async def test_poller_backs_off_while_the_feed_is_down_and_resets_after_success(
    feed: FeedServer, tmp_path: Path
) -> None:
    feed.stop()
    feed.state.faults = {2: 500}  # the second request after the comeback fails once

    def come_back(n: int, _: float) -> None:
        if n == 5:
            feed.start()

    sleep = FakeSleep(come_back)
    settings = settings_for(feed.url, tmp_path, poller_page_size=100)
    async with poller_for(settings, MemorySink(), sleep) as poller:
        stats = await poller.run(until_idle=True)
    assert sleep.delays == [1, 2, 4, 8, 16, 1]
    assert stats.pages == 3
    assert stats.errors == 6


async def test_a_refusal_is_loud_raises_when_bounded_and_waits_at_the_cap_when_not(
    feed: FeedServer, tmp_path: Path
) -> None:
    feed.state.refuse_all = 403  # e.g. no access right to the service for our subsystem
    settings = settings_for(feed.url, tmp_path)
    async with poller_for(settings, MemorySink()) as once:
        with pytest.raises(XRoadRefused) as refused:
            await once.run(max_pages=1)
    assert refused.value.status_code == 403

    stop = asyncio.Event()
    sleep = FakeSleep(lambda n, _: stop.set() if n == 3 else None)
    sink = MemorySink()
    with capture_logs() as logs:
        async with poller_for(settings, sink, sleep) as service:
            stats = await service.run(stop_event=stop)
    assert sleep.delays == [60, 60, 60]
    assert stats.errors == 3
    errors = [line for line in logs if line["event"] == "poller.misconfigured"]
    assert len(errors) == 3
    assert all(line["log_level"] == "error" and "HTTP 403" in line["error"] for line in errors)
    assert sink.positions == {}


async def test_idle_feed_is_polled_at_the_interval_until_stopped(
    feed: FeedServer, tmp_path: Path
) -> None:
    stop = asyncio.Event()
    sleep = FakeSleep(lambda n, _: stop.set() if n == 2 else None)
    sink = MemorySink()
    settings = settings_for(feed.url, tmp_path, poller_page_size=1000)
    async with poller_for(settings, sink, sleep) as poller:
        stats = await poller.run(stop_event=stop)
    assert sleep.delays == [5.0, 5.0]
    assert stats.pages == 2
    assert feed.state.pages_after == [None, f"c{len(FEED.items)}"]
    assert_exactly_once(sink)


# --- items ----------------------------------------------------------------------------------------


async def test_bad_items_are_rejected_with_a_reason_and_the_rest_flows(
    feed: FeedServer, tmp_path: Path
) -> None:
    sink = MemorySink()
    with capture_logs() as logs:
        async with poller_for(settings_for(feed.url, tmp_path), sink) as poller:
            stats = await poller.run(until_idle=True)
    assert stats.rejected == len(FEED.bad_ids)
    assert_exactly_once(sink)

    reject_file = tmp_path / "poller" / f"{SERVICE.slug}.rejected.jsonl"
    rejected = [json.loads(line) for line in reject_file.read_text().splitlines()]
    assert [r["item_id"] for r in rejected] == FEED.bad_ids
    reasons = {r["item_id"]: r["reason"] for r in rejected if r["item_id"]}
    assert reasons["bad-check-character"].startswith("JobseekerChange: personal_identity_code:")
    assert reasons["bad-aland"].startswith("JobseekerChange: municipality_code:")
    assert "Åland" in reasons["bad-aland"]
    assert reasons["bad-channel"].startswith("JobseekerChange: registration_channel:")
    assert reasons["bad-obligation"] == (
        "EmploymentPlanAgreedPayload: job_search_obligation_per_month: "
        "Input should be less than or equal to 4"
    )
    assert reasons["bad-age"].startswith("JobseekerRegisteredPayload: age_at_registration:")
    assert reasons["bad-fund"].startswith("JobseekerChange: unemployment_fund_code:")
    anonymous = sorted(r["reason"] for r in rejected if r["item_id"] is None)
    assert (
        anonymous[0]
        == "JobseekerChange: Input should be a valid dictionary or instance of JobseekerChange"
    )
    assert anonymous[1] == "JobseekerChange: id: Field required"

    logged = [line for line in logs if line["event"] == "poller.item_rejected"]
    assert [(line["item_id"], line["reason"]) for line in logged] == [
        (r["item_id"], r["reason"]) for r in rejected
    ]
    everything = json.dumps(logs, default=str) + reject_file.read_text()
    assert IDENTITY_CODE_PATTERN.search(everything) is None
    assert not any(code in everything for code in FEED.identity_codes)


async def test_lone_surrogates_are_rejected_and_the_rest_of_the_page_flows(
    feed: FeedServer, tmp_path: Path
) -> None:
    """JSON may escape a lone surrogate ("\\ud800"); Python decodes it into a str that no UTF-8
    writer takes: not the sink's encoder, not the reject file, not the log."""
    rows = [item for item in FEED.items if isinstance(item, dict) and item.get("plan")][:4]
    broken = [
        {**rows[0], "id": "row-\ud800-id"},
        {**rows[1], "id": "bad-name", "first_name": "Ai\udc00no"},
        {**rows[2], "id": "bad-email", "email": "jobseeker\ud83d@example.fi"},
        {**rows[3], "id": "bad-expert", "plan": {**rows[3]["plan"], "expert_id": "E\udfff"}},
    ]
    feed.state.items[10:10] = broken
    sink = MemorySink()
    with capture_logs() as logs:
        async with poller_for(settings_for(feed.url, tmp_path), sink) as poller:
            stats = await poller.run(until_idle=True)
    assert stats.rejected == len(FEED.bad_ids) + len(broken)
    assert_exactly_once(sink)  # every other item of those pages was written

    reject_file = tmp_path / "poller" / f"{SERVICE.slug}.rejected.jsonl"
    rejected = {
        line["item_id"]: line["reason"]
        for line in map(json.loads, reject_file.read_text(encoding="utf-8").splitlines())
    }
    assert rejected["row-\\ud800-id"].startswith("JobseekerChange: id:")
    assert rejected["bad-name"].startswith("JobseekerRegisteredPayload: first_name:")
    assert "email: invalid_unicode" in rejected["bad-email"]
    assert "expert_id: invalid_unicode" in rejected["bad-expert"]
    logged = {line["item_id"] for line in logs if line["event"] == "poller.item_rejected"}
    assert {"row-\\ud800-id", "bad-name", "bad-email", "bad-expert"} <= logged
    json.dumps(logs, ensure_ascii=False).encode("utf-8")  # every log line is writable


async def test_alike_rejects_are_each_recorded_and_a_retried_page_repeats_none(
    feed: FeedServer, tmp_path: Path
) -> None:
    row = next(item for item in FEED.items if isinstance(item, dict))
    feed.state.items = ["not an object", "not an object", row]
    sink = MemorySink()
    sink.unavailable_on = {1, 2}  # the page is tried three times
    async with poller_for(settings_for(feed.url, tmp_path), sink) as poller:
        stats = await poller.run(until_idle=True)
    assert stats.rejected == 2
    reject_file = tmp_path / "poller" / f"{SERVICE.slug}.rejected.jsonl"
    assert [json.loads(line)["item_id"] for line in reject_file.read_text().splitlines()] == [
        None,
        None,
    ]


def test_an_item_maps_to_registration_and_plan_with_stable_ids() -> None:
    row = next(item for item in FEED.items if isinstance(item, dict) and item.get("plan"))
    pseudonymizer = Pseudonymizer.from_settings(HubSettings())
    mapper = ChangeMapper(SERVICE, pseudonymizer)
    change = JobseekerChange.model_validate(row)
    registered, plan = mapper.submissions_of(change)
    assert mapper.submissions_of(change) == [registered, plan]  # same ids and digests again

    plan_kind = f"plan:{row['plan']['plan_id']}"
    assert registered.dedupe_key == f"poller:{SERVICE_ID}:{row['id']}:registered"
    assert plan.dedupe_key == f"poller:{SERVICE_ID}:{row['id']}:{plan_kind}"
    assert registered.event.envelope.event_id == uuid.uuid5(
        uuid.uuid5(uuid.NAMESPACE_URL, "urn:fi:te-hub:connectors:poller"),
        f"{SERVICE_ID}:{row['id']}:registered",
    )
    first, second = registered.event.envelope, plan.event.envelope
    assert first.event_type == "JobseekerRegistered"
    assert second.event_type == "EmploymentPlanAgreed"
    assert first.source_system == second.source_system == SERVICE.uri
    assert first.subject == pseudonymizer.pseudonym(row["personal_identity_code"])
    assert first.employment_area_code == employment_area_of(row["municipality_code"]).code
    assert first.correlation_id == second.correlation_id
    assert first.causation_id is None
    assert second.causation_id == first.event_id
    assert first.recorded_at == datetime.fromisoformat(row["changed_at"])
    start = date.fromisoformat(row["job_search_started_on"])
    assert first.occurred_at == datetime.combine(start, time(0), tzinfo=HELSINKI)
    assert 15 <= registered.event.payload.age_at_registration <= 75


class _CannotEncode(MemorySink):
    """Refuses the whole call, as the Kafka sink does, while it holds the events of one row."""

    def __init__(self, row_id: str) -> None:
        super().__init__()
        self.bad_event = MAPPER.event_id(row_id, "registered")

    async def submit(
        self, submissions: Sequence[Submission], position: SourcePosition | None = None
    ) -> list[Receipt]:
        bad = [i for i, s in enumerate(submissions) if s.event.envelope.event_id == self.bad_event]
        if bad:
            raise EventNotWritable(bad)
        return await super().submit(submissions, position)


async def test_an_item_the_sink_refuses_is_rejected_and_the_rest_of_the_page_is_written(
    feed: FeedServer, tmp_path: Path
) -> None:
    # A row with a plan: the rows that come back again later are those without one.
    row_id = next(i["id"] for i in FEED.items if isinstance(i, dict) and i.get("plan"))
    sink = _CannotEncode(row_id)
    async with poller_for(settings_for(feed.url, tmp_path), sink) as poller:
        stats = await poller.run(until_idle=True)
    kept = {(item_id, kind) for item_id, kind in FEED.expected if item_id != row_id}
    assert_exactly_once(sink, kept)
    assert stats.rejected == len(FEED.bad_ids) + 1
    reject_file = tmp_path / "poller" / f"{SERVICE.slug}.rejected.jsonl"
    lines = [json.loads(line) for line in reject_file.read_text().splitlines()]
    assert {
        "item_id": row_id,
        "reason": "refused by the event log: event-not-writable",
    }.items() <= (next(line for line in lines if line["item_id"] == row_id).items())
    assert saved_cursor(sink) == f"c{len(FEED.items)}"


def _write_old_cursor_file(state_dir: Path, cursor: str, service: str = SERVICE_ID) -> Path:
    """A cursor file as versions before the Kafka positions wrote it."""
    path = LegacyCursorFile.for_service(state_dir, SERVICE).path
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {"service": service, "cursor": cursor, "saved_at": "2026-11-30T12:00:00+00:00"}
    path.write_text(json.dumps(saved))
    return path


async def test_an_old_cursor_file_is_migrated_once_then_kafka_alone_decides(
    feed: FeedServer, tmp_path: Path
) -> None:
    old_file = _write_old_cursor_file(tmp_path, f"c{2 * PAGE}")
    sink = MemorySink()
    settings = settings_for(feed.url, tmp_path)
    async with poller_for(settings, sink) as upgraded:
        assert await upgraded.resume() == f"c{2 * PAGE}"  # no position in Kafka yet
        await upgraded.run(max_pages=1)
    assert feed.state.pages_after == [f"c{2 * PAGE}"]
    assert saved_cursor(sink) == f"c{3 * PAGE}"
    assert not old_file.exists()
    assert old_file.with_name(old_file.name + ".migrated").exists()

    idle_dir = tmp_path / "idle"  # a feed with nothing after the old cursor retires it too
    idle_file = _write_old_cursor_file(idle_dir, f"c{len(FEED.items)}")
    idle_sink = MemorySink()
    async with poller_for(settings_for(feed.url, idle_dir), idle_sink) as idle:
        await idle.run(max_pages=1)
    assert saved_cursor(idle_sink) == f"c{len(FEED.items)}"
    assert not idle_file.exists()

    _write_old_cursor_file(tmp_path, "c1")  # a stale file (a restored volume) is not read
    async with poller_for(settings, sink) as later:
        assert await later.resume() == f"c{3 * PAGE}"


def test_a_corrupt_old_cursor_file_stops_the_poller(tmp_path: Path) -> None:
    legacy = LegacyCursorFile.for_service(tmp_path, SERVICE)
    assert legacy.load() is None
    _write_old_cursor_file(tmp_path, "c40")
    assert legacy.load() == "c40"
    legacy.path.write_text("{half a json")
    with pytest.raises(CursorFileError, match="not valid JSON"):
        legacy.load()
    _write_old_cursor_file(tmp_path, "c1", service="FI-TEST/GOV/0245437-2/KEHA/other-feed")
    with pytest.raises(CursorFileError, match="not a cursor of"):
        legacy.load()


async def test_a_corrected_row_is_published_as_a_correction_of_the_first_event(
    feed: FeedServer, tmp_path: Path
) -> None:
    row = next(item for item in FEED.items if isinstance(item, dict) and item.get("plan"))
    later = datetime.fromisoformat(row["changed_at"]) + timedelta(days=1)
    touched = {**row, "changed_at": later.isoformat()}  # changed_at alone: no new fact
    obligation = row["plan"]["job_search_obligation_per_month"]
    corrected = {
        **row,
        "changed_at": (later + timedelta(days=1)).isoformat(),
        "email": "corrected@example.fi",
        "plan": {
            **row["plan"],
            "job_search_obligation_per_month": 2 if obligation != 2 else 3,
            "obligation_reduction": "PART_TIME_WORK",
        },
    }
    feed.state.items = [row, touched, corrected, corrected]  # and corrected read twice
    sink = MemorySink()
    with capture_logs() as logs:
        async with poller_for(settings_for(feed.url, tmp_path), sink) as poller:
            stats = await poller.run(until_idle=True)
    assert (stats.written, stats.corrections, stats.duplicates) == (4, 2, 4)
    by_id = {event.envelope.event_id: event for event in sink.log}
    assert len(by_id) == len(sink.log) == 4
    first_registration = MAPPER.event_id(row["id"], "registered")
    first_plan = MAPPER.event_id(row["id"], f"plan:{row['plan']['plan_id']}")
    fixes = [e for e in sink.log if e.envelope.event_id not in (first_registration, first_plan)]
    assert sorted(str(e.envelope.corrects_event_id) for e in fixes) == sorted(
        [str(first_registration), str(first_plan)]
    )
    for fix in fixes:
        assert fix.envelope.corrects_event_id is not None
        original = by_id[fix.envelope.corrects_event_id]
        assert type(fix) is type(original)
        assert fix.envelope.correlation_id == original.envelope.correlation_id
        assert fix.envelope.causation_id == original.envelope.causation_id  # the same cause
        assert fix.envelope.recorded_at == datetime.fromisoformat(corrected["changed_at"])
        assert fix.envelope.retracted is False
    registration_fix = next(e for e in fixes if e.envelope.corrects_event_id == first_registration)
    assert registration_fix.envelope.causation_id is None
    assert registration_fix.payload.email == "corrected@example.fi"
    logged = [line for line in logs if line["event"] == "poller.correction"]
    assert {line["corrects"] for line in logged} == {str(first_registration), str(first_plan)}


def test_a_withdrawn_row_or_plan_maps_to_retractions_of_the_first_events() -> None:
    row = next(item for item in FEED.items if isinstance(item, dict) and item.get("plan"))
    later = (datetime.fromisoformat(row["changed_at"]) + timedelta(days=3)).isoformat()
    registered_id = MAPPER.event_id(row["id"], "registered")
    plan_kind = f"plan:{row['plan']['plan_id']}"
    plan_id = MAPPER.event_id(row["id"], plan_kind)

    plan_only = MAPPER.map_items(
        [{**row, "changed_at": later, "plan": {**row["plan"], "withdrawn": True}}]
    )
    first, gone = plan_only.submissions
    assert first.event.envelope.event_id == registered_id  # the registration as published
    assert first.dedupe_key == f"poller:{SERVICE_ID}:{row['id']}:registered"
    assert (first.event.envelope.corrects_event_id, first.event.envelope.retracted) == (None, False)
    envelope = gone.event.envelope
    assert gone.dedupe_key == f"poller:{SERVICE_ID}:{row['id']}:{plan_kind}:retracted"
    assert envelope.event_id == uuid.uuid5(
        POLLER_NAMESPACE, f"{SERVICE_ID}:{row['id']}:{plan_kind}:retracted"
    )
    assert (envelope.corrects_event_id, envelope.retracted) == (plan_id, True)
    assert envelope.causation_id == registered_id  # the plan's cause, as in its first version
    assert envelope.recorded_at == datetime.fromisoformat(later)
    assert plan_only.origins[1].kind == plan_kind

    whole = MAPPER.map_items([{**row, "changed_at": later, "withdrawn": True}])
    assert [
        (s.event.envelope.corrects_event_id, s.event.envelope.retracted) for s in whole.submissions
    ] == [(registered_id, True), (plan_id, True)]
    again = MAPPER.map_items([{**row, "changed_at": later, "withdrawn": True}])
    assert [s.dedupe_key for s in again.submissions] == [s.dedupe_key for s in whole.submissions]
    assert [s.request_digest for s in again.submissions] == [
        s.request_digest for s in whole.submissions
    ]
    bad = MAPPER.map_items([{**row, "withdrawn": "sometimes"}])
    assert bad.submissions == []
    assert "withdrawn" in bad.rejections[0].reason


async def test_a_withdrawn_row_is_published_once_as_retractions(
    feed: FeedServer, tmp_path: Path
) -> None:
    row = next(item for item in FEED.items if isinstance(item, dict) and item.get("plan"))
    later = (datetime.fromisoformat(row["changed_at"]) + timedelta(days=2)).isoformat()
    withdrawn = {**row, "changed_at": later, "withdrawn": True}
    feed.state.items = [row, withdrawn, withdrawn]  # the withdrawn row read twice
    sink = MemorySink()
    async with poller_for(settings_for(feed.url, tmp_path), sink) as poller:
        stats = await poller.run(until_idle=True)
    assert (stats.written, stats.duplicates, stats.corrections) == (4, 2, 0)
    first_ids = [e.envelope.event_id for e in sink.log[:2]]
    assert [(e.envelope.corrects_event_id, e.envelope.retracted) for e in sink.log] == [
        (None, False),
        (None, False),
        (first_ids[0], True),
        (first_ids[1], True),
    ]


# --- mutual TLS ----------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Test X-Road CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    for name, usage, san in (
        ("server", "serverAuth", "IP:127.0.0.1"),
        ("client", "clientAuth", ""),
    ):
        extensions = ["basicConstraints=CA:FALSE", f"extendedKeyUsage={usage}"]
        extensions += [f"subjectAltName={san}"] if san else []
        (folder / f"{name}.ext").write_text("\n".join(extensions) + "\n")
        _openssl(
            "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/O=Test/CN=te-hub-{name}",
            cwd=folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
            cwd=folder,
        )  # fmt: skip
    return folder


def test_tls_settings_become_an_ssl_context(pki: Path, tmp_path: Path) -> None:
    assert tls_verify(HubSettings()) is True  # no settings: httpx's default verification
    context = tls_verify(
        HubSettings(
            xroad_ca_bundle=pki / "ca.pem",
            xroad_client_cert=pki / "client.pem",
            xroad_client_key=pki / "client.key",
        )
    )
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [ca["subject"] for ca in context.get_ca_certs()] == [
        ((("commonName", "Test X-Road CA"),),)
    ]
    with pytest.raises(ValueError, match="HUB_XROAD_CLIENT_KEY"):
        tls_verify(HubSettings(xroad_client_key=pki / "client.key"))


def _security_server_tls(pki: Path) -> ssl.SSLContext:
    """A security server's TLS: its own certificate, and a client certificate required."""
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(pki / "server.pem", pki / "server.key")
    server_tls.load_verify_locations(pki / "ca.pem")
    server_tls.verify_mode = ssl.CERT_REQUIRED
    return server_tls


async def test_mutual_tls_with_the_security_server(pki: Path, tmp_path: Path) -> None:
    state = FeedState(service_path=SERVICE.path, items=list(FEED.items))
    with running_feed(state, tls=_security_server_tls(pki)) as server:
        assert server.url.startswith("https://")
        mtls = settings_for(
            server.url,
            tmp_path,
            xroad_ca_bundle=pki / "ca.pem",
            xroad_client_cert=pki / "client.pem",
            xroad_client_key=pki / "client.key",
        )
        async with XRoadClient.from_settings(mtls) as client:
            page = await client.get_json(SERVICE, {"limit": 2})
        assert len(page["items"]) == 2
        assert "te-hub-client" in state.client_cert_subjects[0]

        untrusted = settings_for(server.url, tmp_path)  # system CAs do not know our test CA
        async with XRoadClient.from_settings(untrusted) as client:
            with pytest.raises(XRoadTLSError, match="server's certificate is not trusted"):
                await client.get_json(SERVICE, {"limit": 2})
        assert state.requests == 1

    # TLS 1.3: the refusal of a client without a certificate arrives after the handshake, on
    # the first read, as a raw ssl.SSLError that httpx does not wrap.
    with refusing_client_without_certificate(_security_server_tls(pki)) as url:
        without_cert = settings_for(url, tmp_path, xroad_ca_bundle=pki / "ca.pem")
        async with XRoadClient.from_settings(without_cert) as client:
            with pytest.raises(XRoadTLSError) as refused:
                await client.get_json(SERVICE, {"limit": 2})
    assert "refused our client certificate (TLSV13_ALERT_CERTIFICATE_REQUIRED)" in str(
        refused.value
    )
    assert "HUB_XROAD_CLIENT_CERT" in refused.value.hint


async def test_a_refused_certificate_is_a_configuration_error_of_the_poller(
    pki: Path, tmp_path: Path
) -> None:
    with refusing_client_without_certificate(_security_server_tls(pki)) as url:
        settings = settings_for(url, tmp_path, xroad_ca_bundle=pki / "ca.pem")
        async with poller_for(settings, MemorySink()) as bounded:
            with pytest.raises(XRoadTLSError):
                await bounded.run(until_idle=True)

        stop = asyncio.Event()
        sleep = FakeSleep(lambda n, _: stop.set() if n == 2 else None)
        with capture_logs() as logs:
            async with poller_for(settings, MemorySink(), sleep) as service:
                stats = await service.run(stop_event=stop)
        assert sleep.delays == [60, 60]  # at the cap, not the backoff of an outage
        assert stats.errors == 2
        errors = [line for line in logs if line["event"] == "poller.misconfigured"]
        assert [line["log_level"] for line in errors] == ["error", "error"]
        assert "HUB_XROAD_CLIENT_CERT" in errors[0]["hint"]


def test_hub_poll_names_a_refused_certificate_in_one_line(
    pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @asynccontextmanager
    async def fake_kafka_sink(settings: HubSettings) -> AsyncIterator[MemorySink]:
        yield MemorySink()

    monkeypatch.setattr(poller_cli, "open_kafka_sink", fake_kafka_sink)
    monkeypatch.setattr(poller_cli, "configure_logging", lambda settings: None)
    with refusing_client_without_certificate(_security_server_tls(pki)) as url:
        for name, value in {
            "HUB_STATE_DIR": str(tmp_path),
            "HUB_XROAD_SECURITY_SERVER_URL": url,
            "HUB_XROAD_CLIENT": CLIENT_ID,
            "HUB_XROAD_CA_BUNDLE": str(pki / "ca.pem"),
        }.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        try:
            once = CliRunner().invoke(poller_cli.poll_command, ["--service", SERVICE_ID, "--once"])
        finally:
            get_settings.cache_clear()
    assert once.exit_code == 1, once.output
    assert isinstance(once.exception, SystemExit)  # click's own exit, not an escaped error
    assert once.stderr.startswith("Error: ")
    assert once.stderr.count("\n") == 1
    assert "refused our client certificate" in once.stderr


async def test_the_schema_registry_client_maps_a_refused_certificate(pki: Path) -> None:
    with refusing_client_without_certificate(_security_server_tls(pki)) as url:
        trusting = ssl.create_default_context(cafile=pki / "ca.pem")
        registry = SchemaRegistryClient(
            url, async_transport=httpx.AsyncHTTPTransport(verify=trusting)
        )
        try:
            with pytest.raises(SchemaRegistryError, match="refused our client certificate"):
                await registry.aget_by_id(1)
        finally:
            await registry.aclose()


# --- command -------------------------------------------------------------------------------------


def test_poll_command_runs_the_poller_into_the_sink(
    feed: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = MemorySink()

    @asynccontextmanager
    async def fake_kafka_sink(settings: HubSettings) -> AsyncIterator[MemorySink]:
        yield sink

    monkeypatch.setattr(poller_cli, "open_kafka_sink", fake_kafka_sink)
    # The command's own logging setup would keep CliRunner's closed stream after the test.
    monkeypatch.setattr(poller_cli, "configure_logging", lambda settings: None)
    for name, value in {
        "HUB_STATE_DIR": str(tmp_path),
        "HUB_XROAD_SECURITY_SERVER_URL": feed.url,
        "HUB_XROAD_CLIENT": CLIENT_ID,
        "HUB_POLLER_PAGE_SIZE": "50",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        once = runner.invoke(poller_cli.poll_command, ["--service", SERVICE_ID, "--once"])
        rest = runner.invoke(poller_cli.poll_command, ["--service", SERVICE_ID, "--until-idle"])
        both = runner.invoke(poller_cli.poll_command, ["--once", "--until-idle"])
        unnamed = runner.invoke(poller_cli.poll_command, ["--once"])
    finally:
        get_settings.cache_clear()
    assert once.exit_code == 0, once.output
    assert f"{SERVICE_ID}: 1 page(s), 50 item(s)" in once.output
    assert rest.exit_code == 0, rest.output
    rest_items = len(FEED.items) - 50
    assert f"{-(-rest_items // 50)} page(s), {rest_items} item(s)" in rest.output
    assert f"({len(FEED.corrections)} correction(s))" in rest.output
    assert_exactly_once(sink)
    assert both.exit_code == 2
    assert "exclude each other" in both.output
    assert unnamed.exit_code == 2
    assert "HUB_POLLER_SERVICE" in unnamed.output


def test_a_changed_at_ahead_of_the_clock_by_more_than_the_skew_is_rejected() -> None:
    """``changed_at`` is the knowledge time: one in 2030 would hide the fact from every as-of
    report until 2030 and beat every correction sent now."""
    row = next(item for item in FEED.items if isinstance(item, dict) and item.get("plan"))
    now = datetime.fromisoformat(row["changed_at"]) + timedelta(days=1)
    mapper = ChangeMapper(
        SERVICE,
        Pseudonymizer.from_settings(HubSettings()),
        clock=lambda: now,
        clock_skew=timedelta(seconds=300),
    )
    future = {**row, "changed_at": "2030-01-01T00:00:00+00:00"}
    just_over = {**row, "changed_at": (now + timedelta(seconds=301)).isoformat()}
    at_skew = {**row, "changed_at": (now + timedelta(seconds=300)).isoformat()}
    page = mapper.map_items([future, just_over, at_skew])
    assert [r.reason for r in page.rejections] == [
        "changed_at: changed_at_in_the_future (more than 300 s ahead of the hub's clock; it is "
        "the facts' knowledge time)"
    ] * 2
    assert [r.item_id for r in page.rejections] == [row["id"], row["id"]]
    assert {s.event.envelope.recorded_at for s in page.submissions} == {
        now + timedelta(seconds=300)
    }
