"""Identifiers of people and organisations: validation, test-data generation and pseudonyms."""

from hub.identity.business_id import (
    BusinessIdStr,
    InvalidBusinessId,
    business_id_check_digit,
    is_valid_business_id,
    make_business_id,
    validate_business_id,
)
from hub.identity.hetu import (
    IDENTITY_CODE_PATTERN,
    IdentityCode,
    InvalidIdentityCode,
    PersonalIdentityCodeStr,
    contains_identity_code,
    identity_code_spans,
    is_valid_identity_code,
    make_test_identity_code,
    parse_identity_code,
    replace_identity_codes,
)
from hub.identity.pseudonym import Pseudonymizer, PseudonymStr

__all__ = [
    "IDENTITY_CODE_PATTERN",
    "BusinessIdStr",
    "IdentityCode",
    "InvalidBusinessId",
    "InvalidIdentityCode",
    "PersonalIdentityCodeStr",
    "PseudonymStr",
    "Pseudonymizer",
    "business_id_check_digit",
    "contains_identity_code",
    "identity_code_spans",
    "is_valid_business_id",
    "is_valid_identity_code",
    "make_business_id",
    "make_test_identity_code",
    "parse_identity_code",
    "replace_identity_codes",
    "validate_business_id",
]
