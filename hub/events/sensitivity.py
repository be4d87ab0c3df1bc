"""Sensitivity classes declared on schema fields (the ``pii`` attribute of an Avro field).

Routing gives a destination a field of one of these classes only when the route names a legal
basis for it; reporting sinks never get ``direct`` fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from hub.events.avro_schema import avro_schema
from hub.events.base import AvroRecord


class Sensitivity(StrEnum):
    DIRECT = "direct"
    """Identifies the person by itself: personal identity code (henkilötunnus), names."""
    CONTACT = "contact"
    """Reaches the person: e-mail, phone, address."""
    HEALTH = "health"
    """Work ability and health (special category, GDPR art. 9)."""
    MEMBERSHIP = "membership"
    """Unemployment-fund membership, which may reveal trade-union membership (GDPR art. 9)."""


def pii(kind: Sensitivity) -> dict[str, Any]:
    """Field metadata marking a field sensitive; becomes ``"pii": kind`` in the Avro schema."""
    return {"pii": kind.value}


def sensitive_fields(schema: Any, prefix: str = "") -> dict[str, Sensitivity]:
    """Dotted paths of every field with a ``pii`` attribute in an Avro schema (JSON form).

    Named types are defined once and referred to by name later; a reference adds no new fields,
    because the first definition of that type already contributed its paths.
    """
    found: dict[str, Sensitivity] = {}
    if isinstance(schema, list):
        for member in schema:
            found.update(sensitive_fields(member, prefix))
    elif isinstance(schema, dict):
        for field in schema.get("fields", ()):
            path = f"{prefix}{field['name']}"
            if "pii" in field:
                found[path] = Sensitivity(field["pii"])
            found.update(sensitive_fields(field["type"], f"{path}."))
        if schema.get("type") in ("array", "map"):
            found.update(sensitive_fields(schema.get("items", schema.get("values")), prefix))
    return found


def pii_field_names(models: Iterable[type[AvroRecord]]) -> frozenset[str]:
    """The names (last path part) of every ``pii`` field in the Avro schemas of *models*.

    Read from the generated schema, not guessed from field names, so that a field marked
    sensitive in a model is known as sensitive wherever this is used (the log redaction).
    """
    return frozenset(
        path.rsplit(".", 1)[-1] for model in models for path in sensitive_fields(avro_schema(model))
    )
