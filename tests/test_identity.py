"""Personal identity codes, business IDs and pseudonyms."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import BaseModel, ValidationError

from hub.identity import (
    IDENTITY_CODE_PATTERN,
    BusinessIdStr,
    IdentityCode,
    InvalidBusinessId,
    InvalidIdentityCode,
    PersonalIdentityCodeStr,
    Pseudonymizer,
    PseudonymStr,
    business_id_check_digit,
    contains_identity_code,
    identity_code_spans,
    is_valid_business_id,
    is_valid_identity_code,
    make_business_id,
    make_test_identity_code,
    parse_identity_code,
    replace_identity_codes,
    validate_business_id,
)
from hub.settings import HubSettings

SECRET = "test-secret-of-employment-area-08"


# --- personal identity code -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "birth_date", "sign", "number", "temporary"),
    [
        ("010594Y9032", date(1994, 5, 1), "Y", 903, True),
        ("010516B903X", date(2016, 5, 1), "B", 903, True),
        ("131052-308T", date(1952, 10, 13), "-", 308, False),
    ],
)
def test_published_codes_parse(
    text: str, birth_date: date, sign: str, number: int, temporary: bool
) -> None:
    parsed = parse_identity_code(text)
    assert parsed.code == text
    assert parsed.birth_date == birth_date
    assert parsed.century_sign == sign
    assert parsed.individual_number == number
    assert parsed.is_temporary is temporary


def test_input_is_stripped_and_upper_cased() -> None:
    assert parse_identity_code("  010516b903x \n").code == "010516B903X"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("010594Y9033", "check character of the identity code does not match"),
        ("010594G9032", "unknown century sign"),
        ("010594Z9032", "unknown century sign"),
        ("310290-9022", "birth date of the identity code does not exist"),
        ("290201A9020", "birth date of the identity code does not exist"),
        ("010594Y0012", "individual number of the identity code is outside 002–999"),
        ("010594Y0002", "individual number of the identity code is outside 002–999"),
        ("010594Y903", "must be 11 characters"),
        ("010594Y90322", "must be 11 characters"),
        ("", "must be 11 characters"),
        ("01059XY9032", "must be DDMMYY"),
        ("010594Y9A32", "must be DDMMYY"),
        ("０10594Y9032", "must be DDMMYY"),  # a full-width digit
    ],
)
def test_invalid_codes_say_why(text: str, reason: str) -> None:
    with pytest.raises(InvalidIdentityCode, match=reason) as raised:
        parse_identity_code(text)
    assert not is_valid_identity_code(text)
    # which part is wrong, never what it holds: no birth date, sign, number or check character
    parts = {text[:6], text[6:7], text[7:10], text[10:], "31.02", "29.02", "'G'", "'Z'"}
    message = str(raised.value)
    assert not [p for p in parts if len(p) > 1 and p in message]
    assert "expected" not in message


def test_invalid_identity_code_is_a_value_error() -> None:
    assert issubclass(InvalidIdentityCode, ValueError)


def test_leap_day_is_a_birth_date() -> None:
    code = make_test_identity_code(date(2000, 2, 29), 950)
    assert parse_identity_code(code).birth_date == date(2000, 2, 29)


def test_all_century_signs_are_accepted() -> None:
    # Same digits, so the same check character, for every sign of the century.
    for sign in "-YXWVU":
        assert parse_identity_code(f"010594{sign}9032").birth_date == date(1994, 5, 1)
    for sign in "ABCDEF":
        assert parse_identity_code(f"010516{sign}903X").birth_date == date(2016, 5, 1)
    assert parse_identity_code("010594+9032").birth_date == date(1894, 5, 1)


def test_repr_hides_the_code() -> None:
    parsed = parse_identity_code("010594Y9032")
    assert "010594Y9032" not in repr(parsed)
    assert str(parsed) == "010594Y9032"


@pytest.mark.parametrize(
    ("birth_date", "modern", "expected"),
    [
        (date(1994, 5, 1), True, "010594Y9032"),
        (date(1994, 5, 1), False, "010594-9032"),
        (date(2016, 5, 1), True, "010516B903X"),
        (date(2016, 5, 1), False, "010516A903X"),
        (date(1894, 5, 1), True, "010594+9032"),
    ],
)
def test_make_test_identity_code(birth_date: date, modern: bool, expected: str) -> None:
    code = make_test_identity_code(birth_date, 903, modern_sign=modern)
    assert code == expected
    assert parse_identity_code(code).is_temporary


@pytest.mark.parametrize("number", [2, 308, 899, 1000, -1])
def test_make_test_identity_code_refuses_real_numbers(number: int) -> None:
    with pytest.raises(ValueError, match="900–999"):
        make_test_identity_code(date(1990, 1, 1), number)


def test_make_test_identity_code_refuses_unsupported_century() -> None:
    with pytest.raises(ValueError, match="no century sign"):
        make_test_identity_code(date(2101, 1, 1), 900)


def test_generated_codes_are_all_valid() -> None:
    for day in range(1, 29):
        for number in (900, 901, 955, 999):
            for modern in (False, True):
                code = make_test_identity_code(date(1985, 7, day), number, modern_sign=modern)
                assert is_valid_identity_code(code), code


class _Person(BaseModel):
    identity_code: PersonalIdentityCodeStr


def test_pydantic_type_normalises() -> None:
    assert _Person(identity_code=" 010516b903x").identity_code == "010516B903X"


def test_pydantic_type_rejects_with_reason() -> None:
    with pytest.raises(ValidationError, match="check character of the identity code"):
        _Person(identity_code="010594Y9033")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("code 010594Y9032 here", True),
        ("(131052-308t)", True),
        ("x=010516B903X,", True),
        ("010594+9032", True),
        ("(010594Y9033)", True),  # a token of its own counts even with a wrong check character
        # Glued to other characters: found when valid (and upper case, as the hub stores codes).
        ("a010594Y9032", True),
        ("0010594Y9032", True),
        ("010594Y90321", True),
        ("abc010594Y9032def", True),
        ("\\x16010594Y9032", True),
        ("a010594Y9033", False),
        ("a320194Y9032", False),
        ("a010594y9032", False),
        ("123e4567-e89b-12d3-a456-426614174000", False),
    ],
)
def test_identity_code_spans(text: str, found: bool) -> None:
    assert contains_identity_code(text) is found
    assert (IDENTITY_CODE_PATTERN.search(text) is not None) <= found


def test_spans_are_merged_and_replaced_in_place() -> None:
    text = "x010594Y9032010516B903X (131052-308T) 010594Y9032"
    assert identity_code_spans(text) == [(1, 23), (25, 36), (38, 49)]
    assert replace_identity_codes(text, "#") == "x# (#) #"


# --- business ID ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0112038-9", "0201256-6", "0246246-0", "2331972-7"])
def test_valid_business_ids(text: str) -> None:
    assert validate_business_id(text) == text
    assert is_valid_business_id(text)


def test_business_id_is_stripped() -> None:
    assert validate_business_id(" 0112038-9 ") == "0112038-9"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0112038-8", "check digit of the business ID does not match"),
        ("1000008-0", "remainder 1"),
        ("1234567-2", "check digit of the business ID does not match"),
        ("112038-9", "must look like"),
        ("01120389", "must look like"),
        ("0112038-X", "must look like"),
        ("０112038-9", "must look like"),
    ],
)
def test_invalid_business_ids(text: str, reason: str) -> None:
    with pytest.raises(InvalidBusinessId, match=reason) as raised:
        validate_business_id(text)
    assert text not in str(raised.value)
    assert text[:7] not in str(raised.value)
    assert not is_valid_business_id(text)


def test_check_digit_and_generation() -> None:
    assert business_id_check_digit("0112038") == "9"
    assert business_id_check_digit("0246246") == "0"
    assert make_business_id(112038) == "0112038-9"
    with pytest.raises(InvalidBusinessId, match="remainder 1"):
        make_business_id(1_000_008)
    generated = []
    for serial in range(2_000_000, 2_000_200):
        try:
            generated.append(make_business_id(serial))
        except InvalidBusinessId:
            continue
    assert len(generated) > 150
    assert all(is_valid_business_id(b) for b in generated)


class _Employer(BaseModel):
    business_id: BusinessIdStr


def test_business_id_pydantic_type() -> None:
    assert _Employer(business_id="0112038-9").business_id == "0112038-9"
    with pytest.raises(ValidationError, match="check digit of the business ID") as raised:
        _Employer(business_id="0112038-1")
    assert "0112038" not in raised.value.errors(include_input=False)[0]["msg"]


# --- pseudonyms -------------------------------------------------------------------------------


def test_pseudonym_is_deterministic_and_normalised() -> None:
    p = Pseudonymizer(SECRET)
    first = p.pseudonym("010594Y9032")
    assert first == p.pseudonym(" 010594y9032 ")
    assert first == Pseudonymizer(SECRET.encode()).pseudonym("010594Y9032")
    assert first == p.pseudonym(parse_identity_code("010594Y9032"))
    assert len(first) == 32
    assert first == first.lower()
    int(first, 16)


def test_pseudonym_known_value() -> None:
    # Pins the algorithm: HMAC-SHA256 hex, first 32 characters. Changing it re-keys every person.
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), b"010594Y9032", hashlib.sha256).hexdigest()[:32]
    assert Pseudonymizer(SECRET).pseudonym("010594Y9032") == expected


def test_different_secret_or_person_gives_different_pseudonym() -> None:
    a = Pseudonymizer(SECRET).pseudonym("010594Y9032")
    assert a != Pseudonymizer(SECRET + "x").pseudonym("010594Y9032")
    assert a != Pseudonymizer(SECRET).pseudonym("010516B903X")
    # The century sign is part of the identity.
    assert a != Pseudonymizer(SECRET).pseudonym("010594-9032")


def test_pseudonym_does_not_contain_the_code() -> None:
    p = Pseudonymizer(SECRET)
    for code in ("010594Y9032", "010516B903X", "131052-308T"):
        pseudonym = p.pseudonym(code)
        assert code.lower() not in pseudonym
        assert code[:6] not in pseudonym
        assert IDENTITY_CODE_PATTERN.search(pseudonym) is None
    # Lower-case hex: the glued rule (upper-case codes only) never finds anything in one.
    codes = (make_test_identity_code(date(1990, 1, 1), n) for n in range(900, 1000))
    assert not any(contains_identity_code(p.pseudonym(code)) for code in codes)


def test_pseudonym_refuses_invalid_codes() -> None:
    p = Pseudonymizer(SECRET)
    with pytest.raises(InvalidIdentityCode):
        p.pseudonym("010594Y9033")
    forged = IdentityCode("010594Y9033", date(1994, 5, 1), "Y", 903)
    with pytest.raises(InvalidIdentityCode):
        p.pseudonym(forged)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Pseudonymizer("short")


def test_from_settings_uses_the_secret() -> None:
    settings = HubSettings(pseudonym_secret=SECRET)
    p = Pseudonymizer.from_settings(settings)
    assert p.pseudonym("010594Y9032") == Pseudonymizer(SECRET).pseudonym("010594Y9032")
    assert SECRET not in repr(p)


class _Event(BaseModel):
    person: PseudonymStr


def test_pseudonym_pydantic_type() -> None:
    pseudonym = Pseudonymizer(SECRET).pseudonym("010594Y9032")
    assert _Event(person=pseudonym).person == pseudonym
    with pytest.raises(ValidationError):
        _Event(person="010594Y9032")
