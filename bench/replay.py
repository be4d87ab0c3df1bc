"""Replay into the reporting store against a fastavro decode-only loop, in the same run.

    python bench/replay.py [--events 1000000] [--seed 21] [--skip-kafka] [--skip-indicators]

1. Data: ``--events`` simulated customer-path events (a year's window, ~13 events per
   jobseeker: ~77,000 jobseekers for a million), encoded once as the log holds them
   (single-object Avro) and cached under ``.hub/bench/`` (the simulator is the slow part;
   the cache is keyed by the count, the seed and the schemas' fingerprints).
2. Produced once into a real Kafka broker (``HUB_KAFKA_BOOTSTRAP`` or a private local one),
   six partitions, keyed by the pseudonym: ``hub replay`` reads Kafka, so that is what is
   measured; the same records replayed from memory show what the Kafka fetch costs.
3. Timed over the same values (wall clock and this process's CPU time: the machine may be
   shared, and CPU time is what other processes' load leaves alone), in this order:
   - decode-only: ``SingleObjectSerializer.decode`` (fastavro with the current schema, logical
     types: what every hub consumer does per record) — the baseline of the goal, run before
     and after the replays (their mean);
   - decode-only, raw: fastavro with the schemas stripped of logical types (the floor);
   - replay from Kafka into a fresh DuckDB file (``replay_kafka``: no consumer group, decode
     without logical types, the router's projection, Arrow, ``INSERT … SELECT``);
   - replay from memory, the same, and with the ``derived`` decoder (reading straight into the
     route's derived schema, :func:`hub.routing.projection.projected_schema`);
   - ``compute_indicators`` of every month of the data set on half of it and on all of it.
4. Prints events/s, the ratios to the decode-only loops (goal ≥ 0.6), the indicator times and
   the extrapolation to a national year (~25 M events) and five years (~125 M).

Not a test: the machine's speed moves every figure, the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import multiprocessing
import pickle
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastavro import parse_schema, schemaless_reader  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from bench.local_broker import kafka_broker  # noqa: E402
from connectors.simulator import SimulationConfig, simulate  # noqa: E402
from hub.identity import Pseudonymizer  # noqa: E402
from hub.kafka.clients import make_producer  # noqa: E402
from hub.kafka.topics import ensure_topics  # noqa: E402
from hub.logging import configure_logging  # noqa: E402
from hub.reporting.replay import replay_kafka, replay_values  # noqa: E402
from hub.reporting.store import ReportingStore  # noqa: E402
from hub.routing.projection import without_logical_types  # noqa: E402
from hub.serde import SingleObjectSerializer, default_catalog  # noqa: E402
from hub.serde.framing import SINGLE_OBJECT_HEADER_SIZE  # noqa: E402
from hub.settings import HubSettings  # noqa: E402

SECRET = "bench-secret-of-sufficient-length"
PARTITIONS = 6
DAYS = 365
EVENTS_PER_JOBSEEKER = 13.1  # measured: the simulator over a year's window
NATIONAL_YEAR = 25_000_000
FIVE_YEARS = 125_000_000
CACHE = REPO / ".hub" / "bench"

Log = tuple[list[bytes], list[bytes]]
"""Keys (pseudonyms) and values (single-object Avro), in one order."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data -----------------------------------------------------------------------------------------


def _simulate_chunk(job: tuple[int, int]) -> Log:
    """One worker's share: its own seed, so event ids never collide across workers."""
    jobseekers, seed = job
    serializer = SingleObjectSerializer()
    keys: list[bytes] = []
    values: list[bytes] = []
    config = SimulationConfig(jobseekers=jobseekers, seed=seed, days=DAYS)
    for path in simulate(config, Pseudonymizer(SECRET)):
        for event in path:
            keys.append(event.envelope.subject.encode())
            values.append(serializer.encode(event.event_type, event.to_avro()))
    return keys, values


def _schemas_digest() -> str:
    fingerprints = sorted(fp.hex() for fp in default_catalog().fingerprints())
    return hashlib.sha256(",".join(fingerprints).encode()).hexdigest()[:12]


