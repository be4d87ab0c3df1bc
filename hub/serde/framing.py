"""The two wire framings' markers, and what a reader does with a value of either.

A topic's history outlives the framing its producers are configured with: once a registry is
switched on, older single-object values (``C3 01``) sit in the log beside Confluent ones
(``00``). So a reader always picks the framing from the value's first byte, never from the
settings; the settings only choose how new values are written.
"""

from __future__ import annotations

from hub.serde.base import BadMagic, RegistryRequired, TruncatedPayload

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER_SIZE = len(SINGLE_OBJECT_MAGIC) + 8
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_SIZE = len(CONFLUENT_MAGIC) + 4


def confluent_schema_id(data: bytes) -> int:
    """The registry schema id in a Confluent value's header."""
    if data[:1] != CONFLUENT_MAGIC:
        raise BadMagic(bytes(data[:2]))
    if len(data) < CONFLUENT_HEADER_SIZE:
        raise TruncatedPayload(
            f"Confluent value of {len(data)} bytes ends inside its 5-byte header"
        )
    return int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big")


def not_single_object(data: bytes) -> Exception:
    """The error for a value a reader without a registry cannot take as single-object."""
    if data[:1] == CONFLUENT_MAGIC:
        try:
            return RegistryRequired(confluent_schema_id(data))
        except TruncatedPayload as exc:
            return exc
    return BadMagic(bytes(data[:2]))
