"""Personal identity code (henkilötunnus): parsing, validation and test-code generation.

The code is DDMMYY + century sign + individual number NNN + check character. Since 2023 there
are several century signs per century; the sign is part of the identity, so two codes that differ
only in the sign ("-" and "Y") are different people and are never normalised into each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Final

from pydantic import AfterValidator

CHECK_CHARACTERS: Final = "0123456789ABCDEFHJKLMNPRSTUVWXY"

#: Century of the birth year for every valid sign (the 2023 reform added Y-U and B-F).
CENTURY_SIGNS: Final[dict[str, int]] = {
    "+": 1800,
    **dict.fromkeys("-YXWVU", 1900),
    **dict.fromkeys("ABCDEF", 2000),
}

_CLASSIC_SIGN: Final = {1800: "+", 1900: "-", 2000: "A"}
# The 1800s have no new sign, so "+" is the only choice there.
_MODERN_SIGN: Final = {1800: "+", 1900: "Y", 2000: "B"}

FIRST_INDIVIDUAL_NUMBER: Final = 2
FIRST_TEMPORARY_NUMBER: Final = 900
LAST_INDIVIDUAL_NUMBER: Final = 999

_SHAPE = re.compile(r"(?P<date>[0-9]{6})(?P<sign>.)(?P<number>[0-9]{3})(?P<check>.)")

#: An identity code standing as a token of its own (no letter or digit on either side), with any
#: century sign and either case. The check character is deliberately ignored: a mistyped code is
#: still personal data. :func:`identity_code_spans` adds the codes glued to other characters.
IDENTITY_CODE_PATTERN: Final = re.compile(
    r"(?<![0-9A-Za-z])\d{6}[-+A-FU-Y]\d{3}[0-9A-Y](?![0-9A-Za-z])", re.IGNORECASE
)
#: Every start of a code-shaped run, glued or not (a lookahead, so overlapping runs all count).
_EMBEDDED_CANDIDATE: Final = re.compile(r"(?=([0-9]{6}[-+A-FU-Y][0-9]{3}[0-9A-Y]))")


class InvalidIdentityCode(ValueError):
    """The text is not a valid personal identity code; the message says exactly why."""


@dataclass(frozen=True, slots=True)
class IdentityCode:
    """A validated personal identity code.

    Sex (the parity of the individual number) is deliberately not exposed: no integration needs
    it. The repr hides the code so that a stray ``repr()`` in a log or traceback leaks nothing.
    """

    code: str
    birth_date: date
    century_sign: str
    individual_number: int

    @property
    def is_temporary(self) -> bool:
        """Numbers 900-999 are temporary codes (and the ones used in test data)."""
        return self.individual_number >= FIRST_TEMPORARY_NUMBER

    def __str__(self) -> str:
        return self.code

    def __repr__(self) -> str:
        return "IdentityCode(<redacted>)"


def check_character(digits: str) -> str:
    """Check character for the nine digits DDMMYYNNN."""
    return CHECK_CHARACTERS[int(digits) % 31]


def parse_identity_code(text: str) -> IdentityCode:
    """Validate *text* and return its parts.

    Surrounding whitespace is stripped and letters are upper-cased; nothing else is forgiven.
    Error messages say which part is wrong, never what it holds (not its birth date, sign or
    check character): they reach logs and the problem responses of the ingest API.
    """
    if not isinstance(text, str):
        raise InvalidIdentityCode(f"identity code must be a string, got {type(text).__name__}")
    code = text.strip().upper()
    if len(code) != 11:
        raise InvalidIdentityCode("identity code must be 11 characters (DDMMYYCNNNX)")
    shape = _SHAPE.fullmatch(code)
    if shape is None:
        raise InvalidIdentityCode(
            "identity code must be DDMMYY, a century sign, three digits and a check character"
        )
    sign = shape["sign"]
    century = CENTURY_SIGNS.get(sign)
    if century is None:
        raise InvalidIdentityCode(
            f"unknown century sign: the sign must be one of {''.join(CENTURY_SIGNS)}"
        )
    day, month, year = int(code[0:2]), int(code[2:4]), century + int(code[4:6])
    try:
        birth_date = date(year, month, day)
    except ValueError:
        raise InvalidIdentityCode("the birth date of the identity code does not exist") from None
    number = int(shape["number"])
    if number < FIRST_INDIVIDUAL_NUMBER:
        raise InvalidIdentityCode(
            "the individual number of the identity code is outside "
            f"{FIRST_INDIVIDUAL_NUMBER:03d}–{LAST_INDIVIDUAL_NUMBER}"
        )
    expected = check_character(shape["date"] + shape["number"])
    if shape["check"] != expected:
        raise InvalidIdentityCode("the check character of the identity code does not match")
    return IdentityCode(
        code=code, birth_date=birth_date, century_sign=sign, individual_number=number
    )


def is_valid_identity_code(text: str) -> bool:
    """True when :func:`parse_identity_code` would accept *text*."""
    try:
        parse_identity_code(text)
    except InvalidIdentityCode:
        return False
    return True


def identity_code_spans(text: str) -> list[tuple[int, int]]:
    """Where *text* holds what to treat as an identity code: ``(start, end)``, merged, in order.

    Two rules. A code-shaped token of its own counts, valid or not (:data:`IDENTITY_CODE_PATTERN`).
    A code glued to other characters (``abc010594Y9032def``, or ``\\x16010594Y9032`` in the repr
    of Avro bytes, where the length byte's escape ends in a digit) counts only when it is upper
    case and valid (a real date, individual number and check character). Unvalidated, the shape
    alone would be found in long digit runs, UUIDs and digests, and masking would garble the ids
    operators work with; upper case, because the hub stores codes upper-cased while its hex ids
    (UUIDs, pseudonyms) are lower case, so a pseudonym never matches and a random UUID only
    when a valid code happens to sit in its first two groups.
    """
    spans = [m.span() for m in IDENTITY_CODE_PATTERN.finditer(text)]
    for candidate in _EMBEDDED_CANDIDATE.finditer(text):
        if is_valid_identity_code(candidate[1]):
            spans.append((candidate.start(), candidate.start() + len(candidate[1])))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def contains_identity_code(text: str) -> bool:
    """True when :func:`identity_code_spans` finds anything in *text*."""
    return bool(identity_code_spans(text))


def replace_identity_codes(text: str, replacement: str) -> str:
    """*text* with every span of :func:`identity_code_spans` replaced by *replacement*."""
    parts: list[str] = []
    position = 0
    for start, end in identity_code_spans(text):
        parts += [text[position:start], replacement]
        position = end
    return "".join([*parts, text[position:]])


def make_test_identity_code(
    birth_date: date, individual_number: int, modern_sign: bool = False
) -> str:
    """Build a valid temporary identity code (individual number 900-999) for fixtures.

    Only the temporary range is allowed so that simulators and tests can never mint a code that
    belongs to a real person. *modern_sign* picks the 2023 signs ("Y", "B") instead of the
    classic ones ("-", "A"); the 1800s only have "+".
    """
    if not FIRST_TEMPORARY_NUMBER <= individual_number <= LAST_INDIVIDUAL_NUMBER:
        raise ValueError(
            f"test identity codes use individual numbers {FIRST_TEMPORARY_NUMBER}–"
            f"{LAST_INDIVIDUAL_NUMBER}, got {individual_number}"
        )
    century = birth_date.year // 100 * 100
    signs = _MODERN_SIGN if modern_sign else _CLASSIC_SIGN
    if century not in signs:
        raise ValueError(f"no century sign for birth year {birth_date.year}")
    digits = f"{birth_date:%d%m}{birth_date.year % 100:02d}{individual_number:03d}"
    return f"{digits[:6]}{signs[century]}{digits[6:]}{check_character(digits)}"


def _normalise_identity_code(value: str) -> str:
    return parse_identity_code(value).code


#: A ``str`` field that must hold a valid identity code; stored stripped and upper-cased.
PersonalIdentityCodeStr = Annotated[str, AfterValidator(_normalise_identity_code)]
