"""Ingest API throughput and latency against a raw aiokafka producer, in the same run.

    python bench/ingest.py [--events 4000] [--clients 50] [--bulk-size 100] [--client-processes 5]

Starts (or uses HUB_KAFKA_BOOTSTRAP) a real Kafka broker, runs ``hub serve`` in a subprocess
with one municipal client, and sends the same JobseekerRegistered events four ways with
``--clients`` concurrent senders: one per request to the API, in bulk requests to the API,
and, as the baseline, the same Avro records straight to Kafka with an acks=all idempotent
aiokafka producer (one awaited send per event, and batches awaited together). It prints
events/s, p50 and p99 latency of a request (or send), and the ratio API / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.hub_api import api_ready, clients_toml  # noqa: E402
from bench.local_broker import free_port, kafka_broker  # noqa: E402
from connectors.simulator import SimulationConfig, simulate  # noqa: E402
from connectors.simulator.api_requests import registration_request  # noqa: E402
from hub.events.customer_path import JobseekerRegistered  # noqa: E402
from hub.identity import Pseudonymizer  # noqa: E402
from hub.kafka.clients import make_producer  # noqa: E402
from hub.kafka.topics import ensure_topics  # noqa: E402
from hub.serde import SingleObjectSerializer  # noqa: E402
from hub.settings import HubSettings  # noqa: E402

SECRET = "bench-pseudonym-secret-0123456789"


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def registrations(count: int) -> list[JobseekerRegistered]:
    people = simulate(SimulationConfig(jobseekers=count, seed=99), Pseudonymizer(SECRET))
    return [path[0] for path in people if isinstance(path[0], JobseekerRegistered)]


async def run_concurrently(
    clients: int, jobs: list[Callable[[], Awaitable[None]]]
) -> tuple[float, list[float]]:
    """Run the jobs with ``clients`` workers; wall time and each job's latency (ms)."""
    queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            job = queue.get_nowait()
            started = time.perf_counter()
            await job()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - started, latencies


def _api_load(
    base_url: str, key: str, path: str, bodies: list[Any], concurrency: int
) -> tuple[float, float, list[float]]:
    """One load-generating process: (start, end) wall-clock times and request latencies."""

    async def load() -> tuple[float, float, list[float]]:
        headers = {"Authorization": f"Bearer {key}"}
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits) as http:

            def post(body: Any) -> Callable[[], Awaitable[None]]:
                async def send() -> None:
                    response = await http.post(
                        path, json=body, headers={"Idempotency-Key": str(uuid.uuid4())}, timeout=120
                    )
                    response.raise_for_status()

                return send

            started = time.time()
            _, latencies = await run_concurrently(concurrency, [post(b) for b in bodies])
            return started, time.time(), latencies

    return asyncio.run(load())


async def bench_api(
    base_url: str,
    key: str,
    events: list[JobseekerRegistered],
    clients: int,
    bulk_size: int,
    processes: int,
) -> tuple[Result, Result]:
    """The API under ``clients`` concurrent senders spread over ``processes`` processes.

    One Python process cannot generate HTTP load fast enough to keep 50 connections busy, so
    the senders are spread out; their latencies and the overall wall time are combined.
    """
    half = len(events) // 2
    singles = [registration_request(e) for e in events[:half]]
    rest = [{"event_type": "JobseekerRegistered", **registration_request(e)} for e in events[half:]]
    bulks = [rest[i : i + bulk_size] for i in range(0, len(rest), bulk_size)]
    loop = asyncio.get_running_loop()
    results = []
    with ProcessPoolExecutor(processes) as pool:
        for name, path, bodies, count in (
            ("API, one event a request", "/v1/events/jobseeker-registered", singles, half),
            (f"API bulk, {bulk_size} a request", "/v1/bulk", bulks, len(rest)),
        ):
            shares = [bodies[n::processes] for n in range(processes)]
            runs = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        pool, _api_load, base_url, key, path, share, max(1, clients // processes)
                    )
                    for share in shares
                    if share
                )
            )
            wall = max(end for _, end, _ in runs) - min(start for start, _, _ in runs)
            latencies = [latency for _, _, run in runs for latency in run]
            results.append(Result(name, count, wall, latencies))
    return results[0], results[1]


