"""The ASGI edge of the ingest API: request ids, body limits, media types, access log."""

import asyncio
import re
import time
import uuid
from email.message import Message
from typing import Final

import structlog
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from connectors.rest_api.endpoints import BULK_PATH, NDJSON, SINGLE_MAX_BYTES
from connectors.rest_api.metrics import IngestMetrics
from connectors.rest_api.problems import (
    ProblemError,
    internal_error,
    render_problem,
)
from hub.identity import contains_identity_code
from hub.logging import get_logger

log = get_logger(__name__)

#: Method labels of the metrics; anything else is "other" (clients choose the method).
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_DIGITS = re.compile(r"[0-9]+")
#: A Content-Length longer than this is beyond any limit (and beyond an int's cheap parse).
_MAX_LENGTH_DIGITS: Final = 18
#: Read-only paths under /v1/ (``connectors.rest_api.indicators``): they take no body, so a POST
#: there is the router's 405, not a media-type or size problem.
_READ_ONLY_PATHS: Final = frozenset({"/v1/indicators"})


# --- the edge: request id, limits, media types, access log, metrics ---------------------------


def media_type_of(content_type: str | None) -> str | None:
    if not content_type:
        return None
    message = Message()
    message["content-type"] = content_type
    return message.get_content_type()


def is_json_media(media_type: str | None) -> bool:
    return media_type == "application/json" or bool(media_type and media_type.endswith("+json"))


class IngestEdge:
    """Pure ASGI middleware around every request.

    It gives each request an id (a sane incoming X-Request-ID or a new one, echoed back), refuses
    bodies that are too large or of the wrong media type before anything parses them, gives a
    body that trickles in *body_read_timeout_s* to arrive once the handler reads it (408, and
    the connection closed: slow clients must not hold workers), counts and logs every answer,
    and turns any exception that escaped the handlers into a 500 problem.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: IngestMetrics,
        bulk_max_bytes: int,
        body_read_timeout_s: float,
        known: set[str],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.bulk_max_bytes = bulk_max_bytes
        self.body_read_timeout_s = body_read_timeout_s
        self.known = known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = headers.get("x-request-id", "")
        if not _REQUEST_ID.fullmatch(request_id) or contains_identity_code(request_id):
            request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        instance = f"urn:te-hub:request:{request_id}"
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: AsgiMessage) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        # client_id is bound here too (as None) so that the reset below also undoes the
        # authentication's binding, even when requests share one task (as in tests).
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id, client_id=None)
        try:
            path: str = scope["path"]
            limit = self.bulk_max_bytes if path == BULK_PATH else SINGLE_MAX_BYTES
            refusal = self._refuse(scope["method"], path, headers, limit)
            if refusal is not None:
                response = render_problem(
                    refusal, instance=instance, on_problem=self.metrics.reject
                )
                await response(scope, receive, send_with_id)
                return
            await self.app(scope, _guarded(receive, limit, self.body_read_timeout_s), send_with_id)
        except Exception as error:
            if response_started:
                raise
            log.error("unhandled error", exc_info=error)
            response = render_problem(
                internal_error(), instance=instance, on_problem=self.metrics.reject
            )
            await response(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or (
                scope["path"] if scope["path"] in self.known else "unmatched"
            )
            elapsed = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.requests.labels(route=label, method=method, status=status).inc()
            self.metrics.request_seconds.labels(route=label).observe(elapsed)
            state = scope.get("state", {})
            log.info(
                "request handled",
                method=scope["method"],
                route=label,
                status=status,
                duration_ms=round(elapsed * 1000, 1),
                client_id=state.get("client_id"),
            )
            structlog.contextvars.reset_contextvars(**tokens)

    def _refuse(self, method: str, path: str, headers: Headers, limit: int) -> ProblemError | None:
        if method != "POST" or not path.startswith("/v1/") or path in _READ_ONLY_PATHS:
            return None
        length = headers.get("content-length", "")
        # ASCII digits only ("²".isdigit() holds), and no int() of a 5,000-digit header.
        if _DIGITS.fullmatch(length) and (len(length) > _MAX_LENGTH_DIGITS or int(length) > limit):
            return ProblemError(
                "content-too-large", f"the body is larger than this endpoint's {limit} bytes"
            )
        media_type = media_type_of(headers.get("content-type"))
        allowed = "application/json" + (f" or {NDJSON}" if path == BULK_PATH else "")
        if is_json_media(media_type) or (path == BULK_PATH and media_type == NDJSON):
            return None
        return ProblemError(
            "unsupported-media-type",
            f"send the body as {allowed}",
            headers={"Accept-Post": allowed.replace(" or ", ", ")},
        )


def _guarded(receive: Receive, limit: int, timeout_s: float) -> Receive:
    """*receive* that fails with 413 once the body exceeds *limit* (chunked bodies too) and with
    408 when the body is not complete *timeout_s* after it was first read.

    The deadline is for the whole body, not for each piece: a client that sends a byte every few
    seconds would pass any per-read timeout. Once the body is complete, reads (the server's
    disconnect notice) wait as long as they must.
    """
    total = 0
    deadline: float | None = None
    complete = False

    async def receive_guarded() -> AsgiMessage:
        nonlocal total, deadline, complete
        if complete:
            return await receive()
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            log.info("request rejected", reason="request-timeout", bytes_read=total)
            raise ProblemError(
                "request-timeout",
                f"the body did not arrive within {timeout_s:g} s; send it again, faster",
                headers={"Connection": "close"},
            ) from None
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > limit:
                raise StarletteHTTPException(413)
            complete = not message.get("more_body", False)
        return message

    return receive_guarded
