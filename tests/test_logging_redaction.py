"""Logs must never contain identity codes or names, whichever path a record takes."""

from __future__ import annotations

import importlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import BaseModel, Field, ValidationError

import hub.logging
from hub.events import customer_path
from hub.events.sensitivity import Sensitivity, pii, sensitive_fields
from hub.identity import PersonalIdentityCodeStr
from hub.logging import (
    REDACTED,
    REDACTED_IDENTITY_CODE,
    SENSITIVE_KEYS,
    bind_event_context,
    configure_logging,
    get_logger,
    redact_personal_data,
    redact_text,
    redact_value,
)
from hub.settings import HubSettings

CODE = "010594Y9032"
CODE_2000S = "010516B903X"
NAME = "Maija-Liisa"
SURNAME = "Meikäläinen"
SECRETS = (CODE, CODE.lower(), CODE_2000S, NAME, SURNAME)


def _settings(*, json_logs: bool = True, level: str = "INFO") -> HubSettings:
    return HubSettings(log_json=json_logs, log_level=level)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    for handler in [h for h in root.handlers if h.get_name() == "hub"]:
        root.removeHandler(handler)
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


@pytest.fixture
def stream() -> io.StringIO:
    out = io.StringIO()
    configure_logging(_settings(), stream=out)
    return out


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into the log:\n{text}"


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_structlog_call_is_redacted_and_carries_event_context(stream: io.StringIO) -> None:
    log = get_logger("hub.test")
    with bind_event_context("evt-123", "corr-456"):
        log.info(
            "jobseeker registered",
            identity_code=CODE,
            first_name=NAME,
            lastName=SURNAME,
            note=f"caller said the code is {CODE} (and {CODE.lower()})",
            nested={"people": [{"hetu": CODE, "comment": f"see {CODE_2000S}"}], CODE: "key"},
            municipality_code="091",
        )
    output = stream.getvalue()
    _assert_clean(output)
    [line] = _lines(output)
    assert line["event"] == "jobseeker registered"
    assert line["event_id"] == "evt-123"
    assert line["correlation_id"] == "corr-456"
    assert line["level"] == "info"
    assert line["logger"] == "hub.test"
    assert line["timestamp"].endswith("Z")
    assert line["identity_code"] == REDACTED
    assert line["first_name"] == REDACTED
    assert line["lastName"] == REDACTED
    assert line["note"] == (
        f"caller said the code is {REDACTED_IDENTITY_CODE} (and {REDACTED_IDENTITY_CODE})"
    )
    assert line["nested"]["people"][0] == {
        "hetu": REDACTED,
        "comment": f"see {REDACTED_IDENTITY_CODE}",
    }
    assert line["nested"][REDACTED_IDENTITY_CODE] == "key"
    assert line["municipality_code"] == "091"


def test_stdlib_logger_is_redacted_and_carries_event_context(stream: io.StringIO) -> None:
    logger = logging.getLogger("aiokafka.consumer")
    with bind_event_context("evt-9", "corr-9"):
        logger.warning(
            "could not process record for %s",
            CODE,
            extra={"first_name": NAME, "partition": 3},
        )
    output = stream.getvalue()
    _assert_clean(output)
    [line] = _lines(output)
    assert line["logger"] == "aiokafka.consumer"
    assert line["level"] == "warning"
    assert line["event"] == f"could not process record for {REDACTED_IDENTITY_CODE}"
    assert "message" not in line
    assert line["event_id"] == "evt-9"
    assert line["correlation_id"] == "corr-9"
    assert line["first_name"] == REDACTED
    assert line["partition"] == 3


def _fail_with_code() -> None:
    identity_code = CODE
    raise ValueError(f"invalid identity code {identity_code}")


def test_structlog_exception_traceback_is_redacted(stream: io.StringIO) -> None:
    log = get_logger("hub.test")
    with bind_event_context("evt-exc", "corr-exc"):
        try:
            _fail_with_code()
        except ValueError:
            log.exception("processing failed", first_name=NAME)
    output = stream.getvalue()
    [line] = _lines(output)
    assert "Traceback (most recent call last)" in line["exception"]
    assert f"ValueError: invalid identity code {REDACTED_IDENTITY_CODE}" in line["exception"]
    assert line["event_id"] == "evt-exc"
    assert line["correlation_id"] == "corr-exc"
    _assert_clean(output)


