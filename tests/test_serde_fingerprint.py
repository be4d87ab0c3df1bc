"""Canonical form and CRC-64-AVRO against the Avro specification's published vectors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.serde.fingerprint import (
    canonical_form,
    crc64_avro,
    fingerprint_to_int,
    schema_fingerprint,
)

VECTORS = Path(__file__).parent / "data" / "avro-schema-tests.txt"


@dataclass(frozen=True)
class Vector:
    number: str
    input: str
    canonical: str
    fingerprint: int | None


def load_vectors(path: Path = VECTORS) -> list[Vector]:
    """Parse the ``<<INPUT`` / ``<<canonical`` / ``<<fingerprint`` format of schema-tests.txt."""
    vectors: list[Vector] = []
    entry: dict[str, Any] = {}
    multiline: list[str] | None = None

    def flush() -> None:
        if "input" in entry:
            vectors.append(
                Vector(entry["number"], entry["input"], entry["canonical"], entry.get("fp"))
            )
        entry.clear()

    for line in path.read_text(encoding="utf-8").splitlines():
        if multiline is not None:
            if line.strip() == "INPUT":
                entry["input"] = "\n".join(multiline)
                multiline = None
            else:
                multiline.append(line)
            continue
        if line.startswith("// ") and line[3:].strip().isdigit():
            flush()
            entry["number"] = line[3:].strip()
        elif line.startswith(("#", "//")) or not line.strip():
            continue
        elif line == "<<INPUT":
            multiline = []
        elif line.startswith("<<INPUT "):
            entry["input"] = line[len("<<INPUT ") :]
        elif line.startswith("<<canonical "):
            entry["canonical"] = line[len("<<canonical ") :]
        elif line.startswith("<<fingerprint "):
            entry["fp"] = int(line[len("<<fingerprint ") :])
    flush()
    return vectors


ALL = load_vectors()
# Vector 026 gives the boolean field f1 the default "true" (a string): fastavro rightly rejects
# that schema as invalid. Defaults are not part of the canonical form, so it is checked with the
# default removed in test_vector_with_invalid_default.
INVALID_DEFAULT = {"026"}
WITH_FINGERPRINT = [v for v in ALL if v.fingerprint is not None and v.number not in INVALID_DEFAULT]


def test_vector_file_covers_every_kind_of_schema() -> None:
    assert len(ALL) == 34
    assert len(WITH_FINGERPRINT) >= 10
    kinds = set()
    for vector in WITH_FINGERPRINT:
        data = json.loads(vector.input)
        kinds.add(data["type"] if isinstance(data, dict) else type(data).__name__)
    assert {"str", "list", "record", "enum", "fixed", "array", "map"} <= kinds


@pytest.mark.parametrize("vector", WITH_FINGERPRINT, ids=lambda v: v.number)
def test_published_canonical_form_and_fingerprint(vector: Vector) -> None:
    canonical = canonical_form(json.loads(vector.input))
    assert canonical == vector.canonical
    fp = crc64_avro(canonical)
    assert len(fp) == 8
    assert fingerprint_to_int(fp) == vector.fingerprint
    # The wire order is little-endian: the low byte of Java's long comes first.
    assert fp == (vector.fingerprint & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little")
    assert crc64_avro(canonical.encode()) == fp


@pytest.mark.parametrize(
    "vector",
    [v for v in ALL if v.fingerprint is None],
    ids=lambda v: v.number,
)
def test_published_canonical_form_without_fingerprint(vector: Vector) -> None:
    assert canonical_form(json.loads(vector.input)) == vector.canonical


def test_vector_with_invalid_default() -> None:
    (vector,) = [v for v in ALL if v.number == "026"]
    schema = json.loads(vector.input)
    with pytest.raises(Exception, match="Default value"):
        canonical_form(schema)
    del schema["fields"][0]["default"]
    assert canonical_form(schema) == vector.canonical
    assert fingerprint_to_int(schema_fingerprint(schema)) == vector.fingerprint


def test_null_fingerprint_bytes() -> None:
    # 7195948357588979594 == 0x63DD24E7CC258F8A, little-endian on the wire.
    assert crc64_avro('"null"') == bytes.fromhex("8a8f25cce724dd63")


def test_logical_types_and_custom_attributes_are_stripped() -> None:
    """Per spec the canonical form keeps only names, types, fields, symbols, items, values, size:
    logical types, doc, defaults and attributes such as ``pii`` do not change a fingerprint."""
    rich = {
        "type": "record",
        "name": "Event",
        "namespace": "fi.te.hub",
        "doc": "documentation",
        "fields": [
            {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {
                "name": "amount",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
            },
            {"name": "hetu", "type": "string", "pii": "direct", "doc": "identity code"},
            {"name": "maybe", "type": ["null", {"type": "string", "logicalType": "uuid"}]},
        ],
    }
    expected = (
        '{"name":"fi.te.hub.Event","type":"record","fields":['
        '{"name":"id","type":"string"},{"name":"at","type":"long"},'
        '{"name":"day","type":"int"},{"name":"amount","type":"bytes"},'
        '{"name":"hetu","type":"string"},{"name":"maybe","type":["null","string"]}]}'
    )
    assert canonical_form(rich) == expected
    assert schema_fingerprint(rich) == crc64_avro(expected)
    plain = json.loads(expected)
    assert schema_fingerprint(plain) == schema_fingerprint(rich)
