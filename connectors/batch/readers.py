"""Reading batch files row by row: NDJSON bulk items and the legacy CSV register extract.

Files may hold millions of lines, so nothing is loaded whole: a :class:`LineSource` reads the
binary file line by line, counting physical lines and bytes (for the progress bar) and hashing
what it reads (to notice a file that changed since its SHA-256 was taken). Each line is decoded
on its own, so one line that is not UTF-8 rejects that row instead of ending the import.

A row becomes the very request models the ingest API validates (``hub.intake.requests``), so a
file and the API accept exactly the same facts. What is wrong with a row becomes
:class:`Problem` s naming the line, the field and the reason, never the value: cells hold
identity codes, and reject reports travel by e-mail.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final

from pydantic import TypeAdapter, ValidationError

from hub.intake.convert import NotJson, parse_request, record_sent
from hub.intake.errors import field_errors
from hub.intake.requests import (
    BULK_ITEM_ADAPTER,
    HELSINKI,
    EmploymentPlanAgreedRequest,
    IngestRequest,
    JobseekerRegisteredRequest,
    Loc,
    event_type_of,
)
from hub.logging import redact_text

BOM: Final = b"\xef\xbb\xbf"
HASH_BLOCK_BYTES: Final = 1 << 20


class FileFormat(StrEnum):
    NDJSON = "ndjson"
    CSV = "csv"


#: File name extensions that name a format when --format is not given.
EXTENSIONS: Final[Mapping[str, FileFormat]] = {
    ".ndjson": FileFormat.NDJSON,
    ".jsonl": FileFormat.NDJSON,
    ".csv": FileFormat.CSV,
}


class ImportUsageError(Exception):
    """The file cannot be imported as asked (format, header): nothing was read or published."""


def format_of(path: Path, explicit: FileFormat | None = None) -> FileFormat:
    """The explicit format, else the one the extension names."""
    if explicit is not None:
        return explicit
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        known = ", ".join(EXTENSIONS)
        raise ImportUsageError(
            f"cannot tell the format of {path.name} from its extension ({known}); "
            "name it with --format ndjson|csv"
        )
    return found


# --- rows ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One line of the reject report: where and why, never the value."""

    line: int
    field: str
    reason: str


#: Maps a request's pydantic loc to the field name the file's author knows (a CSV column).
FieldOf = Callable[[Loc], str]


def dotted(loc: Sequence[str | int]) -> str:
    """``("payload", "handled_by", "team_code")`` -> ``payload.handled_by.team_code``."""
    return ".".join(str(part) for part in loc)


@dataclass(frozen=True)
class Fact:
    """One request of a row and how to name its fields and cause.

    ``kind`` names the fact within its row (the event type) and is part of the dedupe key;
    ``caused_by`` is the kind of an earlier fact of the same row whose event caused this one.
    """

    kind: str
    request: IngestRequest[Any]
    field_of: FieldOf = dotted
    caused_by: str | None = None


@dataclass(frozen=True)
class Row:
    """A data row starting on physical line ``line``: its facts, or what is wrong with it."""

    line: int
    facts: tuple[Fact, ...] = ()
    problems: tuple[Problem, ...] = ()


def _problems(
    error: ValidationError, line: int, field_of: FieldOf, *, tagged: bool = False
) -> list[Problem]:
    """Pydantic errors as problems, worded by ``field_errors`` without the values sent.

    *tagged*: the model was a bulk item, whose loc starts with the ``event_type`` tag.
    """
    found = []
    for item in field_errors(
        error.errors(include_input=False, include_url=False),
        tag_at=0 if tagged else None,
        in_body=False,
    ):
        if not item.loc and item.type in ("union_tag_invalid", "union_tag_not_found"):
            field = "event_type"
        else:
            field = field_of(tuple(item.loc))
        found.append(Problem(line, redact_text(field), f"{item.type}: {item.detail}"))
    return found


# --- lines --------------------------------------------------------------------------------------


