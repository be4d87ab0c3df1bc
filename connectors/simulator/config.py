"""Validated parameters of a simulation run."""

from __future__ import annotations

from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.codes import employment_areas


class SimulationConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    jobseekers: int = Field(default=300, ge=1, le=1_000_000, description="People to simulate.")
    seed: int = Field(default=7, description="Random seed; the same seed gives the same events.")
    start: date = Field(
        default=date(2025, 11, 3),
        description="First registration day. The default window crosses 1.1.2026, when the "
        "interview deadline and the regional centres change.",
    )
    days: int = Field(default=120, ge=1, le=3660, description="Length of the simulated window.")
    area: str | None = Field(default=None, description="Only this employment area (2 digits).")
    correction_share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of correctable facts (initial interviews, conversations, job offers) "
        "re-sent 2-10 days later as a correction (a wrong channel or day) or, for an offer, a "
        "retraction; 0 sends first versions only.",
    )

    @field_validator("area")
    @classmethod
    def _known_area(cls, value: str | None) -> str | None:
        if value is not None and value not in employment_areas():
            raise ValueError(f"employment area {value!r} is not one of the 45 areas of 2025")
        return value

    @property
    def end(self) -> date:
        """Last simulated day (inclusive)."""
        return self.start + timedelta(days=self.days - 1)
