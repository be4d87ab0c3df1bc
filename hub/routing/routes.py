"""Routes as data: who receives which event types, which fields, and on what legal basis.

A routes file (TOML) declares destinations (where events go and how: webhook, X-Road or an
outbox topic read by the consumer itself), which destination each directory resolves to (the
payers, the provider directory, the employment areas' municipal systems), and routes: event
types, a target (a fixed destination or a directory), optional municipality / employment-area
filters, and for every ``pii`` class the route may disclose, the legal basis (a text naming the
law). Field classes are read from the Avro schemas' ``pii`` attributes (:func:`sensitive_fields`
over the shipped catalog), never from a list kept here, so a field marked sensitive in a model is
withheld everywhere its class has no legal basis.

Everything is checked when the file is loaded, and a refusal names the route (or destination)
and the reason: a route that grants ``direct``, ``health`` or ``membership`` without a legal basis
citing a statute (a number like ``1290/2002``) or a regulation article (``GDPR art. 6``), an
unknown destination, event type or field path, a field in ``fields`` of a class
the route does not grant, a webhook endpoint without ``url`` or an X-Road one without
``xroad_service``, a secret written into the file (only ``secret_env`` / ``secret_file`` name
where it is; no ``user:password@`` in a URL either), and a retry schedule or breaker the delivery
worker would refuse or could not keep (:func:`check_retry_schedule`: finite, positive, capped, not
decreasing). A router or delivery worker that starts therefore never meets a route or destination
it cannot evaluate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    PrivateAttr,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from hub.codes import UnknownCode, employment_areas, fund, municipalities
from hub.events.sensitivity import Sensitivity, sensitive_fields
from hub.identity.business_id import is_valid_business_id
from hub.logging import get_logger
from hub.serde.catalog import SchemaCatalog, default_catalog
from hub.settings import HubSettings

log = get_logger(__name__)

DEFAULT_ROUTES_FILE = Path(__file__).parent / "data" / "routes.toml"

DEFAULT_RETRY_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
"""Svix's schedule: retries after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about a day)."""

MAX_RETRY_DELAY_S: float = 7 * 24 * 3600.0
"""The longest delay a retry schedule may declare (7 days): a longer one is a typo, not a plan."""
MAX_BREAKER_OPEN_S: float = 24 * 3600.0
"""The longest time a breaker may stay open before its probe (1 day)."""
MIN_SIGNING_KEY_BYTES = 24
"""The shortest signing key accepted (bytes the HMAC is keyed with, after base64 decoding)."""

SPECIAL_CLASSES = frozenset({Sensitivity.DIRECT, Sensitivity.HEALTH, Sensitivity.MEMBERSHIP})
"""Classes whose grant must cite a law: identifying data and GDPR art. 9 special categories."""

_LAW_REFERENCE = re.compile(
    r"\b\d{1,4}/(?:19|20)\d{2}\b"  # a statute number: (380/2023), 1290/2002, (EU) 2016/679
    r"|\(EU\)\s*(?:No\s*)?\d{4}/\d{1,4}\b"  # an EU regulation: (EU) 2024/1689
    r"|\b(?:GDPR|tietosuoja-asetu\w*|dataskyddsförordning\w*)\s+"  # GDPR art. 6, ... 9 artikla
    r"(?:art(?:\.|icle|ikla|iklan)?\s*\d+|\d+\s*art)",
    re.IGNORECASE,
)
"""A legal basis must cite a statute: its number (``(380/2023)``, ``1290/2002``) or an EU
regulation's article (``GDPR art. 6(1)(c)``, ``(EU) 2016/679``). A law's bare name or a word
(``Act``, ``laki``, ``GDPR``, ``needed``) is refused: it does not say which law."""

