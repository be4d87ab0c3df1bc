"""Serializer benchmark: our framings against plain fastavro, measured in the same run.

    python bench/serde.py [--events N] [--repeats R]

Builds N events of every type in ``schemas/`` (random but schema-valid values, envelope
included), then times, on the same records and the same parsed schemas:

* baseline: ``fastavro.schemaless_writer`` / ``schemaless_reader`` (no framing, no look-ups);
* single-object: :class:`hub.serde.SingleObjectSerializer` encode / decode;
* confluent: :class:`hub.serde.ConfluentSerializer` with a pre-filled id cache (no network).

It prints the median events/s of R repeats and the ratio ours / baseline (1.00 = as fast as
bare fastavro). Not a test: numbers depend on the machine; the ratios are what to compare.

Then field encryption (``--sealing-events N``, 0 to skip), on the same records in the same run:
single-object encode against seal + encode (every ``pii`` field sealed with AES-256-GCM under
the person's data key, as the sink and the publisher do), and decode against decode + open (all
sealed fields opened with the person's key from the key directory's cache, as the router and
delivery do), for the simulator's event mix and for JobseekerRegistered alone (the worst
case: 7 sealed fields). The keys are had beforehand (the sink gets a batch's keys in one call;
that call is a Kafka round trip for a new person, not part of this CPU cost).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastavro import schemaless_reader, schemaless_writer

from connectors.simulator import SimulationConfig, simulate
from hub.identity import Pseudonymizer
from hub.privacy.datakeys import MemoryPersonKeys
from hub.privacy.fields import SealedFields
from hub.privacy.kek import DEV_KEK, LocalKeyEncryptionKeys
from hub.serde import (
    ConfluentSerializer,
    SchemaCatalog,
    SchemaRegistryClient,
    SingleObjectSerializer,
    default_catalog,
)
from hub.serde.fake import fake_record

Event = tuple[str, Any, dict[str, Any]]  # full type name, parsed schema, record


def build_events(catalog: SchemaCatalog, count: int, seed: int = 1) -> list[Event]:
    """``count`` events cycling through all types; envelope fields made to look real."""
    rng = random.Random(seed)
    events: list[Event] = []
    types = list(catalog)
    for i in range(count):
        event = types[i % len(types)]
        record = fake_record(event.current.parsed, rng)
        envelope = record.get("envelope")
        if isinstance(envelope, dict):
            envelope["event_type"] = event.short_name
            envelope["subject"] = f"{rng.getrandbits(256):064x}"  # HMAC-SHA256 pseudonym
            envelope["source_system"] = "urn:fi:te-hub:simulator"
        events.append((event.full_name, event.current.parsed, record))
    return events


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per function; the functions take turns in every repeat, so that drift
    of the machine (other load, CPU clock) hits baseline and ours alike. GC is off while
    timing, as timeit does."""
    for fn in fns.values():
        fn()  # warm-up: caches, allocator
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
            finally:
                gc.enable()
    return {name: statistics.median(times) for name, times in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per pass")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per measurement")
    parser.add_argument("--schemas", type=Path, default=None, help="schemas folder")
    parser.add_argument(
        "--sealing-events",
        type=int,
        default=20_000,
        help="events per pass of the field-encryption measurement (0: skip it)",
    )
    args = parser.parse_args(argv)

    catalog = SchemaCatalog.from_directory(args.schemas) if args.schemas else default_catalog()
    if not catalog.names():
        print("no schemas found: generate schemas/ first", file=sys.stderr)
        return 1
    events = build_events(catalog, args.events)

    single = SingleObjectSerializer(catalog)
    confluent = ConfluentSerializer(SchemaRegistryClient("http://127.0.0.1:9"), catalog)
    confluent.prime({name: i for i, name in enumerate(catalog.names(), start=1)})

    def baseline_encode() -> list[bytes]:
        out = []
        for _, schema, record in events:
            buf = BytesIO()
            schemaless_writer(buf, schema, record)
            out.append(buf.getvalue())
        return out

    bodies = [
        (schema, body) for (_, schema, _), body in zip(events, baseline_encode(), strict=True)
    ]

    def baseline_decode() -> None:
        for schema, body in bodies:
            schemaless_reader(BytesIO(body), schema, None)

    def encoder(serde: SingleObjectSerializer | ConfluentSerializer) -> Callable[[], list[bytes]]:
        encode = serde.encode
        return lambda: [encode(name, record) for name, _, record in events]

    def decoder(serde: SingleObjectSerializer | ConfluentSerializer) -> Callable[[], None]:
        values = encoder(serde)()
        decode = serde.decode

        def run() -> None:
            for value in values:
                decode(value)

        return run

    # Correctness before speed: every framing returns what went in.
    for serde in (single, confluent):
        for (name, _, record), value in zip(events[:50], encoder(serde)()[:50], strict=True):
            decoded = serde.decode(value)
            assert decoded.type_name == name, name
            assert decoded.record == record, name

    n, r = args.events, args.repeats
    print(
        f"{n} events of {len(catalog)} types, median of {r} passes, Python {sys.version.split()[0]}"
    )
    sizes = [len(b) for _, b in bodies]
    print(
        f"Avro body: mean {statistics.fmean(sizes):.0f} bytes; "
        "header +10 (single-object) / +5 (Confluent)"
    )
    seconds = timed(
        {
            "base-enc": baseline_encode,
            "base-dec": baseline_decode,
            "so-enc": encoder(single),
            "so-dec": decoder(single),
            "cf-enc": encoder(confluent),
            "cf-dec": decoder(confluent),
        },
        r,
    )
    base_enc, base_dec = n / seconds["base-enc"], n / seconds["base-dec"]
    rows = [
        ("fastavro schemaless (baseline)", base_enc, base_dec),
        ("single-object (ours)", n / seconds["so-enc"], n / seconds["so-dec"]),
        ("confluent, cached id (ours)", n / seconds["cf-enc"], n / seconds["cf-dec"]),
    ]

    print()
    print(f"{'':32} {'encode ev/s':>12} {'ratio':>6} {'decode ev/s':>12} {'ratio':>6}")
    for label, enc, dec in rows:
        print(f"{label:32} {enc:12,.0f} {enc / base_enc:6.2f} {dec:12,.0f} {dec / base_dec:6.2f}")
    if args.sealing_events > 0 and not args.schemas:
        print()
        sealing_bench(single, args.sealing_events, r)
    return 0


