"""`hub dlq` on a real broker: list and show with filters, replay once, purge hides.

Dead letters are written as the router and the delivery workers write them: the original record
(a log record for decode/route, an outbox record for deliver) with ``hub-dlq-*`` headers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import RecordMetadata

from connectors.receivers import LocalReceivers
from connectors.simulator import SimulationConfig, simulate
from connectors.webhook.transport import WebhookTransport, http_client
from hub.delivery.disclosure import DisclosureLog
from hub.delivery.dlq import (
    LetterFilter,
    is_marker,
    parse_time,
    read_letters,
    safe_view,
    select,
)
from hub.delivery.metrics import DeliveryMetrics
from hub.delivery.schedule import RetrySchedule
from hub.delivery.worker import DeliveryTarget, DeliveryWorker, RoutedDisclosures
from hub.events import CustomerPathEvent
from hub.events.customer_path import EVENT_TYPES
from hub.events.sensitivity import sensitive_fields
from hub.identity import Pseudonymizer
from hub.kafka.clients import make_producer
from hub.kafka.dead_letters import DeadLetter, DeadLetterStage, with_dead_letter_headers
from hub.kafka.publisher import encode_event
from hub.kafka.reading import read_topic
from hub.kafka.topics import ensure_topics, outbox_spec, outbox_topic
from hub.routing.outbox import HEADER_DESTINATION, HEADER_ROUTE, HEADER_SOURCE, OutboxCodec
from hub.routing.resolve import route_event
from hub.routing.router import LogRecord, OutRecord, RecordHandler, router_destinations
from hub.routing.routes import RoutesConfig, load_routes
from hub.routing.state import PersonStates
from hub.serde import SingleObjectSerializer
from hub.settings import HubSettings
from tests.conftest import hub_environment, settings_for
from tests.hub_process import hub_command

pytestmark = pytest.mark.kafka


def _event(paths: list[list[CustomerPathEvent]], type_name: str) -> CustomerPathEvent:
    return next(e for path in paths for e in path if type(e).__name__ == type_name)


def _value_at(record: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(record, dict):
            return None
        record = record.get(part)
    return record


class Letters:
    """The dead letters of one test and what they came from."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.positions: dict[str, str] = {}
        self.outbox: dict[str, OutRecord] = {}
        self.event_ids: dict[str, str] = {}

    async def write(self, handler: RecordHandler, paths: list[list[CustomerPathEvent]]) -> None:
        settings = self.settings
        serializer = SingleObjectSerializer()
        producer = make_producer(settings)
        await producer.start()
        try:

            async def send(name: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
                sent: RecordMetadata = await producer.send_and_wait(
                    settings.topic_dead_letter, value=value, key=key, headers=headers
                )
                self.positions[name] = f"{sent.partition}/{sent.offset}"

            # deliver-stage: outbox records a receiver refused
            for name, type_name, destination in (
                ("enrolment", "ServiceEnrolled", "providers"),
                ("statement", "LabourPolicyStatementIssued", None),
            ):
                event = _event(paths, type_name)
                encoded = encode_event(serializer, event, None)
                log_record = LogRecord(
                    settings.topic_customer_path, 1, 10, encoded.key, encoded.value, encoded.headers
                )
                outcome = handler.handle(log_record, PersonStates().batch())
                out = next(
                    r
                    for r in outcome.records
                    if r.topic.startswith(settings.topic_outbox_prefix)
                    and "reporting" not in r.topic
                    and (destination is None or r.topic == outbox_topic(settings, destination))
                )
                got = dict(out.headers)["hub-destination"].decode()
                letter = DeadLetter(
                    stage=DeadLetterStage.DELIVER,
                    error_class="ReceiverRefused",
                    reason=f"receiver answered 422: it refuses event {event.envelope.event_id}",
                    source_topic=out.topic,
                    source_partition=1,
                    source_offset=5,
                    attempts=3,
                    destination=got,
                    event_id=str(event.envelope.event_id),
                    event_type=type_name,
                )
                self.outbox[name] = out
                self.event_ids[name] = str(event.envelope.event_id)
                await send(name, out.key, out.value, with_dead_letter_headers(out.headers, letter))

            # route-stage: a log record the router could not route then (fixed since)
            registration = _event(paths, "JobseekerRegistered")
            encoded = encode_event(serializer, registration, None)
            letter = DeadLetter(
                stage=DeadLetterStage.ROUTE,
                error_class="Unroutable",
                reason="route all-to-reporting: the directory was being updated",
                source_topic=settings.topic_customer_path,
                source_partition=0,
                source_offset=3,
                event_id=str(registration.envelope.event_id),
                event_type="JobseekerRegistered",
            )
            self.event_ids["registration"] = str(registration.envelope.event_id)
            await send(
                "registration",
                encoded.key,
                encoded.value,
                with_dead_letter_headers(list(encoded.headers), letter),
            )
            # decode-stage: bytes no schema reads
            poison = DeadLetter(
                stage=DeadLetterStage.DECODE,
                error_class="UnknownSchema",
                reason="no schema with this fingerprint",
                source_topic=settings.topic_customer_path,
                source_partition=2,
                source_offset=7,
            )
            await send("poison", b"k" * 32, b"\xc3\x01" + b"\x00" * 12, poison.headers())
        finally:
            await producer.stop()


async def outbox_records(settings: HubSettings, destination: str) -> list[Any]:
    return [r async for r in read_topic(settings, outbox_topic(settings, destination))]


@pytest.fixture
async def letters(hub_settings: HubSettings) -> Letters:
    config = load_routes(hub_settings)
    await ensure_topics(
        hub_settings, extra=[outbox_spec(hub_settings, d) for d in router_destinations(config)]
    )
    paths = list(
        simulate(SimulationConfig(jobseekers=30, seed=3), Pseudonymizer.from_settings(hub_settings))
    )
    written = Letters(hub_settings)
    handler = RecordHandler(hub_settings, config)
    try:
        await written.write(handler, paths)
    finally:
        handler.close()  # the person keys it opened (a follower thread)
    return written


def _rows(stdout: str) -> list[list[str]]:
    lines = stdout.strip().splitlines()
    return [line.split() for line in lines[1:-1]]


async def test_list_and_show_with_filters(
    hub_settings: HubSettings, letters: Letters, tmp_path: Path
) -> None:
    env = hub_environment(hub_settings)

    def hub(*args: str) -> Any:
        result = hub_command("dlq", *args, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return result

    everything = hub("list")
    assert everything.stdout.splitlines()[0].split() == [
        "offset", "stage", "destination", "type", "event", "id", "attempts", "reason",
    ]  # fmt: skip
    assert {row[0] for row in _rows(everything.stdout)} == set(letters.positions.values())
    assert everything.stdout.strip().endswith(
        f"4 letter(s) of 4 in {hub_settings.topic_dead_letter}"
    )

    providers = _rows(hub("list", "--destination", "providers").stdout)
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in providers] == [
        (
            letters.positions["enrolment"],
            "deliver",
            "providers",
            "ServiceEnrolled",
            letters.event_ids["enrolment"],
            "3",
        )
    ]
    bad_time = hub_command("dlq", "list", "--since", "yesterday", env=env, cwd=tmp_path)
    assert bad_time.returncode == 2
    assert "duration ago" in bad_time.stderr

    # The other filters, on what the commands read (fewer processes, the same code).
    stored = await read_letters(hub_settings)

    def positions(**given: Any) -> list[str]:
        return sorted(s.position for s in select(stored, [], LetterFilter(**given))[0])

    assert positions(stage=DeadLetterStage.DELIVER) == sorted(
        [letters.positions["enrolment"], letters.positions["statement"]]
    )
    assert positions(event_type="JobseekerRegistered") == [letters.positions["registration"]]
    assert positions(event_type="fi.te.hub.JobseekerRegistered") == positions(
        event_type="JobseekerRegistered"
    )
    assert len(select(stored, [], LetterFilter(since=parse_time("2h")), limit=1)[0]) == 1
    assert positions(since=parse_time("2999-01-01")) == []
    assert positions(until=parse_time("2000-01-01T00:00:00")) == []
    assert positions(until=parse_time("0s")) == sorted(letters.positions.values())
    assert Counter(s.stage for s in stored) == {"deliver": 2, "route": 1, "decode": 1}

    # show: every header; the value only as its fields without a pii class
    shown = hub("show", letters.positions["enrolment"])
    out = letters.outbox["enrolment"]
    for key, _ in out.headers:
        assert f"    {key}: " in shown.stdout
    for header in ("hub-dlq-stage: deliver", "hub-dlq-reason:", "hub-dlq-attempts: 3"):
        assert header in shown.stdout
    codec = OutboxCodec.for_routes(load_routes(hub_settings))
    decoded = codec.decode(out.value or b"")
    secret_paths = sensitive_fields(codec.schema(decoded.destination, decoded.type_name))
    secret_values = [
        v for v in (_value_at(decoded.record, p) for p in secret_paths) if isinstance(v, str) and v
    ]
    assert secret_values, "the provider's outbox record carries names: the test must see some"
    for value in secret_values:
        assert value not in shown.stdout
    assert letters.event_ids["enrolment"] in shown.stdout  # the envelope is shown
    assert "fields without a pii class only" in shown.stdout

    by_event_id = json.loads(hub("show", "--json", letters.event_ids["registration"]).stdout)
    assert by_event_id["position"] == letters.positions["registration"]
    assert by_event_id["value"]["envelope"]["event_id"] == letters.event_ids["registration"]
    poison = next(s for s in stored if s.position == letters.positions["poison"])
    assert safe_view(hub_settings, poison)[0] is None
    assert "not shown" in safe_view(hub_settings, poison)[1]
    missing = hub_command("dlq", "show", "9/999", env=env, cwd=tmp_path)
    assert missing.returncode == 1
    assert "no dead letter 9/999" in missing.stderr


async def test_replay_once_then_skip_and_purge_hides(
    hub_settings: HubSettings, letters: Letters, tmp_path: Path
) -> None:
    env = hub_environment(hub_settings)

    def hub(*args: str) -> Any:
        return hub_command("dlq", *args, env=env, cwd=tmp_path)

    nothing = hub("replay")
    assert nothing.returncode == 2
    assert "--all" in nothing.stderr

    enrolment = letters.positions["enrolment"]
    dry = hub("replay", "--dry-run", enrolment)
    assert dry.returncode == 0, dry.stderr
    assert "would replay" in dry.stdout
    assert await outbox_records(hub_settings, "providers") == []

    first = hub("replay", enrolment)
    assert first.returncode == 0, first.stderr
    assert f"replayed {enrolment}" in first.stdout
    again = hub("replay", letters.event_ids["enrolment"])
    assert again.returncode == 0, again.stderr
    assert "0 replayed" in again.stdout
    assert "already replayed" in again.stderr

    replayed = await outbox_records(hub_settings, "providers")
    assert len(replayed) == 1
    record = replayed[0]
    out = letters.outbox["enrolment"]
    assert (record.key, record.value) == (out.key, out.value)
    assert [(k, bytes(v)) for k, v in record.headers] == list(out.headers)  # hub-dlq-* gone
    assert not any(k.startswith("hub-dlq-") for k, _ in record.headers)

    # route stage: routed again by the router's code into every outbox that wants it
    routed = hub("replay", "--stage", "route")
    assert routed.returncode == 0, routed.stderr
    assert f"replayed {letters.positions['registration']}" in routed.stdout
    reporting = await outbox_records(hub_settings, "reporting")
    assert [dict(r.headers)["ce_id"].decode() for r in reporting] == [
        letters.event_ids["registration"]
    ]
    assert dict(reporting[0].headers)["hub-source"] == (
        f"{hub_settings.topic_customer_path}/0/3".encode()
    )

    # a poison record still does not decode: not replayed, still pending, exit 1
    poison = hub("replay", "--all", "--stage", "decode")
    assert poison.returncode == 1
    assert "still fails at decode" in poison.stderr
    statuses = {r[0]: r[1] for r in _rows(hub("list", "--status", "all").stdout)}
    assert statuses == {
        enrolment: "replayed",
        letters.positions["registration"]: "replayed",
        letters.positions["statement"]: "pending",
        letters.positions["poison"]: "pending",
    }

    # purge: marked resolved, hidden from the list, never replayed
    statement = letters.positions["statement"]
    purged = hub("purge", statement, "--note", "ticket HUB-1")
    assert purged.returncode == 0, purged.stderr
    assert f"purged {statement}" in purged.stdout
    assert [r[0] for r in _rows(hub("list").stdout)] == [letters.positions["poison"]]
    stored = {s.position: s for s in await read_letters(hub_settings)}
    assert stored[statement].status == "purged"
    assert stored[statement].mark_note == "ticket HUB-1"
    refused = hub("replay", statement)
    assert "already purged" in refused.stderr
    kela_or_fund = [
        r
        async for r in read_topic(hub_settings, letters.outbox["statement"].topic)
        if dict(r.headers).get("ce_id", b"").decode() == letters.event_ids["statement"]
    ]
    assert kela_or_fund == []

    # markers live on the dead-letter topic beside their letters, and say so
    records = [r async for r in read_topic(hub_settings, hub_settings.topic_dead_letter)]
    markers = [r for r in records if is_marker(r.headers)]
    assert len(markers) == 3
    assert all(r.value is None for r in markers)


ALL_TYPES = sorted({name.rsplit(".", 1)[-1] for name in EVENT_TYPES})


def _routes_file(path: Path, port: int) -> Path:
    """One destination, alpha, on the receiver ``kela`` of the test, with short retries."""
    path.write_text(
        f"""
[destinations.alpha]
transport = "webhook"
endpoint = {{ url = "http://127.0.0.1:{port}/kela" }}
retry_schedule_s = [0.2, 0.4]

[[routes]]
name = "all-to-alpha"
types = {json.dumps(ALL_TYPES)}
to = {{ destination = "alpha" }}
""",
        encoding="utf-8",
    )
    return path


async def _fill_alpha(settings: HubSettings, config: RoutesConfig) -> list[str]:
    """Simulated events routed to alpha's outbox as the router writes them; their ids."""
    await ensure_topics(settings, extra=[outbox_spec(settings, "alpha")])
    serializer = SingleObjectSerializer()
    codec = OutboxCodec.for_routes(config)
    paths = simulate(SimulationConfig(jobseekers=6, seed=21), Pseudonymizer.from_settings(settings))
    ids = []
    producer = make_producer(settings)
    await producer.start()
    try:
        for offset, event in enumerate(e for path in paths for e in path):
            encoded = encode_event(serializer, event, None)
            decoded = serializer.decode(encoded.value)
            type_name = decoded.type_name.rsplit(".", 1)[-1]
            for routed in route_event(config, type_name, decoded.record, None):
                headers = [
                    *encoded.headers,
                    (HEADER_ROUTE, routed.route.encode()),
                    (HEADER_DESTINATION, routed.destination.encode()),
                    (HEADER_SOURCE, f"{settings.topic_customer_path}/0/{offset}".encode()),
                ]
                await producer.send_and_wait(
                    outbox_topic(settings, "alpha"),
                    value=codec.encode(routed, type_name),
                    key=encoded.key,
                    headers=headers,
                )
                ids.append(str(event.envelope.event_id))
    finally:
        await producer.stop()
    return ids


def _alpha_worker(
    settings: HubSettings, config: RoutesConfig, http: Any, disclosures: DisclosureLog
) -> DeliveryWorker:
    """A worker of alpha assembled as ``hub deliver`` assembles it."""
    destination = config.destination("alpha")

    def transport_for(key: str | None) -> WebhookTransport:
        endpoint = destination.endpoint_for(key)
        return WebhookTransport(str(endpoint.url), endpoint.signing_secret(settings), http)

    target = DeliveryTarget(
        name="alpha",
        schedule=RetrySchedule(tuple(destination.retry_schedule_s)),
        breaker_failures=destination.breaker_failures,
        breaker_open_s=destination.breaker_open_s,
        transport_for=transport_for,
    )
    return DeliveryWorker(
        settings,
        target,
        OutboxCodec.for_routes(config),
        metrics=DeliveryMetrics(),
        disclosures=RoutedDisclosures(disclosures, config, "alpha"),
        progress_interval_s=5.0,
        drain_s=5.0,
    )


async def test_refused_event_replayed_after_the_fix_is_applied_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The whole path: a receiver refuses one event (422) → dead letter; the receiver is fixed;
    `hub dlq replay` → the worker delivers it; the receiver applied each event exactly once,
    a second replay sends nothing, and the disclosure chains still verify."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = settings_for(
        kafka_bootstrap, partitions=3, routes_file=_routes_file(tmp_path / "routes.toml", port)
    )
    config = load_routes(settings)
    with LocalReceivers(settings, port=port) as receivers:
        expected = await _fill_alpha(settings, config)
        refused = expected[len(expected) // 2]
        receivers.control("kela", refuse_event_ids=[refused])

        def applied_ids() -> list[str]:
            return [a["event_id"] for a in receivers.applied("kela")]

        async def deliver(until: Callable[[DeliveryWorker], bool], what: str) -> None:
            disclosures = DisclosureLog(settings)
            await disclosures.start()
            http = http_client(settings.delivery_timeout_s, 16)
            worker = _alpha_worker(settings, config, http, disclosures)
            run = asyncio.create_task(worker.run())
            try:
                deadline = time.monotonic() + 60
                while not until(worker):
                    assert time.monotonic() < deadline, f"timed out waiting for {what}"
                    await asyncio.sleep(0.1)
            finally:
                worker.stop()
                await run
                await disclosures.stop()
                await http.aclose()

        await deliver(
            lambda w: len(applied_ids()) == len(expected) - 1 and w.stats.dead_letters == 1,
            "all but the refused event, and its dead letter",
        )
        assert refused not in applied_ids()
        receivers.reset_control()  # the fix

        env = hub_environment(settings)
        replayed = hub_command("dlq", "replay", "--destination", "alpha", env=env, cwd=tmp_path)
        assert replayed.returncode == 0, replayed.stderr
        assert "1 replayed" in replayed.stdout
        await deliver(lambda _: refused in applied_ids(), "the replayed event")
        again = hub_command("dlq", "replay", "--destination", "alpha", env=env, cwd=tmp_path)
        assert "0 replayed" in again.stdout

        applied = Counter(applied_ids())
        assert set(applied) == set(expected)
        assert max(applied.values()) == 1, "an event was applied twice"
        verified = hub_command("audit", "verify", env=env, cwd=tmp_path)
        assert verified.returncode == 0, verified.stderr
        receipts = [
            json.loads(r.value)
            async for r in read_topic(settings, settings.topic_disclosures)
            if json.loads(r.value)["event_id"] == refused
        ]
        assert [r["status"] for r in receipts] == ["dead-lettered", "delivered"]
