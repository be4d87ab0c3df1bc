"""Delivery: events/s and end-to-end latency of ``hub deliver``, against a raw httpx POST loop.

    python bench/delivery.py [--events 3000] [--rate 50] [--seconds 20] [--in-flight 16]
                             [--no-end-to-end]

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
   the receiver applying it (its 2xx follows at once): p50, p99, max;
4. **end to end**: ``hub serve``, ``hub route`` and ``hub deliver --destination kela`` (each a
   subprocess, as deployed) on a second routes file: destination ``kela`` (the receiver's
   ``/kela``) with the statement route, plus ``reporting`` (an outbox, no worker). Labour-policy
   statements naming Kela, one person each, are POSTed to the ingest API at a steady ``--rate``
   for ``--seconds``; for each, the time from the API's 202 (which it answers once the log
   acknowledged the write, acks=all, transaction committed) to the receiver applying it, per
   event id. The receiver stamps ``received_at`` (wall clock) just before it answers the 2xx,
   in another process on the same machine, so the two clocks are one: p50, p99, max.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.hub_api import api_ready, clients_toml  # noqa: E402
from bench.local_broker import free_port, kafka_broker  # noqa: E402
from connectors.receivers.runner import ReceiversClient, receivers_subprocess  # noqa: E402
from connectors.rest_api.endpoints import PATH_OF  # noqa: E402
from connectors.simulator import SimulationConfig, simulate  # noqa: E402
from connectors.simulator.paths import in_time_order  # noqa: E402
from connectors.webhook.transport import WebhookTransport, http_client  # noqa: E402
from hub.delivery.transport import DeliveryRequest, json_body, static_headers  # noqa: E402
from hub.events.customer_path import EVENT_TYPES, JobseekerRegistered  # noqa: E402
from hub.identity import Pseudonymizer  # noqa: E402
from hub.intake.examples import EXAMPLES  # noqa: E402
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

SECRET_ENV = "BENCH_DELIVERY_WEBHOOK_SECRET"
"""Both routes files sign for the receiver's ``/kela`` with this one secret: the receivers
verify with the secret of the first routes file's endpoint on that path, so the end-to-end
destination (another name, whose development secret would differ) must share it."""

Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]
"""(event id, key, value, headers) of one outbox record."""


def write_routes(path: Path, port: int) -> None:
    path.write_text(
        f"""
