"""Delivery on a real broker to real HTTP receivers (``connectors/receivers``), counting ids.

Each test writes its own routes file (HUB_ROUTES_FILE) with short retry schedules and two
destinations on the test's receivers: ``alpha`` (one endpoint, the receiver ``kela``) and
``beta`` (an endpoint per employment area, the receivers ``municipal/<area>``). The outbox
records are what the router would write: simulated events routed and projected by
:func:`hub.routing.resolve.route_event` and encoded by :class:`OutboxCodec`, with the router's
headers, produced in each person's order. Every test then counts event ids in (outbox) and out
(what each receiver applied, its duplicates, the dead letters, the disclosure receipts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.receivers.runner import ReceiversClient, receivers_subprocess
from connectors.simulator import SimulationConfig, simulate
from connectors.simulator.paths import in_time_order
from connectors.webhook.transport import WebhookTransport, http_client
from hub.broker.local import LocalKafka
from hub.delivery.audit import verify_chains
from hub.delivery.disclosure import DisclosureLog
from hub.delivery.metrics import DeliveryMetrics
from hub.delivery.schedule import RetrySchedule
from hub.delivery.worker import DeliveryTarget, DeliveryWorker, RoutedDisclosures
from hub.events.customer_path import EVENT_TYPES
from hub.identity import Pseudonymizer
from hub.kafka.clients import make_producer
from hub.kafka.dead_letters import DeadLetter
from hub.kafka.publisher import encode_event
from hub.kafka.reading import read_topic
from hub.kafka.topics import ensure_topics, outbox_spec, outbox_topic
from hub.routing.outbox import (
    HEADER_DESTINATION,
    HEADER_ENDPOINT,
    HEADER_ROUTE,
    HEADER_SOURCE,
    OutboxCodec,
)
from hub.routing.resolve import route_event
from hub.routing.routes import RoutesConfig, load_routes
from hub.serde import SingleObjectSerializer
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT, hub_environment, settings_for

pytestmark = pytest.mark.kafka

ALPHA_RECEIVER = "kela"
TYPES = sorted({name.rsplit(".", 1)[-1] for name in EVENT_TYPES})


def write_routes(path: Path, port: int, alpha_steps: int = 40) -> Path:
    """Routes of the test: every event type to alpha and to beta (by employment area)."""
    steps = ", ".join(["0.2", "0.4"] + ["1.0"] * (alpha_steps - 2))
    areas = "\n".join(
        f'"{area:02d}" = {{ url = "http://127.0.0.1:{port}/municipal/{area:02d}" }}'
        for area in range(1, 46)
    )
    path.write_text(
        f"""
[directories]
municipal = "beta"

[destinations.alpha]
transport = "webhook"
endpoint = {{ url = "http://127.0.0.1:{port}/{ALPHA_RECEIVER}" }}
retry_schedule_s = [{steps}]
breaker_failures = 5
breaker_open_s = 0.5

