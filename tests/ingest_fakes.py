"""In-memory stand-ins for the ingest API's collaborators (handler logic only, no Kafka).

:class:`FakeSink` keeps the :class:`~hub.sink.EventSink` promises the API relies on: one
write per dedupe key, the original receipt for a repeated key, all or nothing per call, and
``SinkUnavailable`` with nothing written while ``available`` is false. It also encodes every
event with the hub's Avro serializer, so a request that validates but could not be written to
the real log fails here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from uuid import UUID

from connectors.rest_api.auth import IngestClients, hash_api_key
from hub.events import CustomerPathEvent
from hub.intake.examples import ENROLMENT_ID, PROVIDER_BUSINESS_ID
from hub.serde import SingleObjectSerializer, default_catalog
from hub.sink import Receipt, ReceiptBook, SinkUnavailable, SourcePosition, Submission


class FakeSink:
    def __init__(self) -> None:
        self.available = True
        self.retry_after_s = 7
        self.events: list[CustomerPathEvent] = []
        self.receipts = ReceiptBook()
        self.calls = 0
        self.positions: dict[str, str] = {}
        self._serializer = SingleObjectSerializer(default_catalog())

    async def submit(
        self, submissions: Sequence[Submission], position: SourcePosition | None = None
    ) -> list[Receipt]:
        self.calls += 1
        if not self.available:
            raise SinkUnavailable("fake broker down", retry_after_s=self.retry_after_s)
        for submission in submissions:  # encode all first: all or nothing
            event = submission.event
            self._serializer.encode(event.full_name(), event.to_avro())
        answers, new = self.receipts.settle(submissions, {})
        for submission, receipt in new:
            self.receipts.record(receipt)
            self.events.append(submission.event)
        if position is not None:
            self.positions[position.source] = position.position
        return answers

    async def position_of(self, source: str) -> str | None:
        return self.positions.get(source)

    async def ready(self) -> bool:
        return self.available


class FakeEnrolments:
    """Enrolment id -> provider business ID."""

    def __init__(self, providers: Mapping[UUID, str] | None = None) -> None:
        self.providers = dict(providers or {UUID(ENROLMENT_ID): PROVIDER_BUSINESS_ID})

    async def provider_of(self, enrolment_id: UUID) -> str | None:
        return self.providers.get(enrolment_id)


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


#: After every example (they are in spring 2026).
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)

# API keys of the test clients (test values, not secrets).
MUNICIPAL_KEY = "tehub_test-municipal-helsinki-0000000000000000000"
ESPOO_KEY = "tehub_test-municipal-espoo-000000000000000000000"
NARROW_KEY = "tehub_test-municipal-only-registrations-000000000"
PROVIDER_KEY = "tehub_test-provider-0000000000000000000000000000"
OTHER_PROVIDER_KEY = "tehub_test-provider-other-000000000000000000000"
KELA_KEY = "tehub_test-payer-kela-00000000000000000000000000"
FUND_KEY = "tehub_test-payer-fund-ote-0000000000000000000000"

_ALL_MUNICIPAL = """[
  "JobseekerRegistered", "InitialInterviewHeld", "EmploymentPlanAgreed",
  "JobSearchConversationHeld", "JobOfferMade", "JobOfferOutcomeRecorded",
  "LabourPolicyStatementIssued", "ServiceEnrolled", "EmploymentStarted", "JobSearchEnded",
]"""

CLIENTS_TOML = f"""
[[clients]]
client_id = "helsinki-crm"
kind = "municipal_system"
source_system = "urn:fi:kunta:091:crm"
api_key_sha256 = "{hash_api_key(MUNICIPAL_KEY)}"
event_types = {_ALL_MUNICIPAL}
employment_areas = ["08"]

[[clients]]
client_id = "espoo-crm"
kind = "municipal_system"
source_system = "urn:fi:kunta:049:crm"
api_key_sha256 = "{hash_api_key(ESPOO_KEY)}"
event_types = {_ALL_MUNICIPAL}
employment_areas = ["01"]

[[clients]]
client_id = "helsinki-registrations"
kind = "municipal_system"
source_system = "urn:fi:kunta:091:registrations"
api_key_sha256 = "{hash_api_key(NARROW_KEY)}"
event_types = ["JobseekerRegistered"]
employment_areas = ["08"]

[[clients]]
client_id = "valmennus-oy"
kind = "service_provider"
source_system = "https://valmennus.example/te-hub"
api_key_sha256 = "{hash_api_key(PROVIDER_KEY)}"
event_types = ["ServiceParticipationReported"]
business_id = "{PROVIDER_BUSINESS_ID}"

[[clients]]
client_id = "koulutus-oy"
kind = "service_provider"
source_system = "https://koulutus.example/te-hub"
api_key_sha256 = "{hash_api_key(OTHER_PROVIDER_KEY)}"
event_types = ["ServiceParticipationReported"]
business_id = "2345678-0"

[[clients]]
client_id = "kela"
kind = "payer"
source_system = "urn:fi:kela:payer-interface"
api_key_sha256 = "{hash_api_key(KELA_KEY)}"
event_types = ["StatementRequested", "BenefitDaysAccrued"]
payer_kind = "KELA"

[[clients]]
client_id = "ote"
kind = "payer"
source_system = "urn:fi:tyottomyyskassa:ote"
api_key_sha256 = "{hash_api_key(FUND_KEY)}"
event_types = ["StatementRequested", "BenefitDaysAccrued"]
payer_kind = "UNEMPLOYMENT_FUND"
fund_code = "ote"
"""


def make_clients() -> IngestClients:
    return IngestClients.from_toml(CLIENTS_TOML)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
