"""The one dedupe-key format of every inbound connector: ``<client id>:<name parts>``.

A dedupe key names a submission for the sink: the sink writes each key once and answers a
repeat with the original receipt. Keys start with the writer's client id (``import`` and
``poller`` for those connectors), so no two clients' keys collide. Keys are stored next to the
log in the receipts topic, so a key never holds a client's own text in clear: an
Idempotency-Key may be built from an identity code, and is kept only as a keyed digest.

A correction (``corrects_event_id``) is a new version of a fact, never a repeat of the version it
corrects: its key ends in ``corrects:<id>`` (a retraction's in ``corrects:<id>:retracted``), so
a client that keys requests by a business id (one Idempotency-Key per plan, say) can send the
original and its correction under the same Idempotency-Key, and a resent correction is still
answered from its receipt. The event id and digest keys differ between versions anyway; the
suffix makes the rule one for all three.
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


def correction_parts(corrects_event_id: UUID | None, retracted: bool) -> tuple[str, ...]:
    """The key parts that make a correction or retraction a submission of its own."""
    if corrects_event_id is None:
        return ()
    return ("corrects", str(corrects_event_id), *(("retracted",) if retracted else ()))


def versioned_key(key: str, corrects_event_id: UUID | None, retracted: bool) -> str:
    """*key* with the :func:`correction_parts` of a correction (unchanged for a first version)."""
    return SEPARATOR.join([key, *correction_parts(corrects_event_id, retracted)])


def request_dedupe_key(
    client_id: str,
    *,
    idempotency_key: str | None,
    event_id: UUID | None,
    digest: str,
    pseudonymizer: Pseudonymizer,
    corrects_event_id: UUID | None = None,
    retracted: bool = False,
) -> str:
    """The key of an API-style request: its Idempotency-Key, else its event id, else its digest;
    then, for a correction, :func:`correction_parts`.

    The Idempotency-Key is kept as a keyed digest (HMAC under the area's secret): a plain hash
    of a key made from an identity code could be confirmed by guessing.
    """
    if idempotency_key is not None:
        hashed = pseudonymizer.keyed_digest(b"idempotency-key:" + idempotency_key.encode())
        key = dedupe_key(client_id, "idempotency-key", hashed)
    elif event_id is not None:
        key = dedupe_key(client_id, "event-id", event_id)
    else:
        key = dedupe_key(client_id, "digest", digest)
    return versioned_key(key, corrects_event_id, retracted)
