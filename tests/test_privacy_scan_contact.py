"""The one definition of an e-mail address and a phone number (hub.identity.contact) and the
three places that use it: ``hub privacy scan`` on bytes, the report's code redaction and the
receivers' problem texts on text. The same value is found in all three, or in none."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from hub.delivery.transport import REDACTED_PROBLEM, problem_text
from hub.identity import contact
from hub.identity.contact import (
    contact_kind,
    email_spans,
    phone_shaped_spans,
    phone_spans,
    redact_contacts,
)
from hub.privacy.scan import Kind, Scanner
from hub.reporting.render import personal_data_kind

EMAILS = [
    "matti.virtanen123@example.fi",
    "a.b@te-palvelut.fi",
    "x+tag@sub.example.com",
    "pää.käyttäjä@kunta.fi",
]
FINNISH_PHONES = [
    "+358 40 1234567",
    "+358401234567",
    "00358 50 123 4567",
    "+358 (0)9 1234567",
    "040 123 4567",
    "040-1234567",
    "0401234567",
    "09 1234 5678",
    "(09) 123 4567",
]
NOT_CONTACTS = ["0201256-6", "2026-01-05", "2026-01", "05-01-2026", "091", "0101", "E1", "a@b.c"]


def test_the_kinds_are_the_scans_kinds() -> None:
    assert Kind.EMAIL.value == contact.EMAIL
    assert Kind.PHONE.value == contact.PHONE


@pytest.mark.parametrize(
    ("value", "spans", "kind"),
    [(e, email_spans, Kind.EMAIL) for e in EMAILS]
    + [(p, phone_spans, Kind.PHONE) for p in FINNISH_PHONES],
)
def test_each_email_and_finnish_phone_is_found_by_all_three_whole(
    value: str, spans: Callable[[bytes], Iterator[tuple[int, int]]], kind: Kind
) -> None:
    data = value.encode()
    assert list(spans(b" " + data + b" ")) == [(1, 1 + len(data))]
    assert [m.kind for m in Scanner().scan(json.dumps({"v": value}).encode())] == [kind]
    assert personal_data_kind(value) == kind.value
    assert personal_data_kind(f"team {value}") == kind.value
    assert redact_contacts(f"to {value}, now", "[R]") == "to [R], now"
    assert problem_text(f"unknown {value} here") == f"unknown {REDACTED_PROBLEM} here"


@pytest.mark.parametrize("text", NOT_CONTACTS)
def test_business_ids_dates_and_short_codes_are_neither(text: str) -> None:
    data = text.encode()
    assert list(email_spans(data)) == []
    assert list(phone_spans(data)) == []
    assert list(phone_shaped_spans(data)) == []
    assert Scanner().scan(data) == []
    assert personal_data_kind(text) is None
    assert problem_text(f"field {text} refused") == f"field {text} refused"


def test_phone_shaped_is_wider_than_finnish_where_a_miss_would_leak() -> None:
    """Redaction (report codes, problem texts) cuts foreign and prefixless numbers too; the
    scan, which searches megabytes of binary data, counts Finnish numbers only."""
    for number in ("+46 70 123 45 67", "12345678", "1-800-555-0199"):
        assert list(phone_shaped_spans(number.encode())), number
        assert list(phone_spans(number.encode())) == [], number
        assert personal_data_kind(number) == "phone"
        assert problem_text(f"x {number} y") == f"x {REDACTED_PROBLEM} y"
    assert personal_data_kind("1234567890123456") is None  # 16 digits: no phone number
    for phone in FINNISH_PHONES:
        assert list(phone_shaped_spans(phone.encode())), phone


def test_text_and_bytes_agree_on_non_ascii_text() -> None:
    text = "Viesti: pää.käyttäjä@kunta.fi ja ±040 123 4567 — kiitos"
    redacted = redact_contacts(text, "[R]")
    assert redacted == "Viesti: [R] ja ±[R] — kiitos"
    assert contact_kind(text) == "e-mail"
    assert contact_kind("puh. 040 123 4567") == "phone"
    assert contact_kind("ei mitään") is None
    # A lone surrogate (from a bad decode) neither crashes nor is lost.
    assert redact_contacts("\udcff 040 123 4567", "[R]") == "\udcff [R]"


def test_huge_input_is_linear_enough() -> None:
    """Many '@' and digit runs: every finder ends (no catastrophic backtracking)."""
    data = (b"a" * 70 + b"@" + b"x." * 40 + b" 0" + b"1 " * 30) * 2000
    assert list(email_spans(data)) == []
    list(phone_spans(data))
    list(phone_shaped_spans(data))
