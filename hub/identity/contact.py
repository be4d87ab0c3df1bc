"""What an e-mail address and a phone number look like: one definition for every place that
looks for them (the report's code columns, receivers' problem texts, ``hub privacy scan``).

Each pattern is written once as text (``*_SOURCE``, ASCII only) and compiled twice: for
``str`` and for ``bytes`` (the scan searches raw topic and file bytes, where UTF-8 text inside
Avro, JSON or SQLite pages reads the same). The finders work on bytes; the text functions run
them on the text's UTF-8 bytes, so text and bytes give the same answer.

* **e-mail** (:func:`email_spans`): around each ``@``, a local part of 2 to 64 characters
  (ASCII letters, digits, ``._%+-`` and any non-ASCII letter, starting with a letter or digit)
  and a domain of labels with a top-level domain of 2 to 24 letters, the name before the last
  dot at least 2 characters (``a@b.c``, ``user@localhost``, ``x@y.fi`` are none).
* **phone** (:func:`phone_spans`): a Finnish number, ``+358`` / ``00358`` (optionally ``(0)``)
  or a trunk ``0`` (optionally with the area code in brackets), then digits with single spaces
  or dashes, 7 to 12 digits after the prefix (``040 123 4567``, ``+358 40 1234567``, ``(09) 123
  4567``, ``09-1234567``); not glued to a word or number, not a business ID or a date. Precise
  enough to search megabytes of binary data.
* **phone-shaped** (:func:`phone_shaped_spans`): where a false match costs nothing (a value is
  redacted, not reported), any run of 7 to 15 digits with phone separators, a foreign number or
  a number without its prefix included; a business ID or a date is none. Every Finnish number
  is phone-shaped too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

EMAIL: Final = "e-mail"
PHONE: Final = "phone"

# -- e-mail -------------------------------------------------------------------------------------

EMAIL_LOCAL_CHARS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-"
"""ASCII characters of an e-mail address's local part (any non-ASCII letter is one too)."""
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_DOMAIN_SOURCE: Final = rf"{_LABEL}(?:\.{_LABEL})*\.[A-Za-z]{{2,24}}(?![A-Za-z0-9-])"
"""The domain after the ``@``."""
EMAIL_LOCAL_MAX: Final = 64

_EMAIL_DOMAIN: Final = re.compile(EMAIL_DOMAIN_SOURCE.encode())
_LOCAL: Final = frozenset(EMAIL_LOCAL_CHARS.encode()) | frozenset(range(0x80, 0x100))
_LOCAL_FIRST: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
) | frozenset(range(0xC0, 0x100))
"""Where a local part may start: an ASCII letter or digit, or a UTF-8 lead byte."""


