"""Where a request is wrong, said without what was sent (API, import and poller alike).

Every inbound connector reports a failing field by its location (a JSON pointer, the pydantic
``loc``, a line) and a reason, never by its value: the value may be an identity code or a name,
and error reports end up in client logs and reject files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from hub.logging import redact_text


class FieldError(BaseModel):
    """One failing field (or NDJSON line) of a request."""

    pointer: str | None = Field(
        default=None,
        description="JSON pointer (RFC 6901) into the body as a URI fragment, e.g. "
        "#/payload/held_on; in a bulk it starts with the item index.",
    )
    line: int | None = Field(default=None, description="Line of an NDJSON body (1-based).")
    loc: list[str | int] = Field(
        default_factory=list, description="Location as pydantic reports it."
    )
    type: str = Field(description="Machine-readable reason, e.g. missing or deadline_mismatch.")
    detail: str = Field(description="Human-readable reason; never repeats the value sent.")


# --- locations and messages --------------------------------------------------------------------


def _escape(part: str | int) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def json_pointer(loc: Iterable[str | int]) -> str:
    """``("payload", "held_on")`` -> ``#/payload/held_on`` (RFC 6901 as a URI fragment)."""
    parts = [_escape(redact_text(p) if isinstance(p, str) else p) for p in loc]
    return "#" + "".join(f"/{p}" for p in parts)


def _scrub(message: str, values: Iterable[object]) -> str:
    """Remove sent values from a message: validators of the code lists quote their input."""
    for value in values:
        if isinstance(value, str) and value.strip():
            # A short value is removed only where quoted, so "a" does not garble the prose.
            forms = (repr(value), value) if len(value) >= 3 else (repr(value),)
            for form in forms:
                message = re.sub(rf"(?<!\w){re.escape(form)}(?!\w)", "<value>", message)
    message = re.sub(r",? got <value>", "", message)
    return redact_text(message)


def field_errors(
    errors: Iterable[Mapping[str, Any]],
    *,
    strip: int = 0,
    prefix: Sequence[str | int] = (),
    line: int | None = None,
    tag_at: int | None = None,
    in_body: bool = True,
) -> list[FieldError]:
    """Pydantic (or FastAPI) errors as :class:`FieldError`, without the values sent.

    *strip* drops leading loc parts (FastAPI's ``"body"``), *prefix* adds some (a bulk item's
    index), *tag_at* is where a discriminated union puts the tag it chose (a bulk item's
    ``event_type``), which is no part of the body and so is dropped: tags are CamelCase, field
    names snake_case, so they cannot be confused. Only errors *in_body* get a JSON pointer.
    """
    result: list[FieldError] = []
    for error in errors:
        raw_loc = list(error.get("loc", ()))[strip:]
        if tag_at is not None and len(raw_loc) > tag_at:
            tag = raw_loc[tag_at]
            if isinstance(tag, str) and tag[:1].isupper():
                del raw_loc[tag_at]
        loc = [*prefix, *raw_loc]
        ctx = error.get("ctx") or {}
        message = _scrub(str(error.get("msg", "")), (error.get("input"), ctx.get("tag")))
        clean_loc: list[str | int] = [redact_text(p) if isinstance(p, str) else p for p in loc]
        result.append(
            FieldError(
                pointer=json_pointer(loc) if in_body else None,
                line=line,
                loc=clean_loc,
                type=str(error.get("type", "invalid")),
                detail=message,
            )
        )
    return result
