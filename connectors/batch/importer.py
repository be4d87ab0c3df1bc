"""The batch import: a file's valid rows into the event log in chunks, exactly once across runs.

Every event's dedupe key is ``import:<sha256 of the file>:<line>:<event type>`` and its event id
is derived from that key, so the same file always yields the same keys and ids. Re-running a
file therefore writes nothing twice (the sink answers known keys from its receipts), and a run
that stopped midway (crash, kill, broker outage) is resumed by running it again: the chunks
written before are skipped as duplicates and the rest is written. An item that brings its own
``event_id`` is keyed ``import:event-id:<id>`` instead, as the ingest API keys it, so the same
event in two overlapping exports is written once. A correction (an item's ``corrects_event_id``,
a CSV row's correction columns) is a new version of a fact: its key ends in
``:corrects:<id>`` (``:retracted`` for a retraction) as in the API.

Chunks of about ``chunk_size`` events go to the sink in one ``submit`` (one Kafka transaction);
a row's events always share a chunk. The rules across items (``bulk_violations``) apply within a
chunk, as within one bulk request of the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import quote
from uuid import UUID

from connectors.batch.readers import (
    Fact,
    FileFormat,
    LineSource,
    Problem,
    Row,
    file_sha256,
    format_of,
    read_csv_layout,
    rows_of,
)
from connectors.batch.report import RejectReport
from hub.identity import Pseudonymizer
from hub.intake.convert import request_digest, to_event
from hub.intake.dedupe import dedupe_key as intake_dedupe_key
from hub.intake.dedupe import versioned_key
from hub.intake.requests import IngestRequest, bulk_violations
from hub.logging import get_logger
from hub.sink import EventSink, Receipt, SinkUnavailable, Submission, SubmissionRefused

log = get_logger(__name__)

#: The client id of file imports: first part of every dedupe key they write.
CLIENT_ID: Final = "import"
DEFAULT_CHUNK_SIZE: Final = 500
#: A chunk also closes after this many rows, so that a file of bad rows stays in bounded memory.
MAX_ROWS_PER_CHUNK_FACTOR: Final = 4

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


#: Reject-report field and reason per refusal of the sink (a refused fact rejects its row).
_REFUSALS: Final[dict[str, tuple[str, str]]] = {
    "idempotency-conflict": (
        "event_id",
        "idempotency_conflict: this event_id is already in the log with other content; give a "
        "new event a new id",
    ),
    "event-id-taken": (
        "event_id",
        "event_id_taken: this event_id is in the log already for another fact (from another "
        "client); give a new event a new id",
    ),
    "event-not-writable": ("row", "event_not_writable: the event cannot be encoded for the log"),
}


def default_source_system(path: Path) -> str:
    """``urn:fi:te-hub:import:<file name>``, the name percent-encoded to keep the URI valid."""
    return f"urn:fi:te-hub:import:{quote(path.name, safe='')}"


def default_rejects_path(path: Path) -> Path:
    """``<file>.rejects.csv`` next to the file."""
    return path.with_name(path.name + ".rejects.csv")


def dedupe_key(file_sha256: str, line: int, fact: Fact) -> str:
    """The sink's dedupe key of one fact of one row (see the module docstring); a correction's
    ends in what it corrects, as every correction's key does (``hub.intake.dedupe``)."""
    request = fact.request
    if request.event_id is not None:
        key = intake_dedupe_key(CLIENT_ID, "event-id", request.event_id)
    else:
        key = intake_dedupe_key(CLIENT_ID, file_sha256, line, fact.kind)
    return versioned_key(key, request.corrects_event_id, request.retracted)


@dataclass
class ImportCounts:
    """Running totals of one import."""

    lines: int = 0
    rows: int = 0
    published: int = 0
    duplicates: int = 0
    rejected_rows: int = 0
    problems: int = 0


@dataclass(frozen=True)
class ImportSummary:
    path: Path
    file_format: FileFormat
    sha256: str
    reject_report: Path
    counts: ImportCounts
    ignored_columns: tuple[str, ...] = ()


class ImportInterrupted(Exception):
    """The event log stopped taking writes; what was acknowledged stays, re-running resumes."""

    def __init__(self, message: str, counts: ImportCounts) -> None:
        super().__init__(message)
        self.counts = counts