[destinations.beta]
transport = "webhook"
retry_schedule_s = [0.2, 0.4, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
breaker_failures = 5
breaker_open_s = 0.5

[destinations.beta.endpoints]
{areas}

[destinations.gamma]
transport = "webhook"
endpoint = {{ url = "http://127.0.0.1:{port}/provider/gamma" }}
retry_schedule_s = [0.1, 0.2]
breaker_failures = 1000

[[routes]]
name = "all-to-gamma"
types = {json.dumps(TYPES)}
to = {{ destination = "gamma" }}

[[routes]]
name = "all-to-alpha"
types = {json.dumps(TYPES)}
to = {{ destination = "alpha" }}

[[routes]]
name = "all-to-beta"
types = {json.dumps(TYPES)}
to = {{ directory = "municipal_system_of_area" }}
""",
        encoding="utf-8",
    )
    return path


@dataclass
class Outbox:
    """What the test put into the outboxes, in production order per destination."""

    ids: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    by_subject: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    endpoint_of: dict[str, str | None] = field(default_factory=dict)

    def count(self, destination: str) -> int:
        return len(self.ids[destination])


async def fill_outboxes(
    settings: HubSettings,
    config: RoutesConfig,
    jobseekers: int,
    seed: int,
    only: tuple[str, ...] = ("alpha", "beta"),
) -> Outbox:
    """Route simulated paths and produce them to the outboxes (``only`` those), each person's
    events in order."""
    await ensure_topics(settings, extra=[outbox_spec(settings, d) for d in only])
    serializer = SingleObjectSerializer()
    codec = OutboxCodec.for_routes(config)
    paths = simulate(
        SimulationConfig(jobseekers=jobseekers, seed=seed), Pseudonymizer("delivery-test-secret")
    )
    outbox = Outbox()
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        offset = 0
        for event in in_time_order(paths):
            encoded = encode_event(serializer, event, None)
            decoded = serializer.decode(encoded.value)
            type_name = decoded.type_name.rsplit(".", 1)[-1]
            for routed in route_event(config, type_name, decoded.record, None):
                if routed.destination not in only:
                    continue
                headers = [
                    *encoded.headers,
                    (HEADER_ROUTE, routed.route.encode()),
                    (HEADER_DESTINATION, routed.destination.encode()),
                    (HEADER_SOURCE, f"{settings.topic_customer_path}/0/{offset}".encode()),
                ]
                if routed.endpoint is not None:
                    headers.append((HEADER_ENDPOINT, routed.endpoint.encode()))
                event_id = str(event.envelope.event_id)
                pending.append(
                    await producer.send(
                        outbox_topic(settings, routed.destination),
                        value=codec.encode(routed, type_name),
                        key=encoded.key,
                        headers=headers,
                    )
                )
                outbox.ids[routed.destination].append(event_id)
                outbox.by_subject[routed.destination][event.envelope.subject].append(event_id)
                if routed.destination == "beta":
                    outbox.endpoint_of[event_id] = routed.endpoint
            offset += 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return outbox


def webhook_worker(
    settings: HubSettings,
    config: RoutesConfig,
    destination: str,
    http: Any,
    disclosures: DisclosureLog | None,
    metrics: DeliveryMetrics,
) -> DeliveryWorker:
    """A worker assembled as ``hub deliver`` assembles it."""
    dest = config.destination(destination)

    def transport_for(key: str | None) -> WebhookTransport:
        endpoint = dest.endpoint_for(key)
        return WebhookTransport(str(endpoint.url), endpoint.signing_secret(settings), http)

    target = DeliveryTarget(
        name=destination,
        schedule=RetrySchedule(tuple(dest.retry_schedule_s)),
        breaker_failures=dest.breaker_failures,
        breaker_open_s=dest.breaker_open_s,
        transport_for=transport_for,
    )
    return DeliveryWorker(
        settings,
        target,
        OutboxCodec.for_routes(config),
        metrics=metrics,
        disclosures=None
        if disclosures is None
        else RoutedDisclosures(disclosures, config, destination),
        progress_interval_s=2.0,
        drain_s=5.0,
    )


def applied_of(receivers: ReceiversClient, names: Iterable[str]) -> list[dict[str, Any]]:
    """What the receivers named applied, in order per receiver."""
    return [a for name in names for a in receivers.applied(name)]


def beta_receivers(receivers: ReceiversClient) -> list[str]:
    return [name for name in receivers.stats()["receivers"] if name.startswith("municipal/")]


def applied_count(receivers: ReceiversClient, beta: bool = False) -> int:
    """Events applied by alpha's receiver, or by all of beta's."""
    per = receivers.stats()["receivers"]
    if beta:
        return sum(c["applied"] for name, c in per.items() if name.startswith("municipal/"))
    return int(per.get(ALPHA_RECEIVER, {}).get("applied", 0))


def duplicates_at(receivers: ReceiversClient) -> int:
    return int(receivers.stats()["total"]["duplicates"])


async def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(poll_s)


def assert_each_once_in_order(
    outbox: Outbox,
    destination: str,
    applied: list[dict[str, Any]],
    missing: AbstractSet[str] = frozenset(),
) -> None:
    """Every outbox id applied exactly once (bar ``missing``), each person's in outbox order."""
    counts = Counter(a["event_id"] for a in applied)
    expected = [i for i in outbox.ids[destination] if i not in missing]
    assert not [i for i, n in counts.items() if n > 1], "an event was applied twice"
    assert set(counts) == set(expected), (
        f"{len(set(expected) - set(counts))} not applied, {len(set(counts) - set(expected))} "
        "applied that were not in the outbox"
    )
    seen: dict[str, list[str]] = defaultdict(list)
    for a in applied:
        seen[a["subject"]].append(a["event_id"])
    for subject, ids in outbox.by_subject[destination].items():
        assert seen[subject] == [i for i in ids if i not in missing], "a person's order broke"


async def dead_letters(settings: HubSettings) -> list[tuple[DeadLetter, bytes | None]]:
    return [
        (DeadLetter.from_headers(record.headers), record.key)
        async for record in read_topic(settings, settings.topic_dead_letter)
    ]


async def disclosure_entries(settings: HubSettings) -> list[dict[str, Any]]:
    return [
        json.loads(record.value)
        async for record in read_topic(settings, settings.topic_disclosures)
        if record.value is not None
    ]


@contextlib.contextmanager
def running_receivers(settings: HubSettings, port: int) -> Iterator[ReceiversClient]:
    """``hub receivers`` in a process of its own (its CPU is not the test's, nor its GIL)."""
    with receivers_subprocess(hub_environment(settings), port=port) as receivers:
        yield receivers


@pytest.fixture(scope="module")
def shared_receivers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, ReceiversClient]]:
    """One ``hub receivers`` process for the module (a start costs seconds on this machine);
    each test resets what it applied and its knobs. The receivers read no Kafka and no routes
    (they derive the development secrets as the endpoints do), so one serves every test."""
    port = _free_port()
    routes = write_routes(tmp_path_factory.mktemp("delivery") / "routes.toml", port)
    with running_receivers(settings_for("127.0.0.1:9", routes_file=routes), port) as receivers:
        yield routes, receivers


