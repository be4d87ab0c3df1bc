"""Who may send what: API clients, their keys and scopes, from a TOML file.

Every client has one API key, sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
The file stores only the key's SHA-256. A fast hash is enough because the keys are 256-bit
random tokens from :func:`new_api_key`: nobody can guess one from its hash however fast the hash
is, whereas bcrypt or argon2 (made to protect low-entropy passwords) would add tens of
milliseconds of CPU to every request for no gain. Keys are compared with ``hmac.compare_digest``
over all clients, so the time taken says nothing about which hash was close.

Scopes are event types, plus the read scope ``indicators:read`` (:data:`READ_SCOPES`: ``GET
/v1/indicators``, aggregates of the reporting store, never personal data), which any kind of
client may hold in ``read_scopes``; a ``report_reader`` (a BI tool) holds only read scopes and
sends nothing. On top of the scopes each kind of client has limits that depend on the data:

* ``municipal_system``: municipal IT of one or more employment areas; only for people whose home
  municipality is in its areas (or in its narrower ``municipalities`` list);
* ``service_provider``: only ServiceParticipationReported, only under its own business ID, only
  for enrolments the hub assigned to it (asked from an :class:`EnrolmentDirectory`), only about
  the person enrolled and with the enrolment's municipality; health data only as codes
  (:func:`uncoded_health_fields`);
* ``payer``: Kela or one unemployment fund; only StatementRequested and BenefitDaysAccrued that
  name itself as the payer.

An enrolment id belongs to its first ServiceEnrolled: a municipal client may repeat its own
enrolment (a retry), but not re-send an id the log holds with another client (``source_system``),
person or provider (403 ``enrolment-taken``). 403, as every refusal on the data here: the client
may not write this, and no retry will change that.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tomllib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, Protocol, get_args
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub.codes import (
    EmploymentAreaCodeStr,
    MainlandMunicipalityCodeStr,
    UnemploymentFundCodeStr,
    employment_area_of,
)
from hub.events.customer_path import (
    BenefitDaysAccruedPayload,
    ServiceEnrolledPayload,
    ServiceParticipationReportedPayload,
    StatementRequestedPayload,
)
from hub.events.enums import PayerKind
from hub.events.sensitivity import Sensitivity
from hub.identity import BusinessIdStr, Pseudonymizer
from hub.intake.enrolments import Enrolment
from hub.intake.requests import REQUEST_TYPES, IngestRequest, event_type_of

#: Event types each kind of client may be given as scopes.
PROVIDER_EVENT_TYPES: Final = frozenset({"ServiceParticipationReported"})
PAYER_EVENT_TYPES: Final = frozenset({"StatementRequested", "BenefitDaysAccrued"})
MUNICIPAL_EVENT_TYPES: Final = frozenset(
    {
        "JobseekerRegistered",
        "InitialInterviewHeld",
        "EmploymentPlanAgreed",
        "JobSearchConversationHeld",
        "JobOfferMade",
        "JobOfferOutcomeRecorded",
        "LabourPolicyStatementIssued",
        "ServiceEnrolled",
        "EmploymentStarted",
        "JobSearchEnded",
    }
)
KEY_PREFIX: Final = "tehub_"
#: Scopes that read from the hub instead of sending to it.
INDICATORS_READ: Final = "indicators:read"
READ_SCOPES: Final = frozenset({INDICATORS_READ})
ReadScope = Literal["indicators:read"]


def uncoded_health_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of the health-class fields of *model* that are not codes of a closed list.

    The rule for what a provider may send about health (``"pii": "health"``, GDPR art. 9): only
    a code from the schema's closed list (an enum such as ``interruption_reason`` = ``ILLNESS``),
    only in the kind of report that needs it (the request rules: ``interruption_reason`` only for
    an INTERRUPTION), and only about the person enrolled with the provider (:func:`denials`).
    Never free text: a text field would carry diagnoses and doctors' notes, which the employment
    service neither needs nor may hold. Checked below, at import, for every event type a provider
    may send, so that a free-text health field cannot be added to one unnoticed.
    """
    found: list[str] = []
    for name, info in model.model_fields.items():
        path = prefix + name
        kinds = [a for a in get_args(info.annotation) if a is not type(None)] or [info.annotation]
        extra = info.json_schema_extra
        health = isinstance(extra, dict) and extra.get("pii") == Sensitivity.HEALTH.value
        if health and not all(isinstance(k, type) and issubclass(k, Enum) for k in kinds):
            found.append(path)
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found.extend(uncoded_health_fields(kind, f"{path}."))
    return found


