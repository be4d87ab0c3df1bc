"""``hub person forget``, ``hub keys status`` / ``rotate`` and the erasure and reveal receipts of
the disclosure log, on the session broker (the CLI as a subprocess)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced
from pydantic import SecretStr

from hub.delivery.audit import person_disclosures, read_entries, verify_chains
from hub.identity import Pseudonymizer
from hub.identity.hetu import make_test_identity_code
from hub.privacy.access_log import record_erasures, record_reveal
from hub.privacy.keystore import ForgetResult, open_person_keys
from hub.privacy.person_cli import ERASURE_BASES
from hub.privacy.sealing import KeyErased
from hub.settings import HubSettings
from tests.conftest import hub_environment, settings_for
from tests.hub_process import REPO_ROOT, hub_command

pytestmark = pytest.mark.kafka

OLD = "old:" + base64.b64encode(b"o" * 32).decode()
NEW = "new:" + base64.b64encode(b"n" * 32).decode()


@pytest.fixture
def settings(kafka_bootstrap: str) -> HubSettings:
    base = settings_for(kafka_bootstrap, partitions=3, kek=SecretStr(OLD))
    return base.model_copy(
        update={"topic_person_keys": f"test.person-keys.{uuid.uuid4().hex[:12]}"}
    )


def hub(settings: HubSettings, cwd: Path, *args: str, stdin: str | None = None, **env: str):
    environment = {
        k: v for k, v in hub_environment(settings, **env).items() if k.startswith("HUB_")
    }
    if stdin is None:
        return hub_command(*args, env=environment, cwd=cwd)
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        input=stdin,
        env={**environment, "PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_forget_by_identity_code_erases_and_records_it(
    settings: HubSettings, tmp_path: Path
) -> None:
    code = make_test_identity_code(date(1979, 3, 14), 931)
    person = Pseudonymizer.from_settings(settings).pseudonym(code)
    other = uuid.uuid4().hex
    with open_person_keys(settings) as store:
        made = store.ensure([person, other])
    done = hub(
        settings,
        tmp_path,
        "person",
        "forget",
        code,
        "--basis",
        "order",
        "--reason",
        "court order 2026/17",
        "--operator",
        "registrar-7",
    )
    assert done.returncode == 0, done.stderr
    assert code not in done.stdout + done.stderr
    assert f"person {person} forgotten at " in done.stdout
    assert str(made[person].key_id) in done.stdout
    assert "status erased, basis order, operator registrar-7" in done.stdout
    assert "receivers to tell (GDPR art. 19): none" in done.stdout
    with open_person_keys(settings) as fresh:
        with pytest.raises(KeyErased):
            fresh.data_key(person, made[person].key_id)
        assert fresh.data_key(other, made[other].key_id).secret == made[other].secret
        partition = fresh.partition_of(person)

    verified = hub(settings, tmp_path, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert f"chain person-keys/{partition}: 1 entries" in verified.stdout

    listed = hub(settings, tmp_path, "audit", "person", "--json", code)
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["status"] == "erased"
    assert entry["subject"] == person
    assert entry["chain"] == f"person-keys/{partition}"
    assert set(entry["fields"]) == {"direct", "contact", "health", "membership"}
    assert set(entry["legal_basis"].values()) == {f"{ERASURE_BASES['order']}: court order 2026/17"}
    assert entry["event_ids"] == [str(made[person].key_id)]
    details = entry["details"]
    assert details["operator"] == "registrar-7"
    assert (details["basis"], details["reason"]) == ("order", "court order 2026/17")
    assert details["key_ids"] == [str(made[person].key_id)]
    assert details["marker"]["partition"] == partition == entry["outbox_partition"]
    assert details["marker"]["offset"] == entry["outbox_offset"]
    assert details["recipients"] == []
    table = hub(settings, tmp_path, "audit", "person", code)
    assert "erased" in table.stdout
    assert code not in table.stdout + table.stderr

    # Forgetting by pseudonym (retention jobs), from standard input too; the chain continues.
    again = hub(
        settings,
        tmp_path,
        "person",
        "forget",
        "--pseudonym",
        other,
        "--basis",
        "retention-expired",
        "--json",
    )
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["key_ids"] == [str(made[other].key_id)]
    assert result["disclosure"]["details"]["basis"] == "retention-expired"
    assert result["disclosure"]["details"]["operator"]  # the OS user
    # Forgetting the forgotten person again finishes that erasure: no new marker or receipt.
    stdin = hub(settings, tmp_path, "person", "forget", "-", "--basis", "order", stdin=code + "\n")
    assert stdin.returncode == 0, stdin.stderr
    assert f"person {person} was forgotten at " in stdin.stdout
    assert "already recorded" in stdin.stdout
    assert code not in stdin.stdout + stdin.stderr
    report = asyncio.run(verify_chains(settings))
    assert report.ok, report.problems
    assert sum(c.entries for n, c in report.chains.items() if n.startswith("person-keys/")) == 2


@pytest.mark.parametrize(
    "text",
    [
        make_test_identity_code(date(1979, 3, 14), 931)[:-1] + "Z",  # wrong check character
        "311399-9319",  # no such date
        "not-a-code",
    ],
)
def test_forget_refuses_a_bad_identity_code_without_echoing_it(
    settings: HubSettings, tmp_path: Path, text: str
) -> None:
    refused = hub(settings, tmp_path, "person", "forget", text)
    assert refused.returncode == 2
    assert "IDENTITY_CODE" in refused.stderr
    assert "identity code" in refused.stderr
    assert text not in refused.stdout + refused.stderr
    assert text[:6] not in refused.stderr.replace("IDENTITY_CODE", "")


def test_forget_needs_one_person_and_a_basis(settings: HubSettings, tmp_path: Path) -> None:
    neither = hub(settings, tmp_path, "person", "forget", "--basis", "order")
    assert neither.returncode == 2
    assert "--pseudonym" in neither.stderr
    bad = hub(settings, tmp_path, "person", "forget", "--pseudonym", "XYZ", "--basis", "order")
    assert bad.returncode == 2
    assert "32 lowercase hex" in bad.stderr
    # No default ground: a request alone does not erase what the authority must keep.
    bare = hub(settings, tmp_path, "person", "forget", "--pseudonym", "a" * 32)
    assert bare.returncode == 2
    assert "--basis" in bare.stderr
    assert "17(3)(b)" in bare.stderr
    wrong = hub(settings, tmp_path, "person", "forget", "--pseudonym", "a" * 32, "--basis", "asked")
    assert wrong.returncode == 2
    assert "retention-expired" in wrong.stderr
    code = make_test_identity_code(date(1990, 1, 2), 955)
    leaky = hub(
        settings,
        tmp_path,
        "person",
        "forget",
        "--pseudonym",
        "a" * 32,
        "--basis",
        "order",
        "--reason",
        f"ask {code}",
    )
    assert leaky.returncode == 2
    assert code not in leaky.stderr


def test_keys_status_and_rotate(settings: HubSettings, tmp_path: Path) -> None:
    people = [uuid.uuid4().hex for _ in range(12)]
    with open_person_keys(settings) as store:
        made = store.ensure(people)
        store.forget(people[0], "test")
    status = hub(settings, tmp_path, "keys", "status", "--json")
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert counts["people_with_keys"] == 11
    assert counts["keys_by_kek"] == {"local:old": 11}
    assert counts["forgotten"] == 1
    assert counts["keys_not_on_current_kek"] == 0
    assert counts["current_kek"] == "local:old"

    refused = hub(settings, tmp_path, "keys", "rotate", "--new-version")
    assert refused.returncode == 1
    assert "no new local KEK version made" in refused.stderr
    assert "first in HUB_KEK" in refused.stderr

    both = f"{NEW},{OLD}"
    before = hub(settings, tmp_path, "keys", "status", HUB_KEK=both)
    assert "keys not on current KEK:  11" in before.stdout
    assert "hub keys rotate" in before.stdout
    rotated = hub(settings, tmp_path, "keys", "rotate", HUB_KEK=both)
    assert rotated.returncode == 0, rotated.stderr
    assert "rewrapped 11 key(s), 0 already on the current KEK" in rotated.stdout
    assert "local:new 11" in rotated.stdout
    for output in (status, before, rotated):
        assert OLD.split(":")[1] not in output.stdout + output.stderr
        assert NEW.split(":")[1] not in output.stdout + output.stderr
    after = json.loads(hub(settings, tmp_path, "keys", "status", "--json", HUB_KEK=NEW).stdout)
    assert after["keys_by_kek"] == {"local:new": 11}
    new_only = settings.model_copy(update={"kek": SecretStr(NEW)})
    with open_person_keys(new_only) as store:
        for person in people[1:]:
            assert store.data_key(person, made[person].key_id).secret == made[person].secret


def test_reveals_are_chained_per_operator_and_listed_for_the_person(
    settings: HubSettings, tmp_path: Path
) -> None:
    code = make_test_identity_code(date(1988, 8, 8), 912)
    person = Pseudonymizer.from_settings(settings).pseudonym(code)
    other = uuid.uuid4().hex
    events = [str(uuid.uuid4()) for _ in range(3)]
    written = asyncio.run(
        record_reveal(
            settings,
            "alice",
            [person, other],
            events,
            ["payload.first_name", "payload.email"],
            "customer called to check the address",
            events=[(person, events[0]), (person, events[1]), (other, events[2])],
        )
    )
    assert [w.subject for w in written] == sorted([person, other])
    asyncio.run(record_reveal(settings, "alice", [person], events[:1], ["payload.x"], "again"))
    asyncio.run(record_reveal(settings, "bob", [other], events[2:], ["payload.x"], "check"))
    report = asyncio.run(verify_chains(settings))
    assert report.ok, report.problems
    assert report.chains["reveal/alice"].entries == 3
    assert report.chains["reveal/bob"].entries == 1
    mine = asyncio.run(person_disclosures(settings, person))
    assert [e["status"] for e in mine] == ["revealed", "revealed"]
    assert mine[0]["event_ids"] == events[:2]
    assert mine[0]["endpoint"] == "alice"
    assert mine[0]["legal_basis"] == {"reveal": "customer called to check the address"}
    table = hub(settings, tmp_path, "audit", "person", code)
    assert "reveal/alice" in table.stdout
    assert "revealed" in table.stdout


def _result(subject: str, partition: int, offset: int) -> ForgetResult:
    return ForgetResult(subject, (uuid.uuid4(),), datetime.now(UTC), partition, offset, ())


WRITER = """
import asyncio, sys, uuid
from datetime import UTC, datetime
from hub.privacy.access_log import record_erasures
from hub.privacy.keystore import ForgetResult
from hub.settings import HubSettings
settings = HubSettings()
first = int(sys.argv[1])  # markers of its own: one receipt per marker
results = [
    ForgetResult(uuid.uuid4().hex, (uuid.uuid4(),), datetime.now(UTC), 0, first + n, ())
    for n in range(3)
]
print("ready", flush=True)
sys.stdin.readline()
for result in results:
    asyncio.run(record_erasures(settings, [result], "race", "test"))