def load_log(events: int, seed: int) -> Log:
    """``events`` encoded events, from the cache or simulated (in parallel) and cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = CACHE / f"replay-{events}-seed{seed}-{_schemas_digest()}.pickle"
    if cached.is_file():
        say(f"data: {cached.relative_to(REPO)} (cached)")
        with cached.open("rb") as fo:
            log: Log = pickle.load(fo)
        return log
    workers = max(1, min(8, multiprocessing.cpu_count()))
    jobseekers = math.ceil(events / EVENTS_PER_JOBSEEKER * 1.02)
    share = math.ceil(jobseekers / workers)
    say(f"data: simulating {jobseekers:,} jobseekers over {DAYS} days in {workers} process(es) …")
    began = time.monotonic()
    with multiprocessing.Pool(workers) as pool:
        parts = pool.map(_simulate_chunk, [(share, seed * 100 + k) for k in range(workers)])
    keys = [k for part in parts for k in part[0]]
    values = [v for part in parts for v in part[1]]
    while len(values) < events:  # the estimate fell short: one more chunk
        more = _simulate_chunk((share, seed * 100 + workers + len(values)))
        keys += more[0]
        values += more[1]
    log = (keys[:events], values[:events])
    say(f"data: {events:,} events in {time.monotonic() - began:.0f} s; cached in {cached}")
    with cached.open("wb") as fo:
        pickle.dump(log, fo, protocol=pickle.HIGHEST_PROTOCOL)
    return log


# -- the decode-only loops ------------------------------------------------------------------------


class Rate(NamedTuple):
    """Events per second of wall-clock time and of this process's CPU time (all threads).

    The CPU rate is the one to compare on a shared machine: other processes' load moves the
    wall clock of one measurement and not of the next; it leaves the CPU time alone. (The
    broker's CPU is another process's: the Kafka replay's CPU rate is the hub's side only.)
    """

    wall: float
    cpu: float


def timed(events: int, work: Callable[[], Any]) -> tuple[Any, Rate]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result, Rate(events / wall, events / cpu)


def decode_only(values: list[bytes]) -> None:
    """``SingleObjectSerializer.decode`` of every value (fastavro, logical types)."""
    decode = SingleObjectSerializer().decode
    for value in values:
        decode(value)


def decode_only_raw(values: list[bytes]) -> None:
    """fastavro's plain reader with the schemas stripped of logical types."""
    parsed: dict[bytes, Any] = {
        fp: parse_schema(without_logical_types(version.raw), named_schemas={})
        for fp, version in default_catalog().fingerprints().items()
    }
    for value in values:
        body = BytesIO(value)
        body.seek(SINGLE_OBJECT_HEADER_SIZE)
        schemaless_reader(body, parsed[value[2:SINGLE_OBJECT_HEADER_SIZE]], None)


# -- Kafka ----------------------------------------------------------------------------------------


