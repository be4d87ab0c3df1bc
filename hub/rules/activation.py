"""Which employment services count as "in services" for the activation rate, as dated data.

TEM's employment service statistics count as *people in services* (palveluissa olevat) those in
employment with pay subsidy, a work trial, labour market training, coaching, self-motivated
study and start-up grant; a person in career and training guidance stays an unemployed
jobseeker. The list lives in ``data/activation_service_types.csv`` (one row per list, the
:class:`~hub.events.enums.ServiceType` symbols as a ``;``-list), so a change of the statistics'
definition is a new row with its source, not a code change.
"""

from __future__ import annotations

from datetime import date
from functools import cache

from hub.events.enums import ServiceType
from hub.rules.effective import EffectiveDated, load_table


def _service_types(row: dict[str, str]) -> frozenset[ServiceType]:
    return frozenset(ServiceType(symbol) for symbol in row["service_types"].split(";"))


@cache
def activation_service_types_table() -> EffectiveDated[frozenset[ServiceType]]:
    return load_table("activation_service_types", _service_types)


def counts_as_service(service_type: ServiceType | str, on: date) -> bool:
    """Whether a person in ``service_type`` on ``on`` counts as in services (NoRuleInForce
    before the first row)."""
    return ServiceType(service_type) in activation_service_types_table().on(on)
