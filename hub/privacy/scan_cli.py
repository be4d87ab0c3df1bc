"""``hub privacy scan``: is any personal data in clear in what the hub keeps?

Reads the raw bytes of every hub topic (the customer-path log, every outbox, dead letters,
ingest receipts, source positions, router state, disclosures, person keys: all partitions from
the beginning, aborted transactions' records included, keys, values and headers), every file
under the archive folder (raw bytes, and every Avro block decompressed), the receipt store and
the poller's files under ``HUB_STATE_DIR``, and any ``--path`` given, and looks for identity
codes, e-mail addresses, Finnish phone numbers and names (:mod:`hub.privacy.scan`).

It prints a table per place and, for what it found, only where (topic, partition, offset and
part; file and block; byte) and the kind, the value masked. Exit 0: nothing found; 1: something
found; 2: the scan could not be done (Kafka unreachable, a path unreadable).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import click
from aiokafka import TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hub.kafka.cli_support import run_kafka_command
from hub.kafka.clients import make_admin, make_consumer
from hub.logging import configure_logging
from hub.privacy.scan import (
    AVRO_MAGIC,
    KINDS,
    AvroFileError,
    Kind,
    Scanner,
    Tally,
    avro_blocks,
    avro_codec,
    scan_into,
    scan_segments,
)
from hub.settings import HubSettings, get_settings
from hub.sink.receipt_store import store_path

FETCH_RECORDS = 5000
_SAFE_HEADER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_KIND_TITLES = {
    Kind.IDENTITY_CODE: "identity codes",
    Kind.NAME: "names",
    Kind.EMAIL: "e-mails",
    Kind.PHONE: "phones",
}


class ScanFailed(click.ClickException):
    """The scan could not be done: exit 2 (1 means personal data was found)."""

    exit_code = 2


# -- which topics ------------------------------------------------------------------------------


def hub_topic_names(settings: HubSettings, existing: set[str]) -> list[str]:
    """The hub's topics among ``existing``: the fixed ones, then every outbox, by name."""
    fixed = [
        settings.topic_person_keys,  # first: the data key ids whose sealed values are skipped
        settings.topic_customer_path,
        *sorted(t for t in existing if t.startswith(settings.topic_outbox_prefix)),
        settings.topic_dead_letter,
        settings.topic_ingest_receipts,
        settings.topic_source_positions,
        settings.topic_router_state,
        settings.topic_disclosures,
    ]
    return [t for t in dict.fromkeys(fixed) if t in existing]


def _key_ids(record_keys: list[bytes] | None) -> set[bytes]:
    """The data key ids named by person-keys record keys (``<pseudonym>/<key id>``)."""
    found = set()
    for key in record_keys or ():
        _, _, name = key.decode("utf-8", errors="replace").partition("/")
        try:
            found.add(uuid.UUID(name).bytes)
        except ValueError:
            continue  # <pseudonym>/forgotten, or a record of another shape
    return found


def _header_label(name: str, index: int) -> str:
    return f"header {name}" if _SAFE_HEADER.match(name) else f"header #{index}"