_SECRET_KEYS = frozenset({"secret", "signing_secret", "password", "token", "api_key", "key"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WARNED: set[str] = set()
DEVELOPMENT_SECRET_CONTEXT = b"te-hub webhook signing secret (development only):"

DirectoryName = Literal[
    "payer_named", "payer_of_person", "provider_of_enrolment", "municipal_system_of_area"
]


def check_retry_schedule(steps: Sequence[float]) -> tuple[float, ...]:
    """The one rule for a retry schedule (delays after attempt 1, 2, ...); ValueError if broken.

    Every delay finite (a NaN or inf in the delivery worker's timer heap stalls the destination
    and spins a CPU), positive, at most :data:`MAX_RETRY_DELAY_S`, and no delay shorter than the
    one before it: a superset of what :class:`hub.delivery.schedule.RetrySchedule` requires, so
    a schedule that ``hub routes check`` accepts is never refused when ``hub deliver`` starts.
    An empty schedule (no retry: the first failure gives up) is allowed.
    """
    schedule = tuple(float(step) for step in steps)
    if not all(math.isfinite(step) for step in schedule):
        raise ValueError("retry delays must be finite numbers of seconds (not inf or nan)")
    if any(step <= 0 for step in schedule):
        raise ValueError("retry delays must be positive (seconds)")
    if any(step > MAX_RETRY_DELAY_S for step in schedule):
        raise ValueError(f"a retry delay is at most {MAX_RETRY_DELAY_S:g} s (7 days)")
    if any(later < earlier for earlier, later in pairwise(schedule)):
        raise ValueError(f"retry delays must not decrease: {list(schedule)}")
    return schedule


def signing_key_bytes(secret: str) -> bytes:
    """The HMAC key a Standard Webhooks secret stands for, decoded exactly as standardwebhooks'
    ``Webhook`` does (``whsec_`` removed, then base64, also without the prefix); ValueError if
    it is not base64."""
    text = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(text + "==")
    except (binascii.Error, ValueError):
        raise ValueError("the secret is not base64 (after whsec_)") from None


class RoutesError(ValueError):
    """A routes file that cannot be used; the message names the route or destination and why.

    ``problems`` holds each problem on its own (``hub routes check`` prints one per line).
    """

    def __init__(self, message: str, problems: Iterable[str] | None = None) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) if problems is not None else (message,)


class Transport(StrEnum):
    WEBHOOK = "webhook"
    """HTTP POST of JSON signed per Standard Webhooks."""
    XROAD = "xroad"
    """REST through an X-Road (Suomi.fi-palveluväylä) security server."""
    OUTBOX = "outbox"
    """No delivery worker: the consumer (e.g. reporting) reads the outbox topic itself."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


def development_signing_secret(settings: HubSettings, endpoint_id: str) -> str:
    """The development signing secret of an endpoint, ``whsec_`` + base64 of 32 bytes.

    An HMAC-SHA256 of the endpoint id (``kela``, ``funds/a-kassa``, ``providers/0737545-4``,
    ``municipal/01``: see :meth:`Destination.endpoint_id`) under the pseudonym secret, so the
    local receivers (which know the same settings) verify signatures with no secret configured.
    Only ever used with ``HUB_ENVIRONMENT=development``.
    """
    key = settings.pseudonym_secret.get_secret_value().encode("utf-8")
    digest = hmac.new(key, DEVELOPMENT_SECRET_CONTEXT + endpoint_id.encode(), hashlib.sha256)
    return "whsec_" + base64.b64encode(digest.digest()).decode("ascii")


class Endpoint(_Model):
    """One receiver: its address and where its signing secret is (never the secret itself)."""

    url: HttpUrl | None = None
    xroad_service: str | None = Field(
        default=None,
        pattern=r"^[^/\s]+/[^/\s]+/[^/\s]+/[^/\s]+/[^/\s]+$",
        description="X-Road service INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE.",
    )
    secret_env: str | None = None
    secret_file: Path | None = None
    description: str = ""
    _id: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            inline = sorted(k for k in data if str(k).lower() in _SECRET_KEYS)
            if inline:
                raise ValueError(
                    f"a secret is never written in the routes file ({', '.join(inline)}): "
                    "name the environment variable (secret_env) or file (secret_file) holding it"
                )
        return data

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, value: HttpUrl | None) -> HttpUrl | None:
        if value is not None and (value.username or value.password):
            raise ValueError(
                "credentials are never written in the routes file (user:password@ in url): "
                "the receiver authenticates the signature (secret_env / secret_file)"
            )
        return value

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and (not _ENV_NAME.match(value) or value.startswith("whsec_")):
            raise ValueError(
                "secret_env must be the name of an environment variable, not the secret itself"
            )
        return value

    @property
    def endpoint_id(self) -> str:
        """``<destination>`` or ``<destination>/<directory key>``; set when the config loads."""
        return self._id

    def signing_secret(self, settings: HubSettings) -> str:
        """The signing secret, read from the environment or the file when called.

        In development an *absent* secret (no variable set, no file configured) falls back to
        :func:`development_signing_secret` (with a warning), so the embedded demo runs with no
        secret set; production refuses. A configured secret that cannot be used (a
        ``secret_file`` that is not a readable regular file, is empty or not UTF-8; a key
        shorter than :data:`MIN_SIGNING_KEY_BYTES`) is an error in every environment, naming the
        variable or file: falling back there would sign with a key the receiver does not know.
        """
        value, where = self._configured_secret()
        if value is not None:
            return value
        if settings.environment == "development":
            if self._id not in _WARNED:  # once per endpoint, not per delivery
                _WARNED.add(self._id)
                log.warning(
                    "development signing secret used", endpoint=self._id, why="; ".join(where)
                )
            return development_signing_secret(settings, self._id)
        raise RoutesError(f"endpoint {self._id}: no signing secret: {'; '.join(where)}")

    def check_secret(self, settings: HubSettings) -> None:
        """Raise :class:`RoutesError` when :meth:`signing_secret` would (no fallback warning)."""
        value, where = self._configured_secret()
        if value is None and settings.environment != "development":
            raise RoutesError(f"endpoint {self._id}: no signing secret: {'; '.join(where)}")

    def _configured_secret(self) -> tuple[str | None, list[str]]:
        """The configured secret, or None and why none is configured; raises for a configured
        secret that is unusable."""
        where: list[str] = []
        if self.secret_env:
            value = os.environ.get(self.secret_env, "").strip()
            if value:
                return self._usable(value, f"environment variable {self.secret_env}"), where
            where.append(f"environment variable {self.secret_env} is not set")
        if self.secret_file:
            value = self._read_secret_file(self.secret_file)
            return self._usable(value, f"secret file {self.secret_file}"), where
        if not where:
            where.append("no secret_env or secret_file configured")
        return None, where

    def _read_secret_file(self, path: Path) -> str:
        def refuse(why: str) -> RoutesError:
            return RoutesError(f"endpoint {self._id}: secret file {path} {why}")

        try:
            if not stat.S_ISREG(path.stat().st_mode):
                raise refuse("is not a regular file")
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise refuse(f"cannot be read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise refuse("is not UTF-8 text") from None
        if not value:
            raise refuse("is empty")
        return value

    def _usable(self, secret: str, source: str) -> str:
        """*secret* if it keys the HMAC with at least :data:`MIN_SIGNING_KEY_BYTES` bytes."""
        try:
            size = len(signing_key_bytes(secret))
        except ValueError as exc:
            raise RoutesError(f"endpoint {self._id}: {source}: {exc}") from None
        if size < MIN_SIGNING_KEY_BYTES:
            raise RoutesError(
                f"endpoint {self._id}: {source}: the signing key is {size} bytes, at least "
                f"{MIN_SIGNING_KEY_BYTES} are needed (whsec_ + base64 of 24 or more random bytes)"
            )
        return secret


class Destination(_Model):
    """A receiver (or a set of receivers of one kind, keyed by a directory key)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    transport: Transport
    endpoint: Endpoint | None = None
    endpoints: dict[str, Endpoint] | None = None
    retry_schedule_s: tuple[Annotated[float, Strict()], ...] = DEFAULT_RETRY_SCHEDULE_S
    """Checked by :func:`check_retry_schedule` (finite, positive, capped, not decreasing)."""
    breaker_failures: int = Field(default=5, ge=1, strict=True)
    breaker_open_s: Annotated[float, Strict()] = Field(
        default=30.0, gt=0, le=MAX_BREAKER_OPEN_S, allow_inf_nan=False
    )
    description: str = ""

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return check_retry_schedule(value)

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.endpoint is not None and self.endpoints is not None:
            raise ValueError("give either endpoint or endpoints, not both")
        if self.transport is Transport.OUTBOX:
            if self.endpoint is not None or self.endpoints:
                raise ValueError("an outbox destination has no endpoint (its reader pulls)")
            return self
        if self.endpoint is None and not self.endpoints:
            raise ValueError(f"a {self.transport} destination needs endpoint or endpoints")
        for key, endpoint in self._all_endpoints():
            label = f"endpoint {key}" if key is not None else "endpoint"
            if self.transport is Transport.WEBHOOK and endpoint.url is None:
                raise ValueError(f"{label}: a webhook endpoint needs url")
            if self.transport is Transport.XROAD and endpoint.xroad_service is None:
                raise ValueError(f"{label}: an xroad endpoint needs xroad_service")
            endpoint._id = self.endpoint_id(key)
        return self

    def _all_endpoints(self) -> Iterable[tuple[str | None, Endpoint]]:
        if self.endpoint is not None:
            yield None, self.endpoint
        yield from (self.endpoints or {}).items()

    def endpoint_id(self, key: str | None) -> str:
        """The id the development secret and the breaker key use: ``name`` or ``name/key``."""
        return self.name if key is None else f"{self.name}/{key}"

    def endpoint_for(self, key: str | None) -> Endpoint:
        """The endpoint for a directory key (None: the destination's single endpoint)."""
        if key is None:
            if self.endpoint is None:
                raise KeyError(f"destination {self.name} has an endpoint per key; none given")
            return self.endpoint
        if self.endpoints is None or key not in self.endpoints:
            raise KeyError(f"destination {self.name} has no endpoint {key}")
        return self.endpoints[key]


class RouteTarget(_Model):
    """Where a route sends: a fixed destination, or a directory that picks it per event."""

    destination: str | None = None
    directory: DirectoryName | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.destination is None) == (self.directory is None):
            raise ValueError("give exactly one of destination or directory")
        return self


