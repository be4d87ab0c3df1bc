"""Where each event type is posted, and the limits of a request body."""

import re
from dataclasses import dataclass
from typing import Final

from hub.intake.requests import REQUEST_TYPES

API_VERSION: Final = "1.0.0"
BULK_PATH: Final = "/v1/bulk"
#: Largest single-event body; a real event is a few kilobytes.
SINGLE_MAX_BYTES: Final = 256 * 1024
NDJSON: Final = "application/x-ndjson"


def kebab(event_type: str) -> str:
    """``JobseekerRegistered`` -> ``jobseeker-registered``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", event_type).lower()


@dataclass(frozen=True)
class Endpoint:
    path: str
    event_type: str
    tag: str


#: Where each event type is posted: providers and payers have their own paths.
ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    *(
        Endpoint(f"/v1/events/{kebab(name)}", name, "customer path")
        for name in REQUEST_TYPES
        if name not in {"ServiceParticipationReported", "StatementRequested", "BenefitDaysAccrued"}
    ),
    Endpoint("/v1/providers/participation", "ServiceParticipationReported", "service providers"),
    Endpoint("/v1/payers/statement-requests", "StatementRequested", "benefit payers"),
    Endpoint("/v1/payers/benefit-day-accruals", "BenefitDaysAccrued", "benefit payers"),
)
PATH_OF: Final = {e.event_type: e.path for e in ENDPOINTS}
