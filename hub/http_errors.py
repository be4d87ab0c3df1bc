"""How the hub tells the failures of its own HTTP calls apart (X-Road, the schema registry).

httpx wraps most network failures in ``httpx.HTTPError``, but not all TLS ones: with TLS
1.3 a server that refuses our client certificate says so in an alert that arrives after the
handshake, on the first read, and anyio passes that ``ssl.SSLError`` up raw, past httpx's
exception mapping. :data:`HTTP_FAILURES` is what a caller must catch, and :func:`tls_problem`
says whether TLS was to blame. A TLS failure other than a cut connection is a configuration
problem (a certificate not sent, not trusted, expired; TLS spoken to a plain port): retrying
soon will not heal it, so callers report it as such, never as a passing outage.
"""

from __future__ import annotations

import ssl
from typing import Final

import httpx

#: Everything an httpx request can raise when no usable answer came back.
HTTP_FAILURES: Final = (httpx.HTTPError, ssl.SSLError)

#: OpenSSL reasons of a peer that did not accept our client certificate (alerts it sent).
_CLIENT_CERTIFICATE_REFUSED: Final = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
#: How far down ``__cause__``/``__context__`` to look for the ssl error httpx wrapped.
_CHAIN_DEPTH: Final = 8


def _ssl_error_in(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(_CHAIN_DEPTH):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def tls_problem(exc: BaseException) -> str | None:
    """A sentence naming the TLS failure behind *exc*, or None when TLS is not to blame.

    A connection cut during or after the handshake (EOF, zero return, a system call error)
    is a network fault worth a retry, so it gives None too.
    """
    error = _ssl_error_in(exc)
    if error is None or isinstance(
        error, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError
    ):
        return None
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            "the server's certificate is not trusted "
            f"({error.verify_message or error.reason}): check the CA bundle"
        )
    reason = str(getattr(error, "reason", None) or type(error).__name__)
    if reason in _CLIENT_CERTIFICATE_REFUSED:
        return (
            f"the server refused our client certificate ({reason}): none was sent, or it is "
            "not one the server trusts; check the client certificate and key"
        )
    return f"TLS failed ({reason})"