class LineSource:
    """Physical lines of a binary file as text, counted, measured and hashed while read.

    Lines are split on ``\\n`` and keep their ending (as ``csv`` wants with ``newline=""``); a
    UTF-8 BOM on the first line is dropped. A line that is not UTF-8 is decoded with
    replacement characters and its number noted in :attr:`undecodable`, for the row reader to
    reject; the import goes on.
    """

    def __init__(self, binary: IO[bytes]) -> None:
        self._binary = binary
        self._sha = hashlib.sha256()
        self.line_number = 0
        self.bytes_read = 0
        self.undecodable: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        for raw in self._binary:
            self.line_number += 1
            self.bytes_read += len(raw)
            self._sha.update(raw)
            data = raw[len(BOM) :] if self.line_number == 1 and raw.startswith(BOM) else raw
            try:
                yield data.decode("utf-8")
            except UnicodeDecodeError:
                self.undecodable.add(self.line_number)
                yield data.decode("utf-8", "replace")

    def sha256(self) -> str:
        """SHA-256 of the bytes read so far (the whole file once iteration has ended)."""
        return self._sha.hexdigest()

    def take_undecodable(self, first: int, last: int) -> bool:
        """Whether any line in first..last was not UTF-8 (and forget them)."""
        found = {n for n in self.undecodable if first <= n <= last}
        self.undecodable -= found
        return bool(found)


