"""Where a request is wrong, said without what was sent (API, import and poller alike).

Every inbound connector reports a failing field by its location (a JSON pointer, the pydantic
``loc``, a line) and a reason, never by its value: the value may be an identity code or a name,
and error reports end up in client logs and reject files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel, Field
from pydantic_core import PydanticKnownError

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


#: Context pydantic gives about the SCHEMA (bounds, patterns, allowed values), never the input.
_SCHEMA_CTX: Final = frozenset(
    {
        "gt",
        "ge",
        "lt",
        "le",
        "multiple_of",
        "min_length",
        "max_length",
        "expected_plural",
        "field_type",
        "pattern",
        "expected",
        "discriminator",
        "expected_tags",
        "class_name",
        "max_digits",
        "decimal_places",
        "whole_digits",
        "expected_version",
        "expected_schemes",
        "encoding",
        "tz_expected",
    }
)
#: Reasons of the error types whose pydantic message would describe the input (a found
#: character, the tag or key sent, an actual length or offset): said without it.
_OWN_DETAIL: Final[Mapping[str, str]] = {
    "extra_forbidden": "holds a field the schema does not define (its name is not repeated)",
    "union_tag_invalid": "the {discriminator} is not one of {expected_tags}",
    "json_invalid": "the text is not valid JSON",
    "too_short": "{field_type} should have at least {min_length} item(s)",
    "too_long": "{field_type} should have at most {max_length} item(s)",
    "timezone_offset": "a UTC offset of {tz_expected} is required",
    "bytes_invalid_encoding": "the data should be valid {encoding}",
}
#: Error types whose ``ctx["error"]`` (pydantic's or a parser's words) may quote the input.
_PARSE_DETAIL: Final[Mapping[str, str]] = {
    "date_parsing": "should be a valid date in the format YYYY-MM-DD",
    "date_from_datetime_parsing": "should be a valid date or datetime",
    "datetime_parsing": "should be a valid date and time (RFC 3339) with a UTC offset",
    "datetime_from_date_parsing": "should be a valid datetime or date",
    "time_parsing": "should be a valid time",
    "time_delta_parsing": "should be a valid duration",
    "uuid_parsing": "should be a valid UUID",
    "url_parsing": "should be a valid URL",
    "url_syntax_violation": "should be a URL of strict syntax",
    "mapping_type": "should be a JSON object",
    "iteration_error": "should be an array",
    "get_attribute_error": "should be an object",
    "datetime_object_invalid": "should be a valid datetime",
}


def _detail(error_type: str, error: Mapping[str, Any]) -> str:
    """The reason of one pydantic error, built from its TYPE and the context about the schema.

    Pydantic's ``msg`` is not used: several messages quote the input (the tag sent, a found
    character). ``value_error`` and ``assertion_error`` come from the hub's own validators
    (identity codes, business ids, code lists), whose reasons are worded without the value;
    so are the reasons of the hub's custom error types, which pydantic does not know.
    """
    ctx = error.get("ctx") or {}
    trusted = {key: value for key, value in ctx.items() if key in _SCHEMA_CTX}
    if error_type in _PARSE_DETAIL:
        return _PARSE_DETAIL[error_type]
    if error_type in ("value_error", "assertion_error"):
        return str(ctx.get("error", "the value is not valid here"))
    template = _OWN_DETAIL.get(error_type)
    try:
        if template is not None:
            return template.format(**trusted)
        return PydanticKnownError(error_type, trusted or None).message()  # type: ignore[arg-type]
    except KeyError:
        if template is None:  # not one of pydantic's types: the hub's own, worded without value
            return str(error.get("msg", "the value is not valid here"))
    except TypeError:  # context the template needs is missing
        pass
    return f"does not match the schema ({error_type})"


def field_errors(
    errors: Iterable[Mapping[str, Any]],
    *,
    strip: int = 0,
    prefix: Sequence[str | int] = (),
    line: int | None = None,
    tag_at: int | None = None,
    in_body: bool = True,
) -> list[FieldError]:
    """Pydantic (or FastAPI) errors as :class:`FieldError`: where and why, never what was sent.

    *strip* drops leading loc parts (FastAPI's ``"body"``), *prefix* adds some (a bulk item's
    index), *tag_at* is where a discriminated union puts the tag it chose (a bulk item's
    ``event_type``), which is no part of the body and so is dropped: tags are CamelCase, field
    names snake_case, so they cannot be confused. Only errors *in_body* get a JSON pointer.
    An unknown key is reported at its parent, once, without its name: the key is the client's
    text too. Each reason is built by :func:`_detail`.
    """
    result: list[FieldError] = []
    unknown_at: set[tuple[str | int, ...]] = set()
    for error in errors:
        raw_loc = list(error.get("loc", ()))[strip:]
        if tag_at is not None and len(raw_loc) > tag_at:
            tag = raw_loc[tag_at]
            if isinstance(tag, str) and tag[:1].isupper():
                del raw_loc[tag_at]
        error_type = str(error.get("type", "invalid"))
        if error_type == "extra_forbidden":
            # The unknown key is the client's text: the error is reported at its parent, once.
            raw_loc = raw_loc[:-1]
            if tuple(raw_loc) in unknown_at:
                continue
            unknown_at.add(tuple(raw_loc))
        loc = [*prefix, *raw_loc]
        clean_loc: list[str | int] = [redact_text(p) if isinstance(p, str) else p for p in loc]
        result.append(
            FieldError(
                pointer=json_pointer(loc) if in_body else None,
                line=line,
                loc=clean_loc,
                type=error_type,
                detail=redact_text(_detail(error_type, error)),
            )
        )
    return result
