"""The ingest API: municipal systems, service providers and payers POST customer-path events.

``create_app`` builds a FastAPI app around an :class:`~hub.sink.EventSink`. A request is
authenticated (API key), checked against the client's scopes, validated (schema, then the rules
across fields), authorised on its data (municipality, provider's enrolment, payer), turned into a
:class:`~hub.events.CustomerPathEvent` and written with ONE ``sink.submit`` call; the answer (202)
comes only after the sink returned, i.e. after the broker acknowledged the write.

Idempotency. Every submission has a dedupe key, namespaced by the client id:

* the ``Idempotency-Key`` header when sent (IETF draft "The Idempotency-Key HTTP Header Field");
* else the client's ``event_id``;
* else the request digest, of what the client sent (so an identical resend is one event);
* a correction (``corrects_event_id``, perhaps ``retracted``) adds ``:corrects:<id>`` (and
  ``:retracted``) to any of these (``hub.intake.dedupe``): it is a new version of the fact, never
  a repeat of the one it corrects, even under the same Idempotency-Key; resent, it is a repeat
  of itself.

A repeated key with the same request answers the ORIGINAL result (same event id, 202,
``Idempotent-Replayed: true``); a repeated key with a different request is
``idempotency-conflict`` (422, as the draft recommends; 409 would suggest a retry could help).
An event id belongs to its first fact, whoever sent it: an event id the log holds for another
fact is 409 ``event-id-taken`` (receivers drop duplicates by event id, so writing it would make
the first fact vanish). An event that validates but cannot be encoded for the log is 422
``event-not-writable``. The Idempotency-Key itself is kept only as a keyed digest.

A bulk is all or none: under an Idempotency-Key its first item is written under the key itself
and the others under ``<key>#<index>`` (a correction item with its correction parts), each with
the digest of the whole body (so one key for a single request and for a bulk, or a retry with
one more item, is a conflict); without one, each item is keyed as above. When the sink refuses
any item, nothing is written and the problem lists the refused items.
"""

# No ``from __future__ import annotations``: FastAPI reads the handlers' annotations at run
# time, and the dependencies in them are closures of create_app.

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

import structlog
from fastapi import Depends, FastAPI, Header, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
)
from pydantic import BaseModel, Field, ValidationError
from pydantic_core import from_json, to_json

from connectors.rest_api.asyncapi_routes import add_asyncapi_routes
from connectors.rest_api.auth import (
    Denial,
    EnrolmentDirectory,
    IngestClient,
    IngestClients,
    denials,
    scope_denial,
)
from connectors.rest_api.edge import IngestEdge, media_type_of
from connectors.rest_api.endpoints import (
    API_VERSION,
    BULK_PATH,
    ENDPOINTS,
    NDJSON,
    PATH_OF,
    kebab,
)
from connectors.rest_api.indicators import add_indicator_routes
from connectors.rest_api.metrics import IngestMetrics
from connectors.rest_api.openapi import (
    ACCEPTED_HEADERS,
    POST_PROBLEMS,
    openapi_builder,
    problem_responses,
)
from connectors.rest_api.problems import ProblemError, install_problem_handlers
from hub.identity import Pseudonymizer
from hub.intake.convert import NotJson, parse_request, request_digest, to_event
from hub.intake.dedupe import request_dedupe_key, versioned_key
from hub.intake.enrolments import DirectoryCatchingUp
from hub.intake.errors import FieldError, field_errors, json_pointer
from hub.intake.requests import (
    BULK_ITEM_ADAPTER,
    REQUEST_TYPES,
    IngestRequest,
    RuleViolation,
    bulk_violations,
)
from hub.logging import bind_event_context, get_logger, redact_text
from hub.settings import HubSettings
from hub.sink import (
    EventIdTaken,
    EventNotWritable,
    EventSink,
    IdempotencyConflict,
    Receipt,
    SinkUnavailable,
    Submission,
    SubmissionRefused,
)

log = get_logger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