def file_sha256(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """SHA-256 of the file, read in blocks; *on_bytes* gets the bytes hashed so far."""
    sha = hashlib.sha256()
    done = 0
    with path.open("rb") as binary:
        while block := binary.read(HASH_BLOCK_BYTES):
            sha.update(block)
            done += len(block)
            if on_bytes is not None:
                on_bytes(done)
    return sha.hexdigest()


def _not_utf8(line: int) -> Problem:
    return Problem(line, "", "invalid_utf8: the line is not UTF-8 text")


# --- NDJSON ---------------------------------------------------------------------------------------


def ndjson_rows(lines: LineSource) -> Iterator[Row]:
    """One bulk item per line, exactly as the ingest API's bulk endpoint takes it (the same
    parser and strict JSON mode: :func:`~hub.intake.convert.parse_request`)."""
    for text in lines:
        line = lines.line_number
        if lines.take_undecodable(line, line):
            yield Row(line, problems=(_not_utf8(line),))
            continue
        if not text.strip():
            continue
        try:
            item = parse_request(BULK_ITEM_ADAPTER.validate_json, text)
        except NotJson as error:
            reason = f"json_invalid: {redact_text(str(error))}"
            yield Row(line, problems=(Problem(line, "", reason),))
            continue
        except ValidationError as error:
            yield Row(line, problems=tuple(_problems(error, line, dotted, tagged=True)))
            continue
        yield Row(line, facts=(Fact(event_type_of(item), item),))


# --- CSV ------------------------------------------------------------------------------------------

#: Columns every CSV extract must have (cells of email, phone and fund may be empty).
JOBSEEKER_COLUMNS: Final = (
    "personal_identity_code",
    "municipality_code",
    "job_search_started_on",
    "registration_channel",
    "labour_market_status",
    "first_name",
    "last_name",
    "email",
    "phone",
    "age_at_registration",
    "unemployment_fund_code",
)
#: Jobseeker columns a file may leave out.
OPTIONAL_JOBSEEKER_COLUMNS: Final = ("reduced_work_ability",)
#: Plan columns: all of them, or none, must be in the header.
PLAN_COLUMNS: Final = (
    "plan_id",
    "plan_type",
    "plan_agreed_on",
    "job_search_obligation_per_month",
    "obligation_reduction",
    "reporting_period_months",
    "plan_agreed_in_initial_interview",
    "plan_team_code",
    "plan_expert_id",
)
#: Plan columns a file may leave out even when it has plans.
OPTIONAL_PLAN_COLUMNS: Final = ("plan_valid_until",)
#: Correction columns, all optional: a row that corrects (or, ``retracted`` true, withdraws) a
#: registration imported before names its event id in ``corrects_event_id``, a corrected plan
#: names the plan's in ``plan_corrects_event_id``. Cells of an ordinary row stay empty.
CORRECTION_COLUMNS: Final = (
    "corrects_event_id",
    "retracted",
    "plan_corrects_event_id",
    "plan_retracted",
)
#: Every documented column, in the documented order.
ALL_COLUMNS: Final = (
    JOBSEEKER_COLUMNS
    + OPTIONAL_JOBSEEKER_COLUMNS
    + PLAN_COLUMNS
    + OPTIONAL_PLAN_COLUMNS
    + CORRECTION_COLUMNS
)
_REGISTRATION_PAYLOAD: Final = tuple(
    c for c in JOBSEEKER_COLUMNS + OPTIONAL_JOBSEEKER_COLUMNS if c != "municipality_code"
)
#: Plan payload field of each plan column (the team and expert go to handled_by).
_PLAN_PAYLOAD: Final[Mapping[str, str]] = {
    "plan_id": "plan_id",
    "plan_type": "plan_type",
    "plan_agreed_on": "agreed_on",
    "plan_valid_until": "valid_until",
    "job_search_obligation_per_month": "job_search_obligation_per_month",
    "obligation_reduction": "obligation_reduction",
    "reporting_period_months": "reporting_period_months",
    "plan_agreed_in_initial_interview": "agreed_in_initial_interview",
}
#: The correction columns of each fact of a row: (corrects_event_id, retracted).
_REGISTRATION_CORRECTION: Final = ("corrects_event_id", "retracted")
_PLAN_CORRECTION: Final = ("plan_corrects_event_id", "plan_retracted")
_PLAN_FIELD_COLUMNS: Final[Mapping[Loc, str]] = {
    ("occurred_at",): "plan_agreed_on",
    ("corrects_event_id",): "plan_corrects_event_id",
    ("retracted",): "plan_retracted",
    ("payload", "handled_by", "team_code"): "plan_team_code",
    ("payload", "handled_by", "expert_id"): "plan_expert_id",
    **{("payload", field): column for column, field in _PLAN_PAYLOAD.items()},
}
_DATE: Final = TypeAdapter(date)
#: occurred_at of a request whose date cell is not a date: the row is rejected for that cell.
_NO_DATE: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CsvLayout:
    """The columns of a CSV extract, in file order, as checked against the documented layout.

    ``ignored`` are the 1-based positions of the columns the layout does not document.
    """

    columns: tuple[str, ...]
    has_plans: bool
    ignored: tuple[str, ...]


def csv_layout(header: Sequence[str]) -> CsvLayout:
    """Check a header row; raises :class:`ImportUsageError` naming every missing column.

    Only documented column names are repeated back; any other cell of the first row is named
    by its position: a file without a header has a person's data there.
    """
    columns = tuple(name.strip().lower() for name in header)
    if not any(columns):
        raise ImportUsageError("the CSV file has no header row")
    missing = [c for c in JOBSEEKER_COLUMNS if c not in columns]
    has_plans = any(c in columns for c in PLAN_COLUMNS + OPTIONAL_PLAN_COLUMNS)
    if has_plans:
        missing += [c for c in PLAN_COLUMNS if c not in columns]
    if missing:
        plans = " (a file with plan columns needs all of them)" if has_plans else ""
        raise ImportUsageError(
            f"the CSV header lacks column(s): {', '.join(missing)}{plans}; is the first row "
            "the header?"
        )
    repeated = [
        c if c in ALL_COLUMNS else f"the column at position {i}"
        for i, c in enumerate(columns, 1)
        if columns.count(c) > 1 and (c not in ALL_COLUMNS or columns.index(c) == i - 1)
    ]
    if repeated:
        raise ImportUsageError(f"the CSV header repeats column(s): {', '.join(repeated)}")
    ignored = tuple(str(i) for i, c in enumerate(columns, 1) if c not in ALL_COLUMNS)
    return CsvLayout(columns, has_plans, ignored)


def read_csv_layout(path: Path) -> CsvLayout:
    """The layout of *path*'s header, read before anything is published."""
    with path.open("rb") as binary:
        try:
            header = next(csv.reader(LineSource(binary)), [])
        except csv.Error as error:
            raise ImportUsageError(f"the CSV header cannot be read: {error}") from None
    return csv_layout(header)


def csv_rows(lines: LineSource) -> Iterator[Row]:
    """Rows of a CSV extract; the first record is the header (checked like :func:`csv_layout`).

    ``csv.reader`` rather than ``DictReader``: a row is reported at its first physical line,
    which needs ``line_num`` after every record, blank ones included. Quoted fields may hold
    line breaks, so a record can span lines.
    """
    reader = csv.reader(lines)
    try:
        layout = csv_layout(next(reader, []))
    except csv.Error as error:
        raise ImportUsageError(f"the CSV header cannot be read: {error}") from None
    end = reader.line_num
    while True:
        start = end + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            end = reader.line_num
            yield Row(
                start, problems=(Problem(start, "", f"csv_error: {redact_text(str(error))}"),)
            )
            continue
        end = reader.line_num
        if lines.take_undecodable(start, end):
            yield Row(start, problems=(_not_utf8(start),))
            continue
        if not any(value.strip() for value in values):
            continue
        if len(values) != len(layout.columns):
            reason = (
                f"field_count: the row has {len(values)} fields, the header "
                f"{len(layout.columns)} (a stray delimiter or an unquoted line break?)"
            )
            yield Row(start, problems=(Problem(start, "", reason),))
            continue
        cells = {c: v.strip() for c, v in zip(layout.columns, values, strict=True) if v.strip()}
        yield csv_row(start, cells)


def _midnight(cell: str | None) -> datetime:
    """Start of the day in Helsinki: the register keeps days, the log instants."""
    if cell is None:
        return _NO_DATE
    try:
        day = _DATE.validate_python(cell)
    except ValidationError:
        return _NO_DATE  # the payload's own date field reports the cell
    return datetime.combine(day, time(0), tzinfo=HELSINKI)


def _registration_field(loc: Loc) -> str:
    if loc == ("occurred_at",):
        return "job_search_started_on"
    if len(loc) == 2 and loc[0] == "payload":
        return str(loc[1])
    return dotted(loc)


def _plan_field(loc: Loc) -> str:
    return _PLAN_FIELD_COLUMNS.get(loc) or dotted(loc)


def _correction(cells: Mapping[str, str], columns: tuple[str, str]) -> dict[str, str]:
    """The request's ``corrects_event_id`` and ``retracted`` from a fact's correction cells."""
    return {
        field: cells[column]
        for field, column in zip(("corrects_event_id", "retracted"), columns, strict=True)
        if column in cells
    }


def _correction_problems(line: int, cells: Mapping[str, str], has_plan: bool) -> list[Problem]:
    """A corrected plan needs a plan, and the row's registration corrected too: imported as a
    first version, the registration of a correction row would count the person twice."""
    if "plan_corrects_event_id" not in cells:
        return []
    if not has_plan:
        reason = (
            "correction_without_plan: plan_corrects_event_id is set but the row has no plan "
            "cells; a corrected plan is sent whole"
        )
        return [Problem(line, "plan_corrects_event_id", reason)]
    if "corrects_event_id" not in cells:
        reason = (
            "registration_not_corrected: the row corrects its plan, so corrects_event_id must "
            "name the registration imported before (else the row's registration is new)"
        )
        return [Problem(line, "corrects_event_id", reason)]
    return []


def csv_row(line: int, cells: Mapping[str, str]) -> Row:
    """A row's JobseekerRegistered and, when it has plan cells, EmploymentPlanAgreed.

    A row is all or nothing: a broken plan rejects the registration too, so that the corrected
    row can be imported again as a whole. The correction cells make either fact a correction
    of one imported before (:data:`CORRECTION_COLUMNS`).
    """
    person = {k: cells[k] for k in ("personal_identity_code", "municipality_code") if k in cells}
    documents: list[tuple[type[IngestRequest[Any]], dict[str, Any], FieldOf, str | None]] = [
        (
            JobseekerRegisteredRequest,
            {
                **person,
                **_correction(cells, _REGISTRATION_CORRECTION),
                "occurred_at": _midnight(cells.get("job_search_started_on")).isoformat(),
                "payload": {k: cells[k] for k in _REGISTRATION_PAYLOAD if k in cells},
            },
            _registration_field,
            None,
        )
    ]
    has_plan = any(c in cells for c in _PLAN_PAYLOAD.keys() | {"plan_team_code", "plan_expert_id"})
    if has_plan:
        handled_by = {
            field: cells[column]
            for column, field in (("plan_team_code", "team_code"), ("plan_expert_id", "expert_id"))
            if column in cells
        }
        payload = {f: cells[c] for c, f in _PLAN_PAYLOAD.items() if c in cells}
        documents.append(
            (
                EmploymentPlanAgreedRequest,
                {
                    **person,
                    **_correction(cells, _PLAN_CORRECTION),
                    "occurred_at": _midnight(cells.get("plan_agreed_on")).isoformat(),
                    "payload": {**payload, "handled_by": handled_by},
                },
                _plan_field,
                JobseekerRegisteredRequest.event_class.__name__,
            )
        )
    facts: list[Fact] = []
    problems: dict[tuple[str, str], Problem] = {  # identity-code errors come from both facts
        (p.field, p.reason): p for p in _correction_problems(line, cells, has_plan)
    }
    for model, document, field_of, caused_by in documents:
        try:
            request = record_sent(model.model_validate(document), document)
        except ValidationError as error:
            problems.update(((p.field, p.reason), p) for p in _problems(error, line, field_of))
            continue
        facts.append(Fact(event_type_of(request), request, field_of, caused_by))
    if problems:
        return Row(line, problems=tuple(problems.values()))
    return Row(line, facts=tuple(facts))


def rows_of(file_format: FileFormat, lines: LineSource) -> Iterator[Row]:
    return ndjson_rows(lines) if file_format == FileFormat.NDJSON else csv_rows(lines)
