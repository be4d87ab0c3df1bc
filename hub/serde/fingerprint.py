"""Parsing Canonical Form and CRC-64-AVRO fingerprints (Avro specification, "Schema Fingerprints").

Computed with fastavro, not the ``avro`` package (which keeps logical types in the canonical
form and so gives fingerprints other implementations do not agree with). The specification
strips everything but names, types, fields, symbols, items, values and sizes: ``doc``,
``aliases``, defaults, ``logicalType`` and custom attributes such as ``pii`` do not change a
fingerprint.
"""

from __future__ import annotations

from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from hub.serde.base import AvroSchemaJson

FINGERPRINT_SIZE = 8


def canonical_form(schema: AvroSchemaJson) -> str:
    """The Parsing Canonical Form of ``schema`` (JSON data or an already parsed schema)."""
    return to_parsing_canonical_form(schema)


def crc64_avro(canonical: str | bytes) -> bytes:
    """The 8-byte CRC-64-AVRO (Rabin) fingerprint of a canonical form, little-endian.

    Little-endian is the byte order single-object encoding puts on the wire and the order Java's
    ``SchemaNormalization.fingerprint("CRC-64-AVRO", ...)`` returns; fastavro's hex string is
    already in that order (checked against the specification's test vectors in the tests).
    """
    text = canonical.decode("utf-8") if isinstance(canonical, bytes) else canonical
    return bytes.fromhex(_fastavro_fingerprint(text, "CRC-64-AVRO"))


def schema_fingerprint(schema: AvroSchemaJson) -> bytes:
    """CRC-64-AVRO fingerprint of a schema's canonical form."""
    return crc64_avro(canonical_form(schema))


def fingerprint_to_int(fp: bytes) -> int:
    """The signed 64-bit value Java's ``parsingFingerprint64`` prints for a fingerprint."""
    return int.from_bytes(fp, "little", signed=True)