SealedEvent = tuple[str, str, dict[str, Any]]  # full type name, subject, record


def simulated_records(count: int, only: str | None = None) -> list[SealedEvent]:
    """``count`` records of the simulator's paths, in time order of generation (the realistic
    mix), or only those of one type (repeated from the people simulated)."""
    out: list[SealedEvent] = []
    people = max(50, count // 10 if only is None else count)
    for path in simulate(SimulationConfig(jobseekers=people, seed=3), Pseudonymizer("b" * 32)):
        for event in path:
            if only is None or event.event_type == only:
                out.append((event.full_name(), event.envelope.subject, event.to_avro()))
        if len(out) >= count:
            break
    return out[:count]


def sealing_bench(single: SingleObjectSerializer, count: int, repeats: int) -> None:
    fields = SealedFields(single.catalog)
    keys = MemoryPersonKeys(LocalKeyEncryptionKeys.from_text(DEV_KEK))
    mixes = {
        "simulator mix": simulated_records(count),
        "JobseekerRegistered alone": simulated_records(count, only="JobseekerRegistered"),
    }
    print(
        f"field encryption (AES-256-GCM per pii field), {count} events per pass, median of "
        f"{repeats} passes"
    )
    print(
        f"{'':28} {'sealed/ev':>9} {'encode':>10} {'seal+enc':>10} {'ratio':>6}"
        f" {'decode':>10} {'dec+open':>10} {'ratio':>6}"
    )
    encode, decode = single.encode, single.decode
    for label, records in mixes.items():
        data_keys = keys.ensure({subject for _, subject, _ in records})  # one call, as the sink
        sealed_count = 0
        sealed_values = []
        for name, subject, record in records:
            sealed = fields.seal(name, record, data_keys[subject])
            sealed_count += len(list(fields.sealed_values(name, sealed)))
            sealed_values.append(encode(name, sealed))
        plain_values = [encode(name, record) for name, _, record in records]
        # Correctness before speed: opening gives back exactly what was sealed.
        for (name, _, record), value in zip(records[:50], sealed_values[:50], strict=True):
            opened = fields.open(name, decode(value).record, keys)
            assert not opened.failed, name
            assert opened.record == decode(encode(name, record)).record, name

        def plain_encode(records: list[SealedEvent] = records) -> None:
            for name, _, record in records:
                encode(name, record)

        def seal_encode(
            records: list[SealedEvent] = records, data_keys: dict[str, Any] = data_keys
        ) -> None:
            seal = fields.seal
            for name, subject, record in records:
                encode(name, seal(name, record, data_keys[subject]))

        def plain_decode(values: list[bytes] = plain_values) -> None:
            for value in values:
                decode(value)

        def decode_open(values: list[bytes] = sealed_values) -> None:
            open_ = fields.open
            for value in values:
                event = decode(value)
                open_(event.type_name, event.record, keys)

        seconds = timed(
            {"enc": plain_encode, "seal": seal_encode, "dec": plain_decode, "open": decode_open},
            repeats,
        )
        enc, seal = count / seconds["enc"], count / seconds["seal"]
        dec, opened = count / seconds["dec"], count / seconds["open"]
        print(
            f"{label:28} {sealed_count / len(records):9.2f} {enc:10,.0f} {seal:10,.0f} "
            f"{seal / enc:6.2f} {dec:10,.0f} {opened:10,.0f} {opened / dec:6.2f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
