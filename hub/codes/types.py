"""Pydantic annotated ``str`` types that check a code against the shipped lists."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from hub.codes.lookup import (
    ALAND_EMPLOYMENT_AREA_CODE,
    UnknownCode,
    employment_areas,
    fund,
    municipalities,
    municipality,
)

_MUNICIPALITY_CODE = re.compile(r"\d{3}")
_AREA_CODE = re.compile(r"\d{2}")


# The validators say what is wrong without the code sent: a field may hold anything (a name
# typed into the wrong column), and their reasons reach the ingest API's problem responses.


def _check_municipality_code(value: str) -> str:
    if not _MUNICIPALITY_CODE.fullmatch(value):
        raise ValueError("municipality code must be 3 digits (e.g. '091')")
    if value not in municipalities():
        raise ValueError("the municipality code is not in Statistics Finland's 2025 list")
    return value


def _check_mainland_municipality_code(value: str) -> str:
    _check_municipality_code(value)
    if not municipality(value).is_mainland:
        raise ValueError("the municipality is on Åland, outside the TE services")
    return value


def _check_employment_area_code(value: str) -> str:
    if not _AREA_CODE.fullmatch(value):
        raise ValueError("employment area code must be 2 digits (e.g. '08')")
    if value == ALAND_EMPLOYMENT_AREA_CODE:
        raise ValueError("the code is Statistics Finland's pseudo-area for Åland, not an area")
    if value not in employment_areas():
        raise ValueError("the employment area code is not one of the 45 areas")
    return value


def _check_fund_code(value: str) -> str:
    try:
        fund(value)
    except UnknownCode:
        raise ValueError("the unemployment fund code is not in the hub's fund list") from None
    return value


#: Any of the 308 municipality codes of 2025, Åland included (e.g. a home municipality).
MunicipalityCodeStr = Annotated[str, AfterValidator(_check_municipality_code)]
#: A municipality served by the TE services: the 292 outside Åland.
MainlandMunicipalityCodeStr = Annotated[str, AfterValidator(_check_mainland_municipality_code)]
#: One of the 45 employment areas (not the Åland pseudo-area 46).
EmploymentAreaCodeStr = Annotated[str, AfterValidator(_check_employment_area_code)]
#: The hub's own unemployment fund code (any fund in the list, whatever its validity dates).
UnemploymentFundCodeStr = Annotated[str, AfterValidator(_check_fund_code)]
