"""CloudEvents Kafka binding (binary mode) headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from hub.serde.cloudevents import (
    HUB_REQUIRED_ATTRIBUTES,
    CloudEventHeaderError,
    cloudevent_headers,
    parse_cloudevent_headers,
    parse_time,
)

HELSINKI_SUMMER = timezone(timedelta(hours=3))


def sample_headers() -> list[tuple[str, bytes]]:
    return cloudevent_headers(
        event_id="0b5b8e6a-3c1e-4d9a-9d7e-6f1a2b3c4d5e",
        event_type="fi.te.hub.JobseekerRegistered",
        source="urn:fi:te-hub:simulator",
        subject="psn_4f1c2a",
        time=datetime(2025, 6, 2, 11, 15, 30, 123456, tzinfo=HELSINKI_SUMMER),
        dataschema="urn:avro:fingerprint:8a8f25cce724dd63",
        extensions={"correlationid": "7a1e6f3c"},
    )


def test_headers_follow_the_kafka_binding() -> None:
    headers = sample_headers()
    assert headers == [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"0b5b8e6a-3c1e-4d9a-9d7e-6f1a2b3c4d5e"),
        ("ce_type", b"fi.te.hub.JobseekerRegistered"),
        ("ce_source", b"urn:fi:te-hub:simulator"),
        ("ce_subject", b"psn_4f1c2a"),
        ("ce_time", b"2025-06-02T08:15:30.123Z"),
        ("ce_dataschema", b"urn:avro:fingerprint:8a8f25cce724dd63"),
        ("ce_correlationid", b"7a1e6f3c"),
        ("content-type", b"application/avro"),
    ]


def test_round_trip() -> None:
    attributes = parse_cloudevent_headers(sample_headers(), required=HUB_REQUIRED_ATTRIBUTES)
    assert attributes == {
        "specversion": "1.0",
        "id": "0b5b8e6a-3c1e-4d9a-9d7e-6f1a2b3c4d5e",
        "type": "fi.te.hub.JobseekerRegistered",
        "source": "urn:fi:te-hub:simulator",
        "subject": "psn_4f1c2a",
        "time": "2025-06-02T08:15:30.123Z",
        "dataschema": "urn:avro:fingerprint:8a8f25cce724dd63",
        "correlationid": "7a1e6f3c",
        "datacontenttype": "application/avro",
    }
    assert parse_time(attributes["time"]) == datetime(2025, 6, 2, 8, 15, 30, 123000, tzinfo=UTC)


def test_other_headers_are_ignored_and_str_values_accepted() -> None:
    headers: list[tuple[str, bytes | str | None]] = [
        ("traceparent", b"00-abc"),
        ("hub_retry_count", None),
        *sample_headers(),
    ]
    headers[2] = ("ce_specversion", "1.0")
    assert parse_cloudevent_headers(headers)["type"] == "fi.te.hub.JobseekerRegistered"


@pytest.mark.parametrize("missing", ["id", "source", "specversion", "type"])
def test_missing_required_attribute_is_named(missing: str) -> None:
    headers = [h for h in sample_headers() if h[0] != f"ce_{missing}"]
    with pytest.raises(
        CloudEventHeaderError, match=f"'{missing}' \\(Kafka header 'ce_{missing}'\\)"
    ):
        parse_cloudevent_headers(headers)


def test_hub_requires_subject_and_time() -> None:
    headers = [h for h in sample_headers() if h[0] != "ce_subject"]
    assert "subject" not in parse_cloudevent_headers(headers)
    with pytest.raises(CloudEventHeaderError, match="'subject'"):
        parse_cloudevent_headers(headers, required=HUB_REQUIRED_ATTRIBUTES)


def test_invalid_values() -> None:
    with pytest.raises(CloudEventHeaderError, match="missing required"):
        parse_cloudevent_headers(None)
    bad_version = [
        ("ce_specversion", b"0.3") if k == "ce_specversion" else (k, v) for k, v in sample_headers()
    ]
    with pytest.raises(CloudEventHeaderError, match=r"specversion '0\.3'"):
        parse_cloudevent_headers(bad_version)
    bad_time = [
        ("ce_time", b"yesterday") if k == "ce_time" else (k, v) for k, v in sample_headers()
    ]
    with pytest.raises(CloudEventHeaderError, match="RFC 3339"):
        parse_cloudevent_headers(bad_time)
    duplicated = [*sample_headers(), ("ce_id", b"another")]
    with pytest.raises(CloudEventHeaderError, match="twice"):
        parse_cloudevent_headers(duplicated)
    with pytest.raises(CloudEventHeaderError, match="UTF-8"):
        parse_cloudevent_headers([*sample_headers(), ("ce_note", b"\xff")])


def test_building_refuses_naive_time_and_bad_extensions() -> None:
    args = {
        "event_id": "1",
        "event_type": "t",
        "source": "s",
        "subject": "psn",
    }
    with pytest.raises(CloudEventHeaderError, match="timezone-aware"):
        cloudevent_headers(**args, time=datetime(2025, 1, 1))  # type: ignore[arg-type]
    now = datetime.now(UTC)
    with pytest.raises(CloudEventHeaderError, match="lower-case"):
        cloudevent_headers(**args, time=now, extensions={"Correlation-Id": "x"})  # type: ignore[arg-type]
    with pytest.raises(CloudEventHeaderError, match="override"):
        cloudevent_headers(**args, time=now, extensions={"type": "x"})  # type: ignore[arg-type]
    with pytest.raises(CloudEventHeaderError, match="'id' must not be empty"):
        cloudevent_headers(**{**args, "event_id": ""}, time=now)  # type: ignore[arg-type]


def test_parse_time_variants() -> None:
    assert parse_time("2025-01-01T00:00:00Z") == datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_time("2025-01-01t02:00:00.123456789+02:00") == datetime(
        2025, 1, 1, 0, 0, 0, 123456, tzinfo=UTC
    )
    with pytest.raises(CloudEventHeaderError):
        parse_time("2025-13-01T00:00:00Z")
