"""Derive Avro schemas from the pydantic event models, so the two can never drift apart.

Each named type (record or enum) is defined inline at its first use and referred to by name
afterwards, which keeps every .avsc file self-contained for parsing canonical form and
fingerprints. A field without a description is a programming error: every Avro field has a doc.
"""

from __future__ import annotations

import inspect
import types
import typing
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from hub.events.base import AVRO_NAMESPACE, AvroRecord

AvroType = str | dict[str, Any] | list[Any]


class SchemaDefinitionError(TypeError):
    """A model cannot be expressed as a documented Avro schema."""


def avro_schema(model: type[AvroRecord]) -> dict[str, Any]:
    """The complete Avro schema of ``model`` as a JSON-ready dict."""
    schema = _SchemaBuilder().named_record(model)
    assert isinstance(schema, dict)
    return schema


def _sealable(avro_type: AvroType) -> AvroType:
    """A personal (``pii``) field's type with ``bytes`` added as the last union member: the
    producer writes the value sealed with the person's data key there (:mod:`hub.privacy`),
    while plaintext written before field encryption still reads as the plaintext member
    (a reader union that holds the writer's type: BACKWARD compatible)."""
    members = avro_type if isinstance(avro_type, list) else [avro_type]
    return [*members, "bytes"]


def _doc_of(obj: type) -> str:
    doc = inspect.getdoc(obj)
    if not doc:
        raise SchemaDefinitionError(f"{obj.__name__} needs a docstring: it becomes the Avro doc")
    return doc.split("\n\n")[0].replace("\n", " ")


class _SchemaBuilder:
    def __init__(self) -> None:
        self._defined: set[str] = set()

    def _first_definition(self, cls: type) -> bool:
        full_name = f"{AVRO_NAMESPACE}.{cls.__name__}"
        if full_name in self._defined:
            return False
        self._defined.add(full_name)
        return True

    def named_record(self, model: type[AvroRecord]) -> AvroType:
        if not self._first_definition(model):
            return f"{AVRO_NAMESPACE}.{model.__name__}"
        return {
            "type": "record",
            "name": model.__name__,
            "namespace": AVRO_NAMESPACE,
            "doc": _doc_of(model),
            "fields": [self.field(model, name, info) for name, info in model.model_fields.items()],
        }

    def named_enum(self, enum: type[StrEnum]) -> AvroType:
        if not self._first_definition(enum):
            return f"{AVRO_NAMESPACE}.{enum.__name__}"
        return {
            "type": "enum",
            "name": enum.__name__,
            "namespace": AVRO_NAMESPACE,
            "doc": _doc_of(enum),
            "symbols": [member.value for member in enum],
        }

    def field(self, model: type[AvroRecord], name: str, info: FieldInfo) -> dict[str, Any]:
        if not info.description:
            raise SchemaDefinitionError(f"{model.__name__}.{name} needs a description (Avro doc)")
        field: dict[str, Any] = {"name": name, "type": self.type_of(info.annotation)}
        field["doc"] = info.description
        if info.default is not PydanticUndefined:
            field["default"] = (
                info.default.value if isinstance(info.default, StrEnum) else info.default
            )
        extra = info.json_schema_extra
        if isinstance(extra, dict) and "pii" in extra:
            field["pii"] = extra["pii"]
            field["type"] = _sealable(field["type"])
        return field

    def type_of(self, annotation: Any) -> AvroType:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            return self.type_of(typing.get_args(annotation)[0])
        if origin in (types.UnionType, typing.Union):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1 or len(typing.get_args(annotation)) != 2:
                raise SchemaDefinitionError(f"only optional unions are supported: {annotation}")
            return ["null", self.type_of(members[0])]
        if origin is list:
            return {"type": "array", "items": self.type_of(typing.get_args(annotation)[0])}
        if not isinstance(annotation, type):
            raise SchemaDefinitionError(f"no Avro type for {annotation!r}")
        if issubclass(annotation, AvroRecord):
            return self.named_record(annotation)
        if issubclass(annotation, StrEnum):
            return self.named_enum(annotation)
        if annotation is AwareDatetime or issubclass(annotation, datetime):
            return {"type": "long", "logicalType": "timestamp-millis"}
        if issubclass(annotation, date):
            return {"type": "int", "logicalType": "date"}
        if issubclass(annotation, UUID):
            return {"type": "string", "logicalType": "uuid"}
        primitive = {bool: "boolean", int: "int", float: "double", str: "string", bytes: "bytes"}
        if annotation in primitive:
            return primitive[annotation]
        raise SchemaDefinitionError(f"no Avro type for {annotation!r}")
