"""Lookups over the code lists in ``hub/codes/data``, loaded once via importlib.resources.

Loading through the package (not a file path) keeps the lists working from a wheel or a zip.
Every mapping returned is read-only, because it is the cached copy shared by the whole process.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from datetime import date
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Final, cast, get_args

from hub.codes.models import (
    EmploymentArea,
    FundType,
    Municipality,
    OrganisingModel,
    Region,
    RegionalCentre,
    UnemploymentFund,
)

#: Last day of the 15 ELY centres; the 10 elinvoimakeskus centres took over the next day.
ELY_VALID_TO: Final = date(2025, 12, 31)
ELINVOIMAKESKUS_VALID_FROM: Final = date(2026, 1, 1)

#: Statistics Finland's pseudo-codes for Åland, which has no ELY centre or employment area.
ALAND_ELY_CODE: Final = "16"
ALAND_EMPLOYMENT_AREA_CODE: Final = "46"

_MUNICIPALITY_CODE = re.compile(r"\d{3}")


class UnknownCode(LookupError, ValueError):
    """A code that is not in the list. Also a ValueError, so pydantic validators report it."""


class OutsideTeServices(UnknownCode):
    """An Åland municipality: a real code, but outside the TE services (Åland runs its own).

    A subclass of UnknownCode so that one ``except UnknownCode`` covers every "no answer" case.
    """


def _rows(file_name: str) -> list[dict[str, str]]:
    source = resources.files("hub.codes").joinpath("data", file_name)
    # Bytes, not text mode: csv needs the newlines untranslated.
    text = source.read_bytes().decode("utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _date_or_none(text: str) -> date | None:
    return date.fromisoformat(text) if text else None


# --- regions and municipalities ---------------------------------------------------------------


@cache
def regions() -> Mapping[str, Region]:
    """The 19 regions (maakunnat) of 2025, Åland (21) included, by 2-digit code."""
    return MappingProxyType(
        {
            r["region_code"]: Region(r["region_code"], r["name_fi"], r["name_sv"], r["name_en"])
            for r in _rows("fi_regions_2025.csv")
        }
    )


def region(code: str) -> Region:
    try:
        return regions()[code]
    except KeyError:
        raise UnknownCode(
            f"region code {code!r} is not in Statistics Finland's 2025 list"
        ) from None


@cache
def municipalities() -> Mapping[str, Municipality]:
    """The 308 municipalities of 2025 (16 on Åland) by 3-digit code; the 2026 set is the same."""
    return MappingProxyType(
        {
            r["municipality_code"]: Municipality(
                code=r["municipality_code"],
                name_fi=r["name_fi"],
                name_sv=r["name_sv"],
                name_en=r["name_en"],
                region_code=r["region_code"],
            )
            for r in _rows("fi_municipalities_2025.csv")
        }
    )


def municipality(code: str) -> Municipality:
    try:
        return municipalities()[code]
    except KeyError:
        hint = (
            "" if _MUNICIPALITY_CODE.fullmatch(str(code)) else " (codes are 3 digits, e.g. '091')"
        )
        raise UnknownCode(
            f"municipality code {code} is not in Statistics Finland's 2025 list{hint}"
        ) from None


def is_mainland(municipality_code: str) -> bool:
    """False for the 16 Åland municipalities, which are outside the TE services."""
    return municipality(municipality_code).is_mainland


def _mainland_municipality(code: str) -> Municipality:
    found = municipality(code)
    if not found.is_mainland:
        raise OutsideTeServices(
            f"municipality {code} {found.name_fi} is on Åland, outside the TE services"
        )
    return found


@cache
def municipality_weights() -> Mapping[str, float]:
    """A size weight for each of the 308 municipalities, for drawing realistic synthetic data.

    The weight is the population on 31.12.2022 (Statistics Finland), with Pertunmaa (588) added
    to Mäntyharju (507), which it merged into on 1.1.2025. Only the ratios are meaningful; see
    ``fi_municipality_weights.md`` for the source and why it is population rather than jobseekers.
    """
    weights: dict[str, float] = {}
    for r in _rows("fi_municipality_weights.csv"):
        weight = float(r["weight"])
        if not weight > 0:
            raise ValueError(f"non-positive weight for municipality {r['municipality_code']}")
        weights[r["municipality_code"]] = weight
    if weights.keys() != municipalities().keys():
        raise ValueError("municipality weights do not cover exactly the 2025 municipalities")
    return MappingProxyType(weights)


# --- employment areas -------------------------------------------------------------------------


@cache
def employment_areas() -> Mapping[str, EmploymentArea]:
    """The 45 employment areas by 2-digit code (not Statistics Finland's Åland pseudo-area 46)."""
    areas: dict[str, EmploymentArea] = {}
    for r in _rows("fi_employment_areas_2025.csv"):
        if r["is_employment_area"] != "true":
            continue
        # The file says e.g. "lead_municipality (vastuukuntamalli)"; the first word is the value.
        model = r["organising_model"].split()[0]
        if model not in get_args(OrganisingModel):
            raise ValueError(f"unknown organising model {model!r} in employment area data")
        areas[r["employment_area_code"]] = EmploymentArea(
            code=r["employment_area_code"],
            name_fi=r["name_fi"],
            name_sv=r["name_sv"],
            name_en=r["name_en"],
            organising_model=cast(OrganisingModel, model),
            municipality_codes=tuple(r["member_municipality_codes"].split(";")),
        )
    return MappingProxyType(areas)


def employment_area(code: str) -> EmploymentArea:
    try:
        return employment_areas()[code]
    except KeyError:
        if code == ALAND_EMPLOYMENT_AREA_CODE:
            raise OutsideTeServices(
                f"employment area {code} is Statistics Finland's pseudo-area for Åland, "
                "not an employment area"
            ) from None
        raise UnknownCode(f"employment area code {code!r} is not one of the 45 areas") from None


@cache
def _area_by_municipality() -> Mapping[str, str]:
    return {
        r["municipality_code"]: r["employment_area_code"]
        for r in _rows("fi_municipality_employment_area_2025.csv")
    }


def employment_area_of(municipality_code: str) -> EmploymentArea:
    """The employment area serving a municipality (the 2025 areas; 2026 memberships are equal)."""
    _mainland_municipality(municipality_code)
    return employment_area(_area_by_municipality()[municipality_code])


# --- regional centres (ELY / elinvoimakeskus), effective-dated -------------------------------


@cache
def _ely_centres() -> Mapping[str, RegionalCentre]:
    return {
        r["ely_code"]: RegionalCentre(
            code=r["ely_code"],
            name_fi=r["name_fi"],
            name_sv=r["name_sv"],
            name_en=r["name_en"],
            kind="ely",
            valid_from=None,
            valid_to=ELY_VALID_TO,
        )
        for r in _rows("fi_ely_centres_2025.csv")
        if r["is_ely_centre"] == "true"
    }


@cache
def _ely_by_municipality() -> Mapping[str, str]:
    return {r["municipality_code"]: r["ely_code"] for r in _rows("fi_municipality_ely_2025.csv")}


@cache
def _elinvoimakeskus_rows() -> tuple[Mapping[str, RegionalCentre], Mapping[str, str]]:
    centres: dict[str, RegionalCentre] = {}
    by_municipality: dict[str, str] = {}
    for r in _rows("fi_municipality_elinvoimakeskus_2026.csv"):
        code = r["evk_code"]
        by_municipality[r["municipality_code"]] = code
        centres.setdefault(
            code,
            RegionalCentre(
                code=code,
                name_fi=r["evk_name_fi"],
                name_sv=r["evk_name_sv"],
                name_en=r["evk_name_en"],
                kind="elinvoimakeskus",
                valid_from=ELINVOIMAKESKUS_VALID_FROM,
                valid_to=None,
            ),
        )
    return dict(sorted(centres.items())), by_municipality


def regional_centres(on: date) -> list[RegionalCentre]:
    """The centres in force on *on*: 15 ELY centres up to 31.12.2025, then 10 elinvoimakeskus.

    Dates before 2025 get the 2025 ELY classification too (see hub/codes/data/README.md for
    how far back that holds).
    """
    if on >= ELINVOIMAKESKUS_VALID_FROM:
        return list(_elinvoimakeskus_rows()[0].values())
    return list(_ely_centres().values())


def regional_centre_of(municipality_code: str, on: date) -> RegionalCentre:
    """The ELY centre (until 31.12.2025) or elinvoimakeskus (from 1.1.2026) of a municipality.

    Regional roll-ups must pass the date the figure is about, not today, or a report on 2025
    would silently regroup into the 2026 centres.
    """
    _mainland_municipality(municipality_code)
    if on >= ELINVOIMAKESKUS_VALID_FROM:
        centres, by_municipality = _elinvoimakeskus_rows()
        return centres[by_municipality[municipality_code]]
    return _ely_centres()[_ely_by_municipality()[municipality_code]]


# --- unemployment funds -----------------------------------------------------------------------


@cache
def _funds() -> Mapping[str, UnemploymentFund]:
    funds: dict[str, UnemploymentFund] = {}
    for r in _rows("fi_unemployment_funds_2025.csv"):
        fund_type = r["fund_type"]
        if fund_type not in get_args(FundType):
            raise ValueError(f"unknown fund type {fund_type!r} in unemployment fund data")
        funds[r["fund_code"]] = UnemploymentFund(
            code=r["fund_code"],
            name_fi=r["name_fi"],
            short_name=r["alias_or_short_name"],
            fund_type=cast(FundType, fund_type),
            valid_from=_date_or_none(r["valid_from"]),
            valid_to=_date_or_none(r["valid_to"]),
            successor_code=r["successor_fund_code"] or None,
        )
    return MappingProxyType(funds)


def unemployment_funds(on: date) -> list[UnemploymentFund]:
    """Funds operating on *on*.

    Complete from 1.1.2025 only: funds that merged away before 2025 are not in the list, so an
    earlier date gives a partial answer.
    """
    return [f for f in _funds().values() if f.is_valid_on(on)]


def fund(code: str) -> UnemploymentFund:
    """A fund by the hub's fund code, whether or not it still operates (check ``is_valid_on``)."""
    try:
        return _funds()[code]
    except KeyError:
        raise UnknownCode(
            f"unemployment fund code {code!r} is not in the hub's fund list "
            f"(known: {', '.join(sorted(_funds()))})"
        ) from None
