"""The level dimension of the indicators, dated: which regional centre a municipality belonged to.

KEHA follows its figures at seven levels, from the whole country down to one expert:

* ``country``: code ``FI``;
* ``regional_centre``: the ELY centre (code from ``fi_municipality_ely_2025.csv``) up to
  31.12.2025, the elinvoimakeskus (``fi_municipality_elinvoimakeskus_2026.csv``) from 1.1.2026,
  *as the municipality belonged on the day the fact is about* (an interview on 30.12.2025 counts
  for the ELY centre, one on 2.1.2026 for the elinvoimakeskus, even in the same report). The
  code carries the kind of centre as a prefix: ``ELY04`` (Häme ELY centre) and ``EVK04`` (an
  elinvoimakeskus) are different areas, so a BI trend over the codes never joins the two;
* ``region``: the municipality's region (maakunta);
* ``employment_area``: the envelope's employment area (the area responsible for the person),
  or the code list's area of the paying municipality for the benefit share;
* ``municipality``: the envelope's home municipality (the paying one for the benefit share);
* ``team`` and ``expert``: the case worker (``handled_by``) of the fact, where it has one.

The dated part is a small table of rows ``(municipality_code, valid_from, valid_to,
regional_centre_code, region_code, code_list_employment_area_code)`` built from
:mod:`hub.codes` and registered in DuckDB as ``level_municipality``; the indicators join a
fact's municipality and day to it. The code lists' ELY and elinvoimakeskus codes are both two
digits (``04`` is Häme ELY and also an elinvoimakeskus), hence the prefixes
:data:`ELY_PREFIX` and :data:`ELINVOIMAKESKUS_PREFIX`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final

import duckdb
import pyarrow as pa

from hub.codes import (
    ELINVOIMAKESKUS_VALID_FROM,
    ELY_VALID_TO,
    OutsideTeServices,
    employment_area_of,
    municipalities,
    regional_centre_of,
)

LEVELS: Final = (
    "country",
    "regional_centre",
    "region",
    "employment_area",
    "municipality",
    "team",
    "expert",
)
"""Every level, from the whole country down to one expert (the output's ``level`` strings)."""

PERSON_LEVELS: Final = LEVELS[:5]
"""The levels of an indicator with no case worker (a state of the jobseeker population)."""

COUNTRY_CODE: Final = "FI"

ELY_PREFIX: Final = "ELY"
"""Prefix of an ELY centre's code at the ``regional_centre`` level (days up to 31.12.2025)."""
ELINVOIMAKESKUS_PREFIX: Final = "EVK"
"""Prefix of an elinvoimakeskus code at the ``regional_centre`` level (days from 1.1.2026)."""

_OPEN_FROM: Final = date(1, 1, 1)
_OPEN_TO: Final = date(9999, 12, 31)

LEVEL_TABLE: Final = "level_municipality"


@dataclass(frozen=True)
class MunicipalityLevels:
    """What a municipality belonged to over ``valid_from`` … ``valid_to`` (both inclusive)."""

    municipality_code: str
    valid_from: date
    valid_to: date
    regional_centre_code: str | None
    """``ELY04`` / ``EVK03``; None on Åland, which has no ELY centre (outside the TE services)."""
    region_code: str
    employment_area_code: str | None
    """The code list's area; None on Åland."""


def regional_centre_level_code(code: str, on: date) -> str:
    """The level code of the code list's regional centre ``code`` on ``on``: ``ELY04`` up to
    31.12.2025, ``EVK04`` from 1.1.2026."""
    prefix = ELY_PREFIX if on <= ELY_VALID_TO else ELINVOIMAKESKUS_PREFIX
    return f"{prefix}{code}"


def municipality_levels() -> list[MunicipalityLevels]:
    """Two rows per municipality: its ELY centre up to 31.12.2025, its elinvoimakeskus after.

    Dates before 2025 get the 2025 ELY classification (as :func:`hub.codes.regional_centres`).
    """
    rows: list[MunicipalityLevels] = []
    spans = (
        (_OPEN_FROM, ELY_VALID_TO, ELY_VALID_TO),
        (ELINVOIMAKESKUS_VALID_FROM, _OPEN_TO, ELINVOIMAKESKUS_VALID_FROM),
    )
    for code, found in sorted(municipalities().items()):
        for valid_from, valid_to, asked_on in spans:
            centre: str | None
            area: str | None
            try:
                centre = regional_centre_level_code(
                    regional_centre_of(code, asked_on).code, asked_on
                )
                area = employment_area_of(code).code
            except OutsideTeServices:
                centre, area = None, None
            rows.append(
                MunicipalityLevels(code, valid_from, valid_to, centre, found.region_code, area)
            )
    return rows


def register_levels(con: duckdb.DuckDBPyConnection) -> str:
    """Create (or replace) the temporary table :data:`LEVEL_TABLE` on ``con``; its name."""
    rows = municipality_levels()
    table = pa.table(
        {
            "municipality_code": [r.municipality_code for r in rows],
            "valid_from": pa.array([r.valid_from for r in rows], pa.date32()),
            "valid_to": pa.array([r.valid_to for r in rows], pa.date32()),
            "regional_centre_code": [r.regional_centre_code for r in rows],
            "region_code": [r.region_code for r in rows],
            "employment_area_code": [r.employment_area_code for r in rows],
        }
    )
    con.register("level_municipality_arrow", table)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {LEVEL_TABLE} AS SELECT * FROM level_municipality_arrow"
    )
    con.unregister("level_municipality_arrow")
    return LEVEL_TABLE