def test_stdlib_exception_traceback_is_redacted(stream: io.StringIO) -> None:
    logger = logging.getLogger("faststream.test")
    try:
        _fail_with_code()
    except ValueError:
        logger.exception("handler crashed on %s", CODE_2000S)
    output = stream.getvalue()
    _assert_clean(output)
    [line] = _lines(output)
    assert line["event"] == f"handler crashed on {REDACTED_IDENTITY_CODE}"
    assert "Traceback (most recent call last)" in line["exception"]
    assert REDACTED_IDENTITY_CODE in line["exception"]


def test_names_in_free_text_are_not_recognised(stream: io.StringIO) -> None:
    # Documents the limit: only keys mark names, so a name inside a message gets through.
    get_logger("hub.test").info(f"called {NAME}")
    assert NAME in stream.getvalue()


def test_exception_object_and_validation_error_values_are_redacted(stream: io.StringIO) -> None:
    class Person(BaseModel):
        identity_code: PersonalIdentityCodeStr

    with pytest.raises(ValidationError) as caught:
        Person(identity_code=CODE[:-1] + "3")
    log = get_logger("hub.test")
    log.error("rejected", error=caught.value, cause=ValueError(CODE), items=(CODE, 1))
    output = stream.getvalue()
    assert CODE[:-1] + "3" not in output
    _assert_clean(output)
    [line] = _lines(output)
    assert REDACTED_IDENTITY_CODE in line["error"]
    assert line["cause"] == f"ValueError: {REDACTED_IDENTITY_CODE}"
    assert line["items"] == [REDACTED_IDENTITY_CODE, 1]


def test_console_rendering_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(_settings(json_logs=False))
    log = get_logger("hub.console")
    with bind_event_context("evt-console", "corr-console"):
        log.info("registered", identity_code=CODE, first_name=NAME, note=f"x {CODE}")
        logging.getLogger("aiokafka").info("stdlib %s", CODE_2000S)
        try:
            _fail_with_code()
        except ValueError:
            log.exception("failed")
    err = capsys.readouterr().err
    _assert_clean(err)
    assert f"first_name={REDACTED}" in err
    assert REDACTED_IDENTITY_CODE in err
    assert "evt-console" in err
    assert "corr-console" in err
    assert "Traceback (most recent call last)" in err