@pytest.fixture
def setup(
    kafka_bootstrap: str, shared_receivers: tuple[Path, ReceiversClient]
) -> Iterator[tuple[HubSettings, RoutesConfig, ReceiversClient]]:
    routes, receivers = shared_receivers
    receivers.reset_control()
    receivers.reset()
    settings = settings_for(kafka_bootstrap, partitions=6, routes_file=routes)
    config = load_routes(settings)
    yield settings, config, receivers
    receivers.reset_control()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- (a) a receiver down for a while, then up --------------------------------------------------


async def test_receiver_down_then_up_delivers_all_in_order_once_while_others_flow(
    setup: tuple[HubSettings, RoutesConfig, ReceiversClient],
) -> None:
    settings, config, receivers = setup
    outbox = await fill_outboxes(settings, config, jobseekers=50, seed=11)
    receivers.control(ALPHA_RECEIVER, down=True)
    metrics = DeliveryMetrics()
    disclosures = DisclosureLog(settings)
    await disclosures.start()
    http = http_client(settings.delivery_timeout_s)
    alpha = webhook_worker(settings, config, "alpha", http, disclosures, metrics)
    beta = webhook_worker(settings, config, "beta", http, disclosures, metrics)
    runs = [asyncio.create_task(alpha.run()), asyncio.create_task(beta.run())]
    try:
        # Beta delivers everything while alpha's receiver is down.
        await wait_until(
            lambda: applied_count(receivers, beta=True) >= outbox.count("beta"),
            60,
            "beta to deliver while alpha's receiver is down",
        )
        assert applied_count(receivers) == 0
        assert alpha.stats.retried > 0
        opened = metrics.registry.get_sample_value(
            "hub_delivery_breaker_state", {"destination": "alpha", "endpoint": "-"}
        )
        assert opened in (1.0, 2.0)  # open or half-open: alpha is not hammering its receiver
        failed_while_down = receivers.stats()["receivers"][ALPHA_RECEIVER]["failed"]
        receivers.control(ALPHA_RECEIVER, down=None)
        await wait_until(
            lambda: applied_count(receivers) >= outbox.count("alpha"),
            60,
            "alpha to deliver after its receiver came back",
        )
        await wait_until(
            lambda: bool(alpha.lag()) and sum(alpha.lag().values()) == 0,
            10,
            "alpha's lag to reach 0",
        )
    finally:
        alpha.stop()
        beta.stop()
        await asyncio.gather(*runs)
        await disclosures.stop()
        await http.aclose()
    assert_each_once_in_order(outbox, "alpha", applied_of(receivers, [ALPHA_RECEIVER]))
    assert_each_once_in_order(outbox, "beta", applied_of(receivers, beta_receivers(receivers)))
    for a in applied_of(receivers, beta_receivers(receivers)):
        assert a["receiver"] == f"municipal/{outbox.endpoint_of[a['event_id']]}"
    # The breaker kept the down receiver's load far below one request per waiting event.
    assert failed_while_down < outbox.count("alpha") / 4
    entries = await disclosure_entries(settings)
    delivered = Counter((e["destination"], e["event_id"]) for e in entries)
    assert {k for k in delivered if k[0] == "alpha"} == {("alpha", i) for i in outbox.ids["alpha"]}
    assert {k for k in delivered if k[0] == "beta"} == {("beta", i) for i in outbox.ids["beta"]}
    assert all(e["status"] == "delivered" for e in entries)
    assert await dead_letters(settings) == []
    print(
        f"\n[delivery] alpha {outbox.count('alpha')} and beta {outbox.count('beta')} events, "
        f"alpha retried {alpha.stats.retried}, its receiver failed {failed_while_down} requests "
        f"while down; {len(entries)} disclosure receipts"
    )