_UNCODED: Final = {
    t: fields
    for t in sorted(PROVIDER_EVENT_TYPES)
    if (fields := uncoded_health_fields(REQUEST_TYPES[t].event_class))
}
if _UNCODED:
    raise TypeError(f"providers may send health data only as codes (enums); not so: {_UNCODED}")


def hash_api_key(key: str) -> str:
    """SHA-256 hex of an API key: what the clients file stores."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key() -> tuple[str, str]:
    """A fresh API key (256 random bits) and its SHA-256 for the clients file.

    Give the key to the client once, over a secure channel; keep only the hash.
    """
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_api_key(key)


class EnrolmentDirectory(Protocol):
    """Who owns each enrolment: the first ServiceEnrolled of its id in the log.

    See :mod:`hub.intake.enrolments` (the Kafka implementation and the ownership rule).
    """

    async def enrolments(self, enrolment_ids: Collection[UUID]) -> Mapping[UUID, Enrolment]:
        """The enrolment of each id the log holds now (unknown ids are absent).

        Raises :class:`~hub.intake.enrolments.DirectoryCatchingUp` when it cannot answer for
        the log as it is now (the API answers 503 with Retry-After).
        """
        ...

    def ready(self) -> bool:
        """Whether it has read the log once to its end: until then a replica is not ready."""
        ...


# --- the clients file ------------------------------------------------------------------------


class _Client(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]{1,62}$",
        description="Stable id of the client; namespaces its idempotency keys.",
    )
    source_system: str = Field(
        pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$",
        description="URI of the client's system: the events' source_system (CloudEvents source).",
    )
    api_key_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        repr=False,
        description="SHA-256 hex of the client's API key.",
    )
    event_types: frozenset[str] = Field(
        min_length=1, description="Scopes: the event types the client may send."
    )
    employment_areas: frozenset[EmploymentAreaCodeStr] | None = Field(
        default=None, description="Employment areas whose residents the client may report on."
    )
    municipalities: frozenset[MainlandMunicipalityCodeStr] | None = Field(
        default=None,
        description="Home municipalities the client may report on; narrows employment_areas.",
    )
    read_scopes: frozenset[ReadScope] = Field(
        default_factory=frozenset,
        description="Scopes to read: indicators:read (GET /v1/indicators, every area's "
        "aggregates; the area limits above are for what the client sends).",
    )

    #: The scopes this kind of client may hold.
    allowed_event_types: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _check_scopes(self) -> _Client:
        extra = self.event_types - type(self).allowed_event_types
        if extra:
            raise ValueError(
                f"event types {sorted(extra)} are not for a {self.kind_name()} client "
                f"(allowed: {sorted(type(self).allowed_event_types)})"
            )
        if self.municipalities is not None and self.employment_areas is not None:
            outside = {
                m
                for m in self.municipalities
                if employment_area_of(m).code not in self.employment_areas
            }
            if outside:
                raise ValueError(
                    f"municipalities {sorted(outside)} are outside the client's employment areas"
                )
        return self

    @classmethod
    def kind_name(cls) -> str:
        return str(cls.model_fields["kind"].default)

    def may_report_on(self, municipality_code: str) -> bool:
        """Whether the client may send events about residents of *municipality_code*."""
        if self.municipalities is not None:
            return municipality_code in self.municipalities
        if self.employment_areas is not None:
            return employment_area_of(municipality_code).code in self.employment_areas
        return True


class MunicipalSystemClient(_Client):
    """Municipal IT (CRM, case system, register export) of one or more employment areas."""

    kind: Literal["municipal_system"] = "municipal_system"
    allowed_event_types: ClassVar[frozenset[str]] = MUNICIPAL_EVENT_TYPES

    @model_validator(mode="after")
    def _needs_areas(self) -> MunicipalSystemClient:
        if not self.employment_areas:
            raise ValueError("a municipal_system client needs its employment_areas")
        return self


class ServiceProviderClient(_Client):
    """A service provider (training, coaching, work trial, pay-subsidy employer)."""

    kind: Literal["service_provider"] = "service_provider"
    allowed_event_types: ClassVar[frozenset[str]] = PROVIDER_EVENT_TYPES
    business_id: BusinessIdStr = Field(description="The provider's business ID (Y-tunnus).")


class PayerClient(_Client):
    """A benefit payer: Kela, or one unemployment fund."""

    kind: Literal["payer"] = "payer"
    allowed_event_types: ClassVar[frozenset[str]] = PAYER_EVENT_TYPES
    payer_kind: PayerKind = Field(description="KELA or UNEMPLOYMENT_FUND.")
    fund_code: UnemploymentFundCodeStr | None = Field(
        default=None, description="The fund's hub code; required for a fund, absent for Kela."
    )

    @model_validator(mode="after")
    def _fund_code(self) -> PayerClient:
        if (self.payer_kind == PayerKind.UNEMPLOYMENT_FUND) != (self.fund_code is not None):
            raise ValueError("fund_code is required for an unemployment fund and only for one")
        return self


class ReportReaderClient(_Client):
    """A reader of the hub's reports (a BI tool, a finance office): read scopes, no events."""

    kind: Literal["report_reader"] = "report_reader"
    allowed_event_types: ClassVar[frozenset[str]] = frozenset()
    event_types: frozenset[str] = Field(
        default_factory=frozenset, max_length=0, description="None: a reader sends no events."
    )

    @model_validator(mode="after")
    def _reads(self) -> ReportReaderClient:
        if not self.read_scopes:
            raise ValueError("a report_reader client needs its read_scopes (indicators:read)")
        if self.employment_areas is not None or self.municipalities is not None:
            raise ValueError(
                "a report_reader sends nothing: employment_areas and municipalities do not apply"
            )
        return self


