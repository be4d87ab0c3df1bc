"""``hub import FILE``: a batch file (NDJSON bulk items or a CSV register extract) into the log.

Exit codes: 0 every row was published (or was already), 1 some rows were rejected (the others
were published; see the reject report), 2 usage error (no such file, unknown format, bad CSV
header; nothing was published), 3 the import did not finish (Kafka unreachable or not taking
writes): what was acknowledged stays, and running the same command again resumes.
"""

from __future__ import annotations

import io
import sys
from datetime import timedelta
from pathlib import Path
from typing import Final, TextIO, cast
from urllib.parse import urlsplit

import click
from rich.console import Console

from connectors.batch.importer import (
    DEFAULT_CHUNK_SIZE,
    FileChangedError,
    ImportInterrupted,
    ImportOptions,
    ImportSummary,
    compute_sha256,
    default_rejects_path,
    default_source_system,
    import_file,
)
from connectors.batch.readers import FileFormat, ImportUsageError, format_of, read_csv_layout
from connectors.batch.report import ProgressBar, summary_lines
from hub.identity import Pseudonymizer, contains_identity_code
from hub.kafka.cli_support import run_kafka_command
from hub.kafka.topics import ensure_topics
from hub.logging import configure_logging, get_logger
from hub.privacy.kek import KekError
from hub.settings import HubSettings, get_settings
from hub.sink import SinkUnavailable
from hub.sink.kafka import MAX_TRANSACTION_SUBMISSIONS, open_kafka_sink, writer_settings

log = get_logger(__name__)

EXIT_REJECTED: Final = 1
EXIT_INTERRUPTED: Final = 3


class _CurrentStderr(io.TextIOBase):
    """Whatever ``sys.stderr`` is when a log line is written: while the progress bar runs, rich
    swaps in a proxy that prints lines above the bar instead of through it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class _NotFinished(click.ClickException):
    """The import stopped before the end of the file (exit code 3)."""

    exit_code = EXIT_INTERRUPTED


def import_settings(settings: HubSettings, sha256: str) -> HubSettings:
    """The sink's settings for importing the file with this SHA-256.

    A transactional id of its own (``te-hub-import-`` + a digest of the file's SHA-256), so an
    import never fences the ingest API or another file's import; stable per file, so a re-run's
    sink fences what a killed run left open (finishing a commit it had asked for).
    """
    return writer_settings(settings, "import", sha256)


async def _import(
    settings: HubSettings,
    path: Path,
    file_format: FileFormat,
    rejects: Path,
    options: ImportOptions,
    console: Console,
) -> ImportSummary:
    with ProgressBar(console) as progress:
        await ensure_topics(settings)
        sha256 = compute_sha256(path, progress)
        sink_settings = import_settings(settings, sha256)
        async with open_kafka_sink(sink_settings) as sink:
            return await import_file(
                path,
                sink,
                options,
                file_format=file_format,
                rejects=rejects,
                sha256=sha256,
                progress=progress,
            )


def _is_uri(text: str) -> bool:
    return bool(urlsplit(text).scheme) and not any(c.isspace() for c in text)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option(
    "--format",
    "file_format",
    type=click.Choice([f.value for f in FileFormat]),
    default=None,
    help="File format (default: from the extension: .ndjson/.jsonl, .csv).",
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Reject report to write (default: FILE.rejects.csv next to FILE).",
)
@click.option(
    "--source",
    default=None,
    help="source_system URI of the events (default: urn:fi:te-hub:import:<file name>).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(1, MAX_TRANSACTION_SUBMISSIONS),
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="Events per Kafka transaction.",
)
def import_command(
    file: Path, file_format: str | None, rejects: Path | None, source: str | None, chunk_size: int
) -> None:
    """Import a batch file (NDJSON bulk items or a CSV jobseeker extract) into the event log.

    Rows are validated like the ingest API's requests; bad rows go to the reject report, the
    others are published exactly once: running the same file again publishes nothing twice,
    and re-running an interrupted import resumes it. Exit code 0: all published, 1: some rows
    rejected, 2: usage error, 3: not finished (run it again).
    """
    settings = get_settings()
    configure_logging(settings, stream=cast(TextIO, _CurrentStderr()))
    try:
        fmt = format_of(file, FileFormat(file_format) if file_format else None)
        if fmt == FileFormat.CSV:
            read_csv_layout(file)
    except ImportUsageError as error:
        raise click.UsageError(str(error)) from error
    rejects = rejects or default_rejects_path(file)
    if rejects.resolve() == file.resolve():
        raise click.BadParameter("the reject report would overwrite FILE", param_hint="--rejects")
    if not rejects.parent.is_dir():
        raise click.BadParameter(f"no folder {rejects.parent}", param_hint="--rejects")
    if source is None and contains_identity_code(file.name):
        # The default source names the file in every event's envelope, for good.
        raise click.UsageError(
            "the file name holds something shaped like an identity code, which the default "
            "source_system would put into every event: rename the file or give --source"
        )
    if source is not None and contains_identity_code(source):
        raise click.BadParameter(
            "holds something shaped like an identity code; it would be in every event",
            param_hint="--source",
        )
    source_system = source or default_source_system(file)
    if not _is_uri(source_system):
        raise click.BadParameter("must be a URI, e.g. urn:fi:kunta:091:asti", param_hint="--source")
    for warning in settings.development_warnings():
        log.warning(warning)
    options = ImportOptions(
        pseudonymizer=Pseudonymizer.from_settings(settings),
        source_system=source_system,
        chunk_size=chunk_size,
        clock_skew=timedelta(seconds=settings.ingest_clock_skew_s),
    )
    console = Console(stderr=True)
    try:
        summary = run_kafka_command(
            settings, _import(settings, file, fmt, rejects, options, console)
        )
    except (
        ImportInterrupted,
        SinkUnavailable,
        KekError,
        FileChangedError,
        click.ClickException,
    ) as error:
        message = error.format_message() if isinstance(error, click.ClickException) else str(error)
        raise _NotFinished(message) from error
    for line in summary_lines(summary):
        click.echo(line)
    if summary.counts.rejected_rows:
        raise SystemExit(EXIT_REJECTED)
