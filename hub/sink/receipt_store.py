"""The Kafka sink's receipts on disk: SQLite under ``HUB_STATE_DIR``, caught up from the topic.

The compacted receipts topic is the durable truth; this file is a local index of it, so memory
stays bounded however many keys the log has seen, and a restart reads only what is new: the
store remembers, per partition, the offset it has read up to, in the same SQLite transaction as
the receipts. Receipts are looked up by dedupe key and by event id (an event id belongs to its
first fact). A store that is ahead of its topic (the topic was recreated) is emptied and rebuilt.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

from hub.sink.base import Receipt

#: Parameters per ``IN (...)`` query, well below SQLite's limit.
_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    dedupe_key TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    request_digest TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS receipts_by_event_id ON receipts (event_id);
CREATE TABLE IF NOT EXISTS positions (
    partition INTEGER PRIMARY KEY,
    next_offset INTEGER NOT NULL
);
"""


def store_path(state_dir: Path, topic: str) -> Path:
    """``<state dir>/receipts/<receipts topic>.sqlite3`` (topic names are file-name safe)."""
    return state_dir / "receipts" / f"{topic}.sqlite3"


class SqliteReceipts:
    """:class:`~hub.sink.base.ReceiptStore` in one SQLite file, with the topic positions read.

    Several processes on one host may share the file (WAL, busy timeout): inserts keep the
    first receipt of a key and positions only move forward.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __len__(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM receipts").fetchone()
        return int(count)

    def by_keys(self, dedupe_keys: Collection[str]) -> dict[str, Receipt]:
        return {
            r.dedupe_key: r
            for r in self._select("SELECT * FROM receipts WHERE dedupe_key IN ", dedupe_keys)
        }

    def by_event_ids(self, event_ids: Collection[UUID]) -> dict[UUID, Receipt]:
        found: dict[UUID, Receipt] = {}
        for receipt in self._select(
            "SELECT * FROM receipts WHERE event_id IN ", [str(e) for e in event_ids]
        ):
            found.setdefault(receipt.event_id, receipt)
        return found

    def add(self, receipts: Iterable[Receipt], positions: Mapping[int, int] | None = None) -> None:
        """Insert receipts (the first of a key wins) and move the read positions, atomically."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO receipts VALUES (?, ?, ?)",
                [(r.dedupe_key, str(r.event_id), r.request_digest) for r in receipts],
            )
            self._db.executemany(
                "INSERT INTO positions VALUES (?, ?) ON CONFLICT (partition) DO UPDATE "
                "SET next_offset = max(next_offset, excluded.next_offset)",
                list((positions or {}).items()),
            )

    def positions(self) -> dict[int, int]:
        """Per partition, the offset of the next record to read."""
        return dict(self._db.execute("SELECT partition, next_offset FROM positions").fetchall())

    def clear(self) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM receipts")
            self._db.execute("DELETE FROM positions")

    def _select(self, query: str, values: Collection[str]) -> Iterator[Receipt]:
        items = list(values)
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            rows = self._db.execute(query + f"({','.join('?' * len(chunk))})", chunk)
            for dedupe_key, event_id, digest in rows:
                yield Receipt(dedupe_key, UUID(event_id), digest, duplicate=True)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
