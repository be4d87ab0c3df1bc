"""Fuzz the ingest API from its own OpenAPI document: no input may give a 5xx or be echoed.

Schemathesis generates valid and invalid requests for every operation (explicit examples,
boundary "coverage" cases and random fuzzing) and sends them with a valid API key for the
operation's audience, so that they get past authentication into validation and the rules. Its
response checks run too (documented status codes, media types, response schemas, invalid data
rejected), except two that cannot hold here: ``positive_data_acceptance`` (schema-valid data is
still refused by checksums, rules and scopes, which a JSON schema cannot express) and
``ignored_auth`` (it reuses the valid key this test injects). Authentication has its own tests.
Every problem response is checked against the case's body: no string the client sent (every
string value and every key name, at any depth, of 4 characters or more) may appear in it, the
contract's own words (names, enum values, patterns of the OpenAPI document) aside.
Deselect with ``-m "not fuzz"``.
"""

from __future__ import annotations

import ast
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import ignored_auth, positive_data_acceptance

from connectors.rest_api.app import create_app, utc_now
from hub.identity import IDENTITY_CODE_PATTERN
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT
from tests.ingest_fakes import (
    KELA_KEY,
    MUNICIPAL_KEY,
    PROVIDER_KEY,
    FakeEnrolments,
    FakeSink,
    bearer,
    make_clients,
)

#: Cases per operation in the fuzzing phase (the examples and coverage phases add more).
MAX_EXAMPLES = 60
MIN_TOTAL_CASES = 1000

SINK = FakeSink()
APP = create_app(
    HubSettings(ingest_bulk_max_items=50), SINK, make_clients(), FakeEnrolments(), utc_now
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
CASES: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()
#: Problem responses checked for echoes, and the submitted strings looked for in them.
ECHO_CHECKS: Counter[str] = Counter()


def _strings(node: Any, skip: frozenset[str] = frozenset()) -> Iterator[str]:
    """Every string in a JSON-like value, at any depth, and every key (but not the values
    under the keys in *skip*)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str):
                yield key
            if key not in skip:
                yield from _strings(value, skip)
    elif isinstance(node, list | tuple):
        for value in node:
            yield from _strings(value, skip)
    elif isinstance(node, str):
        yield node


def _server_texts() -> Iterator[str]:
    """Every string literal (and literal part of an f-string) of the code that writes problems:
    the server's own prose, which a fuzzer's random word ("validation") may happen to match.
    The request examples are data a client might send, so they are not the server's words."""
    for folder in ("connectors/rest_api", "hub/intake", "hub/identity", "hub/codes", "hub/rules"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if path.name == "examples.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    yield node.value


#: The words of the published contract (names, enum values, patterns, not its examples and
#: prose): a problem may name fields and allowed values, which a client may send as well; and
#: the server's own texts, which it may say whatever was sent.
VOCABULARY = (
    frozenset(_strings(APP.openapi(), skip=frozenset({"example", "examples", "description"})))
    | frozenset(_server_texts())
    | {"true", "false", "null"}
)


def _submitted(case: schemathesis.Case) -> set[str]:
    """The case's strings of 4 characters or more that are not (part of) a contract word."""
    body = case.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return {s for s in _strings(body) if len(s) >= 4 and not any(s in word for word in VOCABULARY)}


def assert_nothing_echoed(case: schemathesis.Case, response: Any) -> None:
    """No problem response holds a string the client sent."""
    if response.status_code < 400:
        return
    problem = json.loads(response.text)
    # The server's own words: the problem's type URI and title, the request's id, the error
    # types; what is left (details, pointers, locations) is checked.
    for member in ("type", "title", "instance"):
        problem.pop(member, None)
    for error in problem.get("errors") or []:
        error.pop("type", None)
    answered = list(_strings(problem))
    sent = _submitted(case)
    echoed = sorted(s for s in sent if any(s in text for text in answered))
    ECHO_CHECKS["responses"] += 1
    ECHO_CHECKS["strings"] += len(sent)
    assert not echoed, f"{case.operation.label} echoed {echoed[:3]} in {response.text[:500]}"


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """One JSON value per line (an array's items); anything else as one line."""
    items = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(item) for item in items).encode()


def _key_for(path: str) -> str:
    if path.startswith("/v1/providers/"):
        return PROVIDER_KEY
    if path.startswith("/v1/payers/"):
        return KELA_KEY
    return MUNICIPAL_KEY


@pytest.mark.fuzz
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_input_gives_a_server_error(case: schemathesis.Case) -> None:
    # Schemathesis also generates the security headers; a valid key gets the case further.
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = {**headers, **bearer(_key_for(case.path))}
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance, ignored_auth])
    CASES[case.operation.label] += 1
    STATUSES[response.status_code] += 1
    assert response.status_code < 500, response.text
    assert not IDENTITY_CODE_PATTERN.search(response.text), "an identity code was echoed"
    assert_nothing_echoed(case, response)


@pytest.mark.fuzz
def test_the_fuzz_ran_enough_cases() -> None:
    """Runs after the fuzz test (file order); skipped when the fuzz was deselected."""
    if not CASES:
        pytest.skip("the fuzz test did not run")
    total = sum(CASES.values())
    print(f"fuzz: {total} cases over {len(CASES)} operations; statuses {dict(STATUSES)}")
    assert total >= MIN_TOTAL_CASES, dict(CASES)
    assert STATUSES[202] > 0, "no generated request was accepted"
    print(f"echo checks: {dict(ECHO_CHECKS)}")
    assert ECHO_CHECKS["responses"] >= MIN_TOTAL_CASES // 2, dict(ECHO_CHECKS)
    assert ECHO_CHECKS["strings"] > 0
