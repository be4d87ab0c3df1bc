"""``hub archive``: write the customer-path log to Avro files (see :mod:`hub.reporting.archive`).

Live (the default) it follows the log and publishes a file per partition when the day changes,
when it holds ``--max-records``, after ``--idle`` seconds without a record or ``--max-age``
seconds open; SIGTERM closes and commits what is written and leaves. ``--once`` archives up to
the end offsets seen at start and exits 0 (cron, the demo, tests).
"""

from __future__ import annotations

import click

from hub.kafka.cli_support import run_kafka_command
from hub.logging import configure_logging, get_logger
from hub.reporting.archive import ArchiveError, RollPolicy, run_archive
from hub.settings import get_settings


@click.command("archive")
@click.option("--once", is_flag=True, help="Archive up to the end of the log seen at start, exit.")
@click.option(
    "--max-records",
    type=click.IntRange(1),
    default=RollPolicy.max_records,
    show_default=True,
    help="Most records in one file.",
)
@click.option(
    "--idle",
    "idle_s",
    type=click.FloatRange(0.01),
    default=RollPolicy.idle_s,
    show_default=True,
    help="Close a partition's file after this many seconds without a record.",
)
@click.option(
    "--max-age",
    "max_age_s",
    type=click.FloatRange(0.01),
    default=RollPolicy.max_age_s,
    show_default=True,
    help="Close a file after it has been open this many seconds.",
)
@click.option(
    "--progress-every",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds between progress log lines (records, records/s, files).",
)
def archive_command(
    once: bool, max_records: int, idle_s: float, max_age_s: float, progress_every: float
) -> None:
    """Archive the customer-path log to HUB_ARCHIVE_DIR as Avro files, exactly once per file.

    <dir>/<topic>/date=YYYY-MM-DD/part-<partition>-<first offset>.avro, the schema embedded,
    compressed with HUB_ARCHIVE_CODEC; offsets of HUB_ARCHIVE_GROUP are committed only after a
    file is closed, fsynced and renamed.
    """
    settings = get_settings()
    configure_logging(settings)
    log = get_logger(__name__)
    for warning in settings.development_warnings():
        log.warning(warning)
    policy = RollPolicy(max_records=max_records, idle_s=idle_s, max_age_s=max_age_s)
    try:
        stats = run_kafka_command(
            settings,
            run_archive(
                settings,
                once=once,
                policy=policy,
                progress_every_s=progress_every,
                handle_signals=True,
            ),
        )
    except ArchiveError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"archived {stats.records} record(s) ({stats.poison} undecodable, kept raw) into "
        f"{len(stats.files)} file(s) under {settings.archive_dir / settings.topic_customer_path} "
        f"in {stats.elapsed_s:.1f} s"
    )