#: Where the docs pages' Swagger UI and ReDoc files are served (from the fastapi-offline package).
DOCS_ASSETS_PATH: Final = "/docs-assets"
DESCRIPTION: Final = """
Inbound REST API of the TE integration hub. Municipal employment-service systems, service
providers and benefit payers POST customer-path facts; the hub validates them, replaces the
personal identity code by a keyed pseudonym in the event key, and writes them to the
customer-path event log. **202 means the log acknowledged the write.**

* Authentication: `Authorization: Bearer <key>` or `X-API-Key: <key>`; scopes are event types.
* Idempotency: send `Idempotency-Key` (or your own `event_id`); a retry gets the original answer
  with `Idempotent-Replayed: true`, a different body under the same key gets 422
  `idempotency-conflict`. Without either, identical requests are one event.
* Errors are RFC 9457 problem details (`application/problem+json`) with a stable `type` URI and,
  for validation, every failing field as a JSON pointer. Sent values are never echoed.
* 503 `sink-unavailable` means nothing was stored: retry after `Retry-After` seconds.
"""


# --- response models (documentation) ----------------------------------------------------------


class Accepted(BaseModel):
    """The event is in the log (or was already: see Idempotent-Replayed)."""

    event_id: uuid.UUID = Field(description="Id of the event in the log.")
    status: Literal["accepted"] = "accepted"


class BulkAccepted(BaseModel):
    """Every item is in the log, written in one atomic submission."""

    status: Literal["accepted"] = "accepted"
    event_ids: list[uuid.UUID] = Field(description="Event ids in the order of the items.")


class Status(BaseModel):
    status: str


# --- the app ----------------------------------------------------------------------------------


def _denial_error(denial: Denial, index: int | None = None, line: int | None = None) -> FieldError:
    loc: list[str | int] = [*([] if index is None else [index]), *denial.loc]
    return FieldError(
        pointer=None if denial.missing_scope else json_pointer(loc),
        line=line,
        loc=loc,
        type=denial.slug,
        detail=denial.detail,
    )


def _scope_challenge(scope: str | None) -> dict[str, str] | None:
    if scope is None:
        return None
    return {
        "WWW-Authenticate": f'Bearer realm="te-hub", error="insufficient_scope", scope="{scope}"'
    }


def _forbidden(found: Sequence[Denial]) -> ProblemError:
    """403 for one request, with the specific problem type of the first reason."""
    first = found[0]
    return ProblemError(
        first.slug,
        first.detail,
        errors=[_denial_error(d) for d in found],
        headers=_scope_challenge(first.missing_scope),
        missing_scope=first.missing_scope,
    )


def _forbidden_items(found: Sequence[tuple[int, Denial]], lines: Sequence[int]) -> ProblemError:
    """403 for the bulk items the client may not send (each error names its reason)."""
    scope = next((d.missing_scope for _, d in found if d.missing_scope), None)
    return ProblemError(
        "forbidden-items",
        f"{len(found)} reason(s) why items may not be sent by this client",
        errors=[_denial_error(d, i, lines[i] if lines else None) for i, d in found],
        headers=_scope_challenge(scope),
        missing_scope=scope,
    )


def _rule_problem(violations: Sequence[RuleViolation], lines: Sequence[int] = ()) -> ProblemError:
    return ProblemError(
        "rule-violation",
        f"{len(violations)} rule(s) across fields are broken",
        errors=[
            FieldError(
                pointer=json_pointer(v.loc),
                line=lines[v.loc[0]] if lines and isinstance(v.loc[0], int) else None,
                loc=list(v.loc),
                type=v.type,
                detail=v.detail,
            )
            for v in violations
        ],
    )


#: Per refusal of the sink: slug, the field at fault, error type, and what is wrong with it.
_REFUSALS: Final[dict[type[SubmissionRefused], tuple[str, tuple[str, ...], str, str]]] = {
    IdempotencyConflict: (
        "idempotency-conflict",
        (),
        "idempotency_conflict",
        "the key of this item was used before for different content",
    ),
    EventIdTaken: (
        "event-id-taken",
        ("event_id",),
        "event_id_taken",
        "this event_id is in the log already for another fact",
    ),
    EventNotWritable: (
        "event-not-writable",
        (),
        "event_not_writable",
        "the event cannot be encoded for the log",
    ),
}