def email_spans(data: bytes) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of every e-mail address in ``data``, in order."""
    at = data.find(b"@")
    while at >= 0:
        start = at
        while start > 0 and at - start <= EMAIL_LOCAL_MAX and data[start - 1] in _LOCAL:
            start -= 1
        while start < at and data[start] not in _LOCAL_FIRST:
            start += 1
        domain = _EMAIL_DOMAIN.match(data, at + 1)
        if (
            domain is not None
            and 2 <= at - start <= EMAIL_LOCAL_MAX
            and domain.group().rindex(b".") >= 2
        ):
            yield start, domain.end()
            at = data.find(b"@", domain.end())
        else:
            at = data.find(b"@", at + 1)


# -- phone --------------------------------------------------------------------------------------

PHONE_SOURCE: Final = (
    r"(?:(?:\+|00)358[ -]?(?:\(0\)[ -]?)?|\(0|0)"
    r"[1-9][0-9]{0,2}\)?"
    r"(?:[ -]?[0-9]){4,11}"
    r"(?!-?[0-9A-Za-z])"
)
"""A Finnish phone number (checked further by :func:`phone_spans`): an international prefix
(+358, 00358, optionally "(0)") or a trunk 0 (optionally in brackets with the area code), then
digits with single spaces or dashes; not before a letter or digit, nor "-x" (the next group of
a UUID)."""
PHONE_DIGITS: Final = (7, 12)
"""Digits after the prefix (+358 or the trunk 0) of what counts as a Finnish phone number."""
PHONE_NOT_AFTER: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+."
"""A number does not start right after these (a word, a number, a decimal), nor after one of
them and a dash (inside a UUID or a date)."""
NOT_PHONE_SOURCES: Final = (
    r"[0-9]{7}-[0-9]",  # a business ID
    r"[0-9]{2}-[0-9]{2}-[0-9]{4}",  # a date, day first
    r"[0-9]{4}-[0-9]{2}(?:-[0-9]{2})?",  # an ISO date or month
)
PHONE_SHAPED_SOURCE: Final = r"\+?\(?[0-9][0-9 ()./-]{5,}[0-9]"
"""Phone-shaped: an optional +, digits with spaces, dashes, dots or brackets between."""
PHONE_SHAPED_DIGITS: Final = (7, 15)

_PHONE: Final = re.compile(PHONE_SOURCE.encode())
_PHONE_SHAPED: Final = re.compile(PHONE_SHAPED_SOURCE.encode())
_NOT_PHONE: Final = tuple(re.compile(s.encode()) for s in NOT_PHONE_SOURCES)
_NOT_AFTER: Final = frozenset(PHONE_NOT_AFTER.encode())
_NON_DIGIT: Final = re.compile(rb"[^0-9]")


def _digits_after_prefix(found: bytes) -> int:
    digits = _NON_DIGIT.sub(b"", found)
    if found.startswith(b"+358"):
        digits = digits[3:]
    elif found.startswith(b"00358"):
        digits = digits[5:]
    else:
        return len(digits) - 1  # the trunk 0
    return len(digits) - 1 if b"(0)" in found else len(digits)


def _not_phone(found: bytes) -> bool:
    return any(p.fullmatch(found) for p in _NOT_PHONE)


def phone_spans(data: bytes) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of every Finnish phone number in ``data``, in order."""
    for m in _PHONE.finditer(data):
        start = m.start()
        if start > 0 and data[start - 1] in _NOT_AFTER:
            continue  # glued to a word or number
        if start > 1 and data[start - 1] == 0x2D and data[start - 2] in _NOT_AFTER:
            continue  # the next group of a UUID or a date
        found = m.group()
        if _not_phone(found):
            continue
        if PHONE_DIGITS[0] <= _digits_after_prefix(found) <= PHONE_DIGITS[1]:
            yield m.span()


def phone_shaped_spans(data: bytes) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of every phone-shaped run of ``data`` (see the module's notes)."""
    for m in _PHONE_SHAPED.finditer(data):
        found = m.group()
        digits = len(_NON_DIGIT.sub(b"", found))
        low, high = PHONE_SHAPED_DIGITS
        if low <= digits <= high and not _not_phone(found):
            yield m.span()


# -- text ---------------------------------------------------------------------------------------


def contact_kind(text: str) -> str | None:
    """:data:`EMAIL` when ``text`` holds an e-mail address, else :data:`PHONE` when it holds
    something phone-shaped, else None."""
    data = text.encode("utf-8", errors="surrogatepass")
    if next(email_spans(data), None) is not None:
        return EMAIL
    if next(phone_shaped_spans(data), None) is not None:
        return PHONE
    return None


def personal_data_kind(text: str) -> str | None:
    """What personal data a free text holds (an identity code, an e-mail address, something
    phone-shaped), or None: for texts the hub keeps for good, such as the reason of a reveal or
    an erasure in the disclosure log, which must not become a copy of what they are about."""
    from hub.identity.hetu import identity_code_spans

    if next(iter(identity_code_spans(text)), None) is not None:
        return "identity code"
    return contact_kind(text)


def redact_contacts(text: str, replacement: str) -> str:
    """``text`` with every e-mail address, then every phone-shaped run, replaced."""
    for spans in (email_spans, phone_shaped_spans):
        data = text.encode("utf-8", errors="surrogatepass")
        found = list(spans(data))
        if not found:
            continue
        parts: list[str] = []
        done = 0
        for start, end in found:
            parts.append(data[done:start].decode("utf-8", errors="surrogatepass"))
            parts.append(replacement)
            done = end
        parts.append(data[done:].decode("utf-8", errors="surrogatepass"))
        text = "".join(parts)
    return text