class FileChangedError(Exception):
    """The file's content changed between the hashing pass and the import pass."""


class ImportProgress(Protocol):
    def hashing(self, done: int, total: int) -> None: ...

    def importing(self, done: int, total: int, counts: ImportCounts) -> None: ...


@dataclass(frozen=True)
class ImportOptions:
    """How to import; the defaults suit the CLI, tests shorten the waits."""

    pseudonymizer: Pseudonymizer
    source_system: str
    chunk_size: int = DEFAULT_CHUNK_SIZE
    clock_skew: timedelta = timedelta(seconds=300)
    #: Submits of one chunk before giving up while the sink is unavailable.
    attempts: int = 5
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    clock: Clock = utc_now
    sleep: Sleep = asyncio.sleep

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.attempts < 1:
            raise ValueError("chunk_size and attempts must be at least 1")


@dataclass
class _Chunk:
    rows: list[Row] = field(default_factory=list)
    events: int = 0


@dataclass(frozen=True)
class _Planned:
    row: Row
    submission: Submission


def compute_sha256(path: Path, progress: ImportProgress | None = None) -> str:
    """The file's SHA-256 in one streaming pass, reported as progress by bytes."""
    total = path.stat().st_size

    def on_bytes(done: int) -> None:
        if progress is not None:
            progress.hashing(done, total)

    on_bytes(0)
    return file_sha256(path, on_bytes)


async def import_file(
    path: Path,
    sink: EventSink,
    options: ImportOptions,
    *,
    file_format: FileFormat | None = None,
    rejects: Path | None = None,
    sha256: str | None = None,
    progress: ImportProgress | None = None,
) -> ImportSummary:
    """Validate every row of *path*, publish the valid ones through *sink*, report the rest.

    Raises :class:`~connectors.batch.readers.ImportUsageError` before reading any row when the
    format or the CSV header is wrong, :class:`ImportInterrupted` when the sink stays
    unavailable, :class:`FileChangedError` when the file changed under the import. *sha256*
    may be passed when already computed (the CLI needs it earlier).
    """
    fmt = format_of(path, file_format)
    ignored = read_csv_layout(path).ignored if fmt == FileFormat.CSV else ()
    digest = sha256 or compute_sha256(path, progress)
    report_path = rejects or default_rejects_path(path)
    log.info("import.started", file=path.name, format=str(fmt), sha256=digest)
    with RejectReport(report_path) as report, path.open("rb") as binary:
        lines = LineSource(binary)
        run = _Run(path, sink, options, digest, report, lines, progress)
        await run.publish(rows_of(fmt, lines))
    if lines.sha256() != digest:
        raise FileChangedError(
            f"{path.name} changed while it was imported (its SHA-256 is not the one its events "
            "are keyed by); import a file only once it is complete"
        )
    summary = ImportSummary(path, fmt, digest, report_path, run.counts, ignored)
    log.info(
        "import.finished",
        file=path.name,
        sha256=digest,
        lines=run.counts.lines,
        rows=run.counts.rows,
        published=run.counts.published,
        duplicates=run.counts.duplicates,
        rejected_rows=run.counts.rejected_rows,
    )
    return summary


