"""The router and sealed personal fields, without Kafka: what a route may have of a person.

Events are sealed at the edge as the publisher seals them (``encode_event`` with the person's
data key, :class:`MemoryPersonKeys` holding the keys). The router copies sealed values into
the outboxes of the routes that grant them and never opens one; it checks, for a batch at once,
that the data keys of the granted sealed fields can still be had, and dead-letters a route's
record of a forgotten person (the event's other routes flow).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from pydantic import SecretStr

from connectors.simulator import SimulationConfig, simulate
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer
from hub.kafka.dead_letters import DeadLetter, DeadLetterStage
from hub.kafka.publisher import encode_event
from hub.privacy.datakeys import Forgotten, MemoryPersonKeys
from hub.privacy.fields import SealedFields
from hub.privacy.kek import DEV_KEK, KekUnavailable, LocalKeyEncryptionKeys
from hub.privacy.sealing import DataKey, is_sealed
from hub.routing.router import DESTINATION_HEADER, LogRecord, Outcome, RecordHandler
from hub.routing.routes import RoutesConfig, load_routes
from hub.routing.state import PersonStates
from hub.serde import SingleObjectSerializer
from hub.settings import HubSettings

SECRET = "privacy-routing-secret-of-length"
LOG = "test.log"
DLQ = "test.dlq"
STATEMENT = "LabourPolicyStatementIssued"
CODE_PATH = "payload.personal_identity_code"


@pytest.fixture(scope="module")
def settings() -> HubSettings:
    return HubSettings(
        topic_customer_path=LOG,
        topic_outbox_prefix="test.outbox.",
        topic_router_state="test.state",
        topic_dead_letter=DLQ,
        pseudonym_secret=SecretStr(SECRET),
    )


@pytest.fixture(scope="module")
def config(settings: HubSettings) -> RoutesConfig:
    return load_routes(settings)


@pytest.fixture(scope="module")
def events() -> list[CustomerPathEvent]:
    paths = simulate(SimulationConfig(jobseekers=80, seed=5), Pseudonymizer(SECRET))
    return [event for path in paths for event in path]


class CountingKeys:
    """The person keys, counting the batch calls (a remote KMS: one call per batch, not per
    record) and able to play a keeper that does not answer."""

    def __init__(self, keys: MemoryPersonKeys) -> None:
        self.keys = keys
        self.calls: list[int] = []
        self.down = False

    def data_keys(self, pairs: Iterable[tuple[str, UUID]]) -> dict[tuple[str, UUID], DataKey]:
        wanted = list(pairs)
        self.calls.append(len(wanted))
        if self.down:
            raise KekUnavailable("the key keeper did not answer (test)")
        return self.keys.directory.data_keys(wanted)

    def forgotten(self, subject: str) -> Forgotten | None:
        return self.keys.directory.forgotten(subject)

    def is_erased(self, subject: str, key_id: UUID) -> bool:
        return self.keys.directory.is_erased(subject, key_id)


def _keys() -> MemoryPersonKeys:
    return MemoryPersonKeys(LocalKeyEncryptionKeys.from_text(DEV_KEK))


def _sealed(
    events: Iterable[CustomerPathEvent], keys: MemoryPersonKeys | None
) -> Iterator[LogRecord]:
    """Log records as the publisher writes them (``keys`` None: plaintext, as before)."""
    serializer = SingleObjectSerializer()
    for offset, event in enumerate(events):
        subject = event.envelope.subject
        key = None if keys is None else keys.ensure([subject])[subject]
        encoded = encode_event(serializer, event, key)
        yield LogRecord(LOG, 0, offset, encoded.key, encoded.value, encoded.headers)


def _statements(events: list[CustomerPathEvent], people: int) -> list[CustomerPathEvent]:
    """The statements of ``people`` persons who each have one."""
    subjects: list[str] = []
    for event in events:
        if event.event_type == STATEMENT and event.envelope.subject not in subjects:
            subjects.append(event.envelope.subject)
    chosen = set(subjects[:people])
    assert len(chosen) == people
    return [e for e in events if e.event_type == STATEMENT and e.envelope.subject in chosen]


def _by_destination(outcome: Outcome) -> dict[str, bytes]:
    return {
        dict(r.headers)[DESTINATION_HEADER].decode(): r.value or b""
        for r in outcome.records
        if r.topic.startswith("test.outbox.")
    }


def _letters(outcome: Outcome) -> list[tuple[DeadLetter, bytes | None]]:
    return [
        (DeadLetter.from_headers(r.headers), r.value) for r in outcome.records if r.topic == DLQ
    ]


def _identity_code(event: CustomerPathEvent) -> str:
    return str(event.to_avro()["payload"]["personal_identity_code"])


def test_a_sealed_statement_goes_to_its_payer_sealed_and_reporting_gets_no_identity_code(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    keys = _keys()
    handler = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=keys.directory
    )
    statements = _statements(events, 5)
    fields = SealedFields()
    payers = 0
    for event, record in zip(statements, _sealed(statements, keys), strict=True):
        outcome = handler.handle(record, PersonStates().batch())
        assert outcome.dead_letter is None
        sent = _by_destination(outcome)
        assert "reporting" in sent
        code = _identity_code(event).encode()
        for destination, value in sent.items():
            assert code not in value, f"identity code in clear in the {destination} outbox"
            decoded = handler.codec.decode(value).record
            if destination == "reporting":
                assert "personal_identity_code" not in decoded["payload"]
                continue
            payers += 1
            sealed = decoded["payload"]["personal_identity_code"]
            assert is_sealed(sealed)
            opened = fields.open(STATEMENT, decoded, keys, [CODE_PATH])
            assert opened.opened == (CODE_PATH,)
            assert opened.record["payload"]["personal_identity_code"] == _identity_code(event)
    assert payers == len(statements)


def test_a_forgotten_persons_payer_route_dead_letters_with_the_reason_the_rest_flows(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    memory = _keys()
    keys = CountingKeys(memory)
    handler = RecordHandler(settings, config, serializer=SingleObjectSerializer(), keys=keys)
    statements = _statements(events, 6)
    records = list(_sealed(statements, memory))
    forgotten = statements[0].envelope.subject
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    memory.forget(forgotten, "test: the person asked to be forgotten", at=at)
    outcomes = handler.handle_many(records, PersonStates().batch())
    assert len(keys.calls) <= 2, "the batch's data keys are asked for in one call (+1 to retry)"
    letters = Counter[str]()
    for event, outcome in zip(statements, outcomes, strict=True):
        sent = _by_destination(outcome)
        assert "reporting" in sent, "reporting never needs keys: a forgotten person still counts"
        if event.envelope.subject != forgotten:
            assert outcome.dead_letter is None
            assert len(sent) == 2
            continue
        assert set(sent) == {"reporting"}
        assert outcome.dead_letter is DeadLetterStage.ROUTE
        assert outcome.destinations == ["reporting"]
        [(letter, value)] = _letters(outcome)
        assert value == records[statements.index(event)].value  # sealed: safe to keep
        assert letter.stage is DeadLetterStage.ROUTE
        assert letter.error_class == "PersonalDataErased"
        assert letter.destination in {"kela", "funds"}
        assert "route statement-to-payer" in letter.reason
        assert f"destination {letter.destination}" in letter.reason
        assert CODE_PATH in letter.reason
        assert "2026-03-01T12:00:00+00:00" in letter.reason
        assert forgotten not in letter.reason
        letters[letter.error_class] += 1
    assert letters["PersonalDataErased"] == sum(e.envelope.subject == forgotten for e in statements)


def test_a_sealed_value_moved_from_another_persons_event_is_a_dead_letter_not_routed(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    keys = _keys()
    handler = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=keys.directory
    )
    first, second = (
        _statements(events, 2)[:1]
        + [
            e
            for e in _statements(events, 2)
            if e.envelope.subject != _statements(events, 2)[0].envelope.subject
        ][:1]
    )
    serializer = SingleObjectSerializer()
    fields = SealedFields()
    sealed = {
        e.envelope.subject: fields.seal(
            STATEMENT, e.to_avro(), keys.ensure([e.envelope.subject])[e.envelope.subject]
        )
        for e in (first, second)
    }
    # The identity code of the second person's statement, pasted into the first's.
    record = sealed[first.envelope.subject]
    record["payload"] = {
        **record["payload"],
        "personal_identity_code": sealed[second.envelope.subject]["payload"][
            "personal_identity_code"
        ],
    }
    encoded = encode_event(serializer, first, None)
    value = serializer.encode(first.full_name(), record)
    outcome = handler.handle(
        LogRecord(LOG, 0, 0, encoded.key, value, encoded.headers), PersonStates().batch()
    )
    assert set(_by_destination(outcome)) == {"reporting"}
    [(letter, _)] = _letters(outcome)
    assert letter.error_class == "DataKeyUnknown"
    assert CODE_PATH in letter.reason
    assert "another person" in letter.reason


def test_a_sealed_value_cut_short_is_a_dead_letter_and_plain_bytes_too(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    keys = _keys()
    handler = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=keys.directory
    )
    event = _statements(events, 1)[0]
    serializer = SingleObjectSerializer()
    subject = event.envelope.subject
    sealed = SealedFields().seal(STATEMENT, event.to_avro(), keys.ensure([subject])[subject])
    encoded = encode_event(serializer, event, None)
    for broken in (sealed["payload"]["personal_identity_code"][:20], b"\x00raw bytes"):
        record = {**sealed, "payload": {**sealed["payload"], "personal_identity_code": broken}}
        value = serializer.encode(event.full_name(), record)
        outcome = handler.handle(
            LogRecord(LOG, 0, 0, encoded.key, value, encoded.headers), PersonStates().batch()
        )
        assert set(_by_destination(outcome)) == {"reporting"}
        [(letter, _)] = _letters(outcome)
        assert letter.error_class == "SealBroken"


def test_old_plaintext_of_a_forgotten_person_is_held_back_and_not_copied(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    keys = _keys()
    handler = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=keys.directory
    )
    statements = _statements(events, 4)
    plain = list(_sealed(statements, None))  # written before encryption
    before = [handler.handle(r, PersonStates().batch()) for r in plain]
    assert all(o.dead_letter is None for o in before)
    for event, outcome in zip(statements, before, strict=True):
        code = _identity_code(event).encode()
        assert any(code in v for d, v in _by_destination(outcome).items() if d != "reporting")
    forgotten = statements[0].envelope.subject
    recorded = statements[0].envelope.recorded_at
    keys.forget(forgotten, "test", at=recorded + timedelta(days=1))
    after = [handler.handle(r, PersonStates().batch()) for r in plain]
    for event, old, new in zip(statements, before, after, strict=True):
        if event.envelope.subject != forgotten:
            assert new == old, "another person's plaintext records route as before"
            continue
        assert set(_by_destination(new)) == {"reporting"}
        assert _by_destination(new)["reporting"] == _by_destination(old)["reporting"]
        [(letter, value)] = _letters(new)
        assert value is None, "the plaintext is not copied into the dead-letter topic"
        assert letter.error_class == "PersonalDataRestricted"
        assert CODE_PATH in letter.reason
        assert "route statement-to-payer" in letter.reason
    # Recorded after the person was forgotten (a new relationship): not held back.
    keys2 = _keys()
    keys2.forget(forgotten, "test", at=recorded - timedelta(days=1))
    handler2 = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=keys2.directory
    )
    again = handler2.handle(plain[0], PersonStates().batch())
    assert again == before[0]


def test_the_key_keeper_not_answering_puts_the_batch_back_not_a_dead_letter(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    memory = _keys()
    keys = CountingKeys(memory)
    handler = RecordHandler(settings, config, serializer=SingleObjectSerializer(), keys=keys)
    records = list(_sealed(_statements(events, 3), memory))
    keys.down = True
    with pytest.raises(KekUnavailable):
        handler.handle_many(records, PersonStates().batch())
    keys.down = False
    assert all(o.dead_letter is None for o in handler.handle_many(records, PersonStates().batch()))


class NoKeys:
    """Person keys that fail the test when asked: a route granting no class needs none."""

    def data_keys(self, pairs: Iterable[tuple[str, UUID]]) -> dict[Any, DataKey]:
        raise AssertionError("keys asked for a record no delivered route gets personal data of")

    def forgotten(self, subject: str) -> Forgotten | None:
        raise AssertionError(
            "forgotten asked for a record no delivered route gets personal data of"
        )


def test_events_without_personal_fields_for_a_receiver_never_need_keys(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    """Interviews, plans, offers, accruals go to reporting only (it reads its outbox itself and
    never gets keys): their records route without a key look-up."""
    keys = _keys()
    handler = RecordHandler(settings, config, serializer=SingleObjectSerializer(), keys=NoKeys())
    types = {
        "InitialInterviewHeld",
        "EmploymentPlanAgreed",
        "JobSearchConversationHeld",
        "JobOfferMade",
        "JobOfferOutcomeRecorded",
        "BenefitDaysAccrued",
    }
    chosen = [e for e in events if e.event_type in types]
    assert {e.event_type for e in chosen} == types
    for record in _sealed(chosen, keys):
        outcome = handler.handle(record, PersonStates().batch())
        assert outcome.dead_letter is None
        assert "reporting" in _by_destination(outcome)


def test_sealed_fields_a_route_does_not_grant_are_dropped_by_the_projection(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    """A registration's sealed identity code, names and contact details never reach the
    reporting outbox (granted membership only: the fund code is copied sealed)."""
    keys = _keys()
    handler = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=keys.directory
    )
    registrations = [e for e in events if e.event_type == "JobseekerRegistered"][:20]
    members = 0
    for event, record in zip(registrations, _sealed(registrations, keys), strict=True):
        outcome = handler.handle(record, PersonStates().batch())
        assert outcome.dead_letter is None
        value = _by_destination(outcome)["reporting"]
        decoded = handler.codec.decode(value).record
        registered = event.to_avro()["payload"]
        for name in ("personal_identity_code", "first_name", "last_name", "email", "phone"):
            assert name not in decoded["payload"]
            if registered.get(name):
                assert str(registered[name]).encode() not in value
        fund = decoded["payload"].get("unemployment_fund_code")
        assert fund is None or is_sealed(fund)
        members += fund is not None
    assert members


def test_sealed_events_route_where_their_plaintext_did_and_the_payer_is_learnt_sealed(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    """Every simulated event routes to the same destinations sealed as in plaintext: the payer
    a job start goes to is learnt from the registration's sealed fund code (opened in memory
    for the person state). A forgotten person's registration teaches nothing."""
    keys = _keys()
    plain = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=_keys().directory
    )
    sealed = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=keys.directory
    )
    plain_states, sealed_states = PersonStates().batch(), PersonStates().batch()
    destinations: Counter[str] = Counter()
    records = list(_sealed(events, keys))
    for a, b in zip(_sealed(events, None), records, strict=True):
        x, y = plain.handle(a, plain_states), sealed.handle(b, sealed_states)
        assert x.destinations == y.destinations
        assert x.dead_letter == y.dead_letter
        destinations.update(y.destinations)
    assert destinations["funds"]
    assert destinations["kela"]
    registration = next(
        e
        for e in events
        if e.event_type == "JobseekerRegistered"
        and e.to_avro()["payload"]["unemployment_fund_code"]
    )
    subject = registration.envelope.subject
    keys.forget(subject, "test")
    record = records[events.index(registration)]  # sealed with the key now erased
    fresh = PersonStates().batch()
    outcome = sealed.handle(record, fresh)
    assert outcome.dead_letter is None
    assert "reporting" in outcome.destinations
    assert fresh.get(0, subject) is None, "nothing learnt from a fund code that cannot be read"


