"""The poller's durable state under ``HUB_STATE_DIR/poller/``: the feed cursor and the rejects.

The cursor is written atomically (temp file, fsync, ``os.replace``, fsync of the folder) and
only after the sink acknowledged the page, so after a crash the file holds either the old or
the new cursor, never half of one, and at most the last page is polled again; the sink's dedupe
keys make that repeat harmless. Rejected items go to an append-only JSON-lines file, written
before the cursor moves past them, so none is lost (a repeated page may list one twice).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from connectors.poller.client import XRoadService
from connectors.poller.mapping import Rejection


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


class CursorStore:
    """Where the feed of one service was read up to."""

    def __init__(self, path: Path, service: XRoadService) -> None:
        self.path = path
        self.service = service

    @classmethod
    def for_service(cls, state_dir: Path, service: XRoadService) -> CursorStore:
        return cls(poller_dir(state_dir) / f"{service.slug}.json", service)

    def load(self) -> str | None:
        """The saved cursor, or None when the feed has never been read (start from the top)."""
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

    def save(self, cursor: str) -> None:
        """Replace the saved cursor atomically and durably."""
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "service": self.service.id,
            "cursor": cursor,
            "saved_at": datetime.now(UTC).isoformat(),
        }
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(record, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _fsync_dir(folder)


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
