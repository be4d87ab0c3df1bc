"""X-Road (Suomi.fi-palveluväylä) REST: the shared client, and the delivery transport."""

from connectors.xroad.client import (
    XRoadBadResponse,
    XRoadClient,
    XRoadError,
    XRoadMember,
    XRoadMisconfigured,
    XRoadRefused,
    XRoadService,
    XRoadTLSError,
    XRoadUnavailable,
    retry_after_seconds,
    tls_verify,
)

__all__ = [
    "XRoadBadResponse",
    "XRoadClient",
    "XRoadError",
    "XRoadMember",
    "XRoadMisconfigured",
    "XRoadRefused",
    "XRoadService",
    "XRoadTLSError",
    "XRoadUnavailable",
    "retry_after_seconds",
    "tls_verify",
]
