"""Problem details (RFC 9457, ``application/problem+json``) for every error the ingest API gives.

Each kind of problem has a stable type URI, ``https://te-hub.example/problems/<slug>``, that a
client can branch on. Validation problems list every failing field with a JSON pointer into the
body (RFC 6901, as a URI fragment such as ``#/payload/held_on``), the pydantic ``loc`` and the
reason, but never the value that was sent: it may be an identity code, and responses end up in
client logs. Messages pass the hub's identity-code redaction as a second line of defence.

Bad input must never give a 500; :func:`install_problem_handlers` maps every framework error to
a problem, and only a bug in the hub reaches ``internal-error`` (without internals).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.intake.errors import FieldError, field_errors
from hub.logging import get_logger, redact_text
from hub.sink import SinkUnavailable

PROBLEM_BASE: Final = "https://te-hub.example/problems/"
PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
#: A response lists at most this many field errors (a 5000-item bulk could have far more).
MAX_ERRORS: Final = 200

log = get_logger(__name__)

#: Status and title of every problem type, by slug.
PROBLEM_TYPES: Final[Mapping[str, tuple[int, str]]] = {
    "malformed-json": (400, "The body is not valid JSON"),
    "invalid-parameter": (400, "A query parameter is invalid"),
    "malformed-body": (400, "The body could not be read"),
    "invalid-header": (400, "A request header is invalid"),
    "unauthenticated": (401, "No valid API key"),
    "insufficient-scope": (403, "The client lacks the scope this request needs"),
    "municipality-not-allowed": (403, "The client may not report on this municipality"),
    "provider-mismatch": (403, "A provider may only report as itself"),
    "enrolment-not-yours": (403, "The enrolment is not the provider's"),
    "enrolment-person-mismatch": (403, "The report is not about the person enrolled"),
    "enrolment-municipality-mismatch": (403, "The report's municipality is not the enrolment's"),
    "enrolment-taken": (403, "The enrolment id belongs to an earlier, different enrolment"),
    "payer-mismatch": (403, "A payer may only send as itself"),
    "forbidden-items": (403, "The client may not send some items of the bulk"),
    "not-found": (404, "No such resource"),
    "unknown-event-type": (404, "No event type has this path"),
    "method-not-allowed": (405, "Method not allowed"),
    "not-acceptable": (406, "Not acceptable"),
    "request-timeout": (408, "The body did not arrive in time"),
    "content-too-large": (413, "The body is too large"),
    "uri-too-long": (414, "The query string is too long"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "validation-error": (422, "The request does not match the schema"),
    "rule-violation": (422, "The request breaks a rule across its fields"),
    "too-many-items": (422, "The bulk request has too many items"),
    "idempotency-conflict": (422, "The key was already used for a different request"),
    "event-id-taken": (409, "The event id is in the log already for another fact"),
    "event-not-writable": (422, "The event cannot be encoded for the log"),
    "sink-unavailable": (503, "The event log cannot take events now"),
    "directory-catching-up": (503, "The enrolment directory is catching up with the log"),
    "not-ready": (503, "The service is not ready"),
    "store-unavailable": (503, "The reporting store cannot answer now"),
    "internal-error": (500, "Internal error"),
}


def problem_type(slug: str) -> str:
    return PROBLEM_BASE + slug


class Problem(BaseModel):
    """RFC 9457 problem details, with this API's extension members."""

    type: str = Field(description="URI of the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="HTTP status code.")
    detail: str | None = Field(default=None, description="What went wrong in this request.")
    instance: str | None = Field(
        default=None, description="This occurrence: urn:te-hub:request:<X-Request-ID>."
    )
    errors: list[FieldError] | None = Field(
        default=None, description="Every failing field (validation and rule problems)."
    )
    errors_truncated: bool | None = Field(
        default=None, description="True when more errors were found than listed."
    )
    missing_scope: str | None = Field(
        default=None, description="The scope (event type, or indicators:read) the client lacks."
    )
    retry_after_s: int | None = Field(
        default=None, description="Seconds to wait before retrying (also in Retry-After)."
    )


class ProblemError(Exception):
    """Raise to answer with a problem; the handler renders it."""

    def __init__(
        self,
        slug: str,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(slug)
        self.slug = slug
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        self.extensions = extensions


# --- rendering ---------------------------------------------------------------------------------


def request_instance(request: Request) -> str | None:
    request_id = getattr(request.state, "request_id", None)
    return f"urn:te-hub:request:{request_id}" if request_id else None


OnProblem = Callable[[str], None]


def render_problem(
    error: ProblemError, *, instance: str | None, on_problem: OnProblem | None = None
) -> JSONResponse:
    """The response for *error*; *on_problem* sees the slug (for the reject metrics)."""
    status, title = PROBLEM_TYPES[error.slug]
    errors = error.errors
    truncated = None
    if errors is not None and len(errors) > MAX_ERRORS:
        errors, truncated = errors[:MAX_ERRORS], True
    problem = Problem(
        type=problem_type(error.slug),
        title=title,
        status=status,
        detail=redact_text(error.detail) if error.detail else None,
        instance=instance,
        errors=errors,
        errors_truncated=truncated,
        **error.extensions,
    )
    if on_problem is not None:
        on_problem(error.slug)
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=status,
        headers=error.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _from_validation_error(exc: RequestValidationError) -> ProblemError:
    errors = list(exc.errors())
    syntax = [e for e in errors if e.get("type") == "json_invalid"]
    if syntax:
        position = syntax[0].get("loc", ("body", 0))[-1]
        reason = (syntax[0].get("ctx") or {}).get("error", "invalid JSON")
        return ProblemError(
            "malformed-json", f"the body is not valid JSON: {reason} at character {position}"
        )
    in_body = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)]
    elsewhere = [e for e in errors if tuple(e.get("loc", ()))[:1] != ("body",)]
    fields = field_errors(elsewhere, in_body=False) + field_errors(in_body, strip=1)
    if not in_body:
        return ProblemError("invalid-header", "a request header is invalid", errors=fields)
    if any(e.loc == [] and e.type == "missing" for e in fields):
        return ProblemError("validation-error", "the request has no body", errors=fields)
    return ProblemError(
        "validation-error",
        f"{len(fields)} field(s) of the request do not match the schema",
        errors=fields,
    )


