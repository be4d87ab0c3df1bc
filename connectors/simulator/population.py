"""Synthetic people, employers and providers drawn from the real code lists.

Identity codes come only from the temporary range (individual numbers 900-999), so a simulated
person can never be a real one.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate

from connectors.simulator.config import SimulationConfig
from connectors.simulator.names import FIRST_NAMES, LAST_NAMES
from hub.codes import (
    employment_area_of,
    employment_areas,
    municipalities,
    municipality_weights,
    unemployment_funds,
)
from hub.events.enums import LabourMarketStatus
from hub.identity import Pseudonymizer, make_business_id, make_test_identity_code

_STATUS_WEIGHTS = {
    LabourMarketStatus.UNEMPLOYED: 62,
    LabourMarketStatus.LAID_OFF: 12,
    LabourMarketStatus.PART_TIME_EMPLOYED: 8,
    LabourMarketStatus.EMPLOYED: 6,
    LabourMarketStatus.STUDENT: 7,
    LabourMarketStatus.OUTSIDE_LABOUR_FORCE: 5,
}


@dataclass(frozen=True)
class Person:
    identity_code: str
    pseudonym: str
    first_name: str
    last_name: str
    email: str
    phone: str
    age: int
    municipality_code: str
    employment_area_code: str
    status: LabourMarketStatus
    fund_code: str | None
    reduced_work_ability: bool | None
    team_code: str
    expert_id: str


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


class Population:
    """Draws people one at a time; identity codes are unique within one run."""

    def __init__(self, config: SimulationConfig, pseudonymizer: Pseudonymizer) -> None:
        self._config = config
        self._pseudonymizer = pseudonymizer
        self._used_codes: set[str] = set()
        self.municipality_codes = sorted(
            code
            for code, municipality in municipalities().items()
            if municipality.is_mainland
            and (config.area is None or employment_area_of(code).code == config.area)
        )
        self.all_mainland_codes = sorted(
            {code for area in employment_areas().values() for code in area.municipality_codes}
        )
        # Municipalities are drawn in proportion to their size (hub.codes.municipality_weights),
        # so Helsinki gets far more people than Hailuoto. Cumulative weights are the same draw
        # as ``weights=`` but are summed once here instead of on every call.
        weights = municipality_weights()
        self._area_cum_weights = tuple(accumulate(weights[c] for c in self.municipality_codes))
        self._mainland_cum_weights = tuple(accumulate(weights[c] for c in self.all_mainland_codes))
        self.employers = _business_ids(random.Random(f"{config.seed}:employers"), 400)
        # Providers do not depend on --seed: the packaged provider directory
        # (hub/routing/data/providers.toml) lists exactly these, so every simulated enrolment
        # routes to a known provider.
        self.providers = simulator_providers()

    def person(self, rng: random.Random, registered_on: date) -> Person:
        code, age = self._unique_code(rng, registered_on)
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        municipality = self.draw_municipality(rng)
        status = rng.choices(list(_STATUS_WEIGHTS), weights=list(_STATUS_WEIGHTS.values()))[0]
        funds = [f for f in unemployment_funds(registered_on) if f.fund_type == "employee"]
        fund = rng.choice(funds).code if funds and rng.random() < 0.6 else None
        area = employment_area_of(municipality).code
        team = rng.randint(1, 6)
        return Person(
            identity_code=code,
            pseudonym=self._pseudonymizer.pseudonym(code),
            first_name=first,
            last_name=last,
            email=f"{_ascii(first)}.{_ascii(last)}{rng.randint(1, 999)}@example.fi",
            phone=f"+358 40 {rng.randint(1000000, 9999999)}",
            age=age,
            municipality_code=municipality,
            employment_area_code=area,
            status=status,
            fund_code=fund,
            reduced_work_ability=rng.random() < 0.08 if rng.random() < 0.7 else None,
            team_code=f"{area}-T{team}",
            expert_id=f"{area}-E{team}{rng.randint(1, 8):02d}",
        )

    def draw_municipality(self, rng: random.Random, *, anywhere: bool = False) -> str:
        """A municipality drawn by size, from the simulated area or ``anywhere`` on the mainland."""
        if anywhere:
            return rng.choices(self.all_mainland_codes, cum_weights=self._mainland_cum_weights)[0]
        return rng.choices(self.municipality_codes, cum_weights=self._area_cum_weights)[0]

    def _unique_code(self, rng: random.Random, registered_on: date) -> tuple[str, int]:
        """A fresh test-range identity code and the age in full years on ``registered_on``."""
        while True:
            birth = registered_on - timedelta(days=rng.randint(17 * 366, 65 * 365))
            code = make_test_identity_code(
                birth, rng.randint(900, 999), modern_sign=rng.random() < 0.3
            )
            if code not in self._used_codes:
                self._used_codes.add(code)
                had_birthday = (registered_on.month, registered_on.day) >= (birth.month, birth.day)
                return code, registered_on.year - birth.year - (0 if had_birthday else 1)


PROVIDER_SEED = "te-hub:providers"
PROVIDER_COUNT = 25


def simulator_providers() -> tuple[str, ...]:
    """The business IDs of the simulated service providers: the same in every run."""
    return _business_ids(random.Random(PROVIDER_SEED), PROVIDER_COUNT)


def _business_ids(rng: random.Random, count: int) -> tuple[str, ...]:
    found: list[str] = []
    while len(found) < count:
        serial = rng.randint(1_000_000, 3_499_999)
        if candidate := _try_business_id(serial):
            found.append(candidate)
    return tuple(found)


def _try_business_id(serial: int) -> str | None:
    try:
        return make_business_id(serial)
    except ValueError:
        return None
