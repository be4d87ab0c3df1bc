"""``GET /v1/indicators``: KEHA's indicators as JSON, for BI tools (Power BI, Excel, R).

The answer is the rows ``hub report`` writes to its CSV files (indicator, measure, level, code,
period, breakdown, value, n, as_of), computed from the reporting store
(HUB_REPORTING_STORE) on a read-only DuckDB connection opened for the question, as of any
knowledge time, and filtered by the query:

* ``period`` (required): a month ``2026-01`` or a day ``2026-01-15`` from 2000 to five years
  ahead; several comma-separated (at most :data:`MAX_PERIODS`, spanning at most
  :data:`MAX_SPAN_MONTHS` months);
* ``indicator``, ``level``, ``code``, ``breakdown`` (``breakdown=`` for the totals only);
* ``as_of``: a day (its end in Finland, Europe/Helsinki) or an ISO timestamp with an offset;
  without it, now;
* ``limit`` (at most :data:`MAX_LIMIT`, default :data:`DEFAULT_LIMIT`) and ``offset`` page
  through the sorted rows; ``next_offset`` says where the next page starts.

The client needs the read scope ``indicators:read``. A parameter the endpoint does not know, a
repeated one or a bad value is 400 ``invalid-parameter`` naming every parameter at fault; a
store that is missing or being written (a replay holds DuckDB's write lock) is 503
``store-unavailable`` with Retry-After; any other failure of the store is a 503 too, logged,
never a 500. Codes shaped like personal data are redacted and small cells below the
employment area suppressed (``HUB_REPORT_MIN_CELL``) as in the report files
(:func:`hub.reporting.render.normalise`).

A computed table is kept for the few latest questions (by the size and change time of the
store file and of its write-ahead log), so a BI tool paging through one answer computes it once.
"""

# No ``from __future__ import annotations``: FastAPI reads the handler's annotations.

import asyncio
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from connectors.rest_api.auth import INDICATORS_READ, IngestClient
from connectors.rest_api.openapi import problem_responses
from connectors.rest_api.problems import ProblemError
from hub.intake.errors import FieldError
from hub.logging import get_logger
from hub.settings import HubSettings

log = get_logger(__name__)

INDICATORS_PATH: Final = "/v1/indicators"
DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 10_000
MAX_PERIODS: Final = 24
#: Longest query string (every parameter at its longest is under 1 KiB). Up to uvicorn's
#: request-line limit (h11's 16 KiB) the answer is a 414 problem; beyond it uvicorn itself
#: answers a plain-text 400 and closes the connection before the request reaches the app.
MAX_QUERY_BYTES: Final = 8192
#: Months from the first period's start to the last one's end (as ``hub report``'s trend): the
#: indicators build a calendar over the whole span, day by day.
MAX_SPAN_MONTHS: Final = 120
#: Retry-After of a store being written (a replay's lock is held for minutes, so not 1 s).
RETRY_BUSY_S: Final = 10
#: Retry-After of a store that does not exist yet (nobody has replayed into it).
RETRY_MISSING_S: Final = 60
#: Results kept for paging (each at most a few MB of Arrow).
CACHED_RESULTS: Final = 8
#: Computations at once: each holds a DuckDB connection and its temporary tables.
CONCURRENT: Final = 2

PARAMETERS: Final = (
    "indicator",
    "level",
    "code",
    "period",
    "breakdown",
    "as_of",
    "limit",
    "offset",
)
_CODE: Final = re.compile(r"[A-Za-z0-9._:\[\]-]{1,64}")
_BREAKDOWN: Final = re.compile(r"[A-Za-z0-9_=;.:+\[\]-]{0,200}")


class IndicatorRow(BaseModel):
    indicator: str
    measure: str
    level: str = Field(description="country, regional_centre, region, employment_area, …")
    code: str = Field(description="The area's code (FI for the country), team or expert.")
    period: str = Field(description="2026-01 or 2026-01-15.")
    breakdown: str = Field(description="'' for the total, 'channel=PHONE' style otherwise.")
    value: float | None = Field(description="NULL when undefined (a median of nothing).")
    n: int | None = Field(description="How many facts or people the value was computed from.")
    as_of: str = Field(description="The knowledge time: a day, a UTC timestamp (…Z) or 'now'.")
    suppressed: bool = Field(
        description="True when value and n are withheld: below the employment area, a value "
        "from fewer than HUB_REPORT_MIN_CELL people or facts."
    )


