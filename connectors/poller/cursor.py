"""The poller's local files under ``HUB_STATE_DIR/poller/``: the rejects, and an old cursor.

The cursor itself lives in Kafka, committed in the events' transaction (see
:mod:`connectors.poller.poller`); :class:`LegacyCursorFile` only reads the file of earlier
versions once, to migrate. Rejected items go to an append-only JSON-lines file, written and
fsynced before the transaction that moves the cursor past them, so none is lost (a page read
again after a crash may list one twice). They stay a local file, not dead letters: they are
feed items that never became events, to be fixed in the register, and every one is also in
the structured log, which a pod's log collection keeps when its state directory is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from connectors.poller.mapping import Rejection
from connectors.xroad.client import XRoadService


class CursorFileError(ValueError):
    """The cursor file exists but cannot be trusted; restarting from zero silently would hide it."""


def poller_dir(state_dir: Path) -> Path:
    return state_dir / "poller"


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: the new directory entry must reach the disk too (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LegacyCursorFile:
    """The cursor file of pollers before the cursor moved to Kafka, read once to migrate.

    When the sink holds no position for the feed yet, a cursor left here by an earlier version
    is where the poller resumes (rather than re-reading the whole register from the top); the
    first position committed to Kafka retires the file (renamed ``*.migrated``), so it is never
    read again and the sink's position alone decides from then on.
    """

    def __init__(self, path: Path, service: XRoadService) -> None:
        self.path = path
        self.service = service

    @classmethod
    def for_service(cls, state_dir: Path, service: XRoadService) -> LegacyCursorFile:
        return cls(poller_dir(state_dir) / f"{service.slug}.json", service)

    def load(self) -> str | None:
        """The saved cursor, or None when there is no file."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise CursorFileError(f"{self.path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("service") != self.service.id:
            raise CursorFileError(f"{self.path}: not a cursor of {self.service.id}")
        cursor = data.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise CursorFileError(f"{self.path}: cursor is not a string")
        return cursor

    def retire(self) -> None:
        """Rename the file once its cursor is in Kafka; a missing file is fine."""
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, self.path.with_name(self.path.name + ".migrated"))
            _fsync_dir(self.path.parent)


class RejectLog:
    """Append-only list of the feed items that could not become events, for someone to fix."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_service(cls, state_dir: Path, service: XRoadService) -> RejectLog:
        return cls(poller_dir(state_dir) / f"{service.slug}.rejected.jsonl")

    def append(self, rejections: Sequence[Rejection], after_cursor: str | None) -> None:
        """Record *rejections* durably; *after_cursor* is where their page starts in the feed."""
        if not rejections:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC).isoformat()
        with self.path.open("a", encoding="utf-8") as out:
            for rejection in rejections:
                line = {
                    "item_id": rejection.item_id,
                    "reason": rejection.reason,
                    "after_cursor": after_cursor,
                    "rejected_at": now,
                }
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