def _refusal_problem(
    refused: SubmissionRefused, lines: Sequence[int], *, single: bool
) -> ProblemError:
    """The problem of a submission the sink refused; nothing of the request was written."""
    slug, field, error_type, detail = _REFUSALS[type(refused)]
    if single:
        message = {
            "idempotency-conflict": "this Idempotency-Key (or event_id) was used before for a "
            "different request; use a new key for a new request",
            "event-id-taken": "this event_id is in the log already for another fact (from "
            "another request or client); give a new event a new event_id",
            "event-not-writable": "the event passed validation but cannot be encoded for the "
            "log; nothing was written",
        }[slug]
        locs: list[list[str | int]] = [list(field)] if field else []
    else:
        message = (
            f"{len(refused.indexes)} item(s) refused ({slug}); nothing of the bulk was written"
        )
        locs = [[index, *field] for index in refused.indexes]
    return ProblemError(
        slug,
        message,
        errors=[
            FieldError(
                pointer=json_pointer(loc),
                line=lines[loc[0]] if lines and isinstance(loc[0], int) else None,
                loc=loc,
                type=error_type,
                detail=detail,
            )
            for loc in locs
        ]
        or None,
    )


def _event_id_clashes(
    items: Sequence[IngestRequest[Any]], digests: Sequence[str]
) -> list[RuleViolation]:
    """Items of one bulk that give one event_id to different content."""
    first: dict[uuid.UUID, int] = {}
    clashes: list[RuleViolation] = []
    for index, item in enumerate(items):
        if item.event_id is None:
            continue
        earlier = first.setdefault(item.event_id, index)
        if digests[earlier] != digests[index]:
            clashes.append(
                RuleViolation(
                    (index, "event_id"),
                    "duplicate_event_id",
                    f"item {earlier} has the same event_id with other content",
                )
            )
    return clashes


def _idempotency_key(raw: str | None) -> str | None:
    """The key, unquoted when sent as the draft's structured-field string (``"abc"``)."""
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or not key.isprintable() or not key.isascii():
        raise ProblemError(
            "invalid-header",
            "Idempotency-Key must be 1-255 printable ASCII characters",
            errors=[
                FieldError(loc=["header", "Idempotency-Key"], type="invalid", detail="bad key")
            ],
        )
    return key


