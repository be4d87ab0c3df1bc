"""The receivers' side of delivery in the AsyncAPI document: what a webhook POST carries.

Why: Kela, the funds, providers and municipal systems implement the receiving end, and their
contract is the JSON body and the Standard Webhooks headers, not the outbox's Avro. The body's
``data`` is the projected record as JSON (``hub.delivery.transport.json_body``: UUIDs, dates
and times as ISO strings, enums as their symbols), so its JSON Schema is derived here from the
same derived Avro schema the outbox message carries; tests validate real bodies against it.

FastStream documents only its broker's channels (and the HTTP routes an ASGI app serves), not
HTTP requests the application sends, so these channels are added to the document directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from hub.routing.routes import Destination, Transport

HTTP_BINDING_VERSION: Final = "0.3.0"
WEBHOOK_HEADERS: Final = {
    "webhook-id": "The event id (Standard Webhooks); the same on every attempt.",
    "webhook-timestamp": "Unix seconds of this attempt, signed with the body.",
    "webhook-signature": "v1,<base64 HMAC-SHA256 of id.timestamp.body> with the endpoint's "
    "secret (whsec_...); verify before applying.",
    "Idempotency-Key": "The event id again: drop a second delivery of it (answer 200).",
    "Content-Type": "application/json",
}

_PRIMITIVE: Final = {
    "null": {"type": "null"},
    "boolean": {"type": "boolean"},
    "int": {"type": "integer"},
    "long": {"type": "integer"},
    "float": {"type": "number"},
    "double": {"type": "number"},
    "string": {"type": "string"},
    "bytes": {"type": "string", "description": "Hexadecimal."},
}
_LOGICAL: Final = {
    "uuid": {"type": "string", "format": "uuid"},
    "date": {"type": "string", "format": "date"},
    "timestamp-millis": {"type": "string", "format": "date-time"},
    "timestamp-micros": {"type": "string", "format": "date-time"},
}


def json_schema_of_avro(
    schema: Any, named: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The JSON Schema of a record of this Avro schema as ``json_body`` writes it.

    Named types (records, enums) are defined once in Avro and referred to by name after: the
    conversion of the definition is reused for the reference.
    """
    named = {} if named is None else named
    if isinstance(schema, list):
        return {"anyOf": [json_schema_of_avro(member, named) for member in schema]}
    if isinstance(schema, str):
        if schema in _PRIMITIVE:
            return dict(_PRIMITIVE[schema])
        return dict(named[schema])
    logical = schema.get("logicalType")
    if logical in _LOGICAL:
        return dict(_LOGICAL[logical])
    kind = schema["type"]
    if isinstance(kind, (dict, list)) or kind in _PRIMITIVE:
        return json_schema_of_avro(kind, named)
    if kind == "enum":
        result: dict[str, Any] = {"type": "string", "enum": list(schema["symbols"])}
    elif kind == "array":
        result = {"type": "array", "items": json_schema_of_avro(schema["items"], named)}
    elif kind == "map":
        result = {
            "type": "object",
            "additionalProperties": json_schema_of_avro(schema["values"], named),
        }
    elif kind in ("record", "error"):
        result = {
            "type": "object",
            "title": schema["name"],
            "additionalProperties": False,
            "properties": {},
            "required": [f["name"] for f in schema["fields"]],
        }
    else:  # fixed
        result = {"type": "string"}
    if "doc" in schema:
        result["description"] = schema["doc"]
    if "name" in schema:
        full = (
            schema["name"]
            if "." in schema["name"]
            else f"{schema.get('namespace', '')}.{schema['name']}"
        )
        named[full.lstrip(".")] = result
        named[schema["name"]] = result
    if kind in ("record", "error"):
        for field in schema["fields"]:
            converted = json_schema_of_avro(_as_delivered(field), named)
            if "doc" in field:
                converted = {**converted, "description": field["doc"]}
            if "pii" in field:
                converted = {**converted, "x-pii": field["pii"]}
            result["properties"][field["name"]] = converted
    return result


def _as_delivered(field: Mapping[str, Any]) -> Any:
    """A field's type as a receiver sees it: a ``pii`` field's sealed ``bytes`` member never
    reaches a receiver (delivery opens the value, or the record is a dead letter)."""
    kind = field["type"]
    if "pii" not in field or not isinstance(kind, list) or kind[-1:] != ["bytes"]:
        return kind
    plain = kind[:-1]
    return plain[0] if len(plain) == 1 else plain


def body_schema(type_name: str, avro: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of one delivery: ``{"type", "timestamp", "data"}``."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["type", "timestamp", "data"],
        "properties": {
            "type": {"type": "string", "const": type_name, "description": "The event type."},
            "timestamp": {
                "type": "string",
                "format": "date-time",
                "description": "envelope.occurred_at (UTC, milliseconds, Z).",
            },
            "data": json_schema_of_avro(dict(avro)),
        },
    }


def webhook_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "HTTP request headers of every attempt.",
        "properties": {
            name: {"type": "string", "description": text} for name, text in WEBHOOK_HEADERS.items()
        },
        "required": sorted(WEBHOOK_HEADERS),
    }


def endpoint_urls(destination: Destination) -> list[str]:
    endpoints = [destination.endpoint] if destination.endpoint is not None else []
    endpoints += list((destination.endpoints or {}).values())
    return [str(e.url) for e in endpoints if e.url is not None]


def webhook_servers(destinations: Iterable[Destination]) -> dict[str, dict[str, Any]]:
    """One server per scheme and host of the webhook endpoints' URLs."""
    servers: dict[str, dict[str, Any]] = {}
    for destination in destinations:
        if destination.transport is not Transport.WEBHOOK:
            continue
        for url in endpoint_urls(destination):
            parts = urlsplit(url)
            name = "receivers-" + "".join(c if c.isalnum() else "-" for c in parts.netloc)
            servers.setdefault(
                name,
                {
                    "host": parts.netloc,
                    "protocol": parts.scheme,
                    "description": "Receivers of webhook deliveries (from the routes file).",
                },
            )
    return servers


def server_of(url: str) -> str:
    return "receivers-" + "".join(c if c.isalnum() else "-" for c in urlsplit(url).netloc)
