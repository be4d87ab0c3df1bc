"""The local receivers: one HTTP server playing Kela, every fund, provider and municipal system.

Why one server: the demo and the delivery tests need receivers that behave like real ones
(verify the Standard Webhooks signature, drop a redelivered event by its signed id, fail or
slow down when told) and that can say afterwards exactly what they applied, in order. Paths:
``/kela``, ``/fund/{code}``, ``/provider/{business_id}``, ``/municipal/{area}``; any code is
accepted, so the server plays every fund, provider and area the routes can name. The receiver
name is the path without its leading slash (``fund/1234``), the dedupe memory is per receiver.

Dedupe is by ``webhook-id``, which the signature covers, never by the ``Idempotency-Key`` header,
which it does not: a captured request replayed (within the signature's 5-minute tolerance) with
another Idempotency-Key would otherwise be applied twice. The hub sends both with the event id,
so a request whose Idempotency-Key differs from its webhook-id is refused (400). The receiver
keeps the SHA-256 of each applied body per id: the same id again with the same body is a
redelivery (200 ``{"duplicate": true}``), with another body a conflict (409, counted in
``conflicts``): an event id the hub reused, or a body changed between attempts, which a real
receiver must not silently drop.

Order of checks for a delivery: ``down`` (503, connection closed), signature (401),
Idempotency-Key differing from webhook-id (400), delay, ``fail_share`` (503), refused event ids
(422 with a problem text), same id with another body (409), duplicate (200
``{"duplicate": true}``), then applied (200). Every refusal is ``application/problem+json``.
Control and inspection, JSON:

- ``POST /_control`` ``{"receiver": "fund/1234" | "fund" | "*", "fail_share": 0.3,
  "refuse_event_ids": [...], "delay_s": 0.5, "down": true, "retry_after_s": 2}``: the knobs given
  are set for that receiver, every receiver of a kind (``fund``), or all (``*`` or absent);
  ``null`` unsets a knob; the most specific setting wins. ``{"reset": true}`` clears them all.
  ``GET /_control`` shows them.
- ``GET /_applied?receiver=kela``: what it applied, in order; without ``receiver``: all.
- ``GET /_stats``: applied, duplicates, refused, failed, unauthorized, conflicts per receiver
  and in total.
- ``POST /_reset``: forget everything applied and counted (not the record file).

With a record file every applied event is also appended to it as one JSON line, and a restarted
server reads it back: what was applied before the restart is still known, so a redelivery after
the restart is still a duplicate (as at a real receiver with a database).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from connectors.receivers.secrets import receiver_secret
from hub.logging import get_logger, redact_text
from hub.settings import HubSettings

log = get_logger(__name__)

PROBLEM_BASE: Final = "https://te-hub.example/problems/receivers/"
PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
KINDS: Final = ("kela", "fund", "provider", "municipal")
ALL: Final = "*"


@dataclass(frozen=True, slots=True)
class Applied:
    """One event a receiver applied: the facts the demo's table and the tests compare."""

    receiver: str
    event_id: str
    type: str
    subject: str | None
    time: str | None
    received_at: str
    body_sha256: str | None = None
    """SHA-256 (hex) of the body applied (None in a record file written before it was kept)."""


@dataclass
class Counts:
    applied: int = 0
    duplicates: int = 0
    refused: int = 0
    failed: int = 0
    unauthorized: int = 0
    conflicts: int = 0
    """A known event id arrived with another body (answered 409)."""


class Knobs(BaseModel):
    """How a receiver misbehaves; None = not set here (a less specific setting applies)."""

    model_config = ConfigDict(extra="forbid")

    fail_share: float | None = Field(default=None, ge=0, le=1)
    refuse_event_ids: list[str] | None = None
    delay_s: float | None = Field(default=None, ge=0, le=600)
    down: bool | None = None
    retry_after_s: float | None = Field(default=None, ge=0)


class ControlRequest(Knobs):
    receiver: str = ALL
    reset: bool = False


