"""Route evaluation (pure): which destinations get an event, with which fields.

:func:`route_event` takes the routes, a decoded event and the router's state of its person, and
returns one :class:`Routed` per (route, destination) that wants it, the record already projected.
A route whose destination cannot be resolved (a fund not in the code list or not valid on the
event's date, a provider missing from the provider directory, an area without a municipal
system) raises :class:`Unroutable`, whose reason names the code but never personal data: the
router dead-letters the event with it.

Who pays the person (for ``payer_of_person``) is state the router keeps per person pseudonym
(:class:`PersonState`, a compacted topic). The rule, applied by :func:`next_state` in log order:

- ``JobseekerRegistered`` starts a spell: the payer is the person's unemployment fund
  (``payload.unemployment_fund_code``) when given, otherwise Kela (who pays basic allowance
  and labour market subsidy to everyone not insured by a fund);
- ``StatementRequested``, ``LabourPolicyStatementIssued`` and ``BenefitDaysAccrued`` name the
  payer (``payload.payer``): the latest one wins, because the payer itself asked, was answered or
  reported paying;
- no other event changes it. A person of whom none of these was seen has no known payer: their
  job start and end of job search go to no payer, which is right, because nobody pays them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, NamedTuple
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo

from hub.codes import UnknownCode, fund
from hub.events.enums import PayerKind
from hub.events.sensitivity import Sensitivity, sensitive_fields
from hub.privacy.sealing import DataKey, is_sealed, open_value, seal_value
from hub.routing.projection import Projection, leaf_paths, projected_schema
from hub.routing.routes import Route, RoutesConfig
from hub.serde.catalog import SchemaCatalog, default_catalog

_FINLAND = ZoneInfo("Europe/Helsinki")
_PAYER_EVENTS = frozenset(
    {"StatementRequested", "LabourPolicyStatementIssued", "BenefitDaysAccrued"}
)
_MAX_SUCCESSORS = 10
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


#: The path the fund code is sealed under in a router-state record (associated data).
STATE_FUND_PATH = "router-state.fund_code"
_STATE_NAMESPACE = UUID("5d0f4a7e-3c1b-5a8e-9b7f-2f6c1d9e8a40")


def state_id(subject: str) -> UUID:
    """The fixed id a person's router-state fund code is sealed for (with
    :data:`STATE_FUND_PATH`): the uuid5 of the pseudonym, so a sealed value copied to another
    person's state does not open."""
    return uuid5(_STATE_NAMESPACE, subject)


_NOT_KEPT = (
    "PersonalDataErased",
    "destination payer_of_person needs router-state.fund_code, which was not kept: the "
    "person's data key could not be had when the fund was learnt (person forgotten)",
)