class IndicatorPage(BaseModel):
    """One page of the sorted rows (indicator, measure, level, code, period, breakdown)."""

    as_of: str
    periods: list[str]
    total: int = Field(description="Rows matching the query, over every page.")
    offset: int
    limit: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")
    rows: list[IndicatorRow]


@dataclass(frozen=True)
class IndicatorQuery:
    periods: tuple[str, ...]
    indicator: str | None = None
    level: str | None = None
    code: str | None = None
    breakdown: str | None = None
    as_of: date | datetime | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def _bad(name: str, kind: str, detail: str) -> FieldError:
    return FieldError(loc=["query", name], type=kind, detail=detail)


def _integer(text: str, name: str, low: int, high: int, errors: list[FieldError]) -> int | None:
    if not re.fullmatch(r"[0-9]{1,9}", text) or not low <= int(text) <= high:
        errors.append(_bad(name, "out_of_range", f"a whole number {low}…{high}"))
        return None
    return int(text)


def parse_query(items: list[tuple[str, str]]) -> IndicatorQuery:
    """The query from the request's parameters, or a 400 naming every parameter at fault."""
    from hub.reporting.indicators import INDICATORS, LEVELS, Period
    from hub.reporting.indicators.period import (
        FIRST_DAY,
        AsOfOutOfRange,
        PeriodOutOfRange,
        as_of_value,
        last_day,
    )

    errors: list[FieldError] = []
    values: dict[str, str] = {}
    for name, value in items:
        if name not in PARAMETERS:
            errors.append(_bad(name, "unknown_parameter", f"known: {', '.join(PARAMETERS)}"))
        elif name in values:
            errors.append(_bad(name, "repeated", "give it once (several periods: a,b)"))
        else:
            values[name] = value
    periods: list[str] = []
    text = values.get("period")
    if text is None or not text.strip():
        errors.append(_bad("period", "missing", "a month YYYY-MM or a day YYYY-MM-DD"))
    else:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) > MAX_PERIODS:
            errors.append(_bad("period", "too_long", f"at most {MAX_PERIODS} periods"))
        try:
            parsed = [Period.parse(p) for p in parts[:MAX_PERIODS]]
        except PeriodOutOfRange:
            errors.append(
                _bad("period", "out_of_range", f"within {FIRST_DAY:%Y-%m} … {last_day():%Y-%m}")
            )
        except ValueError:
            errors.append(_bad("period", "invalid", "months YYYY-MM or days YYYY-MM-DD"))
        else:
            periods = [str(p) for p in parsed]
            first, last = min(p.start for p in parsed), max(p.end for p in parsed)
            if (last.year - first.year) * 12 + last.month - first.month + 1 > MAX_SPAN_MONTHS:
                errors.append(
                    _bad("period", "too_long", f"the periods span at most {MAX_SPAN_MONTHS} months")
                )
    indicator = values.get("indicator")
    if indicator is not None and indicator not in INDICATORS:
        errors.append(_bad("indicator", "unknown", f"one of {', '.join(INDICATORS)}"))
    level = values.get("level")
    if level is not None and level not in LEVELS:
        errors.append(_bad("level", "unknown", f"one of {', '.join(LEVELS)}"))
    code = values.get("code")
    if code is not None and not _CODE.fullmatch(code):
        errors.append(_bad("code", "invalid", "1-64 letters, digits or . _ : - [ ]"))
    breakdown = values.get("breakdown")
    if breakdown is not None and not _BREAKDOWN.fullmatch(breakdown):
        errors.append(_bad("breakdown", "invalid", "name=VALUE parts joined by ';', or empty"))
    as_of: date | datetime | None = None
    if "as_of" in values:
        try:
            as_of = as_of_value(values["as_of"])
        except AsOfOutOfRange as error:
            errors.append(_bad("as_of", "out_of_range", str(error)))
        except ValueError:
            errors.append(
                _bad("as_of", "invalid", "a day YYYY-MM-DD or an ISO timestamp with an offset")
            )
    limit = _integer(values.get("limit", str(DEFAULT_LIMIT)), "limit", 1, MAX_LIMIT, errors)
    offset = _integer(values.get("offset", "0"), "offset", 0, 10**9, errors)
    if errors:
        names = ", ".join(dict.fromkeys(str(e.loc[-1]) for e in errors))
        raise ProblemError(
            "invalid-parameter", f"invalid query parameter(s): {names}", errors=errors
        )
    assert limit is not None
    assert offset is not None
    return IndicatorQuery(
        tuple(periods), indicator, level, code, breakdown, as_of, limit=limit, offset=offset
    )