@dataclass
class ReceiversState:
    """Everything the receivers know: applied events, dedupe memory, counts and knobs."""

    record_file: Path | None = None
    applied: dict[str, list[Applied]] = field(default_factory=lambda: defaultdict(list))
    seen: dict[str, dict[str, str | None]] = field(default_factory=lambda: defaultdict(dict))
    """Receiver → event id → SHA-256 of the body applied under it."""
    counts: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    knobs: dict[str, Knobs] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self) -> None:
        """Read the record file back (a restarted server remembers what it applied)."""
        if self.record_file is None or not self.record_file.exists():
            return
        for line in self.record_file.read_text("utf-8").splitlines():
            if line.strip():
                entry = Applied(**json.loads(line))
                self._remember(entry)

    def _remember(self, entry: Applied) -> None:
        self.applied[entry.receiver].append(entry)
        self.seen[entry.receiver][entry.event_id] = entry.body_sha256
        self.counts[entry.receiver].applied += 1

    def apply(self, entry: Applied) -> str:
        """Record *entry* unless its receiver has its id already: ``"applied"``, ``"duplicate"``
        (same id, same body or a body not known) or ``"conflict"`` (same id, another body)."""
        with self.lock:
            seen = self.seen[entry.receiver]
            if entry.event_id in seen:
                known = seen[entry.event_id]
                if known is not None and known != entry.body_sha256:
                    self.counts[entry.receiver].conflicts += 1
                    return "conflict"
                self.counts[entry.receiver].duplicates += 1
                return "duplicate"
            self._remember(entry)
            if self.record_file is not None:
                with self.record_file.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(asdict(entry), separators=(",", ":")) + "\n")
            return "applied"

    def count(self, receiver: str, what: str) -> None:
        with self.lock:
            counts = self.counts[receiver]
            setattr(counts, what, getattr(counts, what) + 1)

    def effective(self, receiver: str) -> Knobs:
        """The knobs of *receiver*: its own over its kind's over everyone's."""
        kind = receiver.split("/", 1)[0]
        result: dict[str, Any] = {}
        for selector in (ALL, kind, receiver):
            knobs = self.knobs.get(selector)
            if knobs is not None:
                result.update(knobs.model_dump(exclude_none=True))
        return Knobs(**result)

    def control(self, request: ControlRequest) -> None:
        with self.lock:
            if request.reset:
                self.knobs.clear()
            given = request.model_dump(exclude={"receiver", "reset"}, exclude_unset=True)
            if not given:
                return
            current = self.knobs.get(request.receiver, Knobs()).model_dump()
            current.update(given)
            self.knobs[request.receiver] = Knobs(**current)

    def reset(self) -> None:
        with self.lock:
            self.applied.clear()
            self.seen.clear()
            self.counts.clear()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            per = {name: asdict(c) for name, c in sorted(self.counts.items())}
        total = Counts()
        for counts in per.values():
            for key, value in counts.items():
                setattr(total, key, getattr(total, key) + value)
        return {"receivers": per, "total": asdict(total)}


def problem(status: int, slug: str, title: str, detail: str, **headers: str) -> JSONResponse:
    """An RFC 9457 problem; the detail passes the identity-code redactor."""
    return JSONResponse(
        {
            "type": PROBLEM_BASE + slug,
            "title": title,
            "status": status,
            "detail": redact_text(detail),
        },
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers or None,
    )