# -- (d) a receiver refuses one event with 422 -------------------------------------------------


async def test_a_refused_event_is_a_dead_letter_with_the_reason_and_the_rest_flows(
    setup: tuple[HubSettings, RoutesConfig, ReceiversClient],
) -> None:
    settings, config, receivers = setup
    outbox = await fill_outboxes(settings, config, jobseekers=60, seed=12)
    # A person's second event (of several) is refused: the person's later events must follow.
    subject, ids = next((s, ids) for s, ids in outbox.by_subject["beta"].items() if len(ids) >= 4)
    refused = ids[1]
    receiver = f"municipal/{outbox.endpoint_of[refused]}"
    receivers.control(receiver, refuse_event_ids=[refused])
    metrics = DeliveryMetrics()
    disclosures = DisclosureLog(settings)
    await disclosures.start()
    http = http_client(settings.delivery_timeout_s)
    beta = webhook_worker(settings, config, "beta", http, disclosures, metrics)
    run = asyncio.create_task(beta.run())
    try:
        await wait_until(
            lambda: (
                applied_count(receivers, beta=True) >= outbox.count("beta") - 1
                and beta.stats.dead_letters == 1
            ),
            60,
            "beta to deliver all but the refused event",
        )
    finally:
        beta.stop()
        await run
        await disclosures.stop()
        await http.aclose()
    assert_each_once_in_order(
        outbox, "beta", applied_of(receivers, beta_receivers(receivers)), missing={refused}
    )
    letters = await dead_letters(settings)
    assert len(letters) == 1
    letter, key = letters[0]
    assert letter.stage == "deliver"
    assert letter.error_class == "HTTP422"
    assert letter.event_id == refused
    assert letter.destination == "beta"
    assert letter.attempts == 1  # refused at once, not retried
    assert "Event refused" in letter.reason
    assert f"refuses event {refused}" in letter.reason
    assert letter.source_topic == outbox_topic(settings, "beta")
    assert key == subject.encode()
    entries = await disclosure_entries(settings)
    statuses = Counter(e["status"] for e in entries)
    assert statuses == {"delivered": outbox.count("beta") - 1, "dead-lettered": 1}
    assert (
        metrics.registry.get_sample_value(
            "hub_delivery_dead_letters_total",
            {
                "destination": "beta",
                "endpoint": str(outbox.endpoint_of[refused]),
                "reason": "refused",
            },
        )
        == 1.0
    )
    print(
        f"\n[delivery] beta: {outbox.count('beta') - 1} delivered, 1 dead letter: {letter.reason!r}"
    )


