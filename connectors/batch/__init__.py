"""Batch file connector (``hub import``): NDJSON bulk items or a CSV register extract, validated
like the ingest API's requests and published exactly once through an
:class:`~hub.sink.EventSink`."""

from connectors.batch.importer import (
    CLIENT_ID,
    FileChangedError,
    ImportCounts,
    ImportInterrupted,
    ImportOptions,
    ImportSummary,
    dedupe_key,
    default_rejects_path,
    default_source_system,
    import_file,
)
from connectors.batch.readers import (
    ALL_COLUMNS,
    JOBSEEKER_COLUMNS,
    PLAN_COLUMNS,
    FileFormat,
    ImportUsageError,
    Problem,
)

__all__ = [
    "ALL_COLUMNS",
    "CLIENT_ID",
    "JOBSEEKER_COLUMNS",
    "PLAN_COLUMNS",
    "FileChangedError",
    "FileFormat",
    "ImportCounts",
    "ImportInterrupted",
    "ImportOptions",
    "ImportSummary",
    "ImportUsageError",
    "Problem",
    "dedupe_key",
    "default_rejects_path",
    "default_source_system",
    "import_file",
]
