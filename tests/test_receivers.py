"""The local receivers over real HTTP: signatures, dedupe by the signed webhook-id (and a
conflicting body refused), control knobs."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from connectors.receivers import LocalReceivers, endpoint_id_of, receiver_secret
from connectors.receivers.cli import summary_table
from connectors.receivers.runner import receivers_subprocess
from hub.routing.routes import development_signing_secret
from hub.settings import HubSettings
from tests.conftest import hub_environment

SUBJECT = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def settings() -> HubSettings:
    return HubSettings(pseudonym_secret="receivers-test-secret-0123456789")


@pytest.fixture
def receivers(settings: HubSettings) -> Iterator[LocalReceivers]:
    with LocalReceivers(settings, port=0) as running:
        yield running


def webhook_request(
    settings: HubSettings,
    receiver: str,
    event_id: str | None = None,
    *,
    secret: str | None = None,
    type_name: str = "JobseekerRegistered",
    idempotency_key: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A body and headers as the delivery worker sends them (Standard Webhooks)."""
    event_id = event_id or str(uuid.uuid4())
    body = json.dumps(
        {
            "type": type_name,
            "timestamp": "2026-03-02T09:00:00+00:00",
            "data": {"envelope": {"event_id": event_id, "subject": SUBJECT}, "payload": {}},
        }
    )
    now = datetime.now(UTC)
    signature = Webhook(secret or receiver_secret(settings, receiver)).sign(event_id, now, body)
    headers = {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "Idempotency-Key": idempotency_key or event_id,
        "Content-Type": "application/json",
    }
    return body.encode(), headers


def post(
    receivers: LocalReceivers, receiver: str, event_id: str | None = None, **kw: Any
) -> httpx.Response:
    body, headers = webhook_request(receivers.settings, receiver, event_id, **kw)
    return httpx.post(receivers.url(receiver), content=body, headers=headers, timeout=10)


def test_secret_is_the_routing_development_secret_of_the_endpoint(settings: HubSettings) -> None:
    """The receivers verify with what Endpoint.signing_secret gives in development."""
    assert endpoint_id_of("fund/1234") == "funds/1234"
    assert endpoint_id_of("provider/0737545-4") == "providers/0737545-4"
    assert endpoint_id_of("municipal/01") == "municipal/01"
    assert receiver_secret(settings, "kela") == development_signing_secret(settings, "kela")
    assert receiver_secret(settings, "fund/9999") == development_signing_secret(
        settings, "funds/9999"
    )


