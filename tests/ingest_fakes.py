"""In-memory stand-ins for the ingest API's collaborators (handler logic only, no Kafka).

:class:`FakeSink` keeps the :class:`~hub.sink.EventSink` promises the API relies on: one
write per dedupe key, the original receipt for a repeated key, all or nothing per call (the
same conflict and event-id refusals, from the same :class:`~hub.sink.ReceiptBook`), and
``SinkUnavailable`` with nothing written while ``available`` is false. It encodes every event as
the Kafka sink does (:func:`~hub.sink.encoding.encode_new`), so a request that validates but
could not be written to the real log fails here too, with the same error, and seals every
event with its person's data key first (a :class:`~hub.privacy.datakeys.MemoryPersonKeys`), so
``records`` holds what the real log would.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from uuid import UUID

from connectors.rest_api.auth import IngestClients, hash_api_key
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer
from hub.intake.enrolments import DirectoryCatchingUp, Enrolment
from hub.intake.examples import ENROLMENT_ID, EXAMPLES, PROVIDER_BUSINESS_ID
from hub.kafka.publisher import EncodedEvent
from hub.privacy.datakeys import MemoryPersonKeys
from hub.privacy.kek import DEV_KEK, LocalKeyEncryptionKeys
from hub.serde import SingleObjectSerializer, default_catalog
from hub.settings import HubSettings
from hub.sink import Receipt, ReceiptBook, SinkUnavailable, SourcePosition, Submission
from hub.sink.encoding import encode_new, subjects_to_seal


class FakeSink:
    def __init__(self) -> None:
        self.available = True
        self.retry_after_s = 7
        self.events: list[CustomerPathEvent] = []
        self.receipts = ReceiptBook()
        self.calls = 0
        self.positions: dict[str, str] = {}
        self._serializer = SingleObjectSerializer(default_catalog())
        self.person_keys = MemoryPersonKeys(LocalKeyEncryptionKeys.from_text(DEV_KEK))
        #: The encoded (sealed) records, as the log would hold them.
        self.records: list[EncodedEvent] = []

    async def submit(
        self, submissions: Sequence[Submission], position: SourcePosition | None = None
    ) -> list[Receipt]:
        self.calls += 1
        if not self.available:
            raise SinkUnavailable("fake broker down", retry_after_s=self.retry_after_s)
        settled = self.receipts.settle(submissions)
        keys = self.person_keys.ensure(subjects_to_seal(s for s, _ in settled.new))
        # all or nothing, as on Kafka
        self.records.extend(encode_new(self._serializer, submissions, settled.new, keys))
        self.receipts.record(receipt for _, receipt in settled.new)
        self.events.extend(submission.event for submission, _ in settled.new)
        if position is not None:
            self.positions[position.source] = position.position
        return settled.receipts

    async def position_of(self, source: str) -> str | None:
        return self.positions.get(source)

    async def ready(self) -> bool:
        return self.available


class FakeEnrolments:
    """Enrolment id -> its first enrolment; by default the examples' enrolment, made by
    helsinki-crm for the examples' person (pseudonymised with *pseudonymizer*, which must be the
    app's). While ``catching_up`` is set, every look-up raises :class:`DirectoryCatchingUp`."""

    def __init__(
        self,
        pseudonymizer: Pseudonymizer | None = None,
        known: Mapping[UUID, Enrolment] | None = None,
    ) -> None:
        person = EXAMPLES["ServiceEnrolled"]
        pseudonym = (pseudonymizer or Pseudonymizer.from_settings(HubSettings())).pseudonym(
            person["personal_identity_code"]
        )
        example = Enrolment(
            PROVIDER_BUSINESS_ID, pseudonym, HELSINKI_CRM, person["municipality_code"]
        )
        self.known = dict(known or {UUID(ENROLMENT_ID): example})
        self.catching_up = False

    async def enrolments(self, enrolment_ids: Collection[UUID]) -> dict[UUID, Enrolment]:
        if self.catching_up:
            raise DirectoryCatchingUp("fake directory catching up", retry_after_s=3)
        return {i: self.known[i] for i in enrolment_ids if i in self.known}

    def ready(self) -> bool:
        return not self.catching_up


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

#: The source_system of helsinki-crm, the client that made the examples' enrolment.
HELSINKI_CRM = "urn:fi:kunta:091:crm"

CLIENTS_TOML = f"""
[[clients]]
client_id = "helsinki-crm"
kind = "municipal_system"
source_system = "{HELSINKI_CRM}"
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