@dataclass(frozen=True, slots=True)
class PersonState:
    """Who pays the person, as learnt from their events (see the module docstring)."""

    payer_kind: str | None = None
    """``KELA`` or ``UNEMPLOYMENT_FUND`` (:class:`hub.events.enums.PayerKind`), None: unknown."""
    fund_code: str | None = None
    """The fund's hub code when a fund pays, in memory only. Membership data (GDPR art. 9):
    the router-state topic holds it sealed with the person's data key (:meth:`to_bytes`), so
    forgetting the person makes it unreadable there too."""
    sealed_fund: bytes | None = field(default=None, compare=False)
    """The fund code as restored (sealed), not opened yet (``fund_code`` None until then)."""
    fund_unreadable: tuple[str, str] | None = field(default=None, compare=False)
    """Why the sealed fund code does not open (the key erased): (dead-letter error class,
    reason); the payer routes dead-letter with it (:class:`PayerUnreadable`), the rest flows."""

    def to_bytes(self, key: DataKey | None = None, subject: str | None = None) -> bytes:
        """Version 2 (fund code sealed with ``key`` for ``subject``) when a fund code is held
        and a key given, or the restored sealed value kept; ``subject`` without a key: the
        fund code is not kept (``fund_sealed`` null: restored as unreadable); version 1 (in
        clear) only for a state without a fund code, or without either (a person whose events
        are plaintext, written before encryption)."""
        sealed = self.sealed_fund if self.fund_code is None else None
        if self.fund_code is not None and key is None and subject is not None:
            # The key could not be had (the person forgotten): the fund code is not kept.
            not_kept = {"v": 2, "payer_kind": self.payer_kind, "fund_sealed": None}
            return json.dumps(not_kept, separators=(",", ":")).encode("utf-8")
        if self.fund_code is not None and key is not None and subject is not None:
            sealed = seal_value(
                key, state_id(subject).bytes, STATE_FUND_PATH, self.fund_code.encode("utf-8")
            )
        if sealed is not None:
            body: dict[str, Any] = {
                "v": 2,
                "payer_kind": self.payer_kind,
                "fund_sealed": base64.b64encode(sealed).decode("ascii"),
            }
        else:
            body = {"v": 1, "payer_kind": self.payer_kind, "fund_code": self.fund_code}
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> PersonState:
        """ValueError for anything but a version 1 (a state written before the fund code was
        sealed: read as it is) or version 2 state (bad JSON, UTF-8 or field types)."""
        value = json.loads(data)
        if not isinstance(value, dict) or value.get("v") not in (1, 2):
            raise ValueError("not a version 1 or 2 person state")
        payer_kind = value.get("payer_kind")
        if value["v"] == 2:
            if "fund_sealed" not in value:
                raise ValueError("a version 2 person state without fund_sealed")
            text = value["fund_sealed"]
            if not (payer_kind is None or isinstance(payer_kind, str)) or not (
                text is None or isinstance(text, str)
            ):
                raise ValueError("a person state field is not a string")
            if text is None:
                return cls(payer_kind=payer_kind, fund_unreadable=_NOT_KEPT)
            try:
                sealed = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("a person state's sealed fund code is not base64") from None
            if not is_sealed(sealed):
                raise ValueError("a person state's fund code is not a sealed value")
            return cls(payer_kind=payer_kind, sealed_fund=sealed)
        fund_code = value.get("fund_code")
        if not all(v is None or isinstance(v, str) for v in (payer_kind, fund_code)):
            raise ValueError("a person state field is not a string")
        return cls(payer_kind=payer_kind, fund_code=fund_code)

    def opened(self, key: DataKey, subject: str) -> PersonState:
        """The state with its sealed fund code opened (in memory); SealError if it does not."""
        if self.sealed_fund is None or self.fund_code is not None:
            return self
        code = open_value(key, state_id(subject).bytes, STATE_FUND_PATH, self.sealed_fund)
        return replace(self, fund_code=code.decode("utf-8"))


def next_state(
    state: PersonState | None, type_name: str, record: dict[str, Any]
) -> PersonState | None:
    """The person's state after this event (the same object when the event changes nothing)."""
    payload = record.get("payload") or {}
    if type_name == "JobseekerRegistered":
        code = payload.get("unemployment_fund_code")
        if code:
            new = PersonState(PayerKind.UNEMPLOYMENT_FUND.value, code)
        else:
            new = PersonState(PayerKind.KELA.value, None)
    elif type_name in _PAYER_EVENTS and isinstance(payload.get("payer"), dict):
        payer = payload["payer"]
        kind = str(payer.get("kind"))
        if kind == PayerKind.UNEMPLOYMENT_FUND.value and payer.get("fund_code"):
            new = PersonState(kind, payer["fund_code"])
        elif kind == PayerKind.KELA.value:
            new = PersonState(kind, None)
        else:
            return state
    else:
        return state
    return state if state == new else new


@dataclass(frozen=True)
class Routed:
    """One projected event for one destination."""

    route: str
    destination: str
    endpoint: str | None
    """Directory key (fund code, business ID, area code); None for a single-endpoint one."""
    record: dict[str, Any] = field(repr=False)
    fields: tuple[str, ...]
    """Dotted paths of every field sent (envelope included)."""
    legal_basis: dict[str, str]
    """Granted class → legal basis, for the classes present; ``disclosure``: the route's basis."""


class Unroutable(Exception):
    """A route wants the event but its destination cannot be resolved (no personal data)."""

    def __init__(self, route: str, reason: str) -> None:
        super().__init__(f"route {route}: {reason}")
        self.route = route
        self.reason = reason


class PayerUnreadable(Unroutable):
    """The person's payer is a fund whose code the router state holds sealed with a data key
    that is erased (the person forgotten): the payer route dead-letters, the rest flows."""


