"""`hub poll` as deployed, on the real broker: killed after a commit, resumed by a new pod.

The poller's cursor is committed in the same Kafka transaction as the page's events. A process
killed (SIGKILL) right after a commit, restarted with an EMPTY state directory (a new pod), must
resume at the committed cursor from Kafka alone, and the log must then hold every event of the
feed exactly once (read_committed, counted by event id), corrections included.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.poller import ChangeMapper
from connectors.xroad import XRoadService
from hub.identity import Pseudonymizer
from hub.kafka.topics import ensure_topics
from hub.settings import HubSettings
from hub.sink.kafka import open_kafka_sink, writer_settings
from tests.conftest import event_ids_in_log, hub_environment, settings_for
from tests.poller_fakes import CLIENT_ID, SERVICE_ID, feed_fixture
from tests.xroad_feed_server import FeedServer, FeedState, running_feed

pytestmark = pytest.mark.kafka
SECRET = "poller-on-kafka-secret-0123456789"
SERVICE = XRoadService.parse(SERVICE_ID)
FEED = feed_fixture()
PAGE = 20
#: The poller is killed while it waits for the page after this many committed pages.
COMMITTED_PAGES = 3


@pytest.fixture
def feed() -> Iterator[FeedServer]:
    state = FeedState(service_path=SERVICE.path, items=list(FEED.items))
    with running_feed(state) as server:
        yield server


def _env(settings: HubSettings, feed_url: str, state_dir: Path) -> dict[str, str]:
    return hub_environment(
        settings,
        HUB_STATE_DIR=str(state_dir),
        HUB_XROAD_SECURITY_SERVER_URL=feed_url,
        HUB_XROAD_CLIENT=CLIENT_ID,
        HUB_POLLER_PAGE_SIZE=str(PAGE),
        HUB_PSEUDONYM_SECRET=SECRET,
        HUB_LOG_LEVEL="WARNING",
    )


async def _poll(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", "poll", "--service", SERVICE_ID, "--until-idle", env=env
    )


def _expected_event_ids() -> set[object]:
    mapper = ChangeMapper(SERVICE, Pseudonymizer(SECRET))
    first = {mapper.event_id(item_id, kind) for item_id, kind in FEED.expected}
    corrections = set()
    for row in FEED.corrections:
        mapped = mapper.map_items([row])
        (registered,) = mapped.submissions
        correction = mapper.correction_of(registered, mapped.origins[0])
        corrections.add(correction.event.envelope.event_id)
    return first | corrections


async def test_a_poller_killed_after_a_commit_resumes_from_kafka_with_an_empty_state_dir(
    kafka_bootstrap: str, feed: FeedServer, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, partitions=3)
    await ensure_topics(settings)
    state = feed.state
    state.hold_after = f"c{COMMITTED_PAGES * PAGE}"

    doomed = await _poll(_env(settings, feed.url, tmp_path / "pod-1"))
    try:
        # The request for the next page comes only after the sink committed the earlier ones.
        came = await asyncio.to_thread(state.held.wait, 120)
        assert came, "the poller never asked for the page after the committed ones"
        doomed.send_signal(signal.SIGKILL)
        assert await doomed.wait() == -signal.SIGKILL
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()
        state.hold_after = None
        state.release.set()
    requests_of_the_first_pod = len(state.pages_after)

    async with open_kafka_sink(writer_settings(settings, "poll", SERVICE.id)) as sink:
        assert await sink.position_of(f"poller:{SERVICE_ID}") == state_cursor(COMMITTED_PAGES)
    written_before_restart = await event_ids_in_log(settings)
    assert written_before_restart  # the committed pages are in the log

    new_pod = tmp_path / "pod-2"  # empty: nothing of pod-1's state directory
    restarted = await _poll(_env(settings, feed.url, new_pod))
    assert await asyncio.wait_for(restarted.wait(), 180) == 0

    served_to_the_new_pod = state.pages_after[requests_of_the_first_pod:]
    assert served_to_the_new_pod[0] == state_cursor(COMMITTED_PAGES)  # resumed, not from the top
    assert None not in served_to_the_new_pod
    assert len(set(served_to_the_new_pod)) == len(served_to_the_new_pod)
    counts = await event_ids_in_log(settings)
    assert [event_id for event_id, n in counts.items() if n > 1] == []  # nothing twice
    assert set(counts) == _expected_event_ids()  # nothing lost, corrections included
    async with open_kafka_sink(writer_settings(settings, "poll", SERVICE.id)) as sink:
        assert await sink.position_of(f"poller:{SERVICE_ID}") == f"c{len(FEED.items)}"


def state_cursor(pages: int) -> str:
    """The feed's cursor after *pages* full pages."""
    return f"c{pages * PAGE}"
