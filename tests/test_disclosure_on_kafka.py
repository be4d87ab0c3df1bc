"""The disclosure log on a real broker: chains survive restarts, `hub audit` finds every break."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.structs import ConsumerRecord

from hub.delivery import disclosure as disclosure_module
from hub.delivery.audit import verify_chains
from hub.delivery.disclosure import (
    Disclosure,
    DisclosureLog,
    DisclosureStatus,
    chain_key,
    chained_entry,
    decode_entry,
    encode_entry,
    entry_hash,
    partition_for_key,
    recover_head,
)
from hub.identity import Pseudonymizer, make_test_identity_code
from hub.kafka.clients import make_consumer, make_producer
from hub.kafka.reading import read_topic, settled_end
from hub.kafka.topics import ensure_topics
from hub.privacy import access_log
from hub.privacy.access_log import erasure_entry
from hub.privacy.keystore import ForgetResult
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT, hub_environment, settings_for
from tests.hub_process import hub_command

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def disclosure(
    destination: str, subject: str, n: int, *, partition: int = 0, **changes: Any
) -> Disclosure:
    base = Disclosure(
        destination=destination,
        event_id=uuid.uuid4(),
        subject=subject,
        event_type="LabourPolicyStatementIssued",
        fields=("payload.statement_kind", "payload.valid_from"),
        legal_basis={"membership": "Työttömyysturvalaki 1290/2002 13 luku"},
        status=DisclosureStatus.DELIVERED,
        attempts=1,
        first_attempt_at=T0 + timedelta(seconds=n),
        last_attempt_at=T0 + timedelta(seconds=n),
        route="statements-to-payer",
        outbox_partition=partition,
        outbox_offset=n,
        endpoint=None,
    )
    return replace(base, **changes)


async def records(settings: HubSettings) -> list[ConsumerRecord[bytes, bytes]]:
    return [r async for r in read_topic(settings, settings.topic_disclosures)]


async def copy_topic(
    settings: HubSettings,
    change: Callable[[dict[str, Any]], dict[str, Any] | None],
) -> HubSettings:
    """A copy of the disclosures topic (same partitions), each entry through *change*
    (None drops it): what someone who rebuilt the topic could leave behind."""
    copy = settings.model_copy(
        update={"topic_disclosures": f"{settings.topic_disclosures}.copy-{uuid.uuid4().hex[:6]}"}
    )
    original = await records(settings)
    await ensure_topics(copy)  # its disclosures topic: as many partitions as the original
    producer = make_producer(copy)
    await producer.start()
    try:
        for record in original:
            entry = change(decode_entry(record.value))
            if entry is not None:
                await producer.send_and_wait(
                    copy.topic_disclosures,
                    value=encode_entry(entry),
                    key=record.key,
                    partition=record.partition,
                )
    finally:
        await producer.stop()
    return copy


async def test_chains_continue_across_restarts_and_verify_passes(
    hub_settings: HubSettings,
) -> None:
    await ensure_topics(hub_settings)
    people = [uuid.uuid4().hex for _ in range(3)]
    log = DisclosureLog(hub_settings)
    await log.start()
    # Concurrent receipts of three chains: each chain stays one sequence.
    await asyncio.gather(
        *(
            log.record(disclosure(dest, people[n % 3], n, partition=p), p)
            for n in range(60)
            for dest, p in (("kela", n % 2), ("funds", 0))
        )
    )
    assert log.head("kela", 0) is not None
    assert log.head("kela", 0)[0] == 29  # type: ignore[index]
    await log.stop()

    # A restarted writer (or another worker after a rebalance) continues each chain.
    again = DisclosureLog(hub_settings)
    await again.start()
    await again.record(disclosure("kela", people[0], 100, partition=0), 0)
    await again.record(disclosure("providers", people[1], 101, partition=2), 2)
    assert again.head("kela", 0)[0] == 30  # type: ignore[index]
    await again.stop()

    report = await verify_chains(hub_settings)
    assert report.ok, [str(p) for p in report.problems]
    assert report.entries == 122
    assert {name: c.seq for name, c in report.chains.items()} == {
        "kela/0": 30,
        "kela/1": 29,
        "funds/0": 59,
        "providers/2": 0,
    }
    entries = [decode_entry(r.value) for r in await records(hub_settings)]
    for entry in entries:
        assert entry["hash"] == entry_hash(entry)
        assert entry["subject"] in people
        assert set(entry) >= {"seq", "prev_hash", "chain", "legal_basis", "fields", "status"}


async def test_head_is_found_behind_other_chains(
    hub_settings: HubSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backwards search widens until it meets the chain's newest entry."""
    await ensure_topics(hub_settings)
    monkeypatch.setattr(disclosure_module, "HEAD_SEARCH_WINDOW", 3)
    log = DisclosureLog(hub_settings)
    await log.start()
    target = log._chain("kela", 0).partition
    other = next(
        p
        for p in range(1, 500)
        if partition_for_key(chain_key("funds", p), log._partitions) == target
    )
    for n in range(4):
        await log.record(disclosure("kela", "a" * 32, n), 0)
    await asyncio.gather(
        *(log.record(disclosure("funds", "b" * 32, n, partition=other), other) for n in range(40))
    )
    await log.stop()
    again = DisclosureLog(hub_settings)
    await again.start()
    await again.record(disclosure("kela", "a" * 32, 9), 0)
    assert again.head("kela", 0)[0] == 4  # type: ignore[index]
    await again.stop()
    assert (await verify_chains(hub_settings)).ok


