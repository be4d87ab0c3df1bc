"""What an import tells its user: the reject report, the progress bar and the summary.

The reject report is a CSV with one row per problem (``line``, ``field``, ``reason``) so that
the person who fixes the extract can sort and filter it; it never holds a value from the file,
because a value may be an identity code and reports get mailed around.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from connectors.batch.readers import Problem
from hub.logging import redact_text

if TYPE_CHECKING:
    from connectors.batch.importer import ImportCounts, ImportSummary

REPORT_COLUMNS: Final = ("line", "field", "reason")


class RejectReport:
    """Writes the reject report as problems are found (a bad file may have millions)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems = 0
        self._file = path.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(REPORT_COLUMNS)

    def write(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            # The readers never put values in; redaction is the second line of defence.
            self._writer.writerow(
                (problem.line, redact_text(problem.field), redact_text(problem.reason))
            )
            self.problems += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class ProgressBar:
    """Rich progress by bytes, first of the hashing pass, then of the import with its counts."""

    def __init__(self, console: Console) -> None:
        # Off when stderr is no terminal (CI, pipes): a final frame there says nothing that
        # the logs and the summary do not.
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=16),
            DownloadColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[counts]}"),
            console=console,
            disable=not console.is_terminal,
        )
        self._hashing: TaskID | None = None
        self._importing: TaskID | None = None

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def hashing(self, done: int, total: int) -> None:
        if self._hashing is None:
            self._hashing = self._progress.add_task("hashing", total=total, counts="")
        self._progress.update(self._hashing, completed=done)

    def importing(self, done: int, total: int, counts: ImportCounts) -> None:
        if self._importing is None:
            self._importing = self._progress.add_task("importing", total=total, counts="")
        self._progress.update(
            self._importing,
            completed=done,
            counts=f"{counts.published:,} new · {counts.duplicates:,} dup · "
            f"{counts.rejected_rows:,} rejected",
        )


def summary_lines(summary: ImportSummary) -> list[str]:
    """The end-of-run summary, one fact a line."""
    counts = summary.counts
    lines = [
        f"{summary.path.name} ({summary.file_format}, sha256 {summary.sha256[:16]}…)",
        f"  lines read          {counts.lines:,}",
        f"  rows                {counts.rows:,}",
        f"  events published    {counts.published:,}",
        f"  duplicates skipped  {counts.duplicates:,}",
        f"  rows rejected       {counts.rejected_rows:,}",
        f"  reject report       {summary.reject_report} ({counts.problems:,} problem(s))",
    ]
    if summary.ignored_columns:
        positions = ", ".join(summary.ignored_columns)
        lines.append(f"  ignored columns     at position(s) {positions} (not in the layout)")
    return lines
