"""Which provider runs which enrolment, learnt from the log's ServiceEnrolled events.

A service provider may report participation only in enrolments made with it. The API asks
this directory; it follows the customer-path topic from the beginning and keeps a map of
enrolment id → provider business ID. Only ServiceEnrolled records are decoded: the
CloudEvents ``ce_type`` header tells them apart without touching the others' bodies.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from uuid import UUID

import structlog
from aiokafka.errors import KafkaError

from hub.events.customer_path import ServiceEnrolled
from hub.kafka.reading import read_topic
from hub.serde import EventSerializer, SerdeError, build_serializer
from hub.settings import HubSettings

log = structlog.get_logger(__name__)

_ENROLLED_TYPE = ServiceEnrolled.full_name().encode()
CATCH_UP_WAIT_S = 5.0


class KafkaEnrolmentDirectory:
    """:class:`~connectors.rest_api.auth.EnrolmentDirectory` that follows the customer-path log."""

    def __init__(self, settings: HubSettings, serializer: EventSerializer | None = None) -> None:
        self._settings = settings
        self._serializer = serializer or build_serializer(settings)
        self._providers: dict[UUID, str] = {}
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()

    def __len__(self) -> int:
        return len(self._providers)

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="enrolment-directory")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def provider_of(self, enrolment_id: UUID) -> str | None:
        """The provider of an enrolment; waits briefly for the first catch-up after a start."""
        if not self.caught_up.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self.caught_up.wait(), CATCH_UP_WAIT_S)
        return self._providers.get(enrolment_id)

    def learn(self, record_value: bytes) -> None:
        try:
            decoded = self._serializer.decode(record_value)
        except SerdeError as exc:
            log.warning("enrolments.undecodable", reason=str(exc))
            return
        payload = decoded.record["payload"]
        self._providers[payload["enrolment_id"]] = payload["provider_business_id"]

    async def _follow(self) -> None:
        """Read the log from the beginning and keep following it; start over after errors."""
        while True:
            records = read_topic(
                self._settings,
                self._settings.topic_customer_path,
                follow=True,
                on_caught_up=self._caught_up,
            )
            try:
                async for record in records:
                    if record.value is not None and ("ce_type", _ENROLLED_TYPE) in record.headers:
                        self.learn(record.value)
            except (KafkaError, LookupError, OSError) as exc:
                log.warning("enrolments.follow_failed", error=str(exc))
                await asyncio.sleep(2)

    def _caught_up(self) -> None:
        self.caught_up.set()
        log.info("enrolments.caught_up", enrolments=len(self._providers))
