"""Field errors say where and why, never what was sent: built from the error type and the
schema's context, not from pydantic's message."""

from __future__ import annotations

from typing import Any

import pytest

from hub.intake.errors import field_errors

SENT = "Matti Meikalainen"

#: Pydantic errors whose message or context quotes the input (or part of it).
QUOTING: list[dict[str, Any]] = [
    {
        "type": "union_tag_invalid",
        "loc": (),
        "msg": f"Input tag '{SENT}' found using 'event_type' does not match any of the ...",
        "ctx": {"tag": SENT, "discriminator": "'event_type'", "expected_tags": "'A', 'B'"},
    },
    {
        "type": "uuid_parsing",
        "loc": ("event_id",),
        "msg": f"Input should be a valid UUID, invalid character: found `{SENT}` at 1",
        "ctx": {"error": f"invalid character: found `{SENT}` at 1"},
    },
    {
        "type": "timezone_offset",
        "loc": ("occurred_at",),
        "msg": f"Timezone offset of 0 required, got {SENT}",
        "ctx": {"tz_expected": 0, "tz_actual": SENT},
    },
    {
        "type": "too_long",
        "loc": ("payload", "items"),
        "msg": f"List should have at most 3 items after validation, not {SENT}",
        "ctx": {"field_type": "List", "max_length": 3, "actual_length": SENT},
    },
    {
        "type": "extra_forbidden",
        "loc": ("payload", SENT),
        "msg": "Extra inputs are not permitted",
        "input": SENT,
    },
    {"type": "string_too_long", "loc": ("x",), "msg": f"{SENT}", "ctx": {}},
]


@pytest.mark.parametrize("error", QUOTING, ids=[e["type"] for e in QUOTING])
def test_no_reason_or_place_repeats_the_input(error: dict[str, Any]) -> None:
    [found] = field_errors([error])
    assert SENT not in found.model_dump_json()
    assert found.type == error["type"]


def test_reasons_keep_what_the_schema_says() -> None:
    [tag, too_long, extra] = field_errors(
        [QUOTING[0], QUOTING[3], {"type": "enum", "loc": ("k",), "ctx": {"expected": "'A' or 'B'"}}]
    )
    assert tag.detail == "the 'event_type' is not one of 'A', 'B'"
    assert too_long.detail == "List should have at most 3 item(s)"
    assert extra.detail == "Input should be 'A' or 'B'"


def test_unknown_keys_are_reported_once_at_their_parent() -> None:
    errors = [
        {"type": "extra_forbidden", "loc": ("payload", key), "msg": "Extra inputs"}
        for key in ("first_unknown", "second_unknown")
    ]
    [found] = field_errors(errors, prefix=[2])
    assert (found.pointer, found.loc, found.type) == (
        "#/2/payload",
        [2, "payload"],
        "extra_forbidden",
    )
    assert "unknown" not in found.model_dump_json()