def create_app(
    settings: HubSettings,
    state: ReceiversState | None = None,
    secret_for: Callable[[HubSettings, str], str] = receiver_secret,
) -> FastAPI:
    """The receivers' app; *state* is shared with whoever runs it in-process."""
    state = state if state is not None else ReceiversState()
    app = FastAPI(title="TE hub local receivers", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.receivers = state
    webhooks: dict[str, Webhook] = {}

    def webhook(receiver: str) -> Webhook:
        found = webhooks.get(receiver)
        if found is None:
            found = webhooks[receiver] = Webhook(secret_for(settings, receiver))
        return found

    async def receive(receiver: str, request: Request) -> Response:
        knobs = state.effective(receiver)
        if knobs.down:
            state.count(receiver, "failed")
            return problem(
                503, "down", "Receiver is down", f"{receiver} is down", Connection="close"
            )
        body = await request.body()
        try:
            webhook(receiver).verify(body, dict(request.headers), json_parse=False)
        except WebhookVerificationError as error:
            state.count(receiver, "unauthorized")
            log.warning("receivers.bad_signature", receiver=receiver, reason=str(error))
            return problem(401, "bad-signature", "Signature not valid", str(error))
        event_id = request.headers["webhook-id"]  # signed: verify() needs it
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None and idempotency_key != event_id:
            state.count(receiver, "refused")
            return problem(
                400,
                "idempotency-key-mismatch",
                "Idempotency-Key differs from webhook-id",
                "the Idempotency-Key header must equal the signed webhook-id",
            )
        if knobs.delay_s:
            await asyncio.sleep(knobs.delay_s)
        if knobs.fail_share and random.random() < knobs.fail_share:
            state.count(receiver, "failed")
            extra = {"Retry-After": f"{knobs.retry_after_s:g}"} if knobs.retry_after_s else {}
            return problem(503, "failing", "Receiver failed", "told to fail a share", **extra)
        if knobs.refuse_event_ids and event_id in knobs.refuse_event_ids:
            state.count(receiver, "refused")
            return problem(
                422, "refused", "Event refused", f"{receiver} refuses event {event_id} (test)"
            )
        try:
            message = json.loads(body)
            data = message.get("data") or {}
            envelope = data.get("envelope") if isinstance(data, dict) else None
            subject = envelope.get("subject") if isinstance(envelope, dict) else None
            entry = Applied(
                receiver=receiver,
                event_id=event_id,
                type=str(message["type"]),
                subject=subject,
                time=message.get("timestamp"),
                received_at=datetime.now(UTC).isoformat(),
                body_sha256=hashlib.sha256(body).hexdigest(),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            state.count(receiver, "refused")
            return problem(400, "malformed-body", "Body not readable", "not a webhook message")
        outcome = state.apply(entry)
        if outcome == "conflict":
            return problem(
                409,
                "conflicting-redelivery",
                "Event id already applied with another body",
                f"{receiver} applied event {event_id} with another body",
            )
        if outcome == "duplicate":
            return JSONResponse({"duplicate": True})
        return JSONResponse({"applied": True})

    @app.post("/kela")
    async def kela(request: Request) -> Response:
        return await receive("kela", request)

    @app.post("/fund/{code}")
    async def fund(code: str, request: Request) -> Response:
        return await receive(f"fund/{code}", request)

    @app.post("/provider/{business_id}")
    async def provider(business_id: str, request: Request) -> Response:
        return await receive(f"provider/{business_id}", request)

    @app.post("/municipal/{area}")
    async def municipal(area: str, request: Request) -> Response:
        return await receive(f"municipal/{area}", request)

    @app.post("/_control")
    async def set_control(request: ControlRequest) -> dict[str, Any]:
        state.control(request)
        return {name: k.model_dump(exclude_none=True) for name, k in state.knobs.items()}

    @app.get("/_control")
    async def get_control() -> dict[str, Any]:
        return {name: k.model_dump(exclude_none=True) for name, k in state.knobs.items()}

    @app.get("/_applied")
    async def applied(receiver: str | None = None) -> dict[str, Any]:
        with state.lock:
            if receiver is not None:
                return {
                    "receiver": receiver,
                    "applied": [asdict(a) for a in state.applied.get(receiver, [])],
                }
            return {name: [asdict(a) for a in items] for name, items in state.applied.items()}

    @app.get("/_stats")
    async def stats() -> dict[str, Any]:
        return state.stats()

    @app.post("/_reset")
    async def reset() -> dict[str, Any]:
        state.reset()
        return state.stats()

    return app