class Target(NamedTuple):
    """Where one route sends an event: :class:`Routed` without the projection."""

    route: str
    destination: str
    endpoint: str | None


@dataclass(frozen=True)
class CompiledRoute:
    """One (route, destination, type), compiled: its projection, the paths sent, the bases."""

    projection: Projection
    fields: tuple[str, ...]
    legal_basis: dict[str, str]


def event_date(record: dict[str, Any]) -> date:
    """The date that picks a code-list entry: the payload's ``issued_on`` when the event has
    one (a statement goes to the fund valid on its issue date), else ``occurred_at`` in
    Finnish time."""
    payload = record.get("payload") or {}
    issued = payload.get("issued_on")
    if isinstance(issued, date):
        return issued
    if isinstance(issued, int):  # decoded without logical types: days since 1970-01-01
        return date.fromordinal(_EPOCH_ORDINAL + issued)
    occurred = record["envelope"]["occurred_at"]
    if isinstance(occurred, datetime):
        if occurred.tzinfo is None:
            occurred = occurred.replace(tzinfo=UTC)
        return occurred.astimezone(_FINLAND).date()
    return datetime.fromtimestamp(int(occurred) / 1000, _FINLAND).date()


def fund_on(route: str, code: str, on: date) -> str:
    """The fund code that receives a fund's data on ``on``: itself, or its successor after a
    merger (followed along the chain); :class:`Unroutable` if unknown or not valid."""
    current = code
    for _ in range(_MAX_SUCCESSORS):
        try:
            found = fund(current)
        except UnknownCode:
            raise Unroutable(route, f"fund {current} is not in the fund code list") from None
        if found.is_valid_on(on):
            return found.code
        merged_away = found.valid_to is not None and on > found.valid_to
        if found.successor_code is None or not merged_away:
            raise Unroutable(route, f"fund {current} is not valid on {on.isoformat()}")
        current = found.successor_code
    raise Unroutable(route, f"fund {code}: successor chain too long")


