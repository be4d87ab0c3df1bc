"""A small X-Road REST client (Suomi.fi-palveluväylä) over ``httpx.AsyncClient``.

Shared by the register poller (GET of a change feed) and the X-Road delivery transport (POST of
an event): both talk to the hub's own security server with the same client subsystem and mTLS.

The hub talks to its own security server, which forwards the request to the provider's. Every
request names the hub's client subsystem in ``X-Road-Client`` (mandatory) and carries a fresh
``X-Road-Id``, logged, so a request can be found in both security servers' message logs. Mutual
TLS to the security server is configured from settings.

Errors are split the way a poller must react to them: :class:`XRoadUnavailable` is worth a retry
(connection, timeout, 5xx, 429); the :class:`XRoadMisconfigured` kinds are problems that
retrying soon will not fix: :class:`XRoadRefused` (any other 4xx: access rights, unknown
service, bad client id), :class:`XRoadTLSError` (a certificate not sent, refused or not
trusted) and :class:`XRoadBadResponse` (an answer that breaks the service's contract).
"""

from __future__ import annotations

import email.utils
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Annotated, Any, ClassVar, Final, Self

import httpx
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from hub.http_errors import HTTP_FAILURES, tls_problem
from hub.logging import get_logger
from hub.settings import HubSettings

log = get_logger(__name__)

#: One part of an X-Road identifier; "/" separates the parts, the rest X-Road forbids too.
XRoadPart = Annotated[str, StringConstraints(pattern=r"^[^/\\:;%?#\s]+$")]

HTTP_TOO_MANY_REQUESTS: Final = 429
#: How much of an error body goes into a log line: enough for X-Road's fault message.
_ERROR_BODY_CHARS: Final = 300


class XRoadMember(BaseModel):
    """A subsystem of an X-Road member: who asks (the client) or who answers (the provider)."""

    model_config = ConfigDict(frozen=True)
    form: ClassVar[str] = "INSTANCE/CLASS/MEMBER/SUBSYSTEM"

    instance: XRoadPart
    member_class: XRoadPart
    member_code: XRoadPart
    subsystem_code: XRoadPart

    @classmethod
    def parse(cls, text: str) -> Self:
        """The slash-separated form of :attr:`form`, as in headers and ``/r1/`` paths."""
        parts = text.strip().strip("/").split("/")
        if len(parts) != len(cls.model_fields):
            raise ValueError(f"X-Road identifier must be {cls.form}, got {text!r}")
        try:
            return cls.model_validate(dict(zip(cls.model_fields, parts, strict=True)))
        except ValidationError as exc:
            bad = ", ".join(str(e["loc"][0]) for e in exc.errors())
            raise ValueError(
                f"X-Road identifier {text!r}: bad {bad} (empty, or has / \\ : ; % ? # or space)"
            ) from exc

    @property
    def id(self) -> str:
        """``INSTANCE/CLASS/MEMBER/SUBSYSTEM``, the value of the X-Road-Client header."""
        return f"{self.instance}/{self.member_class}/{self.member_code}/{self.subsystem_code}"


class XRoadService(XRoadMember):
    """A REST service of a provider subsystem."""

    form: ClassVar[str] = "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE"

    service_code: XRoadPart

    @property
    def id(self) -> str:
        return f"{super().id}/{self.service_code}"

    @property
    def path(self) -> str:
        """Path on the security server (X-Road message protocol for REST, version 1)."""
        return f"/r1/{self.id}"

    @property
    def uri(self) -> str:
        """The service as a URI: the ``source_system`` of the events it yields."""
        return f"urn:fi:x-road:{self.id}"

    @property
    def slug(self) -> str:
        """The id as one safe file-name component."""
        return self.id.replace("/", ".")


class XRoadError(Exception):
    """A request to an X-Road service did not give a usable answer."""


class XRoadUnavailable(XRoadError):
    """Transient: the security server or provider is down, slow, failing or throttling.

    ``retry_after_s`` is the provider's Retry-After (429/503) when it sent one.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class XRoadMisconfigured(XRoadError):
    """Something retrying soon will not heal; ``hint`` names the settings to check."""

    hint: ClassVar[str] = (
        "check HUB_XROAD_CLIENT, the service id, the access rights of the client subsystem "
        "and the feed's contract"
    )


class XRoadRefused(XRoadMisconfigured):
    """A 4xx other than 429: the request itself is wrong (access rights, service id, client id)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class XRoadTLSError(XRoadMisconfigured):
    """TLS with the security server failed for a reason of configuration: our client
    certificate was not sent or refused, or the server's certificate is not trusted."""

    hint: ClassVar[str] = (
        "check HUB_XROAD_CLIENT_CERT, HUB_XROAD_CLIENT_KEY and HUB_XROAD_CA_BUNDLE, and that "
        "the security server has our certificate registered"
    )


