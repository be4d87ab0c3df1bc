"""Standard Webhooks over httpx: one POST per attempt, signed when it is sent.

``webhook-id`` and ``Idempotency-Key`` are the event id (the receiver drops a second delivery
of it), ``webhook-timestamp`` is the time of this attempt and ``webhook-signature`` the
``standardwebhooks`` package's ``v1,<HMAC-SHA256>`` over ``id.timestamp.body`` with the
endpoint's ``whsec_`` secret. A new timestamp per attempt matters: receivers refuse a timestamp
more than five minutes old, and a retry can come a day after the first attempt.

Every failure is an answer, never an exception (see :class:`~hub.delivery.transport.Transport`):
a connection refused or a timeout is ``status=None``, a receiver's problem text is kept
scrubbed and short, and Retry-After (seconds or an HTTP date) is passed on.

httpx's timeout is per read, so a receiver trickling a byte a second would hold an attempt
(and its slot) for as long as it likes: each attempt has a total deadline of the client's
timeout (``delivery_timeout_s``). The answer is streamed and at most :data:`MAX_ANSWER_BYTES`
of it read; the rest is never buffered, and the connection is closed rather than drained. One
``httpx.AsyncClient`` per destination is shared by its endpoints, so connections to a receiver
are kept alive and reused across its endpoints' paths.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Final

import httpx
from standardwebhooks.webhooks import Webhook

from connectors.xroad.client import retry_after_seconds
from hub.delivery.transport import (
    DeliveryRequest,
    DeliveryResult,
    answered_duplicate,
    problem_from_body,
)
from hub.http_errors import HTTP_FAILURES

#: Connections of one client's pool. httpcore assigns a request to a connection by scanning
#: every connection for every waiting request, so past a dozen or so connections the pool's
#: bookkeeping costs more CPU than the extra parallelism gains (measured against the local
#: receivers with 64 requests in flight: 16 connections gave 2-6x the rate of 64).
POOL_CONNECTIONS: Final = 16
#: Most of an answer's body read: enough for any problem document or ``{"duplicate": true}``.
MAX_ANSWER_BYTES: Final = 64 * 1024


def http_client(timeout_s: float, max_connections: int = POOL_CONNECTIONS) -> httpx.AsyncClient:
    """A client for the endpoints of one destination; requests beyond its connections wait
    in the pool, which counts against neither the receiver's timeout nor an attempt."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, pool=None),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        follow_redirects=False,
        headers={"User-Agent": "te-hub-delivery"},
    )


class WebhookTransport:
    """POSTs to one endpoint URL, signed with that endpoint's secret."""

    def __init__(
        self,
        url: str,
        secret: str,
        client: httpx.AsyncClient,
        *,
        owns_client: bool = False,
        deadline_s: float | None = None,
    ) -> None:
        """``deadline_s``: the longest one attempt may take in all (connect, send, answer);
        None takes the client's read timeout."""
        self.url = url
        self._webhook = Webhook(secret)
        self._client = client
        self._owns_client = owns_client
        self.deadline_s = deadline_s if deadline_s is not None else client.timeout.read or 10.0

    def signed_headers(
        self, request: DeliveryRequest, now: datetime | None = None
    ) -> dict[str, str]:
        at = (now or datetime.now(UTC)).replace(microsecond=0)
        signature = self._webhook.sign(request.event_id, at, request.body.decode())
        return {
            **request.headers,
            "webhook-id": request.event_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature,
        }

    async def send(self, request: DeliveryRequest) -> DeliveryResult:
        headers = self.signed_headers(request)
        try:
            async with asyncio.timeout(self.deadline_s):
                async with self._client.stream(
                    "POST", self.url, content=request.body, headers=headers
                ) as response:
                    content = await _read_at_most(response, MAX_ANSWER_BYTES)
        except (TimeoutError, *HTTP_FAILURES) as error:
            return DeliveryResult.no_answer(error)
        status = response.status_code
        if 200 <= status < 300:
            return DeliveryResult(status=status, duplicate=answered_duplicate(content))
        return DeliveryResult(
            status=status,
            retry_after_s=retry_after_seconds(response.headers.get("Retry-After")),
            problem=problem_from_body(content, response.headers.get("Content-Type"), request.body),
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """The first ``limit`` bytes of the (decoded) body. Leaving the stream unread makes httpx
    close the connection instead of returning it to the pool, so the rest is never read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]
