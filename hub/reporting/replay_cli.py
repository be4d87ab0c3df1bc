"""``hub replay``: history into the reporting store, from the Kafka log or the Avro archive.

The progress bar (records, events/s, time left: the total is known from the offsets) goes to
stderr; the summary, with the count and first offsets of any undecodable record, to stdout.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from hub.kafka.cli_support import run_kafka_command
from hub.logging import configure_logging
from hub.reporting.archive import ArchiveError, list_archive
from hub.reporting.facts import REPORTING_DESTINATION, NotReported
from hub.reporting.replay import ReplayStats, as_utc, replay_archive, replay_kafka
from hub.reporting.store import ReportingStore, StoreError
from hub.routing.routes import RoutesError, load_routes
from hub.settings import get_settings


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "– events/s", style="cyan")


class RichProgress:
    """:class:`hub.reporting.replay.Progress` as a rich bar on stderr."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            _Rate(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: int | None = None

    def start(self, total: int | None) -> None:
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=total)

    def advance(self, records: int) -> None:
        if self._task is not None and records:
            self._bar.advance(self._task, records)  # type: ignore[arg-type]

    def finish(self) -> None:
        self._bar.stop()

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.finish()


def rejected_line(rejected: dict[str, int]) -> str:
    """The summary's line on refused versions (see :mod:`hub.reporting.store`)."""
    if not rejected:
        return "rejected versions: none"
    return (
        f"rejected versions (counted nowhere, see rejected_versions): {sum(rejected.values())}: "
        + ", ".join(f"{reason} {n}" for reason, n in sorted(rejected.items()))
    )


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise click.BadParameter(
            "an ISO 8601 time, e.g. 2026-01-05T08:00:00+02:00 (no zone: UTC)", param_hint=option
        ) from None


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit 2: a fault of the input, not of the hub."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


@click.command("replay")
@click.option("--from-offset", type=click.IntRange(0), help="Every partition from this offset.")
@click.option("--from-time", help="Per partition from the first record at or after this time.")
@click.option(
    "--from-archive",
    type=click.Path(file_okay=False, path_type=Path),
    help="Read the Avro archive under this folder instead of Kafka (see hub archive).",
)
@click.option("--until", help="Stop before the first record at or after this time.")
@click.option(
    "--into",
    type=click.Choice(["store"]),
    default="store",
    show_default=True,
    help="Where the replay goes: the reporting store.",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="DuckDB file of the store (default: HUB_REPORTING_STORE).",
)
@click.option("--topic", help="The log topic (default: HUB_TOPIC_CUSTOMER_PATH).")
@click.option(
    "--destination",
    default=REPORTING_DESTINATION,
    show_default=True,
    help="The routes' destination whose projection feeds the store.",
)
def replay_command(
    from_offset: int | None,
    from_time: str | None,
    from_archive: Path | None,
    until: str | None,
    into: str,
    store_path: Path | None,
    topic: str | None,
    destination: str,
) -> None:
    """Replay the log (or its archive) into the reporting store, without a consumer group.

    Exactly one of --from-offset, --from-time, --from-archive. Idempotent: events the store
    already holds are not added again. Undecodable records are counted and listed, and so are
    refused corrections (another person's or type's fact, a cycle, an unknown target). A store
    of another layout, not a DuckDB file, or held by another process: one line, exit 2.
    """
    chosen = [o for o, v in (("--from-offset", from_offset), ("--from-time", from_time),
                             ("--from-archive", from_archive)) if v is not None]  # fmt: skip
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --from-offset, --from-time, --from-archive")
    start_time = _time(from_time, "--from-time")
    until_time = _time(until, "--until")
    settings = get_settings()
    configure_logging(settings)
    try:
        routes = load_routes(settings)
    except (RoutesError, OSError) as error:
        raise click.ClickException(f"routes: {error}") from error
    if from_archive is not None and not from_archive.is_dir():
        raise click.ClickException(f"no archive folder {from_archive}")
    path = store_path or settings.reporting_store
    log_topic = topic or settings.topic_customer_path
    if from_archive is not None:
        try:  # a wrong folder is found before a store file is made
            list_archive(from_archive, log_topic)
        except ArchiveError as error:
            _fail(str(error))
    try:
        store = ReportingStore(path, routes=routes, destination=destination)
    except StoreError as error:  # another layout, not DuckDB, locked: one line, exit 2
        _fail(str(error))
    try:
        store.projection  # noqa: B018  (fail now on an unknown destination)
    except NotReported as error:
        store.close()
        raise click.ClickException(str(error)) from error
    stats: ReplayStats
    try:
        with RichProgress("replay") as progress:
            if from_archive is not None:
                stats = replay_archive(
                    from_archive,
                    store,
                    topic=log_topic,
                    until=until_time,
                    progress=progress,
                    settings=settings,
                )
            else:
                stats = run_kafka_command(
                    settings,
                    replay_kafka(
                        settings,
                        store,
                        topic=log_topic,
                        from_offset=from_offset,
                        from_time=start_time,
                        until=until_time,
                        progress=progress,
                    ),
                )
        counts = store.counts()
        rejected = store.rejected()
    except ArchiveError as error:
        # What was read before the bad file is in the store; a rerun after the file is
        # repaired or moved away adds only the rest (the store is idempotent by event id).
        _fail(f"{error} (the records before it are in the store)")
    finally:
        store.close()
    click.echo(stats.summary())
    click.echo(
        f"store {path}: " + ", ".join(f"{name} {count}" for name, count in counts.items() if count)
    )
    click.echo(rejected_line(rejected))
    if stats.undecodable:
        click.echo(
            f"{stats.undecodable} record(s) could not be decoded (see above); they are not "
            "in the store: inspect them with hub tail or the dead letters",
            err=True,
        )
    sys.stdout.flush()