# -- a receiver that never answers 2xx: the schedule runs out ----------------------------------


async def test_a_used_up_schedule_is_a_dead_letter_with_attempts_and_times(
    setup: tuple[HubSettings, RoutesConfig, ReceiversClient],
) -> None:
    settings, config, receivers = setup
    outbox = await fill_outboxes(settings, config, jobseekers=5, seed=16, only=("gamma",))
    receivers.control("provider/gamma", down=True)  # 503, connection closed, every time
    http = http_client(settings.delivery_timeout_s)
    gamma = webhook_worker(settings, config, "gamma", http, None, DeliveryMetrics())
    run = asyncio.create_task(gamma.run())
    try:
        await wait_until(
            lambda: gamma.stats.dead_letters >= outbox.count("gamma"), 60, "every dead letter"
        )
    finally:
        gamma.stop()
        await run
        await http.aclose()
    letters = await dead_letters(settings)
    assert sorted(letter.event_id or "" for letter, _ in letters) == sorted(outbox.ids["gamma"])
    for letter, _ in letters:
        assert letter.error_class == "RetriesExhausted"
        assert letter.attempts == 3  # the first and the two of the schedule
        assert letter.first_attempt_at is not None
        assert letter.last_attempt_at is not None
        assert letter.last_attempt_at - letter.first_attempt_at >= timedelta(seconds=0.15)
        assert "last answer 503" in letter.reason
        assert "Receiver is down" in letter.reason
    assert receivers.stats()["receivers"]["provider/gamma"]["failed"] == 3 * len(letters)
    # Each person's dead letters in their order: a person's next event waited for the last.
    order = [letter.event_id for letter, _ in letters]
    for ids in outbox.by_subject["gamma"].values():
        assert [i for i in order if i in ids] == ids


# -- a rebalance: a second worker joins the group, then the first leaves -----------------------


