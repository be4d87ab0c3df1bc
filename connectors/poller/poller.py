"""The register poller: read a change feed over X-Road page by page and publish what it says.

One page at a time: fetch the items after the saved cursor, map them to events, hand them to the
sink, and only once the sink acknowledged them record the rejects and move the cursor. Whatever
fails in between (network, provider, broker, a crash) leaves the cursor where it was, so the page
is read again and the sink's dedupe keys turn the repeat into duplicates that write nothing.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import ValidationError

from connectors.poller.client import (
    XRoadBadResponse,
    XRoadClient,
    XRoadMisconfigured,
    XRoadService,
    XRoadUnavailable,
)
from connectors.poller.cursor import CursorStore, RejectLog
from connectors.poller.mapping import ChangeMapper, ChangePage
from hub.identity import Pseudonymizer
from hub.logging import get_logger
from hub.settings import HubSettings
from hub.sink import EventSink, SinkUnavailable

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
    """What one acknowledged page did."""

    items: int
    written: int
    duplicates: int
    rejected: int
    has_more: bool


@dataclass
class PollStats:
    """Totals of one :meth:`RegisterPoller.run`."""

    pages: int = 0
    items: int = 0
    written: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: int = 0

    def add(self, page: PageOutcome) -> None:
        self.pages += 1
        self.items += page.items
        self.written += page.written
        self.duplicates += page.duplicates
        self.rejected += page.rejected


class RegisterPoller:
    """Polls one X-Road change feed into an :class:`EventSink`, resuming from a durable cursor."""

    def __init__(
        self,
        *,
        client: XRoadClient,
        service: XRoadService,
        sink: EventSink,
        mapper: ChangeMapper,
        cursor_store: CursorStore,
        reject_log: RejectLog,
        page_size: int = 100,
        interval_s: float = 30.0,
        backoff: Backoff | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.client = client
        self.service = service
        self.sink = sink
        self.mapper = mapper
        self.cursor_store = cursor_store
        self.reject_log = reject_log
        self.page_size = page_size
        self.interval_s = interval_s
        self.backoff = backoff or Backoff(1.0, 60.0)
        self._sleep = sleep
        self.cursor = cursor_store.load()

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
            mapper=ChangeMapper(service, Pseudonymizer.from_settings(settings)),
            cursor_store=CursorStore.for_service(settings.state_dir, service),
            reject_log=RejectLog.for_service(settings.state_dir, service),
            page_size=settings.poller_page_size,
            interval_s=settings.poller_interval_s,
            backoff=Backoff(
                settings.poller_backoff_initial_s, settings.poller_backoff_max_s, uniform
            ),
            sleep=sleep,
        )

    async def poll_page(self) -> PageOutcome:
        """Fetch, map and publish the page after the cursor; move the cursor once acknowledged."""
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
        receipts = await self.sink.submit(mapped.submissions) if mapped.submissions else []
        # Acknowledged: from here on a crash only repeats this page, which the sink dedupes.
        for rejection in mapped.rejections:
            log.warning(
                "poller.item_rejected",
                service=self.service.id,
                item_id=rejection.item_id,
                reason=rejection.reason,
            )
        await asyncio.to_thread(self.reject_log.append, mapped.rejections, self.cursor)
        next_cursor = page.next_cursor or self.cursor
        if next_cursor is not None and next_cursor != self.cursor:
            await asyncio.to_thread(self.cursor_store.save, next_cursor)
            self.cursor = next_cursor

        duplicates = sum(receipt.duplicate for receipt in receipts)
        outcome = PageOutcome(
            items=len(page.items),
            written=len(receipts) - duplicates,
            duplicates=duplicates,
            rejected=len(mapped.rejections),
            has_more=page.has_more,
        )
        log.info(
            "poller.page",
            service=self.service.id,
            items=outcome.items,
            written=outcome.written,
            duplicates=outcome.duplicates,
            rejected=outcome.rejected,
            has_more=outcome.has_more,
        )
        return outcome

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