async def produce(settings: HubSettings, log: Log) -> float:
    await ensure_topics(settings)
    producer = make_producer(settings, linger_ms=20, max_batch_size=1024 * 1024)
    await producer.start()
    began = time.monotonic()
    try:
        pending = []
        keys, values = log
        for index, (key, value) in enumerate(zip(keys, values, strict=True)):
            pending.append(await producer.send(settings.topic_customer_path, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                say(f"  produced {index + 1:,} / {len(values):,}")
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - began


class _Ticker:
    """Progress of a bench replay on stderr, every few seconds."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.done = 0
        self.total: int | None = None
        self.last = time.monotonic()
        self.began = self.last

    def start(self, total: int | None) -> None:
        self.total = total

    def advance(self, records: int) -> None:
        self.done += records
        now = time.monotonic()
        if now - self.last >= 5:
            self.last = now
            rate = self.done / (now - self.began)
            left = f", {((self.total or 0) - self.done) / rate:.0f} s left" if rate else ""
            say(f"  {self.label}: {self.done:,} / {self.total or 0:,} ({rate:,.0f}/s{left})")

    def finish(self) -> None:
        pass


# -- indicators -----------------------------------------------------------------------------------


def months_of(store: ReportingStore) -> list[Any]:
    from hub.reporting.indicators.period import Period

    first, last = store.con.execute(
        "SELECT min(CAST(occurred_at AS DATE)), max(CAST(occurred_at AS DATE)) FROM spells"
    ).fetchone() or (None, None)
    assert isinstance(first, date)
    assert isinstance(last, date)
    months = []
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        months.append(Period.month(year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def time_indicators(store: ReportingStore) -> tuple[float, int, int] | None:
    """Seconds for every indicator of every month of the data, output rows, periods."""
    try:
        from hub.reporting.indicators import compute_indicators
    except ImportError:  # TODO(lead): hub.reporting.indicators not there: no indicator time
        return None
    periods = months_of(store)
    began = time.perf_counter()
    table = compute_indicators(store.con, periods)
    return time.perf_counter() - began, table.num_rows, len(periods)


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--skip-kafka", action="store_true", help="replay from memory only")
    parser.add_argument("--skip-indicators", action="store_true")
    args = parser.parse_args()
    configure_logging(HubSettings(log_level="WARNING"))
    keys, values = load_log(args.events, args.seed)
    total = len(values)
    size = sum(len(v) for v in values)
    say(f"{total:,} events, {size / total:.0f} bytes each on average")
    work = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    results: dict[str, Rate] = {}
    baselines: list[Rate] = []

    say("decode-only loops …")
    baselines.append(timed(total, lambda: decode_only(values))[1])
    results["decode_raw"] = timed(total, lambda: decode_only_raw(values))[1]

    if not args.skip_kafka:
        with kafka_broker() as bootstrap:
            run = uuid.uuid4().hex[:8]
            settings = HubSettings(
                kafka_bootstrap=bootstrap,
                topic_customer_path=f"bench.replay.{run}",
                topic_dead_letter=f"bench.replay-dlq.{run}",
                topic_ingest_receipts=f"bench.replay-receipts.{run}",
                topic_source_positions=f"bench.replay-positions.{run}",
                topic_router_state=f"bench.replay-state.{run}",
                topic_disclosures=f"bench.replay-disclosures.{run}",
                topic_partitions=PARTITIONS,
                pseudonym_secret=SecretStr(SECRET),
                log_level="WARNING",
            )
            say(f"producing {total:,} records into {settings.topic_customer_path} …")
            produced = asyncio.run(produce(settings, (keys, values)))
            say(f"  produced in {produced:.0f} s ({total / produced:,.0f}/s)")
            say("replay from Kafka into DuckDB …")
            store = ReportingStore(work / "kafka.duckdb")
            stats, results["replay_kafka"] = timed(
                total,
                lambda: asyncio.run(replay_kafka(settings, store, progress=_Ticker("kafka"))),
            )
            assert stats.added == total, stats.summary()
            store.close()

    say("replay from memory into DuckDB …")
    triples = [(0, offset, value) for offset, value in enumerate(values)]
    half_store = ReportingStore(work / "half.duckdb")
    replay_values(half_store, triples[: total // 2])
    store_path = work / "memory.duckdb"
    store = ReportingStore(store_path)
    stats, results["replay_memory"] = timed(
        total, lambda: replay_values(store, triples, source="memory")
    )
    assert stats.added == total, stats.summary()
    derived = ReportingStore(work / "derived.duckdb")
    results["replay_derived"] = timed(
        total, lambda: replay_values(derived, triples, mode="derived")
    )[1]
    derived.close()
    store.con.execute("CHECKPOINT")
    store_bytes = store_path.stat().st_size
    say("decode-only loop again (the baseline is the mean of before and after) …")
    baselines.append(timed(total, lambda: decode_only(values))[1])
    results["decode"] = Rate(
        statistics.mean(r.wall for r in baselines), statistics.mean(r.cpu for r in baselines)
    )

    indicators = half = None
    if not args.skip_indicators:
        say("indicators of every month, on half of the data and on all of it …")
        half = time_indicators(half_store)
        indicators = time_indicators(store)
    half_store.close()
    store.close()

    decode, raw = results["decode"], results["decode_raw"]
    print(f"\nreplay bench: {total:,} events ({size / total:.0f} B each), {DAYS}-day simulation")
    print(f"  {'':<50s}  {'wall events/s':>13s}  {'CPU events/s':>12s}  ratio wall / CPU")
    rows = [
        ("decode", "decode-only (hub.serde: fastavro, logical types)"),
        ("decode_raw", "decode-only (fastavro, no logical types)"),
        ("replay_kafka", "replay Kafka → DuckDB (hub replay)"),
        ("replay_memory", "replay memory → DuckDB"),
        ("replay_derived", "replay memory → DuckDB, derived-schema reader"),
    ]
    for key, label in rows:
        if key not in results:
            continue
        rate = results[key]
        ratio = f"{rate.wall / decode.wall:.2f} / {rate.cpu / decode.cpu:.2f}"
        if key.startswith("replay"):
            ratio += f"  (to the raw loop {rate.wall / raw.wall:.2f} / {rate.cpu / raw.cpu:.2f})"
        print(f"  {label:<50s}  {rate.wall:>13,.0f}  {rate.cpu:>12,.0f}  {ratio}")
    print(
        "  decode-only wall rates before / after: "
        + " / ".join(f"{r.wall:,.0f}" for r in baselines)
    )
    replay = results.get("replay_kafka", results["replay_memory"])
    verdict = "met" if min(replay.wall / decode.wall, replay.cpu / decode.cpu) >= 0.6 else "NOT met"
    print(f"  goal: replay ≥ 0.6 of decode-only (wall and CPU): {verdict}")
    print(f"  store: {store_bytes / 1e6:,.0f} MB ({store_bytes / total:.0f} B per event)")
    if args.skip_indicators:
        print("  indicators: skipped (--skip-indicators)")
    elif indicators is None:
        print("  indicators: TODO(lead) hub.reporting.indicators.compute_indicators not available")
    else:
        seconds, rows, months = indicators
        print(f"  indicators: {months} months, {rows:,} values in {seconds:.1f} s")
        exponent = 1.0
        if half is not None and half[0] > 0:
            exponent = max(0.0, math.log(seconds / half[0]) / math.log(total / (total // 2)))
            print(f"    on half the data {half[0]:.1f} s: time grows as events^{exponent:.2f}")
    for label, events in (("national year", NATIONAL_YEAR), ("five years", FIVE_YEARS)):
        replay_s = events / replay.wall
        line = f"  {label} ({events / 1e6:.0f} M events): replay {replay_s / 60:,.1f} min"
        line += f", store ~{store_bytes / total * events / 1e9:,.1f} GB"
        if indicators is not None:
            factor = events / total
            linear = indicators[0] * factor
            fitted = indicators[0] * factor**exponent
            line += f", indicators ~{fitted:,.0f} s (fitted) / {linear:,.0f} s (linear)"
        print(line)


if __name__ == "__main__":
    main()
