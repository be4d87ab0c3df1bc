"""Delivery: events/s and end-to-end latency of ``hub deliver``, against a raw httpx POST loop.

    python bench/delivery.py [--events 3000] [--rate 50] [--seconds 20] [--in-flight 16]

Starts (or uses HUB_KAFKA_BOOTSTRAP) a real Kafka broker and ``hub receivers`` in a
subprocess, writes a routes file with one webhook destination on the receiver ``/kela``, and
measures, in the same run:

1. **baseline**: a raw httpx POST loop, ``--in-flight`` concurrent, of the same signed JSON
   bodies to the same receiver (no Kafka, no bookkeeping): events/s;
2. **throughput**: ``--events`` simulated events routed and projected into the outbox first,
   then ``hub deliver --destination bench`` (a subprocess, as deployed) delivers them; events/s
   from the receiver's first to its last apply, and the ratio to the baseline;
3. **latency**: with ``hub deliver`` running, outbox records produced at a steady ``--rate``
   per second for ``--seconds``; for each, the time from the outbox produce ack (acks=all) to
   the receiver applying it (its 2xx follows at once): p50, p99, max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.local_broker import free_port, kafka_broker  # noqa: E402
from connectors.receivers.runner import ReceiversClient, receivers_subprocess  # noqa: E402
from connectors.simulator import SimulationConfig, simulate  # noqa: E402
from connectors.simulator.paths import in_time_order  # noqa: E402
from connectors.webhook.transport import WebhookTransport, http_client  # noqa: E402
from hub.delivery.transport import DeliveryRequest, json_body, static_headers  # noqa: E402
from hub.events.customer_path import EVENT_TYPES  # noqa: E402
from hub.identity import Pseudonymizer  # noqa: E402
from hub.kafka.clients import make_producer  # noqa: E402
from hub.kafka.publisher import encode_event  # noqa: E402
from hub.kafka.topics import ensure_topics, outbox_spec, outbox_topic  # noqa: E402
from hub.routing.outbox import HEADER_DESTINATION, HEADER_ROUTE, OutboxCodec  # noqa: E402
from hub.routing.resolve import route_event  # noqa: E402
from hub.routing.routes import RoutesConfig, load_routes  # noqa: E402
from hub.serde import SingleObjectSerializer  # noqa: E402
from hub.settings import HubSettings  # noqa: E402

DESTINATION = "bench"
RECEIVER = "kela"
TYPES = sorted({name.rsplit(".", 1)[-1] for name in EVENT_TYPES})

Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]
"""(event id, key, value, headers) of one outbox record."""


def write_routes(path: Path, port: int) -> None:
    path.write_text(
        f"""
[destinations.{DESTINATION}]
transport = "webhook"
endpoint = {{ url = "http://127.0.0.1:{port}/{RECEIVER}" }}
retry_schedule_s = [0.5, 1, 2, 5, 10]