class _Ingest:
    """What the handlers share: the sink, the clients, the clock and the metrics."""

    def __init__(
        self,
        settings: HubSettings,
        sink: EventSink,
        enrolments: EnrolmentDirectory,
        clock: Clock,
        pseudonymizer: Pseudonymizer,
        metrics: IngestMetrics,
    ) -> None:
        self.sink = sink
        self.enrolments = enrolments
        self.clock = clock
        self.pseudonymizer = pseudonymizer
        self.metrics = metrics
        self.clock_skew = timedelta(seconds=settings.ingest_clock_skew_s)
        self.bulk_max_items = settings.ingest_bulk_max_items

    def dedupe_key(
        self,
        client: IngestClient,
        idempotency_key: str | None,
        event_id: uuid.UUID | None,
        digest: str,
        version: IngestRequest[Any] | None = None,
    ) -> str:
        """The request's key; *version* is the request whose correction fields it carries."""
        return request_dedupe_key(
            client.client_id,
            idempotency_key=idempotency_key,
            event_id=event_id,
            digest=digest,
            pseudonymizer=self.pseudonymizer,
            corrects_event_id=version.corrects_event_id if version is not None else None,
            retracted=version.retracted if version is not None else False,
        )

    async def submit(self, submissions: Sequence[Submission]) -> list[Receipt]:
        """One ``sink.submit``, timed; the receipts must match the submissions one to one."""
        started = time.perf_counter()
        outcome = "error"
        try:
            receipts = await self.sink.submit(submissions)
            outcome = "ok"
        except SinkUnavailable:
            outcome = "unavailable"
            raise
        finally:
            self.metrics.publish_seconds.labels(outcome=outcome).observe(
                time.perf_counter() - started
            )
        if len(receipts) != len(submissions):
            raise RuntimeError(f"sink gave {len(receipts)} receipts for {len(submissions)}")
        return receipts

    async def authorise(
        self, client: IngestClient, requests: Sequence[IngestRequest[Any]]
    ) -> list[tuple[int, Denial]]:
        """Why *client* may not send *requests*; 503 while the enrolment directory catches up."""
        try:
            return await denials(client, requests, self.enrolments, self.pseudonymizer)
        except DirectoryCatchingUp as error:
            raise ProblemError(
                "directory-catching-up",
                "the hub cannot check enrolments against the log right now; nothing was "
                "stored, retry after Retry-After seconds",
                headers={"Retry-After": str(error.retry_after_s)},
                retry_after_s=error.retry_after_s,
            ) from None

    async def accept_one(
        self, body: IngestRequest[Any], client: IngestClient, raw_key: str | None
    ) -> JSONResponse:
        idempotency_key = _idempotency_key(raw_key)
        found = [denial for _, denial in await self.authorise(client, [body])]
        if found:
            raise _forbidden(found)
        violations = body.violations(now=self.clock(), clock_skew=self.clock_skew)
        if violations:
            log.info(
                "request rejected", reason="rule-violation", rules=[v.type for v in violations]
            )
            raise _rule_problem(violations)
        digest = request_digest(body, self.pseudonymizer)
        key = self.dedupe_key(client, idempotency_key, body.event_id, digest, body)
        event = to_event(
            body,
            source_system=client.source_system,
            pseudonymizer=self.pseudonymizer,
            recorded_at=self.clock(),
            dedupe_key=key,
        )
        envelope = event.envelope
        with bind_event_context(str(envelope.event_id), str(envelope.correlation_id)):
            try:
                [receipt] = await self.submit([Submission(key, digest, event)])
            except SubmissionRefused as refused:
                log.info("request rejected", reason=refused.reason)
                raise _refusal_problem(refused, [], single=True) from None
            outcome = "replayed" if receipt.duplicate else "accepted"
            self.metrics.events.labels(event_type=event.event_type, outcome=outcome).inc()
            log.info("event " + outcome, event_type=event.event_type, client_id=client.client_id)
        return JSONResponse(
            {"event_id": str(receipt.event_id), "status": "accepted"},
            status_code=202,
            headers={"Idempotent-Replayed": "true"} if receipt.duplicate else None,
        )

    async def accept_bulk(
        self, request: Request, client: IngestClient, raw_key: str | None
    ) -> JSONResponse:
        idempotency_key = _idempotency_key(raw_key)
        ndjson = media_type_of(request.headers.get("content-type")) == NDJSON
        parsed = await (self._read_ndjson(request) if ndjson else self._read_json_array(request))
        items, lines = parsed
        found = await self.authorise(client, items)
        if found:
            raise _forbidden_items(found, lines)
        # The rules over thousands of items are CPU work (0.2 s for 5,000): off the event loop.
        violations = await asyncio.to_thread(
            bulk_violations, items, now=self.clock(), clock_skew=self.clock_skew
        )
        if violations:
            raise _rule_problem(violations, lines)
        return await self._write_bulk(items, lines, client, idempotency_key)

    async def _write_bulk(
        self,
        items: list[IngestRequest[Any]],
        lines: Sequence[int],
        client: IngestClient,
        idempotency_key: str | None,
    ) -> JSONResponse:
        digests = [request_digest(item, self.pseudonymizer) for item in items]
        clashes = _event_id_clashes(items, digests)
        if clashes:
            raise _rule_problem(clashes, lines)
        if idempotency_key is not None:
            # The key names the whole request, as a single request's key does: the first item
            # is written under it, the others under ``<key>#<index>``, each with the digest of
            # the whole bulk. A changed body (one more item too) conflicts on the first item,
            # and one key used once singly and once for a bulk is a conflict, never two events.
            # A correction item's key also ends in its correction parts, as a single
            # correction's does: a bulk of corrections may reuse the originals' key.
            whole = request_digest(items, self.pseudonymizer)
            bulk_key = self.dedupe_key(client, idempotency_key, None, whole)
            keyed = [
                (
                    versioned_key(
                        f"{bulk_key}#{i}" if i else bulk_key, item.corrects_event_id, item.retracted
                    ),
                    whole,
                )
                for i, item in enumerate(items)
            ]
        else:
            keyed = [
                (self.dedupe_key(client, None, item.event_id, digest, item), digest)
                for item, digest in zip(items, digests, strict=True)
            ]
        recorded_at = self.clock()

        def build() -> list[Submission]:
            return [
                Submission(
                    key,
                    digest,
                    to_event(
                        item,
                        source_system=client.source_system,
                        pseudonymizer=self.pseudonymizer,
                        recorded_at=recorded_at,
                        dedupe_key=key,
                    ),
                )
                for item, (key, digest) in zip(items, keyed, strict=True)
            ]

        # Thousands of events take a quarter of a second to build: not on the event loop,
        # where every other request would wait for them (pure functions, safe in a thread).
        submissions = await asyncio.to_thread(build)
        try:
            by_item = await self.submit(submissions)
        except SubmissionRefused as refused:  # all or none: nothing of the bulk was written
            log.info("bulk rejected", reason=refused.reason, items=len(refused.indexes))
            raise _refusal_problem(refused, lines, single=False) from None
        for submission, receipt in zip(submissions, by_item, strict=True):
            envelope = submission.event.envelope
            outcome = "replayed" if receipt.duplicate else "accepted"
            self.metrics.events.labels(event_type=envelope.event_type, outcome=outcome).inc()
            with bind_event_context(str(envelope.event_id), str(envelope.correlation_id)):
                log.debug("event " + outcome, event_type=envelope.event_type)
        replayed = all(r.duplicate for r in by_item)
        log.info(
            "bulk accepted",
            items=len(items),
            written=sum(not r.duplicate for r in by_item),
            client_id=client.client_id,
        )
        return JSONResponse(
            {"status": "accepted", "event_ids": [str(r.event_id) for r in by_item]},
            status_code=202,
            headers={"Idempotent-Replayed": "true"} if replayed else None,
        )

    def _check_count(self, count: int) -> None:
        if count > self.bulk_max_items:
            raise ProblemError(
                "too-many-items", f"a bulk request may carry at most {self.bulk_max_items} items"
            )

    async def _read_json_array(
        self, request: Request
    ) -> tuple[list[IngestRequest[Any]], list[int]]:
        body = await request.body()
        try:
            # A first, cheap pass for the shape and the count, before validating thousands.
            data = from_json(body, allow_inf_nan=False)
        except ValueError as error:  # syntax, not UTF-8, too deep, a number out of range
            raise _malformed(error) from None
        if not isinstance(data, list) or not data:
            raise ProblemError(
                "validation-error",
                "the body must be a non-empty JSON array of items",
                errors=[FieldError(pointer="#", type="list_type", detail="a non-empty array")],
            )
        self._check_count(len(data))
        items = _Items()
        for index, value in enumerate(data):
            # Each item as JSON text again, for strict JSON validation; 1e400 (which the
            # parser reads as infinity) becomes Infinity, which the item's parse refuses.
            await items.take(to_json(value, inf_nan_mode="constants"), index=index)
        return items.result(), []

    async def _read_ndjson(self, request: Request) -> tuple[list[IngestRequest[Any]], list[int]]:
        """One JSON object per line, validated while the body streams in.

        Linear in the body whatever its chunking: the pieces of a line are kept in a list and
        joined once, and only each new chunk is searched for the end of a line.
        """
        items = _Items()
        pieces: list[bytes] = []  # of the line not yet ended
        line_number = 0

        async def take(raw: bytes) -> None:
            nonlocal line_number
            line_number += 1
            if raw.strip():
                self._check_count(len(items.lines) + 1)
                await items.take(raw, index=len(items.lines), line=line_number)

        async for chunk in _chunks(request):
            start = 0
            while (end := chunk.find(b"\n", start)) != -1:
                pieces.append(chunk[start:end])
                await take(b"".join(pieces))
                pieces.clear()
                start = end + 1
            if start < len(chunk):
                pieces.append(chunk[start:])
            await items.pause()  # a server may hand over queued pieces without suspending
        if pieces:
            await take(b"".join(pieces))
        return items.result(), items.lines


