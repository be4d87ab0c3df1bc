"""Base classes shared by every customer-path event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Self
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from hub.codes import EmploymentAreaCodeStr, MainlandMunicipalityCodeStr
from hub.identity import PseudonymStr

AVRO_NAMESPACE = "fi.te.hub"


class AvroRecord(BaseModel):
    """A pydantic model that is also an Avro record (see ``hub.events.avro_schema``)."""

    # Validation errors must not echo input values: they may hold an identity code.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class Envelope(AvroRecord):
    """Metadata every customer-path event carries, whatever its type."""

    event_id: UUID = Field(description="Unique id of this event; receivers drop duplicates by it.")
    event_type: str = Field(description="Short name of the event type, e.g. JobseekerRegistered.")
    occurred_at: AwareDatetime = Field(
        description="When the fact happened in the customer path (UTC, millisecond precision)."
    )
    recorded_at: AwareDatetime = Field(
        description="When the source system recorded the fact (UTC, millisecond precision)."
    )
    source_system: str = Field(
        description="URI of the system that reported the fact (the CloudEvents source)."
    )
    subject: PseudonymStr = Field(
        description="Pseudonym of the person (keyed HMAC of the identity code); the Kafka key."
    )
    municipality_code: MainlandMunicipalityCodeStr = Field(
        description="Home municipality of the person (Statistics Finland 3-digit code)."
    )
    employment_area_code: EmploymentAreaCodeStr = Field(
        description="Employment area (työllisyysalue) responsible for the person (2-digit code)."
    )
    correlation_id: UUID = Field(
        description="Id shared by all events of one job-search spell (the customer path)."
    )
    causation_id: UUID | None = Field(
        default=None, description="Id of the event that caused this one; null for a first event."
    )
    corrects_event_id: UUID | None = Field(
        default=None,
        description=(
            "Set on a corrected re-send of an earlier fact: the event id of the fact's first "
            "version (a later version's id also works, the chain is followed); null on a first "
            "version. Which version wins: among the versions recorded by a given time, the one "
            "with the latest recorded_at, a tie broken by the greater event_id."
        ),
    )
    retracted: bool = Field(
        default=False,
        description=(
            "True on a version that withdraws the fact named by corrects_event_id (required "
            "then): if it wins, the fact counts nowhere from its recorded_at on."
        ),
    )

    @field_validator("occurred_at", "recorded_at")
    @classmethod
    def _to_utc_millis(cls, value: datetime) -> datetime:
        """Avro timestamp-millis keeps milliseconds only: normalise so round trips are equal."""
        value = value.astimezone(UTC)
        return value.replace(microsecond=value.microsecond // 1000 * 1000)

    @field_validator("corrects_event_id")
    @classmethod
    def _not_itself(cls, value: UUID | None, info: ValidationInfo) -> UUID | None:
        """A version cannot correct itself (the error sits on the field, for a field path)."""
        if value is not None and value == info.data.get("event_id"):
            raise ValueError(
                "corrects_event_id must differ from event_id: no event corrects itself"
            )
        return value

    @field_validator("retracted")
    @classmethod
    def _names_what_it_withdraws(cls, value: bool, info: ValidationInfo) -> bool:
        """A retraction must name the fact it withdraws (unless that id was itself invalid)."""
        if value and "corrects_event_id" in info.data and info.data["corrects_event_id"] is None:
            raise ValueError("retracted requires corrects_event_id (the fact it withdraws)")
        return value


class CustomerPathEvent(AvroRecord):
    """One fact of a jobseeker's customer path: the shared envelope and a typed payload."""

    event_type: ClassVar[str]
    envelope: Envelope = Field(description="Metadata shared by every customer-path event.")
    payload: AvroRecord = Field(description="Facts specific to this event type.")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.event_type = cls.__name__

    @classmethod
    def full_name(cls) -> str:
        return f"{AVRO_NAMESPACE}.{cls.__name__}"

    def to_avro(self) -> dict[str, Any]:
        """The record as fastavro writes it (enums as symbols, UUIDs and dates as objects)."""
        return self.model_dump(mode="python")

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self:
        return cls.model_validate(record)
