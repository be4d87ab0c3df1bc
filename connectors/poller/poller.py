"""The register poller: read a change feed over X-Road page by page and publish what it says.

One page at a time: fetch the items after the cursor, map them to events, record the rejects,
and hand the events to the sink together with the page's next cursor as a
:class:`~hub.sink.SourcePosition`. The sink commits the events and the position in ONE Kafka
transaction, as Kafka Connect's exactly-once source connectors commit their offsets: the page
is either written with its cursor or not at all, so a poller killed at any moment resumes,
from Kafka alone (an empty state directory, a new pod), exactly after the last page written.
Whatever fails before the commit leaves the position where it was, and the page is read again.

The sink refuses a whole call when one submission breaks its rules, naming the refused ones:
a conflict (the fact's key with another digest) is a register correction, published as a new
event (see :mod:`connectors.poller.mapping`); any other refusal (an event that cannot be
encoded, an event id taken) rejects that item like a bad one; the rest is then sent again.

Errors worth a retry (X-Road unavailable, 5xx, 429, sink unavailable) back off exponentially with
full jitter, honouring Retry-After up to the cap; a success resets the backoff. A refusal (4xx),
a TLS certificate problem or an answer that breaks the contract is a configuration problem:
logged as an error and, in a continuous run, retried only at the cap; a bounded run (tests,
one-shot CLI) raises it instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from pydantic import ValidationError

from connectors.poller.cursor import LegacyCursorFile, RejectLog
from connectors.poller.mapping import ChangeMapper, ChangePage, MappedPage, Origin, Rejection
from connectors.xroad.client import (
    XRoadBadResponse,
    XRoadClient,
    XRoadMisconfigured,
    XRoadService,
    XRoadUnavailable,
)
from hub.identity import Pseudonymizer
from hub.logging import get_logger
from hub.settings import HubSettings
from hub.sink import (
    EventSink,
    IdempotencyConflict,
    Receipt,
    SinkUnavailable,
    SourcePosition,
    Submission,
    SubmissionRefused,
)

log = get_logger(__name__)

#: An awaitable pause; tests pass a fake so that backoff costs no wall time.
Sleep = Callable[[float], Awaitable[None]]

# 2**32 times any sane initial delay is far past any cap; the bound keeps the float finite.
_MAX_EXPONENT = 32


class Backoff:
    """Exponential backoff with full jitter: a delay drawn from [0, min(cap, initial * 2^n)).

    Full jitter spreads the retries of many pollers hit by the same outage, so the provider is
    not met by a synchronised wave when it comes back.
    """

    def __init__(
        self, initial_s: float, max_s: float, uniform: Callable[[], float] = random.random
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"backoff needs 0 < initial ({initial_s}) <= max ({max_s})")
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0
        self._uniform = uniform

    @property
    def ceiling_s(self) -> float:
        """Upper bound of the next delay."""
        return min(self.max_s, self.initial_s * 2.0 ** min(self.failures, _MAX_EXPONENT))

    def next_delay(self, at_least_s: float | None = None) -> float:
        """Delay before the next attempt; *at_least_s* (Retry-After) is honoured up to the cap."""
        delay = self.ceiling_s * self._uniform()
        self.failures += 1
        if at_least_s is not None:
            delay = max(delay, min(at_least_s, self.max_s))
        return delay

    def reset(self) -> None:
        self.failures = 0


@dataclass(frozen=True)
class PageOutcome:
    """What one acknowledged page did; ``written`` counts ``corrections`` too."""

    items: int
    written: int
    duplicates: int
    corrections: int
    rejected: int
    has_more: bool


@dataclass
class PollStats:
    """Totals of one :meth:`RegisterPoller.run`."""

    pages: int = 0
    items: int = 0
    written: int = 0
    duplicates: int = 0
    corrections: int = 0
    rejected: int = 0
    errors: int = 0

    def add(self, page: PageOutcome) -> None:
        self.pages += 1
        self.items += page.items
        self.written += page.written
        self.duplicates += page.duplicates
        self.corrections += page.corrections
        self.rejected += page.rejected


@dataclass
class _Pending:
    """A submission on its way to the sink, with where it came from."""

    submission: Submission
    origin: Origin
    correction: bool = False


class RegisterPoller:
    """Polls one X-Road change feed into an :class:`EventSink`, resuming from the position the
    sink committed with the events (``poller:<service id>``)."""

    def __init__(
        self,
        *,
        client: XRoadClient,
        service: XRoadService,
        sink: EventSink,
        mapper: ChangeMapper,
        reject_log: RejectLog,
        legacy_cursor: LegacyCursorFile | None = None,
        page_size: int = 100,
        interval_s: float = 30.0,
        backoff: Backoff | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.client = client
        self.service = service
        self.sink = sink
        self.mapper = mapper
        self.reject_log = reject_log
        self.legacy_cursor = legacy_cursor
        self.page_size = page_size
        self.interval_s = interval_s
        self.backoff = backoff or Backoff(1.0, 60.0)
        self._sleep = sleep
        self.source = f"poller:{service.id}"
        #: Where the feed is read up to; known once :meth:`resume` ran.
        self.cursor: str | None = None
        self._resumed = False
        self._migrating = False
        #: Rejects recorded for the page after ``cursor`` (how many of each: two items without
        #: an id may be rejected alike): a retry of the page does not repeat them.
        self._recorded: Counter[Rejection] = Counter()

    @classmethod
    def from_settings(
        cls,
        settings: HubSettings,
        *,
        client: XRoadClient,
        service: XRoadService,
        sink: EventSink,
        sleep: Sleep | None = None,
        uniform: Callable[[], float] = random.random,
    ) -> RegisterPoller:
        return cls(
            client=client,
            service=service,
            sink=sink,
            mapper=ChangeMapper(
                service,
                Pseudonymizer.from_settings(settings),
                clock_skew=timedelta(seconds=settings.ingest_clock_skew_s),
            ),
            reject_log=RejectLog.for_service(settings.state_dir, service),
            legacy_cursor=LegacyCursorFile.for_service(settings.state_dir, service),
            page_size=settings.poller_page_size,
            interval_s=settings.poller_interval_s,
            backoff=Backoff(
                settings.poller_backoff_initial_s, settings.poller_backoff_max_s, uniform
            ),
            sleep=sleep,
        )

    async def resume(self) -> str | None:
        """Load the cursor: the sink's committed position, else an old cursor file (once)."""
        cursor = await self.sink.position_of(self.source)
        if cursor is None and self.legacy_cursor is not None:
            cursor = await asyncio.to_thread(self.legacy_cursor.load)
            self._migrating = cursor is not None
            if self._migrating:
                log.info(
                    "poller.cursor_migrating",
                    service=self.service.id,
                    path=str(self.legacy_cursor.path),
                )
        self.cursor, self._resumed = cursor, True
        log.info("poller.resumed", service=self.service.id, cursor=cursor)
        return cursor

    async def poll_page(self) -> PageOutcome:
        """Fetch, map and publish the page after the cursor, the next cursor in the same commit."""
        if not self._resumed:
            await self.resume()
        params: dict[str, str | int] = {"limit": self.page_size}
        if self.cursor is not None:
            params["after"] = self.cursor
        body = await self.client.get_json(self.service, params)
        try:
            page = ChangePage.model_validate(body)
        except ValidationError as exc:
            raise XRoadBadResponse(f"{self.service.id}: not a change-feed page: {exc}") from exc
        if page.has_more and page.next_cursor == self.cursor:
            raise XRoadBadResponse(f"{self.service.id}: has_more but the cursor did not move")

        mapped = self.mapper.map_items(page.items)
        await self._reject(mapped.rejections)
        next_cursor = page.next_cursor or self.cursor
        # A migrated cursor is committed even when the feed has nothing new, to retire the file.
        moved = next_cursor != self.cursor or self._migrating
        position = SourcePosition(self.source, next_cursor) if moved and next_cursor else None
        receipts, corrections, refused = await self._publish(mapped, position)
        # Committed: the events and the cursor are in Kafka together.
        if next_cursor != self.cursor:
            self._recorded.clear()
        self.cursor = next_cursor
        if position is not None and self._migrating and self.legacy_cursor is not None:
            await asyncio.to_thread(self.legacy_cursor.retire)
            self._migrating = False

        duplicates = sum(receipt.duplicate for receipt in receipts)
        outcome = PageOutcome(
            items=len(page.items),
            written=len(receipts) - duplicates,
            duplicates=duplicates,
            corrections=corrections,
            rejected=len(mapped.rejections) + refused,
            has_more=page.has_more,
        )
        log.info(
            "poller.page",
            service=self.service.id,
            items=outcome.items,
            written=outcome.written,
            duplicates=outcome.duplicates,
            corrections=outcome.corrections,
            rejected=outcome.rejected,
            has_more=outcome.has_more,
            cursor=self.cursor,
        )
        return outcome

    async def _publish(
        self, mapped: MappedPage, position: SourcePosition | None
    ) -> tuple[list[Receipt], int, int]:
        """Submit the page with its position until the sink takes it: receipts, the number of
        corrections among them, and the number of items the sink refused (rejected here).

        Every round turns at least one submission into a correction (at most once each) or
        drops an item, so this ends; a call with nothing left still commits the position.
        """
        pending = [_Pending(s, o) for s, o in zip(mapped.submissions, mapped.origins, strict=True)]
        refused_items = 0
        while True:
            if not pending and position is None:
                return [], 0, refused_items
            try:
                receipts = await self.sink.submit([p.submission for p in pending], position)
            except SubmissionRefused as refusal:
                if not refusal.indexes:
                    raise  # a refusal that names nothing cannot be worked around here
                if not isinstance(refusal, IdempotencyConflict):
                    bad = {pending[index].origin.item_id for index in refusal.indexes}
                    reason = f"refused by the event log: {refusal.reason}"
                    await self._reject([Rejection(item_id, reason) for item_id in sorted(bad)])
                    refused_items += len(bad)
                    pending = [p for p in pending if p.origin.item_id not in bad]
                    continue
                for index in refusal.indexes:
                    if pending[index].correction:
                        raise  # a correction's key carries its digest: it cannot conflict
                    item = pending[index]
                    item.submission = self.mapper.correction_of(item.submission, item.origin)
                    item.correction = True
                    log.info(
                        "poller.correction",
                        service=self.service.id,
                        item_id=item.origin.item_id,
                        fact=item.origin.kind,
                        corrects=str(item.submission.event.envelope.corrects_event_id),
                    )
                continue
            corrections = sum(
                p.correction and not r.duplicate for p, r in zip(pending, receipts, strict=True)
            )
            return receipts, corrections, refused_items

    async def _reject(self, rejections: list[Rejection]) -> None:
        """Log and record rejects durably BEFORE the commit that moves the cursor past them;
        once per page in this process, however often the page has to be tried again."""
        wanted = Counter(rejections)
        rejections = [r for r, n in wanted.items() for _ in range(max(0, n - self._recorded[r]))]
        self._recorded |= wanted
        for rejection in rejections:
            log.warning(
                "poller.item_rejected",
                service=self.service.id,
                item_id=rejection.item_id,
                reason=rejection.reason,
            )
        await asyncio.to_thread(self.reject_log.append, rejections, self.cursor)

    async def run(
        self,
        max_pages: int | None = None,
        until_idle: bool = False,
        stop_event: asyncio.Event | None = None,
    ) -> PollStats:
        """Poll until *stop_event* is set, *max_pages* pages were acknowledged, or (with
        *until_idle*) the feed has nothing more. Without bounds this runs as a service."""
        stats = PollStats()
        bounded = max_pages is not None or until_idle
        while stop_event is None or not stop_event.is_set():
            if max_pages is not None and stats.pages >= max_pages:
                break
            try:
                outcome = await self.poll_page()
            except (XRoadUnavailable, SinkUnavailable) as exc:
                stats.errors += 1
                delay = self.backoff.next_delay(exc.retry_after_s)
                log.warning(
                    "poller.retrying",
                    service=self.service.id,
                    error=f"{type(exc).__name__}: {exc}",
                    failures=self.backoff.failures,
                    delay_s=round(delay, 3),
                )
                await self._pause(delay, stop_event)
                continue
            except XRoadMisconfigured as exc:
                stats.errors += 1
                log.error(
                    "poller.misconfigured",
                    service=self.service.id,
                    error=f"{type(exc).__name__}: {exc}",
                    hint=f"retrying will not heal this: {exc.hint}",
                    delay_s=self.backoff.max_s,
                )
                if bounded:
                    raise
                await self._pause(self.backoff.max_s, stop_event)
                continue
            self.backoff.reset()
            stats.add(outcome)
            if not outcome.has_more:
                if until_idle:
                    break
                await self._pause(self.interval_s, stop_event)
        return stats

    async def _pause(self, seconds: float, stop_event: asyncio.Event | None) -> None:
        """Sleep, but wake at once when the run is asked to stop."""
        if self._sleep is not None:
            await self._sleep(seconds)
        elif stop_event is None:
            await asyncio.sleep(seconds)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), seconds)