#: Longest stretch one request's parsing runs before it lets other requests' tasks run.
PARSE_SLICE_S: Final = 0.005


class _Items:
    """Bulk items validated one by one, their problems gathered; yields the loop as it goes.

    Reading and validating thousands of items is CPU work: every :data:`PARSE_SLICE_S` the
    reader gives the event loop back (:meth:`pause`), so one large bulk never stalls
    ``/health`` or other clients' requests.
    """

    def __init__(self) -> None:
        self.items: list[IngestRequest[Any]] = []
        self.lines: list[int] = []
        self.syntax: list[FieldError] = []
        self.invalid: list[FieldError] = []
        self._since = time.perf_counter()

    async def take(self, raw: bytes, *, index: int, line: int | None = None) -> None:
        if line is not None:
            self.lines.append(line)
        parsed = _parse(BULK_ITEM_ADAPTER.validate_json, raw, prefix=[index], line=line, tag_at=0)
        if not isinstance(parsed, ProblemError):
            self.items.append(parsed)
        elif parsed.slug == "malformed-json":
            self.syntax.extend(parsed.errors or [])
        else:
            self.invalid.extend(parsed.errors or [])
        await self.pause()

    async def pause(self) -> None:
        """Let other tasks run if this request has run for a slice."""
        if time.perf_counter() - self._since >= PARSE_SLICE_S:
            await asyncio.sleep(0)
            self._since = time.perf_counter()

    def result(self) -> list[IngestRequest[Any]]:
        """The items, or the problem: syntax first (400), then the schema (422)."""
        if self.syntax:
            raise ProblemError(
                "malformed-json",
                f"{len(self.syntax)} item(s) are not valid JSON",
                errors=self.syntax,
            )
        if self.invalid:
            raise ProblemError(
                "validation-error",
                f"{len(self.invalid)} field(s) of the items do not match the schema",
                errors=self.invalid,
            )
        if not self.items:
            raise ProblemError(
                "validation-error",
                "the body must hold at least one item",
                errors=[FieldError(pointer="#", type="too_short", detail="no items")],
            )
        return self.items