IngestClient = Annotated[
    MunicipalSystemClient | ServiceProviderClient | PayerClient | ReportReaderClient,
    Field(discriminator="kind"),
]


class ClientsFile(BaseModel):
    """The TOML file: ``[[clients]]`` tables."""

    model_config = ConfigDict(extra="forbid")

    clients: list[IngestClient] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ClientsFile:
        # source_system too: the enrolments a client made are recognised by it.
        for attribute in ("client_id", "api_key_sha256", "source_system"):
            values = [getattr(c, attribute) for c in self.clients]
            duplicates = sorted({v for v in values if values.count(v) > 1})
            if duplicates:
                shown = ["<hash>"] * len(duplicates) if "key" in attribute else duplicates
                raise ValueError(f"{attribute} must be unique; repeated: {shown}")
        return self


class IngestClients:
    """The registered clients, looked up by API key."""

    def __init__(self, clients: Iterable[IngestClient] = ()) -> None:
        self._clients: tuple[IngestClient, ...] = tuple(clients)

    @classmethod
    def from_toml(cls, text: str) -> IngestClients:
        return cls(ClientsFile.model_validate(tomllib.loads(text)).clients)

    @classmethod
    def from_file(cls, path: Path | None) -> IngestClients:
        """The clients in *path*; none (every request is 401) when *path* is None."""
        if path is None:
            return cls()
        return cls.from_toml(path.read_text(encoding="utf-8"))

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[IngestClient]:
        return iter(self._clients)

    def authenticate(self, api_key: str) -> IngestClient | None:
        """The client whose key this is, or None. Every stored hash is compared."""
        presented = hash_api_key(api_key)
        found: IngestClient | None = None
        for client in self._clients:
            if hmac.compare_digest(presented, client.api_key_sha256):
                found = client
        return found


# --- authorisation on the data -----------------------------------------------------------------


@dataclass(frozen=True)
class Denial:
    """Why a client may not send one request: a problem slug, where, and a reason."""

    slug: str
    loc: tuple[str | int, ...]
    detail: str
    missing_scope: str | None = None


def scope_denial(client: IngestClient, event_type: str) -> Denial | None:
    if event_type in client.event_types:
        return None
    return Denial(
        "insufficient-scope",
        ("event_type",),
        f"client {client.client_id} lacks the scope {event_type}",
        missing_scope=event_type,
    )


async def denials(
    client: IngestClient,
    requests: Sequence[IngestRequest[Any]],
    enrolments: EnrolmentDirectory,
    pseudonymizer: Pseudonymizer,
) -> list[tuple[int, Denial]]:
    """Every reason *client* may not send *requests* (one, or a bulk), by index; empty if it may.

    The enrolments the requests name are looked up once. Inside a bulk, an enrolment made by an
    earlier item counts as made: a later item may not give its id to another person or provider.
    Raises :class:`~hub.intake.enrolments.DirectoryCatchingUp` (a 503, not a refusal) when
    the directory cannot answer for the log as it is now.
    """
    scopes = [scope_denial(client, event_type_of(request)) for request in requests]
    wanted = {
        request.payload.enrolment_id
        for request, scope in zip(requests, scopes, strict=True)
        if scope is None
        and isinstance(
            request.payload, ServiceEnrolledPayload | ServiceParticipationReportedPayload
        )
    }
    known = dict(await enrolments.enrolments(wanted)) if wanted else {}
    found: list[tuple[int, Denial]] = []
    for index, (request, scope) in enumerate(zip(requests, scopes, strict=True)):
        reasons = [scope] if scope else _data_denials(client, request, known, pseudonymizer)
        found.extend((index, reason) for reason in reasons)
    return found