[[routes]]
name = "all-to-bench"
types = {json.dumps(TYPES)}
to = {{ destination = "{DESTINATION}" }}
""",
        encoding="utf-8",
    )


def outbox_records(config: RoutesConfig, count: int, seed: int) -> list[Record]:
    """``count`` simulated events routed and encoded as the router writes them."""
    serializer = SingleObjectSerializer()
    codec = OutboxCodec.for_routes(config)
    people = max(1, count // 9 + 1)
    paths = simulate(
        SimulationConfig(jobseekers=people, seed=seed), Pseudonymizer("bench-delivery-secret-0123")
    )
    records: list[Record] = []
    for event in in_time_order(paths):
        encoded = encode_event(serializer, event)
        decoded = serializer.decode(encoded.value)
        type_name = decoded.type_name.rsplit(".", 1)[-1]
        for routed in route_event(config, type_name, decoded.record, None):
            headers = [
                *encoded.headers,
                (HEADER_ROUTE, routed.route.encode()),
                (HEADER_DESTINATION, routed.destination.encode()),
            ]
            records.append(
                (
                    str(event.envelope.event_id),
                    encoded.key,
                    codec.encode(routed, type_name),
                    headers,
                )
            )
        if len(records) >= count:
            break
    return records[:count]


def applied_times(receivers: ReceiversClient) -> dict[str, float]:
    """Event id → when the receiver applied it (epoch seconds)."""
    return {
        a["event_id"]: datetime.fromisoformat(a["received_at"]).timestamp()
        for a in receivers.applied(RECEIVER)
    }


async def wait_applied(receivers: ReceiversClient, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while receivers.stats()["receivers"].get(RECEIVER, {}).get("applied", 0) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {count} deliveries")
        await asyncio.sleep(0.25)


async def baseline(
    settings: HubSettings, config: RoutesConfig, receivers: ReceiversClient, records: list[Record]
) -> float:
    """events/s of a raw httpx POST loop of the same signed bodies, ``in_flight`` at once."""
    codec = OutboxCodec.for_routes(config)
    endpoint = config.destination(DESTINATION).endpoint_for(None)
    http = http_client(settings.delivery_timeout_s)
    transport = WebhookTransport(str(endpoint.url), endpoint.signing_secret(settings), http)
    requests = []
    for _, _, value, _ in records:
        decoded = codec.decode(value)
        event_id = str(uuid.uuid4())  # fresh ids: the receiver applies each
        body = json_body(decoded.type_name, decoded.record)
        requests.append(
            DeliveryRequest(event_id, decoded.type_name, body, static_headers(event_id))
        )
    queue: asyncio.Queue[DeliveryRequest] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)

    async def loop() -> None:
        while not queue.empty():
            request = queue.get_nowait()
            headers = transport.signed_headers(request)
            response = await http.post(str(endpoint.url), content=request.body, headers=headers)
            response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(settings.delivery_max_in_flight)))
    elapsed = time.perf_counter() - started
    await http.aclose()
    receivers.reset()
    return len(requests) / elapsed


def start_deliver(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hub", "deliver", "--destination", DESTINATION],
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


async def produce_all(settings: HubSettings, records: list[Record]) -> None:
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    try:
        topic = outbox_topic(settings, DESTINATION)
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers)
            for _, key, value, headers in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce_steady(
    settings: HubSettings, records: list[Record], rate: float
) -> dict[str, float]:
    """Send one record every 1/rate s; event id → when the broker acknowledged it."""
    producer = make_producer(settings, linger_ms=0)
    await producer.start()
    acked: dict[str, float] = {}
    try:
        topic = outbox_topic(settings, DESTINATION)
        start = time.monotonic()
        futures = []
        for i, (event_id, key, value, headers) in enumerate(records):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            future = await producer.send(topic, value=value, key=key, headers=headers)
            future.add_done_callback(lambda _f, e=event_id: acked.__setitem__(e, time.time()))
            futures.append(future)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return acked


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0, help="events/s of the latency run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    with kafka_broker() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        port = free_port()
        routes = Path(tmp) / "routes.toml"
        write_routes(routes, port)
        settings = HubSettings(
            kafka_bootstrap=bootstrap,
            topic_outbox_prefix=f"bench.outbox.{run_id}.",
            topic_dead_letter=f"bench.dead-letter.{run_id}",
            topic_disclosures=f"bench.disclosures.{run_id}",
            writer_id_prefix=f"bench-{run_id}",
            routes_file=routes,
            delivery_max_in_flight=args.in_flight,
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
            "HUB_KAFKA_BOOTSTRAP": bootstrap,
            "HUB_TOPIC_OUTBOX_PREFIX": settings.topic_outbox_prefix,
            "HUB_TOPIC_DEAD_LETTER": settings.topic_dead_letter,
            "HUB_TOPIC_DISCLOSURES": settings.topic_disclosures,
            "HUB_WRITER_ID_PREFIX": settings.writer_id_prefix,
            "HUB_ROUTES_FILE": str(routes),
            "HUB_DELIVERY_MAX_IN_FLIGHT": str(args.in_flight),
            "HUB_LOG_LEVEL": "WARNING",
        }
        await ensure_topics(settings, extra=[outbox_spec(settings, DESTINATION)])
        config = load_routes(settings)
        steady_count = int(args.rate * args.seconds)
        records = outbox_records(config, args.events + steady_count, seed=21)
        bulk, steady = records[: args.events], records[args.events :]
        log = Path(tmp) / "deliver.log"
        with receivers_subprocess(env, port=port) as receivers:
            print(f"baseline: raw httpx POST loop, {len(bulk)} events …", file=sys.stderr)
            raw_rate = await baseline(settings, config, receivers, bulk)

            print(f"throughput: {len(bulk)} outbox records, then hub deliver …", file=sys.stderr)
            await produce_all(settings, bulk)
            deliver = start_deliver(env, log)
            try:
                await wait_applied(receivers, len(bulk), timeout_s=600)
                times = sorted(applied_times(receivers).values())
                hub_rate = (len(times) - 1) / (times[-1] - times[0])

                print(
                    f"latency: {len(steady)} records at {args.rate:g}/s to the running worker …",
                    file=sys.stderr,
                )
                acked = await produce_steady(settings, steady, args.rate)
                await wait_applied(receivers, len(bulk) + len(steady), timeout_s=600)
                applied = applied_times(receivers)
                latencies_ms = [(applied[e] - acked[e]) * 1000 for e, *_ in steady]
            finally:
                deliver.send_signal(signal.SIGTERM)
                deliver.wait(timeout=60)
    p50, p99 = percentile(latencies_ms, 0.5), percentile(latencies_ms, 0.99)
    print(
        f"\n{'':52} {'events/s':>9}\n"
        f"{'raw httpx POST loop (same bodies, same receiver)':52} {raw_rate:9,.0f}\n"
        f"{'hub deliver (outbox → receiver, Kafka commits)':52} {hub_rate:9,.0f}\n"
        f"\nratio hub deliver / raw POST loop: {hub_rate / raw_rate:.2f} "
        f"({args.in_flight} in flight)\n"
        f"latency outbox produce ack → receiver applied at {args.rate:g}/s "
        f"({len(latencies_ms)} events): p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {max(latencies_ms):.0f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