class Router:
    """:func:`route_event` with the projections of one config compiled once."""

    def __init__(self, config: RoutesConfig, catalog: SchemaCatalog | None = None) -> None:
        self.config = config
        self.catalog = catalog if catalog is not None else default_catalog()
        self._by_type: dict[str, list[Route]] = {}
        self._routes = {route.name: route for route in config.routes}
        for route in config.routes:
            for type_name in route.types:
                self._by_type.setdefault(type_name, []).append(route)
        self._compiled: dict[tuple[str, str, str], CompiledRoute] = {}

    def compiled(self, route: Route, destination: str, type_name: str) -> CompiledRoute:
        key = (route.name, destination, type_name)
        found = self._compiled.get(key)
        if found is None:
            schema = self.catalog.current(type_name).raw
            grants = frozenset(route.grants)
            derived = projected_schema(schema, grants, route.fields, destination)
            sent = tuple(leaf_paths(derived))
            classes = sensitive_fields(derived)
            basis = {
                str(kind): route.grants[kind]
                for kind in sorted(set(classes.values()), key=str)
                if kind in route.grants
            }
            if route.basis:
                basis["disclosure"] = route.basis
            found = CompiledRoute(Projection(schema, grants, route.fields), sent, basis)
            self._compiled[key] = found
        return found

    def route_event(
        self,
        type_name: str,
        record: dict[str, Any],
        state: PersonState | None,
        blocked: list[PayerUnreadable] | None = None,
    ) -> list[Routed]:
        type_name = type_name.rpartition(".")[2]  # a full name works too
        routed: list[Routed] = []
        for target in self.targets(type_name, record, state, blocked):
            compiled = self.compiled(self._routes[target.route], target.destination, type_name)
            routed.append(
                Routed(
                    route=target.route,
                    destination=target.destination,
                    endpoint=target.endpoint,
                    record=compiled.projection.apply(record),
                    fields=compiled.fields,
                    legal_basis=dict(compiled.legal_basis),
                )
            )
        return routed

    def targets(
        self,
        type_name: str,
        record: dict[str, Any],
        state: PersonState | None,
        blocked: list[PayerUnreadable] | None = None,
    ) -> list[Target]:
        """Where the event goes, without projecting it (the router encodes the outbox values
        straight from the whole record); ``type_name`` short. :class:`Unroutable` as in
        :meth:`route_event`. The record may be decoded with or without logical types.
        ``blocked``: where a route whose payer cannot be read (:class:`PayerUnreadable`) is
        put instead of raising, so the event's other routes flow."""
        found: list[Target] = []
        envelope = record["envelope"]
        for route in self._by_type.get(type_name, ()):
            if not route.accepts(envelope):
                continue
            try:
                target = self._resolve(route, type_name, record, state)
            except PayerUnreadable as unreadable:
                if blocked is None:
                    raise
                blocked.append(unreadable)
                continue
            if target is not None:
                found.append(Target(route.name, target[0], target[1]))
        return found

    def _resolve(
        self, route: Route, type_name: str, record: dict[str, Any], state: PersonState | None
    ) -> tuple[str, str | None] | None:
        directories = self.config.directories
        if route.to.destination is not None:
            return route.to.destination, None
        payload = record.get("payload") or {}
        match route.to.directory:
            case "payer_named":
                payer = payload.get("payer") or {}
                return self._payer(route, str(payer.get("kind")), payer.get("fund_code"), record)
            case "payer_of_person":
                state = next_state(state, type_name, record)
                if state is None or state.payer_kind is None:
                    return None  # no known payer: nobody pays the person, nothing to tell
                if state.fund_code is None and state.fund_unreadable is not None:
                    raise PayerUnreadable(route.name, state.fund_unreadable[1])
                return self._payer(route, state.payer_kind, state.fund_code, record)
            case "provider_of_enrolment":
                business_id = str(payload.get("provider_business_id"))
                return self._keyed(
                    route,
                    directories.providers,
                    business_id,
                    f"provider {business_id} is not in the provider directory",
                )
            case "municipal_system_of_area":
                area = str(record["envelope"]["employment_area_code"])
                return self._keyed(
                    route,
                    directories.municipal,
                    area,
                    f"employment area {area} has no municipal system in the routes",
                )
        raise Unroutable(route.name, f"unknown directory {route.to.directory}")

    def _payer(
        self, route: Route, kind: str, fund_code: str | None, record: dict[str, Any]
    ) -> tuple[str, str | None]:
        directories = self.config.directories
        if kind == PayerKind.KELA.value:
            return directories.kela, None
        if kind != PayerKind.UNEMPLOYMENT_FUND.value:
            raise Unroutable(route.name, f"unknown payer kind {kind}")
        if not fund_code:
            raise Unroutable(route.name, "an unemployment fund pays but no fund code is given")
        code = fund_on(route.name, fund_code, event_date(record))
        return self._keyed(
            route, directories.funds, code, f"fund {code} has no endpoint in the routes"
        )

    def _keyed(self, route: Route, destination: str, key: str, missing: str) -> tuple[str, str]:
        endpoints = self.config.destinations[destination].endpoints or {}
        if key not in endpoints:
            raise Unroutable(route.name, missing)
        return destination, key


_ROUTERS: dict[int, tuple[RoutesConfig, Router]] = {}


def router_for(config: RoutesConfig) -> Router:
    """The compiled :class:`Router` of a config (one per config object)."""
    cached = _ROUTERS.get(id(config))
    if cached is None or cached[0] is not config:
        cached = (config, Router(config))
        _ROUTERS[id(config)] = cached
    return cached[1]


def route_event(
    config: RoutesConfig, type_name: str, record: dict[str, Any], state: PersonState | None
) -> list[Routed]:
    """Every (route, destination) that gets this event, projected; [] when none wants it.

    ``type_name`` is the short name (``JobseekerRegistered``), ``record`` shaped like
    ``DecodedEvent.record``. Raises :class:`Unroutable` when a route that wants the event cannot
    resolve where it goes.
    """
    return router_for(config).route_event(type_name, record, state)


__all__ = [
    "STATE_FUND_PATH",
    "CompiledRoute",
    "PayerUnreadable",
    "PersonState",
    "Routed",
    "Router",
    "Sensitivity",
    "Target",
    "Unroutable",
    "event_date",
    "fund_on",
    "next_state",
    "route_event",
    "router_for",
    "state_id",
]