def _malformed(
    error: ValueError, line: int | None = None, item: Sequence[str | int] = ()
) -> ProblemError:
    """400 for JSON that cannot be parsed; the parser's reason names a place, never a value.

    *item* is the bulk item's index, where the reason's line and column count from.
    """
    reason = redact_text(str(error))
    return ProblemError(
        "malformed-json",
        f"the body is not valid JSON: {reason}",
        errors=[
            FieldError(
                pointer=json_pointer(item) if item else None,
                line=line,
                loc=list(item),
                type="json_invalid",
                detail=reason,
            )
        ],
    )


def _parse(
    validate_json: Callable[..., IngestRequest[Any]],
    raw: bytes,
    *,
    prefix: Sequence[str | int] = (),
    line: int | None = None,
    tag_at: int | None = None,
) -> IngestRequest[Any] | ProblemError:
    """Validate JSON text strictly: the request, or the problem (400 syntax, 422 schema).

    Strict JSON mode accepts exactly what the JSON schema says (ISO strings for dates, UUIDs
    and enums) and refuses lax conversions such as ``0`` for a date or ``"22"`` for a number,
    which would otherwise be silently reinterpreted (:func:`~hub.intake.convert.parse_request`).
    Every parse failure is a problem.
    """
    if not raw.strip():
        return ProblemError(
            "validation-error",
            "the request has no body",
            errors=[FieldError(pointer="#", line=line, type="missing", detail="a JSON body")],
        )
    try:
        return parse_request(validate_json, raw)
    except NotJson as error:
        return _malformed(error, line, prefix)
    except ValidationError as error:
        fields = field_errors(
            error.errors(include_url=False, include_input=False),
            prefix=prefix,
            line=line,
            tag_at=tag_at,
        )
        return ProblemError(
            "validation-error",
            f"{len(fields)} field(s) do not match the schema",
            errors=fields,
        )