def test_the_routers_batch_path_writes_what_handle_many_decides(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    """``route_batch`` (the loop's path, outcomes not held) writes the records, counts and
    dead letters of ``handle_many``, a forgotten person's route letter in its place."""
    memory = _keys()
    handler = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=memory.directory
    )
    records = list(_sealed(events[:400], memory))
    forgotten = _statements(events[:400], 1)[0].envelope.subject
    memory.forget(forgotten, "test")
    outcomes = handler.handle_many(records, PersonStates().batch())
    out: list[Any] = []
    routed: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    handler.route_batch(records, PersonStates().batch(), out, routed, dead)
    expected = [r for o in outcomes for r in o.records]

    def same(records: list[Any]) -> list[Any]:
        # A state's sealed fund code has a random nonce: compared opened.
        from hub.routing.resolve import PersonState

        shown = []
        for r in records:
            value = r.value
            if r.topic == "test.state" and value is not None:
                state = PersonState.from_bytes(value)
                if state.sealed_fund is not None:
                    state = handler._open_state(r.key.decode(), state)
                value = (state.payer_kind, state.fund_code, state.fund_unreadable)
            shown.append((r.topic, r.key, value))
        return shown

    assert same(out) == same(expected)
    assert any(r.topic == "test.state" and b"fund_sealed" in (r.value or b"") for r in out)
    assert routed == Counter(d for o in outcomes for d in o.destinations)
    assert dead == Counter({"route": sum(o.dead_count for o in outcomes if o.dead_letter)})
    assert dead["route"] >= 1


