"""Who may send what: API clients, their keys and scopes, from a TOML file.

Every client has one API key, sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
The file stores only the key's SHA-256. A fast hash is enough because the keys are 256-bit
random tokens from :func:`new_api_key`: nobody can guess one from its hash however fast the hash
is, whereas bcrypt or argon2 (made to protect low-entropy passwords) would add tens of
milliseconds of CPU to every request for no gain. Keys are compared with ``hmac.compare_digest``
over all clients, so the time taken says nothing about which hash was close.

Scopes are event types. On top of them each kind of client has limits that depend on the data:

* ``municipal_system``: municipal IT of one or more employment areas; only for people whose home
  municipality is in its areas (or in its narrower ``municipalities`` list);
* ``service_provider``: only ServiceParticipationReported, only under its own business ID and only
  for enrolments the hub assigned to it (asked from an :class:`EnrolmentDirectory`);
* ``payer``: Kela or one unemployment fund; only StatementRequested and BenefitDaysAccrued that
  name itself as the payer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, Protocol
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
    ServiceParticipationReportedPayload,
    StatementRequestedPayload,
)
from hub.events.enums import PayerKind
from hub.identity import BusinessIdStr
from hub.intake.requests import IngestRequest, event_type_of

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
    """Which provider runs an enrolment (from the hub's ServiceEnrolled events)."""

    async def provider_of(self, enrolment_id: UUID) -> str | None:
        """Business ID of the provider of *enrolment_id*, or None when the hub knows none."""
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


IngestClient = Annotated[
    MunicipalSystemClient | ServiceProviderClient | PayerClient, Field(discriminator="kind")
]


class ClientsFile(BaseModel):
    """The TOML file: ``[[clients]]`` tables."""

    model_config = ConfigDict(extra="forbid")

    clients: list[IngestClient] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ClientsFile:
        for attribute in ("client_id", "api_key_sha256"):
            values = [getattr(c, attribute) for c in self.clients]
            duplicates = sorted({v for v in values if values.count(v) > 1})
            if duplicates:
                shown = duplicates if attribute == "client_id" else ["<hash>"] * len(duplicates)
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


# --- authorisation of one request -------------------------------------------------------------


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
    client: IngestClient, request: IngestRequest[Any], enrolments: EnrolmentDirectory
) -> list[Denial]:
    """Every reason *client* may not send *request* (empty when it may)."""
    scope = scope_denial(client, event_type_of(request))
    if scope is not None:
        return [scope]
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
        found.extend(await _provider_denials(client, payload, enrolments))
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


def _scope_of(client: IngestClient) -> str:
    if client.municipalities is not None:
        return "its municipalities: " + ", ".join(sorted(client.municipalities))
    if client.employment_areas is not None:
        return "its employment areas: " + ", ".join(sorted(client.employment_areas))
    return "all municipalities"


async def _provider_denials(
    client: ServiceProviderClient,
    payload: ServiceParticipationReportedPayload,
    enrolments: EnrolmentDirectory,
) -> list[Denial]:
    if payload.provider_business_id != client.business_id:
        return [
            Denial(
                "provider-mismatch",
                ("payload", "provider_business_id"),
                f"provider_business_id must be the client's own business ID {client.business_id}",
            )
        ]
    # Unknown and someone else's enrolment get the same answer, so that a provider cannot probe
    # which enrolment ids exist.
    if await enrolments.provider_of(payload.enrolment_id) != client.business_id:
        return [
            Denial(
                "enrolment-not-yours",
                ("payload", "enrolment_id"),
                f"the hub knows no enrolment with this id for provider {client.business_id}; "
                "report only enrolments the hub sent you (a new enrolment may take a moment "
                "to arrive)",
            )
        ]
    return []