print("done", flush=True)
"""


def test_concurrent_writers_of_one_chain_do_not_fork_it(settings: HubSettings) -> None:
    """Three processes and six tasks of this one writing erasures of one partition at once:
    the chain stays one sequence (a writer that starts fences the one before, which retries;
    the test fails when each writer has a transactional id of its own)."""
    asyncio.run(record_erasures(settings, [_result(uuid.uuid4().hex, 0, 0)], "seed"))
    env = hub_environment(settings)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(100 * (k + 1))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**env, "PYTHONPATH": str(REPO_ROOT)},
            cwd=REPO_ROOT,
        )
        for k in range(3)
    ]
    try:
        for writer in writers:
            assert writer.stdout is not None
            while (line := writer.stdout.readline()) and line.strip() != "ready":
                pass
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()

        async def here() -> None:
            await asyncio.gather(
                *(
                    record_erasures(settings, [_result(uuid.uuid4().hex, 0, n)], "race", "t")
                    for n in range(10, 16)
                )
            )

        asyncio.run(here())
        for writer in writers:
            out, _ = writer.communicate(timeout=120)
            assert writer.returncode == 0
            assert out.strip().endswith("done")
    finally:
        for writer in writers:
            writer.kill()
    report = asyncio.run(verify_chains(settings))
    assert report.ok, [str(p) for p in report.problems]
    assert report.chains["person-keys/0"].entries == 16
    assert report.chains["person-keys/0"].seq == 15

    async def seqs() -> list[int]:
        return [i.entry["seq"] async for i in read_entries(settings) if i.entry is not None]

    assert sorted(asyncio.run(seqs())) == list(range(16))


@pytest.mark.parametrize("failure", [KafkaError, ProducerFenced])
def test_a_commit_whose_answer_is_lost_is_not_written_twice(
    settings: HubSettings, monkeypatch: pytest.MonkeyPatch, failure: type[KafkaError]
) -> None:
    """The broker commits the receipts, then the writer hears an error (as when a new writer
    fences a commit under way): the next try finds them on the chain and writes none again,
    and the receipts still count as written now."""
    commit = AIOKafkaProducer.commit_transaction
    failed: list[bool] = []

    async def commit_then_fail(self: AIOKafkaProducer) -> None:
        await commit(self)
        if not failed:
            failed.append(True)
            raise failure()

    monkeypatch.setattr(AIOKafkaProducer, "commit_transaction", commit_then_fail)
    results = [_result(uuid.uuid4().hex, 0, n) for n in range(2)]
    written = asyncio.run(record_erasures(settings, results, "retried"))
    assert failed == [True]
    assert [r.written for r in written] == [True, True]
    report = asyncio.run(verify_chains(settings))
    assert report.ok, [str(p) for p in report.problems]
    assert report.chains["person-keys/0"].entries == 2


def _chain_entries(settings: HubSettings, subject: str) -> list[dict[str, object]]:
    from hub.kafka.topics import ensure_topics

    async def read() -> list[dict[str, object]]:
        await ensure_topics(settings)
        return await person_disclosures(settings, subject)

    return asyncio.run(read())


def test_forgetting_again_keeps_keys_made_since_and_record_only_writes_the_missing_receipt(
    settings: HubSettings, tmp_path: Path
) -> None:
    """A forget whose receipt was not written (the disclosure log down), then new events of
    the person (a key made after the marker): a plain re-run erases nothing made since, the
    record-only run writes the receipt of the original marker (its time and place) once; only
    --new-erasure erases the new key."""
    person = uuid.uuid4().hex
    with open_person_keys(settings) as store:
        first = store.ensure([person])[person]
        erased = store.forget(person, "order: court order 1/2026")  # no receipt written
        second = store.ensure([person])[person]  # new events after the forgetting
    assert second.key_id != first.key_id

    plain = hub(settings, tmp_path, "person", "forget", "--pseudonym", person, "--basis", "order")
    assert plain.returncode == 1
    assert "1 data key(s) were made since then" in plain.stderr
    assert "--new-erasure" in plain.stderr
    assert "--record-only" in plain.stderr
    with open_person_keys(settings) as fresh:
        assert fresh.data_key(person, second.key_id).secret == second.secret
    assert _chain_entries(settings, person) == []

    recorded = hub(
        settings, tmp_path, "person", "forget", "--pseudonym", person, "--record-only", "--json"
    )
    assert recorded.returncode == 0, recorded.stderr
    result = json.loads(recorded.stdout)
    assert result["recorded_now"] is True
    assert result["new_marker"] is False
    assert result["forgotten_at"] == erased.forgotten_at.isoformat()
    assert (result["partition"], result["marker_offset"]) == (
        erased.partition,
        erased.marker_offset,
    )
    assert result["key_ids"] == [str(first.key_id)]
    details = result["disclosure"]["details"]
    assert (details["basis"], details["reason"]) == ("order", "court order 1/2026")
    assert details["marker"]["forgotten_at"] == erased.forgotten_at.isoformat()
    twice = hub(settings, tmp_path, "person", "forget", "--pseudonym", person, "--record-only")
    assert twice.returncode == 0, twice.stderr
    assert "already recorded" in twice.stdout
    [entry] = _chain_entries(settings, person)
    assert entry["first_attempt_at"] == erased.forgotten_at.isoformat()
    with open_person_keys(settings) as fresh:
        assert fresh.data_key(person, second.key_id).secret == second.secret
        with pytest.raises(KeyErased):
            fresh.data_key(person, first.key_id)

    new = hub(
        settings,
        tmp_path,
        "person",
        "forget",
        "--pseudonym",
        person,
        "--basis",
        "objection-upheld",
        "--new-erasure",
    )
    assert new.returncode == 0, new.stderr
    assert str(second.key_id) in new.stdout
    with open_person_keys(settings) as fresh, pytest.raises(KeyErased):
        fresh.data_key(person, second.key_id)
    assert [e["status"] for e in _chain_entries(settings, person)] == ["erased", "erased"]


def test_the_receipt_names_the_receivers_to_tell(settings: HubSettings, tmp_path: Path) -> None:
    """GDPR art. 19: the receivers the disclosure log shows the person's data went to."""
    from hub.delivery.disclosure import Disclosure, DisclosureLog, DisclosureStatus
    from hub.kafka.topics import ensure_topics

    person, other = uuid.uuid4().hex, uuid.uuid4().hex
    now = datetime.now(UTC)

    def sent(subject: str, destination: str, endpoint: str | None, status: str) -> Disclosure:
        return Disclosure(
            destination=destination,
            endpoint=endpoint,
            event_id=uuid.uuid4(),
            subject=subject,
            event_type="StatementIssued",
            fields=["payload.first_name"],
            legal_basis={"direct": "law"},
            status=DisclosureStatus(status),
            attempts=1,
            first_attempt_at=now,
            last_attempt_at=now,
            route="r",
            outbox_partition=0,
            outbox_offset=0,
        )

    async def deliveries() -> None:
        await ensure_topics(settings)
        log = DisclosureLog(settings)
        await log.start()
        await log.record(sent(person, "kela", None, "delivered"), 0)
        await log.record(sent(person, "fund", "0201256-6", "dead-lettered"), 1)
        await log.record(sent(other, "employer", "1234567-8", "delivered"), 2)
        await log.stop()

    asyncio.run(deliveries())
    with open_person_keys(settings) as store:
        store.ensure([person])
    done = hub(settings, tmp_path, "person", "forget", "--pseudonym", person, "--basis", "order")
    assert done.returncode == 0, done.stderr
    assert "(GDPR art. 19): fund/0201256-6, kela" in done.stdout
    assert "employer" not in done.stdout
    [receipt] = [e for e in _chain_entries(settings, person) if e["status"] == "erased"]
    assert set(receipt["legal_basis"].values()) == {ERASURE_BASES["order"]}  # no detail given
    assert receipt["details"]["recipients"] == [
        {"destination": "fund", "endpoint": "0201256-6"},
        {"destination": "kela", "endpoint": None},
    ]