def test_level_filtering_applies_to_both_paths() -> None:
    out = io.StringIO()
    configure_logging(_settings(level="warning"), stream=out)
    get_logger("hub.test").info("quiet")
    logging.getLogger("aiokafka").info("quiet too")
    get_logger("hub.test").warning("loud")
    assert [line["event"] for line in _lines(out.getvalue())] == ["loud"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(_settings(level="CHATTY"), stream=io.StringIO())


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(_settings(), stream=first)
    configure_logging(_settings(), stream=second)
    get_logger("hub.test").info("once")
    assert first.getvalue() == ""
    assert len(_lines(second.getvalue())) == 1


def test_event_context_is_restored_on_exit(stream: io.StringIO) -> None:
    log = get_logger("hub.test")
    with bind_event_context("outer", "c-outer"):
        with bind_event_context("inner", "c-inner"):
            log.info("a")
        log.info("b")
    log.info("c")
    a, b, c = _lines(stream.getvalue())
    assert (a["event_id"], a["correlation_id"]) == ("inner", "c-inner")
    assert (b["event_id"], b["correlation_id"]) == ("outer", "c-outer")
    assert "event_id" not in c


def test_redact_value_rules() -> None:
    assert redact_value({"First-Name": "x", "EMAIL": "a@b.fi", "name": "Kemi"}) == {
        "First-Name": REDACTED,
        "EMAIL": REDACTED,
        "name": "Kemi",
    }
    assert redact_value(f"131052-308t;{CODE}") == (
        f"{REDACTED_IDENTITY_CODE};{REDACTED_IDENTITY_CODE}"
    )
    assert redact_value("123e4567-e89b-12d3-a456-426614174000") == (
        "123e4567-e89b-12d3-a456-426614174000"
    )
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(50):
        cursor["next"] = {}
        cursor = cursor["next"]
    assert "too-deep" in json.dumps(redact_value(deep))


def test_processor_formats_pending_exc_info_itself() -> None:
    try:
        _fail_with_code()
    except ValueError as exc:
        event = redact_personal_data(None, "error", {"event": "x", "exc_info": exc})
    assert "exc_info" not in event
    assert CODE not in event["exception"]
    assert REDACTED_IDENTITY_CODE in event["exception"]


# --- keys from the schemas' pii attributes, codes glued to other characters -------------------

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def test_every_pii_field_of_every_schema_is_a_sensitive_key() -> None:
    files = sorted(SCHEMAS.glob("*.avsc"))
    assert len(files) == len(customer_path.EVENT_TYPES)
    names = {
        path.rsplit(".", 1)[-1]
        for file in files
        for path in sensitive_fields(json.loads(file.read_text(encoding="utf-8")))
    }
    assert len(names) >= 12  # the 12 of today; more is fine, fewer means the walk broke
    assert names <= SENSITIVE_KEYS, sorted(names - SENSITIVE_KEYS)


def test_every_pii_field_value_is_redacted_in_a_log_line(stream: io.StringIO) -> None:
    get_logger("hub.test").info(
        "row",
        reduced_work_ability=True,
        interruption_reason="ILLNESS",
        unemployment_fund_code="YTK",
        participant_first_name=NAME,
        participant_phone="+358401234567",
        municipality_code="091",
    )
    [line] = _lines(stream.getvalue())
    for key in (
        "reduced_work_ability",
        "interruption_reason",
        "unemployment_fund_code",
        "participant_first_name",
        "participant_phone",
    ):
        assert line[key] == REDACTED, key
    assert line["municipality_code"] == "091"


class _NicknamePayload(customer_path.JobseekerRegisteredPayload):
    """Registration with a field added today."""

    nickname: str | None = Field(
        default=None,
        description="What the person likes to be called.",
        json_schema_extra=pii(Sensitivity.DIRECT),
    )


class _NicknameRegistered(customer_path.CustomerPathEvent):
    """A registration of a schema version that added a sensitive field."""

    payload: _NicknamePayload = Field(description="Registration details.")


def test_a_field_marked_pii_in_a_model_is_redacted_from_the_day_it_is_added(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert redact_value({"nickname": "Mökö"}) == {"nickname": "Mökö"}
    monkeypatch.setitem(customer_path.EVENT_TYPES, "_NicknameRegistered", _NicknameRegistered)
    try:
        reloaded = importlib.reload(hub.logging)
        assert "nickname" in reloaded.SENSITIVE_KEYS
        assert reloaded.redact_value({"nickName": "Mökö"}) == {"nickName": REDACTED}
    finally:
        monkeypatch.undo()
        importlib.reload(hub.logging)
    assert "nickname" not in hub.logging.SENSITIVE_KEYS


@pytest.mark.parametrize(
    "text",
    [
        f"abc{CODE}def",
        f"a{CODE}",
        f"0{CODE}",
        f"{CODE}1",
        repr(b"\x16" + CODE.encode() + b"\x0cMaija"),  # a string field in Avro bytes
        repr(b"\x02\x16" + CODE_2000S.encode() + b"0"),
        f"\\x16{CODE}",
        f"x{CODE}{CODE_2000S}y",
    ],
)
def test_codes_glued_to_other_characters_are_redacted(text: str) -> None:
    assert CODE in text or CODE_2000S in text
    redacted = redact_text(text)
    assert CODE not in redacted
    assert CODE_2000S not in redacted
    assert REDACTED_IDENTITY_CODE in redacted


@pytest.mark.parametrize(
    "text",
    [
        "123e4567-e89b-12d3-a456-426614174000",  # UUIDs and pseudonyms are lower-case hex
        "3f2a9c0b1d4e5f60718293a4b5c6d7e8",
        "order 12345678901234567890 shipped",  # long digit runs hold no valid code shape
        "a010594Y9033b",  # glued and with a wrong check character: not a code
    ],
)
def test_glued_runs_that_are_not_valid_codes_are_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_a_glued_code_in_a_log_line_is_redacted(stream: io.StringIO) -> None:
    value = b"\x00\x16" + CODE.encode() + b"\x16" + CODE_2000S.encode()
    get_logger("hub.test").warning("could not encode", value=repr(value), raw=f"id{CODE}")
    [line] = _lines(stream.getvalue())
    assert line["value"] == rf"b'\x00\x16{REDACTED_IDENTITY_CODE}\x16{REDACTED_IDENTITY_CODE}'"
    assert line["raw"] == f"id{REDACTED_IDENTITY_CODE}"
