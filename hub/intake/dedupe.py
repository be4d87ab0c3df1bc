"""The one dedupe-key format of every inbound connector: ``<client id>:<name parts>``.

A dedupe key names a submission for the sink: the sink writes each key once and answers a
repeat with the original receipt. Keys start with the writer's client id (``import`` and
``poller`` for those connectors), so no two clients' keys collide. Keys are stored next to the
log in the receipts topic, so a key never holds a client's own text in clear: an
Idempotency-Key may be built from an identity code, and is kept only as a keyed digest.
"""

from __future__ import annotations

from uuid import UUID

from hub.identity import Pseudonymizer

SEPARATOR = ":"


def dedupe_key(client_id: str, *name: str | int | UUID) -> str:
    """``client_id:part:part...``; the client id may not contain the separator."""
    if not client_id or SEPARATOR in client_id:
        raise ValueError(f"a client id for dedupe keys must be non-empty without {SEPARATOR!r}")
    return SEPARATOR.join([client_id, *map(str, name)])


def request_dedupe_key(
    client_id: str,
    *,
    idempotency_key: str | None,
    event_id: UUID | None,
    digest: str,
    pseudonymizer: Pseudonymizer,
) -> str:
    """The key of an API-style request: its Idempotency-Key, else its event id, else its digest.

    The Idempotency-Key is kept as a keyed digest (HMAC under the area's secret): a plain hash
    of a key made from an identity code could be confirmed by guessing.
    """
    if idempotency_key is not None:
        hashed = pseudonymizer.keyed_digest(b"idempotency-key:" + idempotency_key.encode())
        return dedupe_key(client_id, "idempotency-key", hashed)
    if event_id is not None:
        return dedupe_key(client_id, "event-id", event_id)
    return dedupe_key(client_id, "digest", digest)
