"""Delivery to a receiver behind X-Road: POST of the event's JSON to its REST service.

The hub's security server carries the request to the receiver's (mTLS from the
``HUB_XROAD_*`` settings, ``X-Road-Client`` naming the hub's subsystem, a fresh
``X-Road-Id`` logged); the service is the destination endpoint's ``xroad_service``. X-Road
signs and logs every message itself (the message log), so no Standard Webhooks signature is
added; ``Idempotency-Key`` is, since a retried request is a new X-Road message. A TLS
configuration error is an answer without status like any other, so the schedule and the
breaker handle it, and its problem text names the settings to check.
"""

from __future__ import annotations

from connectors.xroad.client import (
    XRoadClient,
    XRoadError,
    XRoadService,
    XRoadUnavailable,
    retry_after_seconds,
)
from hub.delivery.transport import (
    DeliveryRequest,
    DeliveryResult,
    answered_duplicate,
    problem_from_body,
    problem_text,
)


class XRoadTransport:
    """POSTs to one X-Road REST service through a shared :class:`XRoadClient`."""

    def __init__(self, client: XRoadClient, service: XRoadService) -> None:
        self.client = client
        self.service = service

    async def send(self, request: DeliveryRequest) -> DeliveryResult:
        try:
            response = await self.client.post(self.service, request.body, request.headers)
        except XRoadUnavailable as error:
            return DeliveryResult(status=None, problem=problem_text(type(error).__name__))
        except XRoadError as error:  # TLS configuration, named with the settings to check
            hint = getattr(error, "hint", "")
            return DeliveryResult(status=None, problem=problem_text(f"{error}; {hint}"))
        status = response.status_code
        if 200 <= status < 300:
            return DeliveryResult(status=status, duplicate=answered_duplicate(response.content))
        problem = response.headers.get("X-Road-Error")
        return DeliveryResult(
            status=status,
            retry_after_s=retry_after_seconds(response.headers.get("Retry-After")),
            problem=problem_text(problem, request.body)
            if problem
            else problem_from_body(
                response.content, response.headers.get("Content-Type"), request.body
            ),
        )

    async def aclose(self) -> None:
        """The client is shared by every endpoint; its owner closes it."""
