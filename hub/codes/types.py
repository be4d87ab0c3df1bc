"""Pydantic annotated ``str`` types that check a code against the shipped lists."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from hub.codes.lookup import employment_area, fund, municipality

_MUNICIPALITY_CODE = re.compile(r"\d{3}")
_AREA_CODE = re.compile(r"\d{2}")


def _check_municipality_code(value: str) -> str:
    if not _MUNICIPALITY_CODE.fullmatch(value):
        raise ValueError(f"municipality code must be 3 digits (e.g. '091'), got {value!r}")
    municipality(value)
    return value


def _check_mainland_municipality_code(value: str) -> str:
    _check_municipality_code(value)
    found = municipality(value)
    if not found.is_mainland:
        raise ValueError(
            f"municipality {value} {found.name_fi} is on Åland, outside the TE services"
        )
    return value


def _check_employment_area_code(value: str) -> str:
    if not _AREA_CODE.fullmatch(value):
        raise ValueError(f"employment area code must be 2 digits (e.g. '08'), got {value!r}")
    employment_area(value)
    return value


def _check_fund_code(value: str) -> str:
    fund(value)
    return value


#: Any of the 308 municipality codes of 2025, Åland included (e.g. a home municipality).
MunicipalityCodeStr = Annotated[str, AfterValidator(_check_municipality_code)]
#: A municipality served by the TE services: the 292 outside Åland.
MainlandMunicipalityCodeStr = Annotated[str, AfterValidator(_check_mainland_municipality_code)]
#: One of the 45 employment areas (not the Åland pseudo-area 46).
EmploymentAreaCodeStr = Annotated[str, AfterValidator(_check_employment_area_code)]
#: The hub's own unemployment fund code (any fund in the list, whatever its validity dates).
UnemploymentFundCodeStr = Annotated[str, AfterValidator(_check_fund_code)]