class _Run:
    """One pass over the rows: chunking, rules across items, publishing, reporting."""

    def __init__(
        self,
        path: Path,
        sink: EventSink,
        options: ImportOptions,
        sha256: str,
        report: RejectReport,
        lines: LineSource,
        progress: ImportProgress | None,
    ) -> None:
        self.path = path
        self.sink = sink
        self.options = options
        self.sha256 = sha256
        self.report = report
        self.lines = lines
        self.progress = progress
        self.size = path.stat().st_size
        self.counts = ImportCounts()

    async def publish(self, rows: Iterator[Row]) -> None:
        chunk = _Chunk()
        row_limit = self.options.chunk_size * MAX_ROWS_PER_CHUNK_FACTOR
        for row in rows:
            self.counts.rows += 1
            chunk.rows.append(row)
            chunk.events += len(row.facts)
            if chunk.events >= self.options.chunk_size or len(chunk.rows) >= row_limit:
                await self._flush(chunk)
                chunk = _Chunk()
        await self._flush(chunk)

    async def _flush(self, chunk: _Chunk) -> None:
        self.counts.lines = self.lines.line_number
        if chunk.rows:
            await self._publish_chunk(chunk.rows)
        if self.progress is not None:
            self.progress.importing(self.lines.bytes_read, self.size, self.counts)

    async def _publish_chunk(self, rows: list[Row]) -> None:
        now = self.options.clock()
        problems: dict[int, list[Problem]] = {r.line: list(r.problems) for r in rows if r.problems}
        facts = [(row, fact) for row in rows if not row.problems for fact in row.facts]
        for violation in bulk_violations(
            [fact.request for _, fact in facts], now=now, clock_skew=self.options.clock_skew
        ):
            index = violation.loc[0]
            assert isinstance(index, int)
            row, fact = facts[index]
            problems.setdefault(row.line, []).append(
                Problem(
                    row.line,
                    fact.field_of(violation.loc[1:]),
                    f"{violation.type}: {violation.detail}",
                )
            )
        planned = self._plan([row for row in rows if row.line not in problems], now)
        while True:
            try:
                receipts = await self._submit(
                    [p.submission for p in planned], rows[0].line, rows[-1].line
                )
                break
            except SubmissionRefused as refused:  # nothing written: reject those rows, go again
                refused_lines = {planned[i].row.line for i in refused.indexes}
                for index in refused.indexes:
                    line = planned[index].row.line
                    problems.setdefault(line, []).append(Problem(line, *_REFUSALS[refused.reason]))
                planned = [p for p in planned if p.row.line not in refused_lines]
        published = sum(not receipt.duplicate for receipt in receipts)
        duplicates = len(receipts) - published
        self.counts.published += published
        self.counts.duplicates += duplicates
        self.counts.rejected_rows += len(problems)
        for line in sorted(problems):
            self.report.write(_unique(problems[line]))
        self.counts.problems = self.report.problems
        log.debug(
            "import.chunk",
            file=self.path.name,
            first_line=rows[0].line,
            last_line=rows[-1].line,
            published=published,
            duplicates=duplicates,
            rejected_rows=len(problems),
        )

    def _plan(self, rows: list[Row], recorded_at: datetime) -> list[_Planned]:
        """Submissions of the rows' facts: keys, digests, event ids and causes."""
        planned: list[_Planned] = []
        for row in rows:
            event_ids: dict[str, UUID] = {}
            for fact in row.facts:
                request: IngestRequest[Any] = fact.request
                if fact.caused_by is not None and request.causation_id is None:
                    request = request.model_copy(update={"causation_id": event_ids[fact.caused_by]})
                key = dedupe_key(self.sha256, row.line, fact)
                event = to_event(
                    request,
                    source_system=self.options.source_system,
                    pseudonymizer=self.options.pseudonymizer,
                    recorded_at=recorded_at,
                    dedupe_key=key,
                )
                event_ids[fact.kind] = event.envelope.event_id
                planned.append(
                    _Planned(
                        row,
                        Submission(key, request_digest(request, self.options.pseudonymizer), event),
                    )
                )
        return planned

    async def _submit(self, submissions: list[Submission], first: int, last: int) -> list[Receipt]:
        """One chunk into the sink, retried with exponential backoff while it is unavailable."""
        if not submissions:
            return []
        options = self.options
        attempt = 0
        while True:
            attempt += 1
            try:
                receipts = await self.sink.submit(submissions)
            except SinkUnavailable as error:
                if attempt >= options.attempts:
                    raise ImportInterrupted(
                        f"the event log did not take lines {first}-{last} of {self.path.name} "
                        f"after {attempt} attempt(s): {error}. Everything before line {first} "
                        "is in the log and nothing is lost: run the same command again once the "
                        "log is back; rows already published are skipped as duplicates.",
                        self.counts,
                    ) from error
                delay = min(
                    options.backoff_max_s,
                    max(options.backoff_initial_s * 2 ** (attempt - 1), error.retry_after_s),
                )
                log.warning(
                    "import.sink_unavailable",
                    file=self.path.name,
                    first_line=first,
                    attempt=attempt,
                    retry_in_s=delay,
                )
                await options.sleep(delay)
                continue
            if len(receipts) != len(submissions):
                raise RuntimeError(f"sink gave {len(receipts)} receipts for {len(submissions)}")
            return receipts


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    unique = []
    for problem in problems:
        if (problem.field, problem.reason) not in seen:
            seen.add((problem.field, problem.reason))
            unique.append(problem)
    return unique
