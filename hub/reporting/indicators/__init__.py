"""KEHA's indicators over the reporting store, at every level, daily and monthly, as of any time.

``compute_indicators(con, periods, as_of=None, indicators=None)`` answers with one row per value
(:data:`~hub.reporting.indicators.frame.OUTPUT_SCHEMA`): what had been recorded by ``as_of``
(the version of a fact recorded last by then wins; a retracted fact drops out), or everything
recorded when ``as_of`` is None (``as_of`` = ``'now'``). One module per group of indicators;
each is SQL over the store's live views and the rules of :mod:`hub.rules`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Final

import duckdb
import pyarrow as pa

from hub.reporting.indicators import (
    access,
    activation,
    benefit_share,
    flows,
    meetings,
    offers,
    plans,
    statements,
)
from hub.reporting.indicators.frame import OUTPUT_SCHEMA, Context, Indicator
from hub.reporting.indicators.period import Period
from hub.reporting.levels import LEVELS

_ALL: Final[tuple[Indicator, ...]] = (
    access.INDICATOR,
    meetings.INDICATOR,
    plans.PLANS_INDICATOR,
    plans.PLAN_DEBT_INDICATOR,
    plans.OBLIGATION_INDICATOR,
    offers.INDICATOR,
    activation.INDICATOR,
    statements.INDICATOR,
    flows.INDICATOR,
    benefit_share.INDICATOR,
)

REGISTRY: Final[dict[str, Indicator]] = {indicator.name: indicator for indicator in _ALL}

INDICATORS: Final[dict[str, str]] = {indicator.name: indicator.description for indicator in _ALL}
"""Every indicator by name, with a one-line description and its rule or source."""


def compute_indicators(
    con: duckdb.DuckDBPyConnection,
    periods: Sequence[Period],
    as_of: datetime | date | None = None,
    indicators: Sequence[str] | None = None,
) -> pa.Table:
    """The indicators (all when None) for the periods, as known at ``as_of``.

    ``as_of``: a datetime (naive = UTC; an offset is taken as given) cuts at that instant
    (``recorded_at <= as_of``); a date at the end of that day in Finland (23:59:59.999999
    Europe/Helsinki); None takes everything recorded. Rows are sorted by
    (indicator, measure, level, code, period, breakdown). ValueError for an unknown indicator.
    Runs on its own cursor of ``con``: its temporary views and tables go with it.
    """
    names = list(REGISTRY) if indicators is None else list(dict.fromkeys(indicators))
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown indicator(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    if not periods:
        return OUTPUT_SCHEMA.empty_table()
    ctx = Context(con, periods, as_of)
    try:
        for name in names:
            REGISTRY[name].compute(ctx)
        return ctx.result()
    finally:
        ctx.close()


__all__ = [
    "INDICATORS",
    "LEVELS",
    "OUTPUT_SCHEMA",
    "REGISTRY",
    "Period",
    "compute_indicators",
]