async def test_two_workers_rebalancing_deliver_each_once_in_order_with_one_chain_each(
    setup: tuple[HubSettings, RoutesConfig, ReceiversClient],
) -> None:
    settings, config, receivers = setup
    outbox = await fill_outboxes(settings, config, jobseekers=200, seed=15, only=("alpha",))
    total = outbox.count("alpha")
    receivers.control(ALPHA_RECEIVER, delay_s=0.01)  # keep deliveries in flight at the rebalance
    logs = [DisclosureLog(settings), DisclosureLog(settings)]
    for log in logs:
        await log.start()
    http = http_client(settings.delivery_timeout_s)
    first = webhook_worker(settings, config, "alpha", http, logs[0], DeliveryMetrics())
    second = webhook_worker(settings, config, "alpha", http, logs[1], DeliveryMetrics())
    first_run = asyncio.create_task(first.run())
    second_run: asyncio.Task[Any] | None = None
    try:
        await wait_until(lambda: applied_count(receivers) > total // 5, 60, "first deliveries")
        second_run = asyncio.create_task(second.run())
        await wait_until(
            lambda: bool(second.lag()) and bool(first.lag()), 60, "both workers to share the group"
        )
        at_join = applied_count(receivers)
        await wait_until(lambda: applied_count(receivers) > at_join + total // 10, 60, "more")
        first.stop()  # leaves the group: the second takes every partition
        await first_run
        await wait_until(lambda: len(second.lag()) == 6, 60, "the second worker to take all")
        receivers.control(ALPHA_RECEIVER, delay_s=None)
        await wait_until(lambda: applied_count(receivers) >= total, 60, "everything delivered")
    finally:
        first.stop()
        second.stop()
        await asyncio.gather(first_run, *([second_run] if second_run else []))
        for log in logs:
            await log.stop()
        await http.aclose()
    assert at_join < total
    assert_each_once_in_order(outbox, "alpha", applied_of(receivers, [ALPHA_RECEIVER]))
    report = await verify_chains(settings)
    assert report.ok, report.problems[:3]
    assert {e["event_id"] for e in await disclosure_entries(settings)} == set(outbox.ids["alpha"])
    print(
        f"\n[delivery] {total} events over a join and a leave: first delivered "
        f"{first.stats.delivered}, second {second.stats.delivered} "
        f"({duplicates_at(receivers)} duplicates dropped by the receiver); "
        f"{report.entries} receipts in {len(report.chains)} unbroken chains"
    )


# -- (b) a hub deliver process SIGKILLed 10 times under load ------------------------------------


def _deliver_process(
    settings: HubSettings, cwd: Path, log_file: Path, *which: str
) -> subprocess.Popen[bytes]:
    env = hub_environment(settings, HUB_LOG_LEVEL="INFO", HUB_DELIVERY_MAX_IN_FLIGHT="16")
    env["PYTHONPATH"] = str(REPO_ROOT)
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                # The command `hub deliver` runs, without importing every other command of
                # `hub` (half of a start-up, eleven times over).
                "from connectors.webhook.cli import deliver_command; "
                "deliver_command(prog_name='hub deliver')",
                *(which or ("--destination", "alpha")),
                "--instance-id",
                "kill-test",
                "--progress-interval",
                "1",
                "--commit-interval",
                "0.25",
                "--drain",
                "5",
            ],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=out,
        )


