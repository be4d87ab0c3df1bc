"""Reading the disclosure log back: verifying every hash chain, and one person's disclosures.

``hub audit verify`` walks every chain of the disclosures topic (see
:mod:`hub.delivery.disclosure` for how entries chain) and reports each break with the chain, the
entry's ``seq`` and where it is (partition and offset): an entry whose hash does not match its
content was altered; a gap in ``seq`` (with a ``prev_hash`` that does not match) means entries
were removed; a ``seq`` lower than expected means an entry was reordered or written again.

Kafka itself cannot rewrite a record in place, so "altered" in practice means a topic rebuilt
(copied without or with changed entries, e.g. after someone recreated it) or records forged into
it. What a hash chain alone cannot show is the removal of a chain's *newest* entries: for that
``verify`` prints every chain's head (seq and hash), and ``--anchors FILE`` checks heads noted
down earlier (``--write-anchors``) are still in the chain, unchanged.

``hub audit person`` answers a GDPR art. 15 request: the identity code is turned into the person
pseudonym (the only person key in the log) and every entry of that pseudonym is listed. The code
is never printed, logged or kept.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.delivery.disclosure import GENESIS_HASH, decode_entry, entry_hash
from hub.kafka.reading import read_topic
from hub.settings import HubSettings


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """One break in a chain: which chain, which entry, where, and what is wrong."""

    chain: str
    seq: int | None
    partition: int
    offset: int
    problem: str

    def __str__(self) -> str:
        entry = f"seq {self.seq}" if self.seq is not None else "unreadable entry"
        return (
            f"chain {self.chain} {entry} (partition {self.partition} offset {self.offset}): "
            f"{self.problem}"
        )


@dataclass
class ChainState:
    """What verification knows of one chain so far."""

    entries: int = 0
    seq: int = -1
    hash: str = GENESIS_HASH
    partition: int = -1
    offset: int = -1


@dataclass
class VerifyReport:
    chains: dict[str, ChainState] = field(default_factory=dict)
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def entries(self) -> int:
        return sum(c.entries for c in self.chains.values())

    def heads(self) -> dict[str, dict[str, Any]]:
        """Every chain's newest entry: what ``--write-anchors`` keeps."""
        return {
            name: {"seq": c.seq, "hash": c.hash, "partition": c.partition, "offset": c.offset}
            for name, c in sorted(self.chains.items())
        }


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One record of the disclosures topic and where it is."""

    partition: int
    offset: int
    key: str | None
    entry: dict[str, Any] | None
    error: str | None = None


async def read_entries(settings: HubSettings) -> AsyncIterator[LogEntry]:
    """Every record of the disclosures topic, each partition in order."""
    async for record in read_topic(settings, settings.topic_disclosures):
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        try:
            yield LogEntry(record.partition, record.offset, key, decode_entry(record.value))
        except ValueError as error:
            yield LogEntry(record.partition, record.offset, key, None, str(error))


class ChainVerifier:
    """Checks entries one by one (each chain's entries in the order they were written)."""

    def __init__(self) -> None:
        self.report = VerifyReport()
        self._anchors_seen: dict[str, str] = {}
        self._anchors: dict[str, tuple[int, str]] = {}

    def expect_anchors(self, anchors: Mapping[str, Mapping[str, Any]]) -> None:
        """Heads noted earlier: each must still be in its chain with the same hash."""
        self._anchors = {name: (int(a["seq"]), str(a["hash"])) for name, a in anchors.items()}

    def add(self, item: LogEntry) -> None:
        chain_name = item.key or "(no key)"
        state = self.report.chains.setdefault(chain_name, ChainState())
        entry = item.entry
        if entry is None:
            self._problem(chain_name, None, item, f"not a disclosure entry ({item.error})")
            return
        try:
            seq = int(entry["seq"])
            prev_hash = str(entry["prev_hash"])
            claimed = str(entry["hash"])
        except (KeyError, TypeError, ValueError):
            self._problem(chain_name, None, item, "entry without seq, prev_hash or hash")
            return
        if entry.get("chain") != item.key:
            self._problem(
                chain_name, seq, item, f"entry names chain {entry.get('chain')!r}, not its key"
            )
        if entry_hash(entry) != claimed:
            self._problem(chain_name, seq, item, "altered: the hash does not match the content")
        expected = state.seq + 1
        if seq > expected:
            missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected}-{seq - 1}"
            self._problem(chain_name, seq, item, f"removed: {missing} missing before this entry")
        elif seq < expected:
            self._problem(
                chain_name,
                seq,
                item,
                f"reordered or written again: seq {expected} expected after seq {state.seq}",
            )
        elif prev_hash != state.hash:
            self._problem(
                chain_name,
                seq,
                item,
                f"prev_hash does not match the hash of seq {state.seq}: an entry was replaced",
            )
        anchor = self._anchors.get(chain_name)
        if anchor is not None and anchor[0] == seq:
            self._anchors_seen[chain_name] = claimed
            if claimed != anchor[1]:
                self._problem(chain_name, seq, item, "differs from the anchor noted earlier")
        state.entries += 1
        state.seq, state.hash = seq, claimed
        state.partition, state.offset = item.partition, item.offset

    def finish(self) -> VerifyReport:
        for name, (seq, _) in sorted(self._anchors.items()):
            if name not in self._anchors_seen:
                state = self.report.chains.get(name, ChainState())
                self.report.problems.append(
                    ChainProblem(
                        name,
                        seq,
                        state.partition,
                        state.offset,
                        f"removed: the anchor seq {seq} noted earlier is gone "
                        f"(the chain ends at seq {state.seq})",
                    )
                )
        return self.report

    def _problem(self, chain: str, seq: int | None, item: LogEntry, text: str) -> None:
        self.report.problems.append(ChainProblem(chain, seq, item.partition, item.offset, text))


async def verify_chains(
    settings: HubSettings, anchors: Mapping[str, Mapping[str, Any]] | None = None
) -> VerifyReport:
    """Walk every chain of the disclosures topic."""
    verifier = ChainVerifier()
    if anchors:
        verifier.expect_anchors(anchors)
    async for item in read_entries(settings):
        verifier.add(item)
    return verifier.finish()


def read_anchors(path: Path) -> dict[str, dict[str, Any]]:
    """Anchors written by ``--write-anchors``; ValueError when the file is not such a file."""
    data = json.loads(path.read_text("utf-8"))
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and "seq" in v and "hash" in v for v in data.values()
    ):
        raise ValueError(f"{path} is not an anchors file (chain → seq, hash)")
    return data


async def person_disclosures(settings: HubSettings, pseudonym: str) -> list[dict[str, Any]]:
    """Every entry of the disclosure log about the person *pseudonym*, oldest first."""
    found = [
        item.entry
        async for item in read_entries(settings)
        if item.entry is not None and item.entry.get("subject") == pseudonym
    ]
    return sorted(found, key=lambda e: (str(e.get("last_attempt_at")), str(e.get("chain"))))