# --- the store --------------------------------------------------------------------------------


class StoreUnavailable(Exception):
    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s


class IndicatorReader:
    """Indicator tables computed on a read-only connection to the store file, cached."""

    def __init__(self, path: Path, min_cell: int = 5) -> None:
        self.path = path
        self.min_cell = min_cell
        self._cache: OrderedDict[tuple[Any, ...], pa.Table] = OrderedDict()
        self._lock = threading.Lock()

    def table(self, query: IndicatorQuery) -> pa.Table:
        """The normalised (sorted, redacted) rows of the query's periods and indicator."""
        import duckdb

        from hub.reporting.indicators import Period, compute_indicators
        from hub.reporting.render import normalise

        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise StoreUnavailable(
                "the reporting store does not exist yet (fill it with hub replay --into store)",
                RETRY_MISSING_S,
            ) from None
        # A writer killed before it closed the store leaves its last transactions only in the
        # write-ahead log (DuckDB replays it on open): the log's stat is part of the key.
        try:
            wal = self.path.with_name(self.path.name + ".wal").stat()
            wal_key: tuple[int, int, int] | None = (wal.st_ino, wal.st_size, wal.st_mtime_ns)
        except FileNotFoundError:
            wal_key = None
        file = (stat.st_ino, stat.st_size, stat.st_mtime_ns, wal_key)
        key = (*file, query.periods, query.as_of, query.indicator)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            con = duckdb.connect(str(self.path), read_only=True)
        except (duckdb.IOException, duckdb.ConnectionException) as error:
            log.info("indicators.store_busy", error=type(error).__name__)
            raise StoreUnavailable(
                "the reporting store is being written (a replay?); retry after Retry-After seconds",
                RETRY_BUSY_S,
            ) from None
        try:
            table = compute_indicators(
                con,
                [Period.parse(p) for p in query.periods],
                query.as_of,
                [query.indicator] if query.indicator else None,
            )
        finally:
            con.close()
        table = normalise(table, self.min_cell)
        with self._lock:
            self._cache[key] = table
            while len(self._cache) > CACHED_RESULTS:
                self._cache.popitem(last=False)
        return table


def _filtered(table: pa.Table, query: IndicatorQuery) -> pa.Table:
    for column, wanted in (
        ("level", query.level),
        ("code", query.code),
        ("breakdown", query.breakdown),
    ):
        if wanted is not None:
            table = table.filter(pc.equal(table.column(column), wanted))
    return table


