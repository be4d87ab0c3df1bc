"""Router throughput against two raw copy loops of the same records, in the same run.

    python bench/router.py [--events 20000] [--repeats 3] [--batch-size 500] [--profile]

Starts (or uses HUB_KAFKA_BOOTSTRAP) a real Kafka broker, publishes ``--events`` simulated
customer-path events to a log topic once, then reads that same log three ways, each from the
beginning and timed from its first record to its last acknowledgement or commit:

1. copy: a raw aiokafka consume → produce loop (acks=all idempotent producer, no
   transaction, no decoding): what moving the bytes costs;
2. transactional copy: aiokafka consumer in a group + transactional producer, one
   transaction per ``getmany`` batch with ``send_offsets_to_transaction``: the same
   exactly-once shape as the router, without decoding, routing or projection;
3. router: :class:`hub.routing.router.Router` with the packaged routes (decode, person state,
   route, project, encode, one outbox record per destination, state changes, offsets).

It prints log records/s of each (median of ``--repeats``) and the ratios router/copy and
router/transactional (the goal: ≥ 0.7 of the transactional loop). ``--profile`` runs the router
once more under cProfile and prints where its time goes. Not a test: the ratios are the
figures to compare across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aiokafka import TopicPartition  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from bench.local_broker import kafka_broker  # noqa: E402
from connectors.simulator import SimulationConfig, simulate  # noqa: E402
from connectors.simulator.paths import in_time_order  # noqa: E402
from hub.identity import Pseudonymizer  # noqa: E402
from hub.kafka.clients import make_consumer, make_producer  # noqa: E402
from hub.kafka.publisher import open_publisher  # noqa: E402
from hub.kafka.topics import TopicSpec, ensure_topics  # noqa: E402
from hub.logging import configure_logging  # noqa: E402
from hub.routing.router import Router, ensure_router_topics  # noqa: E402
from hub.routing.routes import RoutesConfig, load_routes  # noqa: E402
from hub.settings import HubSettings  # noqa: E402

SECRET = "bench-secret-of-sufficient-length"
PARTITIONS = 6


def run_settings(bootstrap: str, log_topic: str, run: str) -> HubSettings:
    """Settings reading ``log_topic``, with outboxes, state, group and ids of this run."""
    return HubSettings(
        kafka_bootstrap=bootstrap,
        topic_customer_path=log_topic,
        topic_dead_letter=f"bench.dead-letter.{run}",
        topic_ingest_receipts=f"bench.ingest-receipts.{run}",
        topic_source_positions=f"bench.source-positions.{run}",
        topic_outbox_prefix=f"bench.outbox.{run}.",
        topic_router_state=f"bench.router-state.{run}",
        topic_disclosures=f"bench.disclosures.{run}",
        router_transactional_id=f"bench-router-{run}",
        writer_id_prefix=f"bench-{run}",
        topic_partitions=PARTITIONS,
        pseudonym_secret=SecretStr(SECRET),
        log_level="WARNING",
    )


async def publish_log(settings: HubSettings, events: int) -> int:
    jobseekers = max(1, events // 9)  # about 9 events per simulated person
    paths = list(simulate(SimulationConfig(jobseekers=jobseekers, seed=21), Pseudonymizer(SECRET)))
    log = list(in_time_order(paths))[:events]
    await ensure_topics(settings)
    async with open_publisher(settings) as publisher:
        async for _ in publisher.publish_all(log):
            pass
    return len(log)


async def copy_topic(settings: HubSettings, name: str) -> str:
    topic = f"bench.copy.{name}"
    spec = TopicSpec(name=topic, partitions=PARTITIONS, replication_factor=1, purpose="bench")
    await ensure_topics(settings, extra=[spec])
    return topic


async def raw_copy(settings: HubSettings, total: int) -> float:
    """Seconds from the first record to the last acknowledgement, no transactions."""
    target = await copy_topic(settings, uuid.uuid4().hex[:8])
    partitions = [TopicPartition(settings.topic_customer_path, p) for p in range(PARTITIONS)]
    consumer = make_consumer(settings, group_id=None, max_partition_fetch_bytes=8 * 1024 * 1024)
    producer = make_producer(settings)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        copied = 0
        started: float | None = None
        pending: list[asyncio.Future[object]] = []
        while copied < total:
            batch = await consumer.getmany(timeout_ms=100, max_records=500)
            if started is None and batch:
                started = time.monotonic()
            for records in batch.values():
                for record in records:
                    pending.append(
                        await producer.send(
                            target, record.value, key=record.key, headers=list(record.headers)
                        )
                    )
                copied += len(records)
        await asyncio.gather(*pending)
        assert started is not None
        return time.monotonic() - started
    finally:
        await producer.stop()
        await consumer.stop()


async def transactional_copy(settings: HubSettings, total: int, batch_size: int) -> float:
    """Seconds from the first record to the last commit, one transaction per batch."""
    run = uuid.uuid4().hex[:8]
    target = await copy_topic(settings, run)
    group = f"bench-copy-{run}"
    consumer = make_consumer(
        settings,
        settings.topic_customer_path,
        group_id=group,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    producer = make_producer(settings, transactional_id=f"bench-copy-{run}")
    await consumer.start()
    await producer.start()
    try:
        copied = 0
        started: float | None = None
        while copied < total:
            batch = await consumer.getmany(timeout_ms=100, max_records=batch_size)
            if not batch:
                continue
            if started is None:
                started = time.monotonic()
            async with producer.transaction():
                offsets = {}
                for tp, records in batch.items():
                    for record in records:
                        await producer.send(
                            target, record.value, key=record.key, headers=list(record.headers)
                        )
                    offsets[tp] = records[-1].offset + 1
                    copied += len(records)
                await producer.send_offsets_to_transaction(offsets, group)
        assert started is not None
        return time.monotonic() - started
    finally:
        await producer.stop()
        await consumer.stop()


def route(settings: HubSettings, routes: RoutesConfig, total: int, batch_size: int) -> float:
    """Seconds from the router's first records to its last commit."""
    asyncio.run(ensure_router_topics(settings, routes))
    router = Router(settings, routes, batch_size=batch_size, progress_every_s=3600)
    stop = threading.Event()

    def enough(current: Router) -> None:
        if current.stats.records >= total:
            stop.set()

    try:
        router.start()
        stats = router.run(stop, on_batch=enough)
    finally:
        router.close()
    assert stats.records == total, stats
    assert stats.first_record_at is not None
    assert stats.last_commit_at is not None
    return stats.last_commit_at - stats.first_record_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with kafka_broker() as bootstrap:
        log_topic = f"bench.customer-path.{uuid.uuid4().hex[:8]}"
        base = run_settings(bootstrap, log_topic, "log")
        configure_logging(base)
        routes = load_routes(base)
        total = asyncio.run(publish_log(base, args.events))
        print(f"{total} events in {log_topic} ({PARTITIONS} partitions)", file=sys.stderr)
        times: dict[str, list[float]] = {"copy": [], "transactional": [], "router": []}
        for repeat in range(args.repeats):
            times["copy"].append(asyncio.run(raw_copy(base, total)))
            times["transactional"].append(
                asyncio.run(transactional_copy(base, total, args.batch_size))
            )
            settings = run_settings(bootstrap, log_topic, f"r{repeat}-{uuid.uuid4().hex[:6]}")
            times["router"].append(route(settings, routes, total, args.batch_size))
            print(
                f"repeat {repeat + 1}: "
                + ", ".join(f"{k} {total / v[-1]:,.0f}/s" for k, v in times.items()),
                file=sys.stderr,
            )
        rate = {k: total / statistics.median(v) for k, v in times.items()}
        print(f"{'loop':<28}{'events/s':>12}")
        print(f"{'raw aiokafka copy':<28}{rate['copy']:>12,.0f}")
        print(f"{'transactional aiokafka copy':<28}{rate['transactional']:>12,.0f}")
        print(f"{'router (hub route)':<28}{rate['router']:>12,.0f}")
        print(f"router / copy          {rate['router'] / rate['copy']:.2f}")
        print(f"router / transactional {rate['router'] / rate['transactional']:.2f}  (goal ≥ 0.70)")
        if args.profile:
            settings = run_settings(bootstrap, log_topic, f"profile-{uuid.uuid4().hex[:6]}")
            profiler = cProfile.Profile()
            profiler.enable()
            route(settings, routes, total, args.batch_size)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())


if __name__ == "__main__":
    main()