_HTTP_SLUGS: Final = {
    400: "malformed-body",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "content-too-large",
    415: "unsupported-media-type",
}


def install_problem_handlers(app: FastAPI, on_problem: OnProblem | None = None) -> None:
    """Make every error of *app* a problem response."""

    async def problem_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return render_problem(exc, instance=request_instance(request), on_problem=on_problem)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problem = _from_validation_error(exc)
        log.info("request rejected", reason=problem.slug, errors=_error_summary(problem))
        return render_problem(problem, instance=request_instance(request), on_problem=on_problem)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        slug = _HTTP_SLUGS.get(exc.status_code)
        if slug is None:
            log.error("unmapped HTTP error", status=exc.status_code)
            slug = "internal-error" if exc.status_code >= 500 else "malformed-body"
        detail = {
            "not-found": "no resource at this path; see /docs for the API",
            "method-not-allowed": "this path does not accept this method (see the Allow header)",
            "content-too-large": "the body is larger than this endpoint accepts",
        }.get(slug, PROBLEM_TYPES[slug][1])
        problem = ProblemError(slug, detail, headers=exc.headers)
        return render_problem(problem, instance=request_instance(request), on_problem=on_problem)

    async def sink_unavailable(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SinkUnavailable)
        log.warning("event log unavailable", retry_after_s=exc.retry_after_s)
        problem = ProblemError(
            "sink-unavailable",
            "the event log did not acknowledge the write; nothing was stored, retry the same "
            "request (same Idempotency-Key) after Retry-After seconds",
            headers={"Retry-After": str(exc.retry_after_s)},
            retry_after_s=exc.retry_after_s,
        )
        return render_problem(problem, instance=request_instance(request), on_problem=on_problem)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return render_problem(
            internal_error(), instance=request_instance(request), on_problem=on_problem
        )

    app.add_exception_handler(ProblemError, problem_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(SinkUnavailable, sink_unavailable)
    app.add_exception_handler(Exception, unexpected)


def internal_error() -> ProblemError:
    return ProblemError(
        "internal-error", "the hub failed to handle the request; it has been logged"
    )


def _error_summary(problem: ProblemError) -> list[str]:
    """Pointers and reasons only, for logs (no messages, no values)."""
    return [f"{e.pointer or e.loc}:{e.type}" for e in (problem.errors or [])[:20]]