async def _chunks(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


# --- create_app -------------------------------------------------------------------------------


def create_app(
    settings: HubSettings,
    sink: EventSink,
    clients: IngestClients,
    enrolments: EnrolmentDirectory,
    clock: Clock = utc_now,
    *,
    pseudonymizer: Pseudonymizer | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The ingest API over *sink*, for *clients*; *clock* is the hub's time (tests fix it)."""
    metrics = IngestMetrics(registry if registry is not None else CollectorRegistry())
    ingest = _Ingest(
        settings,
        sink,
        enrolments,
        clock,
        pseudonymizer or Pseudonymizer.from_settings(settings),
        metrics,
    )
    # /docs and /redoc with Swagger UI and ReDoc served from the package, not a public CDN: the
    # API runs on intranets and offline, where a CDN page stays blank. No online validator badge
    # either: it would send the document's address to validator.swagger.io.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS_PATH,
        swagger_ui_parameters={"validatorUrl": None},
        title="TE hub ingest API",
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "customer path", "description": "Municipal employment-service systems."},
            {"name": "service providers", "description": "Participation reports."},
            {"name": "benefit payers", "description": "Kela and unemployment funds."},
            {"name": "bulk", "description": "Many events in one atomic write."},
            {"name": "reporting", "description": "Indicators from the reporting store."},
            {"name": "operations", "description": "Health, readiness and metrics."},
        ],
    )
    install_problem_handlers(app, on_problem=metrics.reject)
    bearer = HTTPBearer(auto_error=False, description="The API key as a bearer token.")
    api_key_header = APIKeyHeader(
        name="X-API-Key", auto_error=False, description="The API key (alternative header)."
    )

    async def authenticated_client(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        api_key: Annotated[str | None, Security(api_key_header)],
    ) -> IngestClient:
        key = credentials.credentials if credentials is not None else api_key
        challenge = 'Bearer realm="te-hub"'
        if not key:
            raise ProblemError(
                "unauthenticated",
                "send the API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers={"WWW-Authenticate": challenge},
            )
        client = clients.authenticate(key)
        if client is None:
            raise ProblemError(
                "unauthenticated",
                "the API key is not valid",
                headers={"WWW-Authenticate": challenge + ', error="invalid_token"'},
            )
        request.state.client_id = client.client_id
        structlog.contextvars.bind_contextvars(client_id=client.client_id)
        return client

    for endpoint in ENDPOINTS:
        app.add_api_route(
            endpoint.path,
            _single_handler(ingest, endpoint.event_type, authenticated_client),
            methods=["POST"],
            status_code=202,
            response_model=Accepted,
            responses={202: {"headers": ACCEPTED_HEADERS}, **problem_responses(*POST_PROBLEMS)},
            tags=[endpoint.tag],
            summary=f"Report {endpoint.event_type}",
            description=(REQUEST_TYPES[endpoint.event_type].__doc__ or "").strip(),
            operation_id=f"post{endpoint.event_type}",
        )

    async def post_bulk(
        request: Request,
        client: Annotated[IngestClient, Depends(authenticated_client)],
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        return await ingest.accept_bulk(request, client, idempotency_key)

    app.add_api_route(
        BULK_PATH,
        post_bulk,
        methods=["POST"],
        status_code=202,
        response_model=BulkAccepted,
        responses={202: {"headers": ACCEPTED_HEADERS}, **problem_responses(*POST_PROBLEMS)},
        tags=["bulk"],
        summary="Report many events atomically",
        description="All items are validated and authorised first; then they are written in one "
        "atomic submission (all or none). Rules across items apply too: a person's "
        "InitialInterviewHeld may not occur before the same person's JobseekerRegistered.",
        operation_id="postBulk",
    )

    async def unknown_event_type(name: str) -> Response:
        wanted = next((t for t in REQUEST_TYPES if kebab(t) == name), None)
        hint = f"; {wanted} is sent to {PATH_OF[wanted]}" if wanted else ""
        raise ProblemError(
            "unknown-event-type",
            "no event type is posted to this path" + hint + "; see /docs for the event paths",
        )

    app.add_api_route(
        "/v1/events/{name}", unknown_event_type, methods=["POST"], include_in_schema=False
    )

    async def health() -> Status:
        """Liveness: the process answers."""
        return Status(status="ok")

    async def ready() -> Response:
        """Readiness: the event log would take a write now, and the enrolment directory has
        read the log once (before that, provider requests would only get 503s)."""
        try:
            ok = await sink.ready()
        except Exception as error:  # a probe must answer, whatever the sink does
            log.warning("readiness check failed", error=type(error).__name__)
            ok = False
        if not ok:
            raise ProblemError(
                "not-ready", "the event log is not reachable", headers={"Retry-After": "5"}
            )
        if not enrolments.ready():
            raise ProblemError(
                "not-ready",
                "the enrolment directory is still reading the log",
                headers={"Retry-After": "5"},
            )
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/health", health, methods=["GET"], tags=["operations"])
    app.add_api_route(
        "/ready",
        ready,
        methods=["GET"],
        tags=["operations"],
        response_model=Status,
        responses=problem_responses(503),
    )
    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    app.openapi = openapi_builder(app, settings.ingest_bulk_max_items)  # type: ignore[method-assign]
    known = {e.path for e in ENDPOINTS} | {BULK_PATH, "/health", "/ready", "/metrics"}
    known |= {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    # The Kafka channels' AsyncAPI document and its page, offline like /docs.
    known |= add_asyncapi_routes(app, settings)
    # KEHA's indicators from the reporting store, for BI tools (read scope indicators:read).
    known |= add_indicator_routes(app, settings, authenticated_client)
    app.add_middleware(
        IngestEdge,
        metrics=metrics,
        bulk_max_bytes=settings.ingest_bulk_max_bytes,
        body_read_timeout_s=settings.ingest_body_read_timeout_s,
        known=known,
    )
    return app


#: The Idempotency-Key header parameter (documented in OpenAPI).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Names this submission so that a retry is answered, not written again "
        "(IETF draft). Bare or as a quoted structured-field string.",
    ),
]


def _single_handler(
    ingest: _Ingest,
    event_type: str,
    authenticate: Callable[..., Awaitable[IngestClient]],
) -> Callable[..., Awaitable[JSONResponse]]:
    """The handler of one event type: authenticate, check the scope, then read the body.

    The body is read by a dependency rather than by FastAPI so that it is parsed only after
    authentication and in strict JSON mode (see :func:`_parse`); the OpenAPI document still
    shows its model (see :func:`openapi_builder`).
    """
    model = REQUEST_TYPES[event_type]

    async def scoped_client(
        client: Annotated[IngestClient, Depends(authenticate)],
    ) -> IngestClient:
        denial = scope_denial(client, event_type)
        if denial is not None:
            raise _forbidden([denial])
        return client

    async def request_body(request: Request) -> IngestRequest[Any]:
        parsed = _parse(model.model_validate_json, await request.body())
        if isinstance(parsed, ProblemError):
            raise parsed
        return parsed

    async def post_event(
        client: Annotated[IngestClient, Depends(scoped_client)],
        body: Annotated[IngestRequest[Any], Depends(request_body)],
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        return await ingest.accept_one(body, client, idempotency_key)

    post_event.__name__ = f"post_{kebab(event_type).replace('-', '_')}"
    return post_event
