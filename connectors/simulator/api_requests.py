"""Simulated events as the ingest API requests a municipal system would send for them."""

from __future__ import annotations

from typing import Any

from hub.events.customer_path import JobseekerRegistered


def registration_request(event: JobseekerRegistered) -> dict[str, Any]:
    """The POST /v1/events/jobseeker-registered body of a simulated registration."""
    return {
        "occurred_at": event.envelope.occurred_at.isoformat(),
        "personal_identity_code": event.payload.personal_identity_code,
        "municipality_code": event.envelope.municipality_code,
        "payload": event.payload.model_dump(mode="json"),
    }