async def bench_raw(
    settings: HubSettings, events: list[JobseekerRegistered], clients: int, bulk_size: int
) -> tuple[Result, Result]:
    serializer = SingleObjectSerializer()
    records = [
        (e.envelope.subject.encode(), serializer.encode(e.full_name(), e.to_avro())) for e in events
    ]
    producer = make_producer(settings)
    await producer.start()
    try:
        half = len(records) // 2

        def single(key: bytes, value: bytes) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                await (await producer.send(settings.topic_customer_path, value=value, key=key))

            return send

        def batch(chunk: list[tuple[bytes, bytes]]) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                futures = [
                    await producer.send(settings.topic_customer_path, value=v, key=k)
                    for k, v in chunk
                ]
                await asyncio.gather(*futures)

            return send

        seconds, latencies = await run_concurrently(
            clients, [single(k, v) for k, v in records[:half]]
        )
        single_result = Result("raw aiokafka, one awaited send", half, seconds, latencies)
        rest = records[half:]
        chunks = [rest[i : i + bulk_size] for i in range(0, len(rest), bulk_size)]
        seconds, latencies = await run_concurrently(clients, [batch(c) for c in chunks])
        batch_result = Result(
            f"raw aiokafka, {bulk_size} awaited together", len(rest), seconds, latencies
        )
    finally:
        await producer.stop()
    return single_result, batch_result


def start_api(settings: HubSettings, clients_file: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HUB_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "HUB_TOPIC_CUSTOMER_PATH": settings.topic_customer_path,
        "HUB_TOPIC_INGEST_RECEIPTS": settings.topic_ingest_receipts,
        "HUB_TOPIC_DEAD_LETTER": settings.topic_dead_letter,
        "HUB_INGEST_TRANSACTIONAL_ID": settings.ingest_transactional_id,
        "HUB_INGEST_CLIENTS_FILE": str(clients_file),
        "HUB_PSEUDONYM_SECRET": SECRET,
        "HUB_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "hub", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )


async def wait_ready(base_url: str, timeout_s: float = 60) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        if await api_ready(http, timeout_s):
            return
    raise TimeoutError(f"the ingest API at {base_url} did not get ready in {timeout_s:.0f} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--bulk-size", type=int, default=100)
    parser.add_argument(
        "--client-processes", type=int, default=5, help="processes sending to the API"
    )
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    with kafka_broker() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        settings = HubSettings(
            kafka_bootstrap=bootstrap,
            topic_customer_path=f"bench.customer-path.{run_id}",
            topic_ingest_receipts=f"bench.receipts.{run_id}",
            topic_dead_letter=f"bench.dead-letter.{run_id}",
            ingest_transactional_id=f"bench-{run_id}",
        )
        await ensure_topics(settings)
        key = secrets.token_urlsafe(32)
        clients_file = Path(tmp) / "clients.toml"
        clients_file.write_text(clients_toml(key, "JobseekerRegistered"))
        events = registrations(args.events)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        api = start_api(settings, clients_file, port)
        try:
            await wait_ready(base_url)
            print(f"{len(events)} events, {args.clients} concurrent clients", file=sys.stderr)
            raw_single, raw_batch = await bench_raw(settings, events, args.clients, args.bulk_size)
            api_single, api_bulk = await bench_api(
                base_url, key, events, args.clients, args.bulk_size, args.client_processes
            )
        finally:
            api.terminate()
            api.wait(timeout=30)

    rows = [raw_single, api_single, raw_batch, api_bulk]
    print(f"\n{'':40} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        p50, p99 = row.percentile(0.5), row.percentile(0.99)
        print(f"{row.name:40} {row.rate:10,.0f} {p50:8.1f} {p99:8.1f}")
    print(
        f"\nratio API / raw producer: single {api_single.rate / raw_single.rate:.2f}, "
        f"bulk {api_bulk.rate / raw_batch.rate:.2f} (events/s); "
        f"p50 latency single {api_single.percentile(0.5) / raw_single.percentile(0.5):.1f}x, "
        f"bulk {api_bulk.percentile(0.5) / raw_batch.percentile(0.5):.1f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