def test_signed_event_is_applied_in_order_and_duplicate_dropped(
    receivers: LocalReceivers,
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for event_id in ids:
        response = post(receivers, "kela", event_id)
        assert response.status_code == 200, response.text
        assert response.json() == {"applied": True}
    again = post(receivers, "kela", ids[1])
    assert again.status_code == 200
    assert again.json() == {"duplicate": True}
    # the same event at another receiver is not a duplicate there
    assert post(receivers, "fund/1234", ids[1]).json() == {"applied": True}

    applied = receivers.applied("kela")
    assert [a["event_id"] for a in applied] == ids
    assert {a["subject"] for a in applied} == {SUBJECT}
    assert applied[0]["type"] == "JobseekerRegistered"
    assert applied[0]["time"] == "2026-03-02T09:00:00+00:00"
    stats = receivers.stats()
    assert stats["receivers"]["kela"] == {
        "applied": 3,
        "duplicates": 1,
        "refused": 0,
        "failed": 0,
        "unauthorized": 0,
        "conflicts": 0,
    }
    assert stats["total"]["applied"] == 4
    assert set(receivers.applied_all()) == {"kela", "fund/1234"}


@pytest.mark.parametrize("receiver", ["kela", "fund/1234", "provider/0737545-4", "municipal/01"])
def test_bad_or_missing_signature_is_401_problem(receivers: LocalReceivers, receiver: str) -> None:
    wrong = development_signing_secret(receivers.settings, "someone-else")
    response = post(receivers, receiver, secret=wrong)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401

    body, headers = webhook_request(receivers.settings, receiver)
    del headers["webhook-signature"]
    missing = httpx.post(receivers.url(receiver), content=body, headers=headers)
    assert missing.status_code == 401

    body, headers = webhook_request(receivers.settings, receiver)
    tampered = httpx.post(receivers.url(receiver), content=body + b" ", headers=headers)
    assert tampered.status_code == 401
    assert receivers.applied(receiver) == []
    assert receivers.stats()["receivers"][receiver]["unauthorized"] == 3


def test_refused_event_ids_answer_422_with_a_problem_text(receivers: LocalReceivers) -> None:
    refused = str(uuid.uuid4())
    receivers.control("provider", refuse_event_ids=[refused])
    response = post(receivers, "provider/0737545-4", refused)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert refused in response.json()["detail"]
    assert post(receivers, "provider/0737545-4").status_code == 200
    assert post(receivers, "kela", refused).status_code == 200  # only providers refuse it
    assert receivers.stats()["receivers"]["provider/0737545-4"]["refused"] == 1


def test_fail_share_down_and_delay(receivers: LocalReceivers) -> None:
    receivers.control("kela", fail_share=1.0, retry_after_s=3)
    failing = post(receivers, "kela")
    assert failing.status_code == 503
    assert failing.headers["retry-after"] == "3"
    assert post(receivers, "fund/1234").status_code == 200  # others unaffected

    receivers.control("kela", fail_share=None)
    receivers.control(down=True)  # everyone
    assert post(receivers, "kela").status_code == 503
    assert post(receivers, "municipal/01").status_code == 503
    receivers.control("municipal/01", down=False)  # the most specific setting wins
    assert post(receivers, "municipal/01").status_code == 200
    assert post(receivers, "kela").status_code == 503

    receivers.reset_control()
    receivers.control("kela", delay_s=0.3)
    started = datetime.now(UTC)
    assert post(receivers, "kela").status_code == 200
    assert (datetime.now(UTC) - started).total_seconds() >= 0.3
    stats = receivers.stats()["receivers"]
    assert stats["kela"]["failed"] == 3  # one told to fail, two while down
    assert stats["kela"]["applied"] == 1

    # A share between 0 and 1 fails about that share.
    receivers.reset_control()
    receivers.control("fund/7", fail_share=0.5)
    statuses = [post(receivers, "fund/7").status_code for _ in range(60)]
    assert 5 < statuses.count(503) < 55
    assert statuses.count(200) == receivers.stats()["receivers"]["fund/7"]["applied"]


def test_really_down_then_up_keeps_what_was_applied(settings: HubSettings, tmp_path: Path) -> None:
    record = tmp_path / "applied.ndjson"
    event_id = str(uuid.uuid4())
    with LocalReceivers(settings, record=record) as receivers:
        assert post(receivers, "kela", event_id).status_code == 200
        receivers.stop()
        with pytest.raises(httpx.ConnectError):
            post(receivers, "kela")
        receivers.start()
        assert post(receivers, "kela", event_id).json() == {"duplicate": True}
    # A new server on the same record file still knows it.
    with LocalReceivers(settings, record=record) as again:
        assert post(again, "kela", event_id).json() == {"duplicate": True}
        assert [a["event_id"] for a in again.applied("kela")] == [event_id]
    assert len(record.read_text().splitlines()) == 1


def test_hub_receivers_command_serves_and_prints_a_summary(
    settings: HubSettings, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = hub_environment(settings)
    record = tmp_path / "applied.ndjson"
    with receivers_subprocess(env, port=port, record=record, cwd=tmp_path) as receivers:
        body, headers = webhook_request(settings, "fund/1234")
        response = httpx.post(receivers.url("fund/1234"), content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert httpx.post(receivers.url("fund/1234"), content=body, headers=headers).json() == {
            "duplicate": True
        }
        summary = receivers.stop()
    lines = summary.splitlines()
    lines = lines[[line.split()[:1] for line in lines].index(["receiver"]) :]
    assert lines[0].split() == [
        "receiver",
        "applied",
        "duplicates",
        "refused",
        "failed",
        "unauthorized",
        "conflicts",
    ]
    assert lines[1].split() == ["fund/1234", "1", "1", "0", "0", "0", "0"]
    assert lines[-1].split()[0] == "total"
    assert len(record.read_text().splitlines()) == 1


def test_summary_table_of_no_traffic() -> None:
    table = summary_table(
        {
            "receivers": {},
            "total": {k: 0 for k in ("applied", "duplicates", "refused", "failed", "unauthorized")},
        }
    )
    assert table.splitlines()[-1].split() == ["total", "0", "0", "0", "0", "0", "0"]


def test_dedupe_is_by_the_signed_webhook_id_not_the_unsigned_idempotency_key(
    receivers: LocalReceivers,
) -> None:
    """A captured signed request replayed with another Idempotency-Key (the signature does not
    cover it) was applied a second time; now it is refused, and the id alone dedupes."""
    event_id = str(uuid.uuid4())
    body, headers = webhook_request(receivers.settings, "kela", event_id)
    assert httpx.post(receivers.url("kela"), content=body, headers=headers).json() == {
        "applied": True
    }
    replay = httpx.post(
        receivers.url("kela"), content=body, headers={**headers, "Idempotency-Key": "chosen"}
    )
    assert replay.status_code == 400
    assert replay.headers["content-type"] == "application/problem+json"
    assert replay.json()["type"].endswith("/idempotency-key-mismatch")
    no_key = {k: v for k, v in headers.items() if k != "Idempotency-Key"}
    again = httpx.post(receivers.url("kela"), content=body, headers=no_key)
    assert again.json() == {"duplicate": True}
    assert [a["event_id"] for a in receivers.applied("kela")] == [event_id]
    assert receivers.stats()["receivers"]["kela"]["refused"] == 1


def test_a_known_id_with_another_body_is_a_409_conflict_also_after_a_restart(
    settings: HubSettings, tmp_path: Path
) -> None:
    record = tmp_path / "applied.ndjson"
    event_id = str(uuid.uuid4())
    with LocalReceivers(settings, record=record) as receivers:
        assert post(receivers, "kela", event_id).json() == {"applied": True}
        other = post(receivers, "kela", event_id, type_name="EmploymentStarted")  # signed
        assert other.status_code == 409
        assert other.headers["content-type"] == "application/problem+json"
        assert other.json()["type"].endswith("/conflicting-redelivery")
        assert post(receivers, "kela", event_id).json() == {"duplicate": True}  # same body
        counts = receivers.stats()["receivers"]["kela"]
        assert (counts["applied"], counts["duplicates"], counts["conflicts"]) == (1, 1, 1)
        assert receivers.stats()["total"]["conflicts"] == 1
    with LocalReceivers(settings, record=record) as again:  # the body's hash is in the record
        assert post(again, "kela", event_id, type_name="EmploymentStarted").status_code == 409
        assert [a["type"] for a in again.applied("kela")] == ["JobseekerRegistered"]
