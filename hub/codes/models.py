"""Typed, immutable rows of the code lists shipped in ``hub/codes/data``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

#: Statistics Finland's region code of Åland, whose employment services are Åland's own.
ALAND_REGION_CODE = "21"

OrganisingModel = Literal["lead_municipality", "single_municipality", "joint_municipal_authority"]
RegionalCentreKind = Literal["ely", "elinvoimakeskus"]
FundType = Literal["employee", "entrepreneur"]


@dataclass(frozen=True, slots=True)
class Region:
    """Region (maakunta)."""

    code: str
    name_fi: str
    name_sv: str
    name_en: str


@dataclass(frozen=True, slots=True)
class Municipality:
    """Municipality (kunta) with its Statistics Finland code (kuntanumero)."""

    code: str
    name_fi: str
    name_sv: str
    name_en: str
    region_code: str

    @property
    def is_mainland(self) -> bool:
        """False on Åland, which is outside the TE services."""
        return self.region_code != ALAND_REGION_CODE


@dataclass(frozen=True, slots=True)
class EmploymentArea:
    """Employment area (työllisyysalue): the municipal employment authority since 1.1.2025."""

    code: str
    name_fi: str
    name_sv: str
    name_en: str
    organising_model: OrganisingModel
    municipality_codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RegionalCentre:
    """ELY centre (until 31.12.2025) or elinvoimakeskus (from 1.1.2026).

    Codes of the two kinds overlap ("01" is both), so ``(kind, code)`` is the key.
    """

    code: str
    name_fi: str
    name_sv: str
    name_en: str
    kind: RegionalCentreKind
    valid_from: date | None
    valid_to: date | None


@dataclass(frozen=True, slots=True)
class UnemploymentFund:
    """Unemployment fund (työttömyyskassa), the payer of earnings-related allowance.

    ``code`` is the hub's own slug, not an official code (none exists publicly). Validity is
    inclusive at both ends; None means open.
    """

    code: str
    name_fi: str
    short_name: str
    fund_type: FundType
    valid_from: date | None
    valid_to: date | None
    successor_code: str | None

    def is_valid_on(self, on: date) -> bool:
        return (self.valid_from is None or self.valid_from <= on) and (
            self.valid_to is None or on <= self.valid_to
        )
