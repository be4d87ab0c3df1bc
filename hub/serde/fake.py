"""Plausible random records for any Avro schema, for benchmarks and round-trip tests.

The values only have to fit the schema (the types fastavro writes, logical types as Python
objects); they carry no domain meaning. The hub's event models have their own sample builders.
"""

from __future__ import annotations

import random
import string
import uuid
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from fastavro import parse_schema

_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_MAX_DEPTH = 6


def fake_record(schema: Any, rng: random.Random | None = None) -> Any:
    """A random value of ``schema`` (JSON or parsed); deterministic for a seeded ``rng``."""
    rng = rng if rng is not None else random.Random()
    parsed = parse_schema(schema, named_schemas={}) if isinstance(schema, dict) else schema
    named: dict[str, Any] = {}
    if isinstance(parsed, dict):
        named = parsed.get("__named_schemas", {})
    return _value(parsed, rng, named, "value", 0)


def _text(rng: random.Random, name: str) -> str:
    letters = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 12)))
    return f"{name}-{letters}"


def _value(schema: Any, rng: random.Random, named: dict[str, Any], name: str, depth: int) -> Any:
    if isinstance(schema, list):
        branches = schema
        non_null = [b for b in branches if b != "null"]
        if "null" in branches and (not non_null or depth >= _MAX_DEPTH or rng.random() < 0.3):
            return None
        return _value(rng.choice(non_null), rng, named, name, depth + 1)
    if isinstance(schema, str):
        if schema in named:
            return _value(named[schema], rng, named, name, depth + 1)
        return _primitive(schema, rng, name)
    kind = schema["type"]
    logical = schema.get("logicalType")
    if logical is not None:
        value = _logical(logical, schema, rng)
        if value is not None:
            return value
    if kind == "record" or kind == "error":
        return {
            field["name"]: _value(field["type"], rng, named, field["name"], depth + 1)
            for field in schema["fields"]
        }
    if kind == "enum":
        return rng.choice(schema["symbols"])
    if kind == "fixed":
        return rng.randbytes(schema["size"])
    if kind == "array":
        count = 0 if depth >= _MAX_DEPTH else rng.randint(0, 3)
        return [_value(schema["items"], rng, named, name, depth + 1) for _ in range(count)]
    if kind == "map":
        count = 0 if depth >= _MAX_DEPTH else rng.randint(0, 3)
        return {
            _text(rng, "key"): _value(schema["values"], rng, named, name, depth + 1)
            for _ in range(count)
        }
    return _value(kind, rng, named, name, depth)


def _primitive(kind: str, rng: random.Random, name: str) -> Any:
    if kind == "null":
        return None
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(0, 10_000)
    if kind == "long":
        return rng.randint(0, 10_000_000_000)
    if kind in ("float", "double"):
        return round(rng.uniform(0, 1000), 2)
    if kind == "bytes":
        return rng.randbytes(rng.randint(0, 16))
    if kind == "string":
        return _text(rng, name)
    raise ValueError(f"unknown Avro type {kind!r}")


def _logical(logical: str, schema: dict[str, Any], rng: random.Random) -> Any:
    """A value for a logical type, or None to fall back to the underlying type."""
    moment = _EPOCH + timedelta(milliseconds=rng.randint(0, 6 * 365 * 86_400_000))
    if logical == "uuid":
        return uuid.UUID(int=rng.getrandbits(128), version=4)
    if logical == "timestamp-millis":
        return moment
    if logical == "timestamp-micros":
        return moment + timedelta(microseconds=rng.randint(0, 999))
    if logical in ("local-timestamp-millis", "local-timestamp-micros"):
        return moment.replace(tzinfo=None)
    if logical == "date":
        return moment.date()
    if logical in ("time-millis", "time-micros"):
        return time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))
    if logical == "decimal":
        scale = int(schema.get("scale", 0))
        precision = int(schema.get("precision", 9))
        digits = rng.randint(0, 10 ** min(precision, 12) - 1)
        return Decimal(digits).scaleb(-scale)
    return None