class Route(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    types: tuple[str, ...] = Field(min_length=1)
    to: RouteTarget
    municipalities: frozenset[str] | None = None
    employment_areas: frozenset[str] | None = None
    grants: dict[Sensitivity, str] = Field(default_factory=dict)
    fields: tuple[str, ...] | None = None
    basis: str = ""
    """Legal basis of the disclosure as a whole (also for routes that send no ``pii`` class)."""
    description: str = ""

    @field_validator("grants")
    @classmethod
    def _grants_cite_law(cls, grants: dict[Sensitivity, str]) -> dict[Sensitivity, str]:
        for kind, text in grants.items():
            if kind in SPECIAL_CLASSES and not (text.strip() and _LAW_REFERENCE.search(text)):
                raise ValueError(
                    f"grants {kind} without a legal basis: give a text citing the statute by "
                    "number or the regulation's article (e.g. 'Työttömyysturvalaki 1290/2002 "
                    "11 luku', 'GDPR art. 6(1)(c)')"
                )
            if not text.strip():
                raise ValueError(f"grants {kind} with an empty legal basis")
        return grants

    def accepts(self, envelope: Mapping[str, Any]) -> bool:
        """Whether the municipality / employment-area filters let an event's envelope through."""
        if self.municipalities is not None and envelope["municipality_code"] not in (
            self.municipalities
        ):
            return False
        return self.employment_areas is None or (
            envelope["employment_area_code"] in self.employment_areas
        )


class Directories(_Model):
    """Which destination each directory resolves to."""

    kela: str = "kela"
    """Payer Kela: a destination with one endpoint."""
    funds: str = "funds"
    """Unemployment funds: an endpoint per fund code of the code list."""
    providers: str = "providers"
    """Service providers: an endpoint per business ID (the provider directory)."""
    municipal: str = "municipal"
    """Employment areas' own systems: an endpoint per employment area code."""


_DIRECTORY_DESTINATIONS: dict[str, tuple[str, ...]] = {
    "payer_named": ("kela", "funds"),
    "payer_of_person": ("kela", "funds"),
    "provider_of_enrolment": ("providers",),
    "municipal_system_of_area": ("municipal",),
}
_DIRECTORY_NEEDS_FIELD = {
    "payer_named": "payload.payer",
    "provider_of_enrolment": "payload.provider_business_id",
}


class RoutesConfig(_Model):
    destinations: dict[str, Destination]
    directories: Directories = Directories()
    routes: tuple[Route, ...]

    def route(self, name: str) -> Route:
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(f"no route {name}")

    def destination(self, name: str) -> Destination:
        return self.destinations[name]

    def destinations_of(self, route: Route) -> tuple[str, ...]:
        """Every destination a route can send to (a directory route: all it may resolve to)."""
        if route.to.destination is not None:
            return (route.to.destination,)
        assert route.to.directory is not None
        return tuple(
            getattr(self.directories, kind) for kind in _DIRECTORY_DESTINATIONS[route.to.directory]
        )

    def validate_against(self, catalog: SchemaCatalog) -> None:
        """Every check that needs the schemas and code lists; raises :class:`RoutesError`."""
        problems: list[str] = []
        for name, destination in self.destinations.items():
            if destination.name != name:
                problems.append(f"destination {name}: its name is {destination.name!r}")
        problems += self._directory_problems()
        seen: dict[str, str] = {}
        claimed: dict[tuple[str, str], str] = {}
        for route in self.routes:
            if route.name in seen:
                problems.append(f"route {route.name}: defined twice")
            seen[route.name] = route.name
            problems += [f"route {route.name}: {p}" for p in _route_problems(self, route, catalog)]
            for type_name in route.types:
                for dest in self.destinations_of(route):
                    other = claimed.setdefault((dest, type_name), route.name)
                    if other != route.name:
                        problems.append(
                            f"route {route.name}: route {other} already sends {type_name} to "
                            f"destination {dest} (one route per destination and type)"
                        )
        if problems:
            raise RoutesError("; ".join(problems), problems)

    def _directory_problems(self) -> list[str]:
        problems = []
        used = {
            d
            for r in self.routes
            if r.to.directory
            for d in _DIRECTORY_DESTINATIONS[r.to.directory]
        }
        for kind in sorted(used):
            name = getattr(self.directories, kind)
            destination = self.destinations.get(name)
            if destination is None:
                problems.append(f"directories.{kind}: unknown destination {name}")
                continue
            if kind == "kela":
                if destination.endpoint is None:
                    problems.append(f"destination {name}: Kela needs one endpoint")
                continue
            keys = set(destination.endpoints or {})
            if not keys:
                problems.append(f"destination {name}: the {kind} directory needs endpoints")
            elif kind == "funds":
                unknown = sorted(k for k in keys if not _is_fund_code(k))
                if unknown:
                    problems.append(
                        f"destination {name}: not fund codes of the code list: {', '.join(unknown)}"
                    )
            elif kind == "providers":
                bad = sorted(k for k in keys if not is_valid_business_id(k))
                if bad:
                    problems.append(f"destination {name}: not business IDs: {', '.join(bad)}")
            elif kind == "municipal":
                unknown = sorted(keys - set(employment_areas()))
                if unknown:
                    problems.append(
                        f"destination {name}: not employment area codes: {', '.join(unknown)}"
                    )
        return problems


def _is_fund_code(code: str) -> bool:
    try:
        fund(code)
    except UnknownCode:
        return False
    return True


def _route_problems(config: RoutesConfig, route: Route, catalog: SchemaCatalog) -> list[str]:
    problems: list[str] = []
    if route.to.destination is not None and route.to.destination not in config.destinations:
        problems.append(f"unknown destination {route.to.destination}")
    known_types = {event.short_name for event in catalog}
    for type_name in route.types:
        if type_name not in known_types:
            problems.append(
                f"unknown event type {type_name} (known: {', '.join(sorted(known_types))})"
            )
    types = [t for t in route.types if t in known_types]
    if route.municipalities is not None:
        unknown = sorted(route.municipalities - set(municipalities()))
        if unknown:
            problems.append(f"unknown municipality codes {', '.join(unknown)}")
    if route.employment_areas is not None:
        unknown = sorted(route.employment_areas - set(employment_areas()))
        if unknown:
            problems.append(f"unknown employment area codes {', '.join(unknown)}")
    needed = _DIRECTORY_NEEDS_FIELD.get(route.to.directory or "")
    for type_name in types:
        paths = field_paths(catalog.current(type_name).raw)
        if needed and needed not in paths:
            problems.append(f"directory {route.to.directory} needs {needed}, {type_name} has none")
    if route.fields is not None:
        for path in route.fields:
            if not path.startswith("payload."):
                problems.append(f"field {path}: fields are paths under payload.")
                continue
            holders = [t for t in types if path in field_paths(catalog.current(t).raw)]
            if not holders:
                problems.append(f"unknown field {path} (in none of {', '.join(types)})")
            for type_name in holders:
                classes = sensitive_fields(catalog.current(type_name).raw)
                for sensitive, kind in classes.items():
                    inside = (
                        sensitive == path
                        or sensitive.startswith(path + ".")
                        or path.startswith(sensitive + ".")
                    )
                    if inside and kind not in route.grants:
                        problems.append(
                            f"field {sensitive} of {type_name} is {kind} and the route grants no "
                            f"legal basis for {kind}"
                        )
    return problems


def field_paths(schema: dict[str, Any]) -> frozenset[str]:
    """Every dotted field path of an Avro record schema (records inside included)."""
    return frozenset(_paths(schema, ""))


def _paths(schema: Any, prefix: str) -> Iterable[str]:
    if isinstance(schema, list):
        for member in schema:
            yield from _paths(member, prefix)
    elif isinstance(schema, dict):
        for field in schema.get("fields", ()):
            path = f"{prefix}{field['name']}"
            yield path
            yield from _paths(field["type"], f"{path}.")
        if schema.get("type") in ("array", "map"):
            yield from _paths(schema.get("items", schema.get("values")), prefix)


# --- loading -------------------------------------------------------------------------------------


def parse_routes(text: str, source: str, catalog: SchemaCatalog | None = None) -> RoutesConfig:
    """Parse and validate a routes file's text.

    ``source`` names the file in errors and anchors relative paths: ``endpoints_file`` (a
    provider directory kept beside the routes file) and ``secret_file`` (relative to the file
    that names it).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RoutesError(f"{source}: not valid TOML: {exc}") from None
    base = Path(source).parent
    destinations = data.get("destinations")
    if isinstance(destinations, dict):
        for name, raw in destinations.items():
            if not isinstance(raw, dict):
                continue
            raw.setdefault("name", name)
            _anchor_secret_files(raw.get("endpoint"), base)
            if isinstance(raw.get("endpoints"), dict):
                for endpoint in raw["endpoints"].values():
                    _anchor_secret_files(endpoint, base)
            if "endpoints_file" in raw:
                try:
                    raw["endpoints"] = _read_endpoints_file(
                        name, base, raw.pop("endpoints_file"), raw.get("endpoints")
                    )
                except RoutesError as exc:
                    raise RoutesError(f"{source}: {exc}") from None
    try:
        config = RoutesConfig.model_validate(data)
    except ValidationError as exc:
        problems = _describe(exc, data)
        raise RoutesError(f"{source}: {'; '.join(problems)}", problems) from None
    try:
        config.validate_against(catalog if catalog is not None else default_catalog())
    except RoutesError as exc:
        raise RoutesError(f"{source}: {exc}", exc.problems) from None
    return config


def _anchor_secret_files(endpoint: Any, base: Path) -> None:
    """Make a relative ``secret_file`` relative to the file that names it, not to the cwd."""
    if isinstance(endpoint, dict) and isinstance(endpoint.get("secret_file"), str):
        secret_file = Path(endpoint["secret_file"])
        if not secret_file.is_absolute():
            endpoint["secret_file"] = str(base / secret_file)


def _read_endpoints_file(
    destination: str, base: Path, file_name: Any, inline: Any
) -> dict[str, Any]:
    if not isinstance(file_name, str):
        raise RoutesError(f"destination {destination}: endpoints_file must be a file name")
    path = Path(file_name) if Path(file_name).is_absolute() else base / file_name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RoutesError(
            f"destination {destination}: cannot read endpoints_file {path}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise RoutesError(f"destination {destination}: {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise RoutesError(f"destination {destination}: {path} is not valid TOML: {exc}") from None
    endpoints = data.get("endpoints")
    if not isinstance(endpoints, dict):
        raise RoutesError(f"destination {destination}: {path} has no [endpoints] table")
    for endpoint in endpoints.values():
        _anchor_secret_files(endpoint, path.parent)
    merged: dict[str, Any] = dict(endpoints)
    if isinstance(inline, dict):
        merged.update(inline)
    return merged


def _describe(exc: ValidationError, data: Mapping[str, Any]) -> list[str]:
    """Pydantic errors as ``route NAME: field: reason`` (the route by name, not by index)."""
    parts = []
    raw_routes = data.get("routes")
    routes: list[Any] = raw_routes if isinstance(raw_routes, list) else []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
            raw = routes[loc[1]] if loc[1] < len(routes) else {}
            name = raw.get("name") if isinstance(raw, dict) else None
            where = f"route {name or '#' + str(loc[1] + 1)}"
            loc = loc[2:]
        elif len(loc) >= 2 and loc[0] == "destinations":
            where = f"destination {loc[1]}"
            loc = loc[2:]
        message = str(error["msg"]).removeprefix("Value error, ")
        field = ".".join(str(p) for p in loc if not str(p).startswith("function-"))
        parts.append(f"{where + ': ' if where else ''}{field + ': ' if field else ''}{message}")
    return parts


def load_routes(settings: HubSettings, catalog: SchemaCatalog | None = None) -> RoutesConfig:
    """The routes of ``HUB_ROUTES_FILE``, or the packaged default routes."""
    path = settings.routes_file or DEFAULT_ROUTES_FILE
    return load_routes_file(path, catalog)


def load_routes_file(path: Path, catalog: SchemaCatalog | None = None) -> RoutesConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutesError(f"cannot read routes file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RoutesError(f"routes file {path} is not UTF-8 text") from None
    return parse_routes(text, str(path), catalog)
