"""The Avro body both framings share: encode after a header, decode with schema resolution."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from hub.serde.base import (
    DecodedEvent,
    DecodeError,
    EncodeError,
    SerdeError,
    TrailingBytes,
    TruncatedPayload,
    new_decoded_event,
)
from hub.serde.catalog import SchemaVersion


@dataclass(frozen=True, slots=True)
class BodyReader:
    """What decoding one writer schema needs: writer, reader (None when identical), names."""

    type_name: str
    writer: Any
    reader: Any
    ref: str

    @classmethod
    def resolving(
        cls, writer: Any, writer_canonical: str, current: SchemaVersion, ref: str
    ) -> BodyReader:
        """Read ``writer`` data as ``current``; skip resolution when the two are the same."""
        same = writer_canonical == current.canonical
        return cls(
            type_name=current.type_name,
            writer=current.parsed if same else writer,
            reader=None if same else current.parsed,
            ref=ref,
        )


def encode_body(header: bytes, schema: Any, type_name: str, record: dict[str, Any]) -> bytes:
    buf = BytesIO()
    buf.write(header)
    try:
        schemaless_writer(buf, schema, record)
    except Exception as exc:  # fastavro raises ValueError/TypeError/KeyError/...
        raise EncodeError(f"cannot encode {type_name}: {type(exc).__name__}: {exc}") from exc
    return buf.getvalue()


def decode_body(data: bytes, header_size: int, reader: BodyReader) -> DecodedEvent:
    """Decode the body after the header; the whole value must be consumed."""
    buf = BytesIO(data)  # shares the bytes, no copy
    buf.seek(header_size)
    try:
        record: dict[str, Any] = schemaless_reader(buf, reader.writer, reader.reader)  # type: ignore[assignment]
    except Exception as exc:
        raise body_error(exc, reader.type_name, len(data) - header_size) from exc
    if buf.tell() != len(data):
        raise TrailingBytes(
            f"{reader.type_name}: {len(data) - buf.tell()} bytes left after the Avro body"
        )
    return new_decoded_event(reader.type_name, record, reader.ref)


def body_error(exc: Exception, type_name: str, body_size: int) -> SerdeError:
    """The SerdeError for an exception fastavro raised while reading a body."""
    if isinstance(exc, SerdeError):
        return exc
    if isinstance(exc, EOFError):
        return TruncatedPayload(
            f"{type_name}: Avro body ends early ({body_size} bytes after the header)"
        )
    # Corrupt bodies make fastavro raise almost anything (IndexError, UnicodeDecodeError, ...).
    return DecodeError(f"cannot decode {type_name}: {type(exc).__name__}: {exc}")