def _hub_with_stdin(
    text: str, env: dict[str, str], cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``hub ARGS`` reading *text* on standard input."""
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        input=text,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_an_open_transaction_of_another_chain_does_not_hide_a_head_committed_after_it(
    kafka_bootstrap: str,
) -> None:
    """Two chains on one partition: another writer's transaction opens, then an erasure receipt
    of chain person-keys/0 is committed behind it. A reader stopping at the last stable offset
    would find no head (and fork the chain) and miss the receipt (and write it twice); the
    readers wait until the open transaction is decided, then see both."""
    settings = settings_for(kafka_bootstrap, partitions=1)
    await ensure_topics(settings)
    other = make_producer(settings, transactional_id=f"{settings.writer_id_prefix}-other-chain")
    await other.start()
    try:
        await other.begin_transaction()
        await other.send_and_wait(settings.topic_disclosures, b"{}", key=b"reveal/op", partition=0)
        # A receipt of chain person-keys/0 committed behind the open transaction (by a writer
        # that knew the chain's head already).
        forgotten = ForgetResult("a" * 32, (uuid.uuid4(),), datetime.now(UTC), 0, 7, ())
        receipt = erasure_entry(forgotten, "case 1", "test", settings.topic_person_keys)
        value = encode_entry(
            chained_entry(receipt, "person-keys/0", 0, "0" * 64, datetime.now(UTC))
        )
        chain = make_producer(settings, transactional_id=f"{settings.writer_id_prefix}-chain")
        await chain.start()
        try:
            async with chain.transaction():
                await chain.send_and_wait(
                    settings.topic_disclosures, value, key=b"person-keys/0", partition=0
                )
        finally:
            await chain.stop()
        committed = make_consumer(settings, group_id=None)
        await committed.start()
        try:
            tp = TopicPartition(settings.topic_disclosures, 0)
            assert (await committed.end_offsets([tp]))[tp] == 0  # the last stable offset
            with pytest.raises(KafkaError, match="a transaction open for over 1 s"):
                await settled_end(settings, committed, tp, timeout_s=1)
        finally:
            await committed.stop()

        async def commit_later() -> None:
            await asyncio.sleep(1.5)
            await other.commit_transaction()

        later = asyncio.create_task(commit_later())
        seq, _ = await recover_head(settings, "person-keys/0", 0)
        await later
        assert seq == 0  # the head, not a new chain
        held = await access_log._chain_event_ids(settings, "person-keys/0")
        assert held == {str(receipt.event_id)}
    finally:
        await other.stop()


async def test_audit_verify_and_person_commands(hub_settings: HubSettings, tmp_path: Path) -> None:
    await ensure_topics(hub_settings)
    code = make_test_identity_code(date(1985, 4, 12), 923)
    person = Pseudonymizer.from_settings(hub_settings).pseudonym(code)
    other = uuid.uuid4().hex
    log = DisclosureLog(hub_settings)
    await log.start()
    for n in range(12):
        subject = person if n % 3 == 0 else other
        destination = "funds" if n % 2 else "kela"
        await log.record(
            disclosure(destination, subject, n, endpoint="a-kassa" if n % 2 else None), 0
        )
    await log.record(
        disclosure("providers", person, 50, status=DisclosureStatus.DEAD_LETTERED, attempts=3), 1
    )
    await log.stop()
    env = hub_environment(hub_settings)

    ok = hub_command(
        "audit", "verify", "--write-anchors", str(tmp_path / "a.json"), env=env, cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok: 3 chain(s), 13 entries" in ok.stdout
    anchors = json.loads((tmp_path / "a.json").read_text())
    assert anchors["kela/0"]["seq"] == 5

    listed = hub_command("audit", "person", code, env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert code not in listed.stdout + listed.stderr
    assert f"person {person}: 5 disclosure(s)" in listed.stdout
    lines = listed.stdout.splitlines()
    assert lines[1].split()[:4] == ["when", "to", "event", "type"]
    assert sum("funds/a-kassa" in line for line in lines) == 2
    assert sum(" kela " in line for line in lines) == 2
    assert "dead-lettered" in listed.stdout
    assert "Työttömyysturvalaki 1290/2002" in listed.stdout

    as_json = hub_command("audit", "person", "--json", code.lower(), env=env, cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    entries = json.loads(as_json.stdout)
    assert len(entries) == 5
    assert {e["subject"] for e in entries} == {person}
    assert code not in as_json.stdout
    assert code.lower() not in as_json.stdout

    from_stdin = _hub_with_stdin(code + "\n", env, tmp_path, "audit", "person", "-")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert f"person {person}: 5 disclosure(s)" in from_stdin.stdout
    assert code not in from_stdin.stdout + from_stdin.stderr

    bad = hub_command("audit", "person", code[:-1] + "_", env=env, cwd=tmp_path)
    assert bad.returncode == 2
    assert code[:-1] not in bad.stdout + bad.stderr

    # A forged entry written into the topic (a later "seq 2" of kela/0) is named.
    entries_now = [decode_entry(r.value) for r in await records(hub_settings)]
    second = next(e for e in entries_now if e["chain"] == "kela/0" and e["seq"] == 2)
    forged = {**second, "legal_basis": {"direct": "forged"}}
    forged["hash"] = entry_hash(forged)
    producer = make_producer(hub_settings)
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            hub_settings.topic_disclosures, value=encode_entry(forged), key=b"kela/0"
        )
    finally:
        await producer.stop()
    broken = hub_command("audit", "verify", env=env, cwd=tmp_path)
    assert broken.returncode == 1
    assert (
        f"chain kela/0 seq 2 (partition {sent.partition} offset {sent.offset}): reordered"
        in broken.stderr
    )

    # Anchors: the forged record does not change the head, but a cut-off chain is caught.
    cut = await copy_topic(
        hub_settings, lambda e: None if e["chain"] == "kela/0" and e["seq"] == 5 else e
    )
    cut_env = hub_environment(cut)
    anchored = hub_command(
        "audit", "verify", "--anchors", str(tmp_path / "a.json"), env=cut_env, cwd=tmp_path
    )
    assert anchored.returncode == 1
    assert "chain kela/0 seq 5" in anchored.stderr
    assert "anchor seq 5 noted earlier is gone" in anchored.stderr


async def test_verify_names_an_altered_and_a_removed_entry(hub_settings: HubSettings) -> None:
    await ensure_topics(hub_settings)
    log = DisclosureLog(hub_settings)
    await log.start()
    await asyncio.gather(*(log.record(disclosure("kela", "c" * 32, n), 0) for n in range(10)))
    await log.stop()
    originals = {decode_entry(r.value)["seq"]: r for r in await records(hub_settings)}

    # Content changed, hash left: that entry is named.
    altered = await copy_topic(
        hub_settings,
        lambda e: {**e, "fields": [*e["fields"], "payload.name"]} if e["seq"] == 4 else e,
    )
    report = await verify_chains(altered)
    assert [(p.chain, p.seq, p.offset) for p in report.problems] == [
        ("kela/0", 4, originals[4].offset)
    ]
    assert "altered" in report.problems[0].problem

    # Content changed and its hash recomputed: the next entry's prev_hash gives it away.
    def rehash(entry: dict[str, Any]) -> dict[str, Any]:
        if entry["seq"] != 4:
            return entry
        changed = {**entry, "status": "delivered", "attempts": 99}
        changed["hash"] = entry_hash(changed)
        return changed

    rehashed = await verify_chains(await copy_topic(hub_settings, rehash))
    assert [(p.chain, p.seq) for p in rehashed.problems] == [("kela/0", 5)]
    assert "prev_hash" in rehashed.problems[0].problem

    # One entry removed: the entry after the gap is named, with what is missing.
    removed = await verify_chains(
        await copy_topic(hub_settings, lambda e: None if e["seq"] == 6 else e)
    )
    assert [(p.chain, p.seq) for p in removed.problems] == [("kela/0", 7)]
    assert "removed: seq 6 missing" in removed.problems[0].problem

    # Two entries swapped.
    by_seq = {decode_entry(r.value)["seq"]: decode_entry(r.value) for r in originals.values()}
    order = iter([by_seq[s] for s in (0, 1, 2, 4, 3, 5, 6, 7, 8, 9)])
    swapped = await verify_chains(await copy_topic(hub_settings, lambda _: next(order)))
    assert [(p.seq, p.problem.split(":")[0]) for p in swapped.problems] == [
        (4, "removed"),
        (3, "reordered or written again"),
        (5, "removed"),
    ]


def test_entry_hash_covers_prev_hash() -> None:
    entry = chained_entry(disclosure("kela", "d" * 32, 0), "kela/0", 0, "0" * 64, T0)
    assert entry["hash"] == entry_hash(entry)
    assert entry_hash({**entry, "prev_hash": "1" * 64}) != entry["hash"]


class _FailingOnce:
    """A producer that refuses the n-th send once (a write the broker never acknowledged)."""

    def __init__(self, producer: Any, fail_at: int) -> None:
        self._producer = producer
        self._sends = 0
        self._fail_at = fail_at

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        self._sends += 1
        if self._sends == self._fail_at:
            raise KafkaTimeoutError("test: this receipt was never acknowledged")
        return await self._producer.send(*args, **kwargs)


async def test_a_failed_write_fails_its_caller_and_the_chain_continues_from_the_topic(
    hub_settings: HubSettings,
) -> None:
    await ensure_topics(hub_settings)
    producer = make_producer(hub_settings)
    await producer.start()
    try:
        log = DisclosureLog(hub_settings, producer=_FailingOnce(producer, fail_at=4))
        await log.start()
        for n in range(3):
            await log.record(disclosure("kela", "e" * 32, n), 0)
        with pytest.raises(KafkaTimeoutError):
            await log.record(disclosure("kela", "e" * 32, 3), 0)
        assert log.head("kela", 0) is None  # forgotten: recovered before the next write
        for n in range(4, 6):
            await log.record(disclosure("kela", "e" * 32, n), 0)
        assert log.head("kela", 0)[0] == 4  # type: ignore[index]
        await log.stop()
    finally:
        await producer.stop()
    report = await verify_chains(hub_settings)
    assert report.ok, [str(p) for p in report.problems]
    assert report.entries == 5


class _Gated:
    """A producer whose sends wait for ``gate`` while it is closed (a receipt still in flight)."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self.gate = asyncio.Event()
        self.gate.set()
        self.sending = asyncio.Event()
        """Set once a send waits at the closed gate."""

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        if not self.gate.is_set():
            self.sending.set()
        await self.gate.wait()
        return await self._producer.send(*args, **kwargs)


@pytest.mark.parametrize("queued", [False, True], ids=["in-flight", "in-flight-and-queued"])
async def test_a_released_chain_is_never_extended_from_its_stale_head(
    hub_settings: HubSettings, queued: bool
) -> None:
    """The old owner of an outbox partition has a receipt in flight (and maybe one queued) when
    the partition is revoked; the new owner extends the chain; then the old owner writes again
    (the partition came back, or a late receipt). Its head from before the release must not be
    trusted: it re-reads the head from the topic, so the chain stays one sequence and ``hub
    audit verify`` finds nothing (before the fix: seq 2 written twice, "written again")."""
    await ensure_topics(hub_settings)
    producer = make_producer(hub_settings)
    await producer.start()
    gated = _Gated(producer)
    old, new = DisclosureLog(hub_settings, producer=gated), DisclosureLog(hub_settings)
    await old.start()
    await new.start()
    try:
        await old.record(disclosure("kela", "f" * 32, 0), 0)
        assert old.head("kela", 0) is not None
        gated.gate.clear()
        late = [asyncio.ensure_future(old.record(disclosure("kela", "f" * 32, 1), 0))]
        await asyncio.wait_for(gated.sending.wait(), 10)  # the writer took it and is sending
        if queued:  # a second receipt waits for the next batch
            late.append(asyncio.ensure_future(old.record(disclosure("kela", "f" * 32, 2), 0)))
            await asyncio.sleep(0.01)
        old.release("kela", 0)  # revoked with a receipt pending
        after_release = old.head("kela", 0)
        gated.gate.set()
        await asyncio.gather(*late)
        after_late_write = old.head("kela", 0)
        for n in range(10, 12):  # the new owner continues the chain
            await new.record(disclosure("kela", "f" * 32, n), 0)
        await old.record(disclosure("kela", "f" * 32, 20), 0)  # back at the old owner
        written = len(late) + 4
        last = old.head("kela", 0)
    finally:
        gated.gate.set()  # a failed assertion must not leave the writer waiting
        await old.stop()
        await new.stop()
        await producer.stop()
    report = await verify_chains(hub_settings)
    assert report.ok, [str(p) for p in report.problems]
    assert report.entries == written
    seqs = sorted(decode_entry(r.value)["seq"] for r in await records(hub_settings))
    assert seqs == list(range(written))
    assert after_release is None
    assert after_late_write is None  # the late write's completion did not restore a head
    assert last is not None
    assert last[0] == written - 1