def test_restrict_and_lift_without_a_kek_recorded(settings: HubSettings, tmp_path: Path) -> None:
    """hub person restrict holds no key-encryption key (here none can be built: the KEK file
    is missing) and records both steps on the person-keys chain."""
    person = uuid.uuid4().hex
    with open_person_keys(settings) as store:
        key = store.ensure([person])[person]
    no_kek = settings.model_copy(update={"kek": None, "kek_file": tmp_path / "no-such-kek"})
    restricted = hub(
        no_kek,
        tmp_path,
        "person",
        "restrict",
        "--pseudonym",
        person,
        "--basis",
        "accuracy contested, case 55",
    )
    assert restricted.returncode == 0, restricted.stderr
    assert f"person {person}: processing restricted at" in restricted.stdout
    assert "status restricted" in restricted.stdout
    with open_person_keys(settings) as fresh:
        mark = fresh.directory.restricted(person)
        assert mark is not None
        assert mark.basis == "accuracy contested, case 55"
        assert fresh.data_key(person, key.key_id).secret == key.secret  # the keys stay
    lifted = hub(
        no_kek,
        tmp_path,
        "person",
        "restrict",
        "--pseudonym",
        person,
        "--lift",
    )
    assert lifted.returncode == 0, lifted.stderr
    assert "restriction of processing lifted" in lifted.stdout
    with open_person_keys(settings) as fresh:
        assert fresh.directory.restricted(person) is None
    entries = _chain_entries(settings, person)
    assert [e["status"] for e in entries] == ["restricted", "restriction-lifted"]
    assert entries[0]["details"]["basis"] == "accuracy contested, case 55"
    assert entries[1]["details"]["was_restricted"] is True
    both = hub(no_kek, tmp_path, "person", "restrict", "--pseudonym", person)
    assert both.returncode == 2
    # Forgetting holds no key either.
    forgot = hub(
        no_kek,
        tmp_path,
        "person",
        "forget",
        "--pseudonym",
        person,
        "--basis",
        "order",
    )
    assert forgot.returncode == 0, forgot.stderr
    assert str(key.key_id) in forgot.stdout
    assert asyncio.run(verify_chains(settings)).ok


def test_a_receipt_not_written_names_the_record_only_command(
    settings: HubSettings, tmp_path: Path
) -> None:
    """The disclosure log cannot be written (a topic name the broker refuses): the person is
    forgotten and the error names the command that records it without touching a key."""
    person = uuid.uuid4().hex
    with open_person_keys(settings) as store:
        key = store.ensure([person])[person]
    broken = settings.model_copy(update={"topic_disclosures": "no such topic!"})
    failed = hub(broken, tmp_path, "person", "forget", "--pseudonym", person, "--basis", "order")
    assert failed.returncode == 1
    assert "forgotten (keys deleted" in failed.stderr
    assert f"hub person forget --pseudonym {person} --record-only --basis order" in failed.stderr
    assert "run the same command again" not in failed.stderr
    recorded = hub(settings, tmp_path, "person", "forget", "--pseudonym", person, "--record-only")
    assert recorded.returncode == 0, recorded.stderr
    assert str(key.key_id) in recorded.stdout
    [entry] = _chain_entries(settings, person)
    assert entry["status"] == "erased"
