"""Business ID (Y-tunnus) of employers, service providers and unemployment funds.

Form NNNNNNN-C. Only the current seven-digit form is accepted: old six-digit ids must be
zero-padded by the sender, because guessing the padding here would hide data errors.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator

WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2)

_SHAPE = re.compile(r"(?P<serial>[0-9]{7})-(?P<check>[0-9])")


class InvalidBusinessId(ValueError):
    """The text is not a valid business ID; the message says why, never what the text holds
    (a field meant for a business ID may hold anything, a person's name too)."""


def business_id_check_digit(serial: str) -> str:
    """Check digit for the seven-digit serial part.

    Raises :class:`InvalidBusinessId` for serials whose weighted sum leaves remainder 1: those
    serials are never issued, so no check digit exists for them.
    """
    if not (len(serial) == 7 and serial.isascii() and serial.isdigit()):
        raise InvalidBusinessId("business ID serial must be 7 digits")
    remainder = sum(int(d) * w for d, w in zip(serial, WEIGHTS, strict=True)) % 11
    if remainder == 1:
        raise InvalidBusinessId("the business ID serial has remainder 1 and is never issued")
    return "0" if remainder == 0 else str(11 - remainder)


def validate_business_id(text: str) -> str:
    """Return the business ID stripped of surrounding whitespace, or raise InvalidBusinessId."""
    if not isinstance(text, str):
        raise InvalidBusinessId(f"business ID must be a string, got {type(text).__name__}")
    value = text.strip()
    shape = _SHAPE.fullmatch(value)
    if shape is None:
        raise InvalidBusinessId("business ID must look like 1234567-8")
    expected = business_id_check_digit(shape["serial"])
    if shape["check"] != expected:
        raise InvalidBusinessId("the check digit of the business ID does not match its serial")
    return value


def is_valid_business_id(text: str) -> bool:
    """True when :func:`validate_business_id` would accept *text*."""
    try:
        validate_business_id(text)
    except InvalidBusinessId:
        return False
    return True


def make_business_id(serial: int) -> str:
    """A valid business ID for serial number *serial* (0-9999999), for simulators and fixtures.

    Raises :class:`InvalidBusinessId` for the about one in eleven serials that have no check
    digit; callers generating ids can simply try the next serial.
    """
    if not 0 <= serial <= 9_999_999:
        raise InvalidBusinessId(f"business ID serial must be 0-9999999, got {serial}")
    digits = f"{serial:07d}"
    return f"{digits}-{business_id_check_digit(digits)}"


#: A ``str`` field that must hold a valid business ID.
BusinessIdStr = Annotated[str, AfterValidator(validate_business_id)]