def _directory_with(memory: MemoryPersonKeys, keyring: str, tamper: str | None = None) -> Any:
    """A key directory with ``memory``'s records, unwrapping with ``keyring``; ``tamper``: the
    person whose stored key records get a changed wrapping (a record tampered with)."""
    import base64
    import json

    from hub.privacy.datakeys import KeyDirectory

    directory = KeyDirectory(LocalKeyEncryptionKeys.from_text(keyring))
    for key, value in memory.records:
        if value is not None and tamper is not None and key.startswith(tamper.encode()):
            body = json.loads(value)
            if "wrapped" in body:
                wrapped = bytearray(base64.b64decode(body["wrapped"]))
                wrapped[-1] ^= 1
                body["wrapped"] = base64.b64encode(bytes(wrapped)).decode()
                value = json.dumps(body).encode()
        directory.apply(key, value)
    return directory


NEW_KEK = "new:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="


def test_a_keyring_without_the_wrapping_kek_puts_the_batch_back_not_dead_letters(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    """The rotation order's hazard: keys wrapped by a KEK id this router's keyring does not
    hold is its own configuration, the same for every person: back-pressure
    (KeysMisconfigured, a KekUnavailable: the router retries), one message naming the
    missing KEK id, never a dead letter per person; with the keyring fixed all flows."""
    from hub.routing.outbox import KeysMisconfigured

    memory = _keys()  # keys wrapped by the dev KEK (local:dev)
    records = list(_sealed(_statements(events, 3), memory))
    handler = RecordHandler(
        settings,
        config,
        serializer=SingleObjectSerializer(),
        keys=_directory_with(memory, NEW_KEK),
    )
    with pytest.raises(KeysMisconfigured) as raised:
        handler.handle_many(records, PersonStates().batch())
    assert "does not hold" in str(raised.value)
    assert isinstance(raised.value, KekUnavailable)
    fixed = RecordHandler(
        settings,
        config,
        serializer=SingleObjectSerializer(),
        keys=_directory_with(memory, f"{NEW_KEK},{DEV_KEK}"),
    )
    outcomes = fixed.handle_many(records, PersonStates().batch())
    assert all(o.dead_letter is None for o in outcomes)


def test_a_tampered_key_record_stays_a_dead_letter_of_that_person(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    memory = _keys()
    statements = _statements(events, 3)
    records = list(_sealed(statements, memory))
    victim = statements[0].envelope.subject
    handler = RecordHandler(
        settings,
        config,
        serializer=SingleObjectSerializer(),
        keys=_directory_with(memory, DEV_KEK, tamper=victim),
    )
    outcomes = handler.handle_many(records, PersonStates().batch())
    for event, outcome in zip(statements, outcomes, strict=True):
        if event.envelope.subject != victim:
            assert outcome.dead_letter is None
            continue
        [(letter, _)] = _letters(outcome)
        assert letter.error_class == "DataKeyUnreadable"


def _fund_person(events: list[CustomerPathEvent]) -> tuple[str, str, list[CustomerPathEvent]]:
    """A person registered with a fund code who later starts a job or ends the search: their
    pseudonym, fund code and events in log order."""
    for event in events:
        fund = event.to_avro()["payload"].get("unemployment_fund_code")
        if event.event_type != "JobseekerRegistered" or not fund:
            continue
        subject = event.envelope.subject
        own = [e for e in events if e.envelope.subject == subject]
        if any(e.event_type in ("EmploymentStarted", "JobSearchEnded") for e in own):
            return subject, str(fund), own
    raise AssertionError("no registered fund member who starts a job in the simulation")


def test_the_router_state_holds_the_fund_code_sealed_and_a_forgotten_payer_dead_letters(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent]
) -> None:
    """The router-state record of a fund member holds no fund code in clear (sealed with the
    person's data key, for a fixed id of the pseudonym); restored, it opens for the payer
    route; the person forgotten, the payer route dead-letters with the reason and the rest
    flows. A state written in clear before this change still reads and routes."""
    from hub.routing.resolve import STATE_FUND_PATH, PersonState

    subject, fund, own = _fund_person(events)
    memory = _keys()
    records = list(_sealed(own, memory))
    handler = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=memory.directory
    )
    batch = PersonStates().batch()
    state_values: list[bytes] = []
    sent: Counter[str] = Counter()
    for record in records:
        outcome = handler.handle(record, batch)
        assert outcome.dead_letter is None
        sent.update(outcome.destinations)
        state_values += [r.value for r in outcome.records if r.topic == "test.state" and r.value]
    assert sent["funds"], "the fund member's job start goes to their fund"
    assert state_values
    for value in state_values:
        assert fund.encode() not in value
        assert b"fund_code" not in value or b'"fund_code":null' in value
    job = next(
        i for i, e in enumerate(own) if e.event_type in ("EmploymentStarted", "JobSearchEnded")
    )
    registration = next(i for i, e in enumerate(own) if e.event_type == "JobseekerRegistered")

    def restored(value: bytes) -> PersonStates:
        states = PersonStates()
        states.load(0, {subject: PersonState.from_bytes(value)})
        return states

    # The state as the router wrote it when the registration was routed, restored by another
    # router: it opens for the job start.
    fresh = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=memory.directory
    )
    first = state_values[0]
    assert PersonState.from_bytes(first).fund_code is None  # sealed until opened
    outcome = fresh.handle(records[job], restored(first).batch())
    assert outcome.dead_letter is None
    assert "funds" in outcome.destinations
    # Copied to another person's state, it does not open (sealed for this pseudonym).
    other = "0" * 32
    moved_view = fresh._open_state(other, PersonState.from_bytes(first))
    assert moved_view.fund_code is None
    assert moved_view.fund_unreadable is not None
    # A state written in clear before the fund code was sealed still reads and routes.
    legacy = ('{"v":1,"payer_kind":"UNEMPLOYMENT_FUND","fund_code":"' + fund + '"}').encode()
    outcome = fresh.handle(records[job], restored(legacy).batch())
    assert outcome.dead_letter is None
    assert "funds" in outcome.destinations
    # Forgotten: the payer route dead-letters with the reason, the rest flows.
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    memory.forget(subject, "test", at=at)
    after = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=memory.directory
    )
    outcome = after.handle(records[job], restored(first).batch())
    assert "funds" not in outcome.destinations
    assert outcome.dead_letter is DeadLetterStage.ROUTE
    [(letter, _)] = _letters(outcome)
    assert letter.error_class == "PersonalDataErased"
    assert "route job-start-to-payer" in letter.reason
    assert STATE_FUND_PATH in letter.reason
    assert "2026-03-01T12:00:00+00:00" in letter.reason
    assert fund not in letter.reason
    assert subject not in letter.reason
    assert registration < job


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "plaintext"])
def test_a_restricted_persons_payer_route_dead_letters_until_lifted_the_rest_flows(
    settings: HubSettings, config: RoutesConfig, events: list[CustomerPathEvent], sealed: bool
) -> None:
    """GDPR art. 18: while the person's processing is restricted, a route granting their
    personal fields (sealed, or plaintext from before encryption) dead-letters with the basis
    and since when; reporting flows; lifted, the same record (a replayed letter) is sent."""
    memory = _keys()
    statements = _statements(events, 3)
    records = list(_sealed(statements, memory if sealed else None))
    for event in statements:  # the keys exist for the plaintext persons too
        memory.ensure([event.envelope.subject])
    held = statements[0].envelope.subject
    at = datetime(2026, 4, 2, 9, 30, tzinfo=UTC)
    memory.restrict(held, "accuracy-contested", at=at)
    handler = RecordHandler(
        settings, config, serializer=SingleObjectSerializer(), keys=memory.directory
    )
    outcomes = handler.handle_many(records, PersonStates().batch())
    letters = 0
    for event, outcome in zip(statements, outcomes, strict=True):
        sent = _by_destination(outcome)
        assert "reporting" in sent
        if event.envelope.subject != held:
            assert outcome.dead_letter is None
            continue
        assert set(sent) == {"reporting"}
        [(letter, value)] = _letters(outcome)
        assert letter.error_class == "PersonalDataRestricted"
        assert "accuracy-contested" in letter.reason
        assert "2026-04-02T09:30:00+00:00" in letter.reason
        assert CODE_PATH in letter.reason
        assert held not in letter.reason
        if sealed:
            assert value == records[statements.index(event)].value
        else:
            assert value is None, "plaintext is not copied into the dead letter"
        letters += 1
    assert letters
    memory.lift_restriction(held)
    again = handler.handle_many(records, PersonStates().batch())
    assert all(o.dead_letter is None for o in again)


@pytest.mark.parametrize(
    "value",
    [
        b'{"v":2}',
        b'{"v":2,"payer_kind":"UNEMPLOYMENT_FUND","fund_sealed":"not base64!"}',
        b'{"v":2,"payer_kind":"UNEMPLOYMENT_FUND","fund_sealed":"QUJD"}',
        b'{"v":2,"payer_kind":7,"fund_sealed":null}',
        b'{"v":3,"payer_kind":"KELA"}',
    ],
)
def test_a_router_state_that_is_not_one_the_router_writes_is_refused(value: bytes) -> None:
    from hub.routing.resolve import PersonState

    with pytest.raises(ValueError, match="person state"):
        PersonState.from_bytes(value)