[destinations.{DESTINATION}]
transport = "webhook"
endpoint = {{ url = "http://127.0.0.1:{port}/{RECEIVER}", secret_env = "{SECRET_ENV}" }}
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
    people = max(1, count // 4 + 10)  # about 9 events a person, some paths short
    paths = simulate(
        SimulationConfig(jobseekers=people, seed=seed), Pseudonymizer("bench-delivery-secret-0123")
    )
    records: list[Record] = []
    for event in in_time_order(paths):
        encoded = encode_event(serializer, event, None)
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


E2E_DESTINATION = "kela"
E2E_TYPE = "LabourPolicyStatementIssued"
STATEMENT_BASIS = (
    "Työttömyysturvalaki (1290/2002) 11 luku 4 §: työvoimaviranomainen antaa "
    "työvoimapoliittisen lausunnon työttömyysetuuden maksajalle (Kela tai työttömyyskassa)"
)
STATEMENT_DIRECT = (
    "Työttömyysturvalaki (1290/2002) 11 luku 4 § ja 13 luku (tietojen luovuttaminen): maksaja "
    "yksilöi etuudenhakijan henkilötunnuksella; GDPR art. 6(1)(c)"
)
REPORTING_MEMBERSHIP = (
    "Tilastolaki (280/2004) ja GDPR art. 9(2)(j) ja art. 89: tilastointi pseudonymisoituna, "
    "työttömyyskassan jäsenyys etuuden maksajan tilastoihin"
)


def write_e2e_routes(path: Path, port: int) -> None:
    """The packaged statement and reporting routes, limited to Kela: one webhook destination.

    The packaged ``statement-to-payer`` route resolves the payer through a directory that also
    needs every fund; every statement here names Kela, so a route straight to ``kela`` sends
    the same events with the same grants, and ``reporting`` (an outbox) keeps the router's
    second output per event as in the packaged routes.
    """
    path.write_text(
        f"""
[destinations.{E2E_DESTINATION}]
transport = "webhook"
endpoint = {{ url = "http://127.0.0.1:{port}/{RECEIVER}", secret_env = "{SECRET_ENV}" }}
retry_schedule_s = [0.5, 1, 2, 5, 10]

[destinations.reporting]
transport = "outbox"
retry_schedule_s = []

[[routes]]
name = "statement-to-kela"
types = ["{E2E_TYPE}"]
to = {{ destination = "{E2E_DESTINATION}" }}
basis = {json.dumps(STATEMENT_BASIS, ensure_ascii=False)}
[routes.grants]
direct = {json.dumps(STATEMENT_DIRECT, ensure_ascii=False)}

[[routes]]
name = "all-to-reporting"
types = {json.dumps(TYPES)}
to = {{ destination = "reporting" }}
[routes.grants]
membership = {json.dumps(REPORTING_MEMBERSHIP, ensure_ascii=False)}
""",
        encoding="utf-8",
    )


def statement_requests(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` statements naming Kela, each for another simulated person.

    One person each: the worker keeps a person's events in order, so statements of one person
    would queue behind each other and measure that order, not the pipeline.
    """
    people = simulate(
        SimulationConfig(jobseekers=count, seed=seed), Pseudonymizer("bench-delivery-secret-0123")
    )
    registrations = [p[0] for p in people if p and isinstance(p[0], JobseekerRegistered)]
    if len(registrations) < count:
        raise SystemExit(f"the simulation gave {len(registrations)} people, {count} needed")
    bodies = []
    for registration in registrations[:count]:
        body = copy.deepcopy(EXAMPLES[E2E_TYPE])
        body.pop("event_id", None)
        code = registration.payload.personal_identity_code
        body["personal_identity_code"] = code
        body["municipality_code"] = registration.envelope.municipality_code
        body["payload"]["personal_identity_code"] = code
        body["payload"]["statement_id"] = str(uuid.uuid4())
        bodies.append(body)
    return bodies


def start_hub(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m hub ARGS`` with *env*; its stderr (structured logs) to *log*."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hub", *args],
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_api(http: httpx.AsyncClient, processes: list[subprocess.Popen[bytes]]) -> None:
    if not await api_ready(http, 90, processes):
        raise SystemExit("the ingest API did not get ready in 90 s")


async def ingest_steady(
    http: httpx.AsyncClient, bodies: list[dict[str, Any]], rate: float
) -> dict[str, float]:
    """POST one statement every 1/rate s (not waiting for the previous answer); event id →
    when its 202 arrived (epoch seconds): the ingest ack a client sees."""
    acked: dict[str, float] = {}
    path = PATH_OF[E2E_TYPE]

    async def post(body: dict[str, Any]) -> None:
        response = await http.post(
            path, json=body, headers={"Idempotency-Key": str(uuid.uuid4())}, timeout=120
        )
        at = time.time()
        if response.status_code != 202:
            raise SystemExit(f"ingest API answered {response.status_code}: {response.text[:500]}")
        acked[response.json()["event_id"]] = at

    start = time.monotonic()
    tasks = []
    for i, body in enumerate(bodies):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(body)))
    await asyncio.gather(*tasks)
    return acked


async def wait_ids(
    receivers: ReceiversClient,
    ids: set[str],
    processes: list[subprocess.Popen[bytes]],
    timeout_s: float,
) -> dict[str, float]:
    """Event id → when the receiver applied it, once every id of *ids* is applied."""
    deadline = time.monotonic() + timeout_s
    while True:
        applied = applied_times(receivers)
        if ids <= applied.keys():
            return applied
        if any(p.poll() is not None for p in processes):
            raise SystemExit("a hub process of the end-to-end run exited early")
        if time.monotonic() > deadline:
            missing = len(ids - applied.keys())
            raise SystemExit(f"timed out: {missing} of {len(ids)} events never reached /kela")
        await asyncio.sleep(0.25)


async def end_to_end(
    env: dict[str, str],
    receivers: ReceiversClient,
    tmp: Path,
    port: int,
    run_id: str,
    rate: float,
    seconds: float,
) -> list[float]:
    """Ingest 202 → receiver 2xx latencies (ms) through ``hub serve``, ``hub route`` and
    ``hub deliver``, after a warm-up that waits until the three have joined and delivered."""
    routes = tmp / "routes-e2e.toml"
    write_e2e_routes(routes, port)
    key = secrets.token_urlsafe(32)
    clients = tmp / "clients.toml"
    clients.write_text(clients_toml(key, E2E_TYPE), encoding="utf-8")
    e2e_env = {
        **env,
        "HUB_ROUTES_FILE": str(routes),
        "HUB_INGEST_CLIENTS_FILE": str(clients),
        "HUB_TOPIC_CUSTOMER_PATH": f"bench.customer-path.{run_id}",
        "HUB_TOPIC_INGEST_RECEIPTS": f"bench.ingest-receipts.{run_id}",
        "HUB_TOPIC_SOURCE_POSITIONS": f"bench.source-positions.{run_id}",
        "HUB_TOPIC_ROUTER_STATE": f"bench.router-state.{run_id}",
        "HUB_INGEST_TRANSACTIONAL_ID": f"bench-ingest-{run_id}",
        "HUB_ROUTER_TRANSACTIONAL_ID": f"bench-router-{run_id}",
    }
    api_port = free_port()
    processes = [
        start_hub(["serve", "--port", str(api_port)], e2e_env, tmp / "serve.log"),
        start_hub(["route"], e2e_env, tmp / "route.log"),
        start_hub(["deliver", "--destination", E2E_DESTINATION], e2e_env, tmp / "deliver-e2e.log"),
    ]
    warmup = 5
    steady_count = max(1, int(rate * seconds))
    bodies = statement_requests(warmup + steady_count, seed=22)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {key}"},
            limits=httpx.Limits(max_connections=64),
        ) as http:
            await wait_api(http, processes)
            print("end to end: warm-up (router and worker join) …", file=sys.stderr)
            warm = await ingest_steady(http, bodies[:warmup], 5)
            await wait_ids(receivers, set(warm), processes, timeout_s=180)
            print(
                f"end to end: {steady_count} statements at {rate:g}/s to the ingest API …",
                file=sys.stderr,
            )
            acked = await ingest_steady(http, bodies[warmup:], rate)
        applied = await wait_ids(receivers, set(acked), processes, timeout_s=300)
    except BaseException:
        for name in ("serve", "route", "deliver-e2e"):  # the folder goes with the run
            lines = (tmp / f"{name}.log").read_text("utf-8", "replace").splitlines()
            print(f"--- last lines of hub {name} ---", *lines[-15:], sep="\n", file=sys.stderr)
        raise
    finally:
        stop_all(processes)
    return [(applied[e] - at) * 1000 for e, at in acked.items()]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0, help="events/s of the latency run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument(
        "--end-to-end",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure ingest API 202 → receiver 2xx through hub serve, route and deliver",
    )
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    os.environ.setdefault(SECRET_ENV, "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
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
            e2e_ms: list[float] = []
            if args.end_to_end:
                receivers.reset()
                e2e_ms = await end_to_end(
                    env, receivers, Path(tmp), port, run_id, args.rate, args.seconds
                )
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
    if e2e_ms:
        print(
            f"latency end to end, ingest API 202 → receiver 2xx at {args.rate:g}/s "
            f"(hub serve → hub route → hub deliver, {len(e2e_ms)} events): "
            f"p50 {percentile(e2e_ms, 0.5):.0f} ms, p99 {percentile(e2e_ms, 0.99):.0f} ms, "
            f"max {max(e2e_ms):.0f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