async def scan_topics(
    settings: HubSettings, scanner: Scanner, progress: Progress | None, max_findings: int
) -> list[Tally]:
    """One tally per hub topic that exists, every record read from the beginning."""
    admin = make_admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        topics = hub_topic_names(settings, existing)
        described = await admin.describe_topics(topics) if topics else []
    finally:
        await admin.close()
    partitions = {
        t["topic"]: sorted(p["partition"] for p in t["partitions"])
        for t in described
        if t.get("error_code", 0) == 0
    }
    consumer = make_consumer(
        settings,
        group_id=None,
        isolation_level="read_uncommitted",  # aborted records are on the broker's disks too
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    tallies: list[Tally] = []
    try:
        for topic in topics:
            tally = Tally(topic, "topic", max_findings=max_findings)
            if topic == settings.topic_person_keys:
                tally.record_keys = []
            tallies.append(tally)
            tps = [TopicPartition(topic, p) for p in partitions.get(topic, [])]
            if not tps:
                tally.note = "no partitions"
                continue
            await _scan_topic(consumer, tps, scanner, tally, progress)
            if topic == settings.topic_person_keys:
                scanner.known_keys = _key_ids(tally.record_keys)
    finally:
        await consumer.stop()
    return tallies


async def _scan_topic(
    consumer: Any,
    tps: list[TopicPartition],
    scanner: Scanner,
    tally: Tally,
    progress: Progress | None,
) -> None:
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    first = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    total = sum(end[tp] - first[tp] for tp in tps)
    task = progress.add_task(f"topic {tally.place}", total=total) if progress else None
    behind = [tp for tp in tps if first[tp] < end[tp]]
    while behind:
        batches = await consumer.getmany(*behind, timeout_ms=1000, max_records=FETCH_RECORDS)
        segments: list[bytes] = []
        labels: list[str] = []
        for tp, records in batches.items():
            for record in records:
                if record.offset >= end[tp]:
                    continue  # written after the scan started
                tally.units += 1
                if tally.record_keys is not None and record.key is not None:
                    tally.record_keys.append(record.key)
                where = f"partition {tp.partition} offset {record.offset}"
                if record.key is not None:
                    segments.append(record.key)
                    labels.append(f"{where} key")
                if record.value is not None:
                    segments.append(record.value)
                    labels.append(f"{where} value")
                for index, (name, value) in enumerate(record.headers or ()):
                    segments.append(name.encode() + b"=" + (value or b""))
                    labels.append(f"{where} {_header_label(name, index)}")
        found, scanned, sealed = scan_segments(scanner, segments)
        tally.scanned_bytes += scanned
        tally.sealed += sealed
        for index, match in found:
            tally.add(f"{labels[index]} @ byte {match.start}", [match])
        positions = {tp: await consumer.position(tp) for tp in behind}
        behind = [tp for tp in behind if positions[tp] < end[tp]]
        if progress is not None and task is not None:
            done = sum(min(positions.get(tp, end[tp]), end[tp]) - first[tp] for tp in tps)
            progress.update(task, completed=done)
    consumer.unsubscribe()


# -- files ---------------------------------------------------------------------------------------


def _files_under(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield Path(folder) / name


def scan_file(scanner: Scanner, tally: Tally, path: Path, shown: str) -> None:
    """Raw bytes of ``path``; an Avro container file's blocks also decompressed (its raw scan
    is then its header, plus its blocks when they are not compressed: a compressed block's
    bytes hold nothing in clear that its decompressed data does not, and would only give
    random matches). The file is memory-mapped: a large one is scanned in chunks."""
    try:
        with path.open("rb") as fo:
            tally.units += 1
            if os.fstat(fo.fileno()).st_size == 0:
                return
            with mmap.mmap(fo.fileno(), 0, access=mmap.ACCESS_READ) as data:
                _scan_mapped(scanner, tally, data, shown)
    except OSError as error:
        raise ScanFailed(
            f"{shown}: cannot be read ({error.strerror or type(error).__name__})"
        ) from None


def _scan_mapped(scanner: Scanner, tally: Tally, data: mmap.mmap, shown: str) -> None:
    if data[: len(AVRO_MAGIC)] != AVRO_MAGIC:
        scan_into(scanner, tally, shown, data)
        return
    try:
        codec, header_end, _ = avro_codec(data)
    except AvroFileError as error:
        scan_into(scanner, tally, shown, data)
        _note(tally, f"{shown}: {error}; scanned as raw bytes")
        return
    scan_into(scanner, tally, shown, data if codec == "null" else data[:header_end])
    try:
        for block in avro_blocks(data):
            tally.blocks += 1
            if codec != "null":
                scan_into(scanner, tally, f"{shown} block {block.index}", block.data)
    except AvroFileError as error:
        _note(tally, f"{shown}: {error}; its rest scanned as raw bytes")
        scan_into(scanner, tally, f"{shown} (raw)", data[header_end:])


def _note(tally: Tally, text: str) -> None:
    tally.note = text if tally.note is None else f"{tally.note}; {text}"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def scan_files(
    scanner: Scanner,
    place: str,
    what: str,
    paths: list[Path],
    progress: Progress | None,
    max_findings: int,
) -> Tally:
    tally = Tally(place, what, unit="files", max_findings=max_findings)
    files = [(p, f) for p in paths if p.exists() for f in _files_under(p)]
    if not any(p.exists() for p in paths):
        tally.note = "absent"
    task = progress.add_task(f"{what} {place}", total=len(files)) if progress else None
    for root, path in files:
        if path.is_symlink() or not path.is_file():
            continue
        shown = str(path.relative_to(root)) if root.is_dir() else path.name
        scan_file(scanner, tally, path, shown)
        if progress is not None and task is not None:
            progress.advance(task)
    return tally


def receipt_store_files(settings: HubSettings) -> list[Path]:
    """The ingest receipt store of this hub's receipts topic (SQLite, with its WAL)."""
    store = store_path(settings.state_dir, settings.topic_ingest_receipts)
    return [store, *(store.with_name(store.name + s) for s in ("-wal", "-shm", "-journal"))]


# -- names -------------------------------------------------------------------------------------


def _names_from(path: Path) -> list[str]:
    """The names of a ``--names`` file: one a line, UTF-8, ``#`` starts a comment line. The
    hub has no list of its own (the core knows no connector's data): a file that lists no
    name is refused, since "no name found" would then say nothing."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ScanFailed(
            f"--names {path}: cannot be read as UTF-8 text ({type(error).__name__})"
        ) from None
    names = [n.strip() for n in lines if n.strip() and not n.strip().startswith("#")]
    if not names:
        raise ScanFailed(f"--names {path}: lists no name")
    return names


NAMES_NOT_SEARCHED: Final = "names were not searched (no --names FILE given)"


# -- the command -------------------------------------------------------------------------------


@click.group("privacy")
def privacy() -> None:
    """Personal data in what the hub keeps: prove that none is in clear."""


@privacy.command("scan")
@click.option(
    "--names",
    "names_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Names to look for, one a line, UTF-8 ('#' starts a comment); without it, no name is "
    "searched (the output says so).",
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Also scan this file or folder (repeatable): a backup, an export, a copy.",
)
@click.option(
    "--archive-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The archive folder (default HUB_ARCHIVE_DIR).",
)
@click.option("--no-kafka", is_flag=True, help="Scan files only, no topic.")
@click.option(
    "--show",
    type=click.IntRange(0),
    default=20,
    show_default=True,
    help="Findings to list (where and kind; a value is never shown).",
)
@click.option(
    "--include-sealed",
    is_flag=True,
    help="Search the bytes of sealed values too (ciphertext gives a random match now and then).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def scan_command(
    names_file: Path | None,
    paths: tuple[Path, ...],
    archive_dir: Path | None,
    no_kafka: bool,
    show: int,
    include_sealed: bool,
    as_json: bool,
) -> None:
    """Look for identity codes, names, e-mails and phones in clear in every hub topic, the
    archive files, the receipt store and any --path. Exit 1 when anything is found."""
    settings = get_settings()
    configure_logging(settings)
    for library in ("aiokafka", "kafka"):  # one "assigned partitions" line per topic otherwise
        logging.getLogger(library).setLevel(max(logging.WARNING, logging.root.level))
    for path in paths:
        if not path.exists():
            raise ScanFailed(f"--path {path}: does not exist")
    names = _names_from(names_file) if names_file is not None else []
    scanner = Scanner(names, skip_sealed=not include_sealed)
    console = Console(stderr=True)
    started = time.perf_counter()
    tallies: list[Tally] = []
    max_findings = max(show, 1000)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=as_json or not console.is_terminal,
    ) as progress:
        if not no_kafka:
            try:
                tallies += run_kafka_command(
                    settings, scan_topics(settings, scanner, progress, max_findings)
                )
            except ScanFailed:
                raise
            except click.ClickException as error:
                raise ScanFailed(error.message) from error
        archive = archive_dir if archive_dir is not None else settings.archive_dir
        places = [
            (_shown(archive), "archive", [archive]),
            (_shown(settings.state_dir / "receipts"), "receipts", receipt_store_files(settings)),
            (_shown(settings.state_dir / "poller"), "poller", [settings.state_dir / "poller"]),
            *((_shown(p), "path", [p]) for p in paths),
        ]
        for place, what, where in places:
            tallies.append(scan_files(scanner, place, what, where, progress, max_findings))
    seconds = time.perf_counter() - started
    found = sum(t.total for t in tallies)
    if as_json:
        click.echo(json.dumps(_as_json(tallies, seconds, scanner), indent=2))
    else:
        out = Console()
        _print(out if out.is_terminal else Console(width=140), tallies, seconds, show, scanner)
    if found:
        raise SystemExit(1)


def _as_json(tallies: list[Tally], seconds: float, scanner: Scanner) -> dict[str, Any]:
    return {
        "found": sum(t.total for t in tallies),
        "seconds": round(seconds, 3),
        "names": scanner.name_count,
        "names_searched": scanner.name_count > 0,
        "places": [
            {
                "place": t.place,
                "what": t.what,
                "unit": t.unit,
                "scanned": t.units,
                "blocks": t.blocks,
                "bytes": t.scanned_bytes,
                "sealed_skipped": t.sealed,
                "hits": {kind.value: t.hits.get(kind, 0) for kind in KINDS},
                "note": t.note,
                "findings": [
                    {"where": f.where, "kind": f.kind.value, "masked": f.mask} for f in t.findings
                ],
            }
            for t in tallies
        ],
    }


def _print(
    console: Console, tallies: list[Tally], seconds: float, show: int, scanner: Scanner
) -> None:
    table = Table(title="Personal data in clear (hub privacy scan)")
    for column in ("place", "what", "scanned", "MB", "sealed values"):
        table.add_column(column, justify="right" if column in ("MB", "sealed values") else "left")
    for kind in KINDS:
        table.add_column(_KIND_TITLES[kind], justify="right")
    for t in tallies:
        scanned = f"{t.units} {t.unit}" + (f", {t.blocks} blocks" if t.blocks else "")
        if t.note == "absent":
            scanned = "absent"
        table.add_row(
            t.place,
            t.what,
            scanned,
            f"{t.scanned_bytes / 1e6:.2f}",
            str(t.sealed),
            *(
                "not searched"
                if kind is Kind.NAME and not scanner.name_count
                else _hits(t.hits.get(kind, 0))
                for kind in KINDS
            ),
        )
    console.print(table)
    for t in tallies:
        if t.note and t.note != "absent":
            console.print(f"note: {t.place}: {t.note}")
    found = sum(t.total for t in tallies)
    records = sum(t.units for t in tallies if t.what == "topic")
    files = sum(t.units for t in tallies if t.unit == "files")
    megabytes = sum(t.scanned_bytes for t in tallies) / 1e6
    what = (
        f"{records} records in {sum(t.what == 'topic' for t in tallies)} topics and {files} "
        f"files, {megabytes:.1f} MB, in {seconds:.1f} s (names: {scanner.name_count})"
    )
    if not scanner.name_count:
        console.print(f"note: {NAMES_NOT_SEARCHED}")
    if not found:
        kinds = "name, e-mail" if scanner.name_count else "e-mail"
        console.print(f"No identity code, {kinds} or phone in clear: {what}.")
        return
    console.print(
        f"[bold red]Personal data in clear: {found} match(es)[/bold red] in "
        f"{sum(1 for t in tallies if t.total)} place(s); {what}. Where (values masked):"
    )
    listed = 0
    for t in tallies:
        for f in t.findings:
            if listed >= show:
                break
            console.print(
                f"  {t.place}: {f.where}: {f.kind.value} {f.mask}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            listed += 1
    if found > listed:
        console.print(f"  … and {found - listed} more (--show N, --json)")


def _hits(count: int) -> str:
    return "[bold red]" + str(count) + "[/bold red]" if count else "0"
