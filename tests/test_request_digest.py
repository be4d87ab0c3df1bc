"""The request digest: keyed, of the canonical JSON (RFC 8785) of what the client sent."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import httpx
import pytest

from connectors.batch.readers import LineSource, ndjson_rows
from connectors.rest_api.app import create_app
from hub.identity import Pseudonymizer
from hub.intake.convert import NotJson, canonical_json, parse_request, request_digest
from hub.intake.examples import EXAMPLES, PERSON
from hub.intake.requests import BULK_ITEM_ADAPTER, REQUEST_TYPES, IngestRequest
from hub.settings import HubSettings
from tests.ingest_fakes import (
    MUNICIPAL_KEY,
    NOW,
    FakeEnrolments,
    FakeSink,
    bearer,
    make_clients,
)

KEYED = Pseudonymizer("digest-test-secret-0123456789")
EXAMPLE = EXAMPLES["JobseekerRegistered"]
MODEL = REQUEST_TYPES["JobseekerRegistered"]


def sent(body: Any, model: type[IngestRequest[Any]] = MODEL) -> IngestRequest[Any]:
    """*body* as the API takes it: JSON text, parsed and validated strictly."""
    text = body if isinstance(body, str) else json.dumps(body)
    return parse_request(model.model_validate_json, text)


def digest(body: Any) -> str:
    return request_digest(sent(body), KEYED)


# --- RFC 8785 -------------------------------------------------------------------------------------


def test_canonical_json_is_rfc_8785() -> None:
    """The example of RFC 8785 section 3.2.3, parsed and canonicalised."""
    text = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(json.loads(text)) == expected.encode()


def test_keys_sort_by_utf16_code_units() -> None:
    """RFC 8785 section 3.2.3: an astral character (a surrogate pair) sorts before U+FB33."""
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    out = canonical_json(dict.fromkeys(keys, 0)).decode()
    assert list(json.loads(out)) == [
        "\r",
        "1",
        "\u0080",
        "\u00f6",
        "\u20ac",
        "\U0001f600",
        "\ufb33",
    ]


# RFC 8785 appendix B: IEEE 754 bit patterns and their ECMAScript serialisation.
NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), NUMBERS)
def test_numbers_serialise_as_ecmascript_does(bits: str, text: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(bits))
    assert canonical_json(value) == text.encode()


def test_integers_are_doubles_as_in_i_json() -> None:
    assert canonical_json([1, 1.0, 100, 1e2, -7]) == b"[1,1,100,100,-7]"
    assert canonical_json(2**68) == b"295147905179352830000"
    for impossible in (10**400, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"beyond the range|not finite"):
            canonical_json(impossible)


# --- the digest ---------------------------------------------------------------------------------


def test_json_form_does_not_change_the_digest() -> None:
    reordered = dict(reversed(list(EXAMPLE.items())))
    spaced = json.dumps(EXAMPLE, indent=4, ensure_ascii=True)  # \u00e4 for ä, whitespace
    assert digest(reordered) == digest(EXAMPLE) == digest(spaced)
    assert len(digest(EXAMPLE)) == 64
    # keyed: another secret gives another digest
    assert request_digest(sent(EXAMPLE), Pseudonymizer("another-secret-0123456789")) != digest(
        EXAMPLE
    )


def test_content_changes_the_digest() -> None:
    other = {**EXAMPLE, "payload": {**EXAMPLE["payload"], "first_name": "Liisa"}}
    assert digest(other) != digest(EXAMPLE)
    # what the schema, not JSON, calls the same is a different request (see request_digest)
    assert digest({**EXAMPLE, "personal_identity_code": PERSON.lower()}) != digest(EXAMPLE)
    assert digest({**EXAMPLE, "occurred_at": "2026-03-02T07:45:00Z"}) != digest(EXAMPLE)
    assert digest({**EXAMPLE, "correlation_id": None}) != digest(EXAMPLE)


def test_a_new_optional_field_in_the_schema_keeps_the_digest() -> None:
    """The fault: the digest of the validated model held defaults, so a release that added an
    optional field made every honest retry of an older request a conflict."""

    class NextRelease(MODEL):  # type: ignore[misc,valid-type]
        new_optional_field: str | None = None

    assert request_digest(sent(EXAMPLE, NextRelease), KEYED) == digest(EXAMPLE)


def test_a_bulk_item_has_the_digest_of_the_request_sent_alone() -> None:
    item = {"event_type": "JobseekerRegistered", **EXAMPLE}
    parsed = parse_request(BULK_ITEM_ADAPTER.validate_json, json.dumps(item))
    assert request_digest(parsed, KEYED) == digest(EXAMPLE)
    assert request_digest([parsed], KEYED) != digest(EXAMPLE)


def test_the_import_and_the_api_give_the_same_digest_for_the_same_item() -> None:
    item = {"event_type": "JobseekerRegistered", **EXAMPLE}
    line = json.dumps(item, ensure_ascii=False).encode() + b"\n"
    [row] = list(ndjson_rows(LineSource(io.BytesIO(line))))
    [fact] = row.facts
    api_item = parse_request(BULK_ITEM_ADAPTER.validate_json, json.dumps(item).encode())
    assert request_digest(fact.request, KEYED) == request_digest(api_item, KEYED)


def test_text_that_is_not_i_json_is_not_json() -> None:
    for text in ("{", '{"a": NaN}', '"\\ud800"', "[" + "1" * 5000 + "]"):
        with pytest.raises(NotJson):
            sent(text)

    class WithACount(MODEL):  # type: ignore[misc,valid-type]
        count: int | None = None

    # valid JSON, and an unbounded int takes it, but no double (and so no digest) holds it
    with pytest.raises(NotJson, match="beyond the range"):
        sent({**EXAMPLE, "count": 10**400}, WithACount)


async def test_an_honest_retry_is_a_replay_and_a_re_rendered_one_a_conflict() -> None:
    app = create_app(HubSettings(), FakeSink(), make_clients(), FakeEnrolments(), lambda: NOW)
    key = {"Idempotency-Key": "retry-1", "Content-Type": "application/json"}
    headers = {**bearer(MUNICIPAL_KEY), **key}
    path = "/v1/events/jobseeker-registered"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hub.test"
    ) as client:
        first = await client.post(path, content=json.dumps(EXAMPLE), headers=headers)
        reordered = json.dumps(dict(reversed(list(EXAMPLE.items()))), indent=2)
        retry = await client.post(path, content=reordered, headers=headers)
        lower = json.dumps({**EXAMPLE, "personal_identity_code": PERSON.lower()})
        other = await client.post(path, content=lower, headers=headers)

    assert first.status_code == 202, first.text
    assert retry.status_code == 202
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["event_id"] == first.json()["event_id"]
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-conflict")


def test_the_fast_path_writes_what_the_general_one_does() -> None:
    from hub.intake.convert import _jcs

    documents = [EXAMPLE, {"é": ["\u2028", "\x7f", '"\\'], "a": [True, None, -(2**53)]}, []]
    for document in documents:
        assert canonical_json(document) == _jcs(document).encode()
    with pytest.raises(ValueError, match="surrogate"):
        canonical_json("\ud800")