async def test_hub_deliver_killed_ten_times_loses_nothing_and_applies_each_once(
    setup: tuple[HubSettings, RoutesConfig, ReceiversClient], tmp_path: Path
) -> None:
    settings, config, receivers = setup
    outbox = await fill_outboxes(settings, config, jobseekers=1100, seed=13, only=("alpha",))
    total = outbox.count("alpha")
    assert total >= 10_000
    rng = random.Random(13)
    log_file = tmp_path / "deliver.log"
    kills = 0
    applied_at_kill: list[int] = []
    while kills < 10:
        process = _deliver_process(settings, tmp_path, log_file)
        before = applied_count(receivers)

        def delivering(before: int = before, process: subprocess.Popen[bytes] = process) -> bool:
            return applied_count(receivers) > before or process.poll() is not None

        try:
            # Kill under load: once this process has delivered something, at a random moment.
            await wait_until(
                delivering,
                60,
                "the restarted hub deliver to deliver",
                poll_s=0.05,
            )
            assert process.poll() is None, "hub deliver exited by itself"
            await asyncio.sleep(rng.uniform(0.1, 2.0))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        kills += 1
        applied_at_kill.append(applied_count(receivers))
    # The last run: every destination of the routes (beta's outbox is empty), with metrics.
    metrics_port = _free_port()
    process = _deliver_process(
        settings, tmp_path, log_file, "--all", "--metrics-port", str(metrics_port)
    )
    try:
        await wait_until(
            lambda: applied_count(receivers) >= total or process.poll() is not None,
            150,
            "the last hub deliver to deliver everything",
            poll_s=0.3,
        )
        # A progress line after the last delivery sets the lag gauge (once a second).
        metrics: dict[tuple[str, str], float] = {}

        def settled() -> bool:
            nonlocal metrics
            metrics = _scrape(metrics_port)
            lags = [v for (name, d), v in metrics.items() if name == "hub_delivery_consumer_lag"]
            return bool(lags) and sum(lags) == 0

        await wait_until(settled, 30, "the lag gauge to reach 0", poll_s=0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, log_file.read_text()[-3000:]
    assert_each_once_in_order(outbox, "alpha", applied_of(receivers, [ALPHA_RECEIVER]))
    duplicates = duplicates_at(receivers)
    summary = out.decode().strip().splitlines()[0]
    assert summary.startswith("alpha: "), summary
    assert applied_at_kill[-1] < total, "the kills did not all come under load"
    print(
        f"\n[delivery] {total} outbox events, hub deliver SIGKILLed {kills} times "
        f"(applied at each kill: {applied_at_kill}); the receiver applied each once and "
        f"dropped {duplicates} duplicates on the wire; last run: {summary}"
    )
    assert duplicates > 0  # kills between a 2xx and its commit send events again
    report = await verify_chains(settings)  # ten crashes, and every receipt chain is whole
    assert report.ok, report.problems[:3]
    last_delivered, last_duplicates = (int(n) for n in re.findall(r"(\d+) d", summary)[:2])
    assert metrics[("hub_delivery_duplicates_total", "alpha")] == last_duplicates
    assert metrics[("hub_delivery_delivered_total", "alpha")] == last_delivered
    assert sum(v for (name, d), v in metrics.items() if name == "hub_delivery_consumer_lag") == 0


def _scrape(port: int) -> dict[tuple[str, str], float]:
    """``(metric, destination) -> value`` (summed over other labels) from ``/metrics``."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values: dict[tuple[str, str], float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            destination = sample.labels.get("destination")
            if destination is not None:
                values[(sample.name, destination)] += sample.value
    return values


# -- (c) a broker restart under load -----------------------------------------------------------


async def test_broker_restart_under_load_loses_nothing(
    private_kafka: LocalKafka, shared_receivers: tuple[Path, ReceiversClient]
) -> None:
    routes, receivers = shared_receivers
    receivers.reset_control()
    receivers.reset()
    settings = settings_for(private_kafka.bootstrap, partitions=6, routes_file=routes)
    config = load_routes(settings)
    outbox = await fill_outboxes(settings, config, jobseekers=150, seed=14, only=("alpha",))
    total = outbox.count("alpha")
    # Slow enough that the restart lands mid-stream.
    receivers.control(ALPHA_RECEIVER, delay_s=0.01)
    metrics = DeliveryMetrics()
    disclosures = DisclosureLog(settings)
    await disclosures.start()
    http = http_client(settings.delivery_timeout_s)
    alpha = webhook_worker(settings, config, "alpha", http, disclosures, metrics)
    run = asyncio.create_task(alpha.run())
    try:
        await wait_until(
            lambda: applied_count(receivers) > total // 5,
            60,
            "deliveries before the restart",
        )
        await asyncio.to_thread(private_kafka.stop)
        at_stop = applied_count(receivers)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(private_kafka.start, 120)
        receivers.control(ALPHA_RECEIVER, delay_s=None)
        await wait_until(
            lambda: applied_count(receivers) >= total,
            90,
            "everything delivered after the broker restart",
        )
    finally:
        alpha.stop()
        await run
        await disclosures.stop()
        await http.aclose()
    assert at_stop < total, "the broker restart did not come under load"
    assert_each_once_in_order(outbox, "alpha", applied_of(receivers, [ALPHA_RECEIVER]))
    entries = await disclosure_entries(settings)
    assert {e["event_id"] for e in entries} == set(outbox.ids["alpha"])
    print(
        f"\n[delivery] {total} events, broker stopped after {at_stop} and restarted: all "
        f"applied once, {duplicates_at(receivers)} duplicates dropped by the receiver"
    )