def _data_denials(
    client: IngestClient,
    request: IngestRequest[Any],
    known: dict[UUID, Enrolment],
    pseudonymizer: Pseudonymizer,
) -> list[Denial]:
    found: list[Denial] = []
    if not client.may_report_on(request.municipality_code):
        found.append(
            Denial(
                "municipality-not-allowed",
                ("municipality_code",),
                f"client {client.client_id} may not report on residents of this municipality "
                f"({_scope_of(client)})",
            )
        )
    payload = request.payload
    if isinstance(client, ServiceProviderClient) and isinstance(
        payload, ServiceParticipationReportedPayload
    ):
        found.extend(_provider_denials(client, request, payload, known, pseudonymizer))
    if isinstance(payload, ServiceEnrolledPayload):
        enrolment = Enrolment(
            provider_business_id=payload.provider_business_id,
            subject=pseudonymizer.pseudonym(request.personal_identity_code),
            source_system=client.source_system,
            municipality_code=request.municipality_code,
        )
        first = known.setdefault(payload.enrolment_id, enrolment)
        differs = first.conflicts(enrolment)
        if differs:
            found.append(_taken(differs))
    if isinstance(client, PayerClient) and isinstance(
        payload, StatementRequestedPayload | BenefitDaysAccruedPayload
    ):
        named = payload.payer
        if named.kind != client.payer_kind or named.fund_code != client.fund_code:
            found.append(
                Denial(
                    "payer-mismatch",
                    ("payload", "payer"),
                    f"client {client.client_id} may only send as the payer it is "
                    f"({client.payer_kind.value}"
                    + (f" {client.fund_code}" if client.fund_code else "")
                    + ")",
                )
            )
    return found


def _taken(differs: list[str]) -> Denial:
    """An enrolment id belongs to its first fact; says only what the client may know."""
    whose = (
        "another client's enrolment"
        if "source_system" in differs
        else f"an enrolment of this client with another {' and '.join(differs)}"
    )
    return Denial(
        "enrolment-taken",
        ("payload", "enrolment_id"),
        f"this enrolment id already names {whose}; an enrolment id belongs to its first "
        "ServiceEnrolled for good: a retry must repeat it, a new enrolment needs a new id",
    )


def _scope_of(client: IngestClient) -> str:
    if client.municipalities is not None:
        return "its municipalities: " + ", ".join(sorted(client.municipalities))
    if client.employment_areas is not None:
        return "its employment areas: " + ", ".join(sorted(client.employment_areas))
    return "all municipalities"


def _provider_denials(
    client: ServiceProviderClient,
    request: IngestRequest[Any],
    payload: ServiceParticipationReportedPayload,
    known: dict[UUID, Enrolment],
    pseudonymizer: Pseudonymizer,
) -> list[Denial]:
    if payload.provider_business_id != client.business_id:
        return [
            Denial(
                "provider-mismatch",
                ("payload", "provider_business_id"),
                f"provider_business_id must be the client's own business ID {client.business_id}",
            )
        ]
    enrolment = known.get(payload.enrolment_id)
    # Unknown and someone else's enrolment get the same answer, so that a provider cannot probe
    # which enrolment ids exist.
    if enrolment is None or enrolment.provider_business_id != client.business_id:
        return [
            Denial(
                "enrolment-not-yours",
                ("payload", "enrolment_id"),
                f"the hub knows no enrolment with this id for provider {client.business_id}; "
                "report only enrolments the hub sent you",
            )
        ]
    found: list[Denial] = []
    if pseudonymizer.pseudonym(request.personal_identity_code) != enrolment.subject:
        found.append(
            Denial(
                "enrolment-person-mismatch",
                ("personal_identity_code",),
                "personal_identity_code is not the person enrolled in this enrolment; a "
                "provider reports only on the person the hub enrolled with it",
            )
        )
    if request.municipality_code != enrolment.municipality_code:
        found.append(
            Denial(
                "enrolment-municipality-mismatch",
                ("municipality_code",),
                "municipality_code must be the enrolment's (as in the enrolment the hub sent "
                "you): the report goes to the employment area that enrolled the person",
            )
        )
    return found
