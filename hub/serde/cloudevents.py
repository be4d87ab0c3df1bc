"""CloudEvents 1.0 Kafka protocol binding, binary content mode.

The Kafka value stays the Avro payload; the event attributes travel as headers ``ce_<name>``
(UTF-8) and ``content-type``, so CloudEvents-aware tools (Knative, Dapr, Benthos, ...) can route
and filter without decoding Avro.

``ce_subject`` of a hub event is the person's **pseudonym** (the Kafka key), never the personal
identity code: headers are visible to every tool and log that touches the topic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from hub.serde.base import SerdeError

SPEC_VERSION = "1.0"
PREFIX = "ce_"
CONTENT_TYPE_HEADER = "content-type"

REQUIRED_ATTRIBUTES: tuple[str, ...] = ("id", "source", "specversion", "type")
"""Required by the CloudEvents specification itself."""
HUB_REQUIRED_ATTRIBUTES: tuple[str, ...] = (*REQUIRED_ATTRIBUTES, "subject", "time")
"""Every hub event also names its person (pseudonym) and time."""

_ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

Headers = list[tuple[str, bytes]]


class CloudEventHeaderError(SerdeError, ValueError):
    """Headers that do not make a valid CloudEvent."""


def format_time(time: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and ``Z``; naive datetimes are refused."""
    if time.tzinfo is None or time.utcoffset() is None:
        raise CloudEventHeaderError(f"ce_time needs a timezone-aware datetime, got {time!r}")
    return time.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cloudevent_headers(
    event_id: str,
    event_type: str,
    source: str,
    subject: str,
    time: datetime,
    content_type: str = "application/avro",
    dataschema: str | None = None,
    extensions: Mapping[str, str] | None = None,
) -> Headers:
    """Kafka headers of one event in binary content mode.

    ``subject`` must be the person pseudonym; ``extensions`` are extra attributes (lower-case
    alphanumeric names, e.g. ``correlationid``) written as ``ce_<name>``.
    """
    attributes = {
        "specversion": SPEC_VERSION,
        "id": str(event_id),
        "type": event_type,
        "source": source,
        "subject": subject,
        "time": format_time(time),
    }
    if dataschema is not None:
        attributes["dataschema"] = dataschema
    for name, value in (extensions or {}).items():
        if not _ATTRIBUTE_NAME.match(name):
            raise CloudEventHeaderError(
                f"CloudEvents attribute name {name!r} must be 1-20 lower-case letters or digits"
            )
        if name in attributes or name == "datacontenttype":
            raise CloudEventHeaderError(f"extension {name!r} would override a core attribute")
        attributes[name] = value
    for name in REQUIRED_ATTRIBUTES:
        if not attributes[name]:
            raise CloudEventHeaderError(f"CloudEvents attribute {name!r} must not be empty")
    headers: Headers = [(PREFIX + name, value.encode()) for name, value in attributes.items()]
    headers.append((CONTENT_TYPE_HEADER, content_type.encode()))
    return headers


def parse_cloudevent_headers(
    headers: Iterable[tuple[str, bytes | str | None]] | None,
    *,
    required: Iterable[str] = REQUIRED_ATTRIBUTES,
) -> dict[str, str]:
    """CloudEvents attributes from Kafka headers, keyed by attribute name (``id``, ``type``...).

    ``content-type`` becomes ``datacontenttype`` as the binding says. Other headers are ignored.
    Raises :class:`CloudEventHeaderError` naming the first missing required attribute, a
    specversion other than 1.0, a time that is not RFC 3339, or an attribute given twice.
    Pass ``required=HUB_REQUIRED_ATTRIBUTES`` to insist on subject and time as well.
    """
    attributes: dict[str, str] = {}
    for key, raw in headers or ():
        lowered = key.lower()
        if lowered.startswith(PREFIX):
            name = lowered[len(PREFIX) :]
        elif lowered == CONTENT_TYPE_HEADER:
            name = "datacontenttype"
        else:
            continue
        if raw is None:
            value = ""
        elif isinstance(raw, str):
            value = raw
        else:
            try:
                value = bytes(raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CloudEventHeaderError(f"header {key!r} is not UTF-8") from exc
        if name in attributes and attributes[name] != value:
            raise CloudEventHeaderError(f"header {key!r} given twice with different values")
        attributes[name] = value
    for name in required:
        if not attributes.get(name):
            header = CONTENT_TYPE_HEADER if name == "datacontenttype" else PREFIX + name
            raise CloudEventHeaderError(
                f"missing required CloudEvents attribute {name!r} (Kafka header {header!r})"
            )
    version = attributes.get("specversion")
    if version is not None and version != SPEC_VERSION:
        raise CloudEventHeaderError(f"unsupported CloudEvents specversion {version!r}")
    time = attributes.get("time")
    if time is not None and not _RFC3339.match(time):
        raise CloudEventHeaderError(f"ce_time {time!r} is not an RFC 3339 timestamp")
    return attributes


def parse_time(value: str) -> datetime:
    """An RFC 3339 ``ce_time`` as an aware datetime in UTC."""
    if not _RFC3339.match(value):
        raise CloudEventHeaderError(f"ce_time {value!r} is not an RFC 3339 timestamp")
    # fromisoformat takes at most 6 fraction digits; RFC 3339 allows any number.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.upper())
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError as exc:
        raise CloudEventHeaderError(f"ce_time {value!r} is not a valid timestamp") from exc
