"""Read the customer-path log back: decoded events with key, headers and position.

Fields the schemas mark sensitive (``pii``) are masked unless the caller asks to reveal them,
so looking at the log does not spread identity codes or names onto terminals and into files;
so is anything shaped like an identity code elsewhere (a field that is not ``pii``, a header, a
decoding error quoting the record's bytes): the edge refuses those, but older records or other
writers may hold them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

from hub.events.sensitivity import sensitive_fields
from hub.kafka.reading import read_topic
from hub.logging import redact_text
from hub.serde import EventSerializer, SchemaCatalog, SerdeError
from hub.settings import HubSettings

MASK = "***"


@dataclass(frozen=True)
class LogEntry:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    headers: dict[str, str]
    type_name: str | None
    writer_schema: str | None
    event: dict[str, Any] | None
    error: str | None

    def to_json(self) -> str:
        return json.dumps(self.__dict__, default=_json_default, ensure_ascii=False)


def _json_default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def mask_identity_codes(value: Any) -> Any:
    """*value* with identity-code-shaped text masked wherever it is: keys, values, nested."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {mask_identity_codes(k): mask_identity_codes(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_identity_codes(v) for v in value]
    return value


def mask_sensitive(record: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    masked = dict(record)
    for path in paths:
        node = masked
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                break
            node[part] = child = dict(child)
            node = child
        else:
            if node.get(leaf) is not None:
                node[leaf] = MASK
    return masked


async def read_log(
    settings: HubSettings,
    serializer: EventSerializer,
    catalog: SchemaCatalog,
    *,
    from_beginning: bool,
    limit: int | None,
    follow: bool,
    reveal: bool = False,
) -> AsyncIterator[LogEntry]:
    """Entries of the customer-path topic, partition by partition order preserved.

    Without ``follow`` reading stops at the end offsets seen when it started.
    """
    masks = {name: sensitive_fields(catalog.event(name).current.raw) for name in catalog.names()}
    records = read_topic(
        settings, settings.topic_customer_path, from_beginning=from_beginning, follow=follow
    )
    async with aclosing(records):  # stop the consumer also when the limit ends reading early
        seen = 0
        async for record in records:
            entry = await _entry(record, serializer, masks, reveal)
            yield entry if reveal else LogEntry(**mask_identity_codes(dataclasses.asdict(entry)))
            seen += 1
            if limit is not None and seen >= limit:
                return


async def _entry(
    record: Any, serializer: EventSerializer, masks: dict[str, Any], reveal: bool
) -> LogEntry:
    """One record as an entry; a value that cannot be decoded (a Confluent value without a
    registry, an unknown schema, a corrupt body) is an entry with the reason, not a crash."""
    headers = {key: value.decode("utf-8", "replace") for key, value in record.headers}
    base = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp,
        "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
        "headers": headers,
    }
    try:
        decoded = await serializer.adecode(record.value)  # registry look-ups never block
    except SerdeError as error:
        return LogEntry(**base, type_name=None, writer_schema=None, event=None, error=str(error))
    paths = masks.get(decoded.type_name, {})
    event = decoded.record if reveal else mask_sensitive(decoded.record, paths)
    return LogEntry(
        **base,
        type_name=decoded.type_name,
        writer_schema=decoded.writer_schema_ref,
        event=event,
        error=None,
    )