def _json_value(value: Any) -> Any:
    """JSON has no NaN or infinity: such a value is undefined, as NULL is."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_of_label(query: IndicatorQuery, rows: pa.Table) -> str:
    from hub.reporting.render import as_of_label

    if rows.num_rows:
        return str(rows.column("as_of")[0].as_py())
    return as_of_label(query.as_of)


# --- the route --------------------------------------------------------------------------------

_DOC: Final = {
    "indicator": "An indicator name (see the description); all when absent.",
    "level": "country, regional_centre, region, employment_area, municipality, team, expert.",
    "code": "The area's code at the level (FI for the country), a team or an expert.",
    "period": "Required: a month YYYY-MM or a day YYYY-MM-DD; several comma-separated.",
    "breakdown": "Only rows of this breakdown (channel=PHONE); empty for the totals.",
    "as_of": "What had been recorded by then: a day (its end in Finland) or an ISO timestamp "
    "with an offset; absent: now.",
    "limit": f"Rows per page, 1…{MAX_LIMIT} (default {DEFAULT_LIMIT}).",
    "offset": "Rows to skip (the previous page's next_offset).",
}


IndicatorParam = Annotated[str | None, Query(description=_DOC["indicator"])]
LevelParam = Annotated[str | None, Query(description=_DOC["level"])]
CodeParam = Annotated[str | None, Query(description=_DOC["code"])]
PeriodParam = Annotated[str | None, Query(description=_DOC["period"])]
BreakdownParam = Annotated[str | None, Query(description=_DOC["breakdown"])]
AsOfParam = Annotated[str | None, Query(description=_DOC["as_of"])]
LimitParam = Annotated[str | None, Query(description=_DOC["limit"])]
OffsetParam = Annotated[str | None, Query(description=_DOC["offset"])]


def add_indicator_routes(
    app: FastAPI,
    settings: HubSettings,
    authenticate: Callable[..., Awaitable[IngestClient]],
) -> set[str]:
    """Add ``GET /v1/indicators`` (authenticated by *authenticate*); return its path."""
    reader = IndicatorReader(settings.reporting_store, settings.report_min_cell)
    running = asyncio.Semaphore(CONCURRENT)

    async def scoped_reader(
        client: Annotated[IngestClient, Depends(authenticate)],
    ) -> IngestClient:
        if INDICATORS_READ not in client.read_scopes:
            raise ProblemError(
                "insufficient-scope",
                f"client {client.client_id} lacks the scope {INDICATORS_READ}",
                headers={
                    "WWW-Authenticate": f'Bearer realm="te-hub", error="insufficient_scope", '
                    f'scope="{INDICATORS_READ}"'
                },
                missing_scope=INDICATORS_READ,
            )
        return client

    async def get_indicators(
        request: Request,
        client: Annotated[IngestClient, Depends(scoped_reader)],
        indicator: IndicatorParam = None,
        level: LevelParam = None,
        code: CodeParam = None,
        period: PeriodParam = None,
        breakdown: BreakdownParam = None,
        as_of: AsOfParam = None,
        limit: LimitParam = None,
        offset: OffsetParam = None,
    ) -> JSONResponse:
        # The parameters above document the query; it is read from the request itself, which
        # also holds unknown and repeated parameters (refused, never silently ignored).
        if len(request.scope.get("query_string", b"")) > MAX_QUERY_BYTES:
            raise ProblemError(
                "uri-too-long", f"the query string may hold at most {MAX_QUERY_BYTES} bytes"
            )
        query = parse_query(list(request.query_params.multi_items()))
        try:
            async with running:
                table = await asyncio.to_thread(reader.table, query)
        except StoreUnavailable as error:
            raise ProblemError(
                "store-unavailable",
                error.detail,
                headers={"Retry-After": str(error.retry_after_s)},
                retry_after_s=error.retry_after_s,
            ) from None
        except Exception as error:  # a damaged or foreign file: unavailable, not a 500
            log.error("indicators.store_failed", error=type(error).__name__)
            raise ProblemError(
                "store-unavailable",
                "the reporting store could not answer; it has been logged",
                headers={"Retry-After": str(RETRY_MISSING_S)},
                retry_after_s=RETRY_MISSING_S,
            ) from None
        rows = _filtered(table, query)
        page = rows.slice(query.offset, query.limit)
        end = query.offset + page.num_rows
        log.info("indicators.read", client_id=client.client_id, rows=page.num_rows)
        return JSONResponse(
            {
                "as_of": _as_of_label(query, rows),
                "periods": list(query.periods),
                "total": rows.num_rows,
                "offset": query.offset,
                "limit": query.limit,
                "next_offset": end if end < rows.num_rows else None,
                "rows": [{k: _json_value(v) for k, v in row.items()} for row in page.to_pylist()],
            }
        )

    app.add_api_route(
        INDICATORS_PATH,
        get_indicators,
        methods=["GET"],
        response_model=IndicatorPage,
        responses=problem_responses(400, 401, 403, 414, 503),
        tags=["reporting"],
        summary="KEHA's indicators, as of any time",
        description=(
            "The rows of `hub report`'s files for the periods asked, from the reporting store. "
            "Needs the read scope `indicators:read`. Indicators: "
            + "; ".join(f"`{name}`" for name in _indicator_names())
            + "."
        ),
        operation_id="getIndicators",
    )
    return {INDICATORS_PATH}


def _indicator_names() -> list[str]:
    from hub.reporting.indicators import INDICATORS

    return list(INDICATORS)