class XRoadBadResponse(XRoadMisconfigured):
    """An answer that breaks the service's contract (not JSON, wrong shape): the provider or our
    idea of its contract needs fixing, so it is treated like a refusal, not a passing fault."""


def tls_verify(settings: HubSettings) -> ssl.SSLContext | bool:
    """What to pass as httpx ``verify=``: an SSL context for mutual TLS, else system CAs.

    httpx 0.28 deprecates ``cert=`` and ``verify=<path>``; a context carries both the CA bundle
    that checks the security server and the client certificate it checks us by.
    """
    if settings.xroad_client_key is not None and settings.xroad_client_cert is None:
        raise ValueError("HUB_XROAD_CLIENT_KEY is set without HUB_XROAD_CLIENT_CERT")
    if settings.xroad_ca_bundle is None and settings.xroad_client_cert is None:
        return True
    context = ssl.create_default_context(cafile=settings.xroad_ca_bundle)
    if settings.xroad_client_cert is not None:
        context.load_cert_chain(settings.xroad_client_cert, settings.xroad_client_key)
    return context


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delay-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class XRoadClient:
    """Requests to X-Road REST services through the hub's security server."""

    def __init__(
        self,
        security_server_url: str,
        client: XRoadMember,
        *,
        user_id: str | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.client = client
        self.user_id = user_id
        self._http = httpx.AsyncClient(
            base_url=security_server_url,
            verify=verify,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"Accept": "application/json"},
        )

    @classmethod
    def from_settings(
        cls, settings: HubSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> XRoadClient:
        if settings.xroad_security_server_url is None or settings.xroad_client is None:
            raise ValueError(
                "HUB_XROAD_SECURITY_SERVER_URL and HUB_XROAD_CLIENT must be set to use X-Road"
            )
        return cls(
            str(settings.xroad_security_server_url),
            XRoadMember.parse(settings.xroad_client),
            user_id=settings.xroad_user_id,
            verify=tls_verify(settings),
            timeout_s=settings.xroad_timeout_s,
            transport=transport,
        )

    def _headers(self) -> dict[str, str]:
        headers = {"X-Road-Client": self.client.id, "X-Road-Id": str(uuid.uuid4())}
        if self.user_id is not None:
            headers["X-Road-UserId"] = self.user_id
        return headers

    async def get_json(self, service: XRoadService, params: dict[str, str | int]) -> Any:
        """GET the service with query *params* and return the decoded JSON body.

        Raises XRoadUnavailable (retry) or an XRoadMisconfigured kind (fix something).
        """
        headers = self._headers()
        response = await self._exchange(
            service, headers, lambda: self._http.get(service.path, params=params, headers=headers)
        )
        status = response.status_code
        if status >= 400:
            # Security servers name their own faults in X-Road-Error (e.g. Server.ServerProxy...).
            detail = response.headers.get("X-Road-Error") or response.text[:_ERROR_BODY_CHARS]
            message = f"{service.id}: HTTP {status}: {detail}"
            if status >= 500 or status == HTTP_TOO_MANY_REQUESTS:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                raise XRoadUnavailable(message, retry_after)
            raise XRoadRefused(message, status)
        try:
            return response.json()
        except ValueError as exc:
            raise XRoadBadResponse(f"{service.id}: HTTP {status} answer is not JSON") from exc

    async def post(
        self, service: XRoadService, content: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        """POST *content* to the service with *headers* (plus the X-Road ones) and return the
        answer whatever its status: the delivery loop decides what a status means.

        Raises XRoadUnavailable when nothing was answered, XRoadTLSError for a TLS
        configuration problem.
        """
        sent = {**headers, **self._headers()}
        return await self._exchange(
            service, sent, lambda: self._http.post(service.path, content=content, headers=sent)
        )

    async def _exchange(
        self,
        service: XRoadService,
        headers: dict[str, str],
        request: Callable[[], Awaitable[httpx.Response]],
    ) -> httpx.Response:
        """One request, logged with its X-Road-Id; no answer becomes an XRoadError."""
        started = time.monotonic()
        context = {"service": service.id, "x_road_id": headers["X-Road-Id"]}
        try:
            response = await request()
        except HTTP_FAILURES as exc:
            # Nothing was answered. A certificate problem may surface only on the first read,
            # as a raw ssl.SSLError: it is a configuration error, not a passing outage.
            problem = tls_problem(exc)
            log.warning(
                "xroad.request_failed", **context, error=type(exc).__name__, tls_problem=problem
            )
            if problem is not None:
                raise XRoadTLSError(f"{service.id}: TLS to the security server: {problem}") from exc
            raise XRoadUnavailable(f"{service.id}: {type(exc).__name__}: {exc}") from exc
        elapsed_ms = round((time.monotonic() - started) * 1000)
        log.info("xroad.request", **context, status=response.status_code, elapsed_ms=elapsed_ms)
        return response

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
