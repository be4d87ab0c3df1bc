"""Small event schemas in the layout of ``schemas/`` for the serde tests.

They mimic the real ones (record = inline envelope + payload, logical types, ``pii`` attributes)
without depending on them, and come in two versions so evolution can be tested.
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

NS = "fi.te.hub"


def envelope() -> dict[str, Any]:
    uuid_t = {"type": "string", "logicalType": "uuid"}
    ts = {"type": "long", "logicalType": "timestamp-millis"}
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": NS,
        "doc": "Metadata shared by every customer-path event.",
        "fields": [
            {"name": "event_id", "type": uuid_t},
            {"name": "event_type", "type": "string"},
            {"name": "occurred_at", "type": ts},
            {"name": "recorded_at", "type": ts},
            {"name": "source_system", "type": "string"},
            {"name": "subject", "type": "string", "doc": "Person pseudonym."},
            {"name": "municipality_code", "type": "string"},
            {"name": "employment_area_code", "type": "string"},
            {"name": "correlation_id", "type": uuid_t},
            {"name": "causation_id", "type": ["null", uuid_t], "default": None},
        ],
    }


def jobseeker_v1() -> dict[str, Any]:
    return {
        "type": "record",
        "name": "JobseekerRegistered",
        "namespace": NS,
        "fields": [
            {"name": "envelope", "type": envelope()},
            {
                "name": "payload",
                "type": {
                    "type": "record",
                    "name": "JobseekerRegisteredPayload",
                    "fields": [
                        {
                            "name": "registration_date",
                            "type": {"type": "int", "logicalType": "date"},
                        },
                        {"name": "identity_code", "type": "string", "pii": "direct"},
                        {
                            "name": "language",
                            "type": {"type": "enum", "name": "Language", "symbols": ["FI", "SV"]},
                        },
                        {"name": "education_level", "type": ["null", "string"], "default": None},
                        {"name": "legacy_note", "type": "string", "default": ""},
                    ],
                },
            },
        ],
    }


def jobseeker_v2() -> dict[str, Any]:
    """v1 plus an optional field and an enum symbol, minus ``legacy_note`` (BACKWARD)."""
    schema = copy.deepcopy(jobseeker_v1())
    payload = schema["fields"][1]["type"]
    payload["fields"] = [f for f in payload["fields"] if f["name"] != "legacy_note"]
    payload["fields"][2]["type"]["symbols"] = ["FI", "SV", "EN"]
    payload["fields"].append(
        {
            "name": "unemployment_fund",
            "type": ["null", "string"],
            "default": None,
            "pii": "membership",
        }
    )
    payload["fields"].append({"name": "weekly_hours", "type": "int", "default": 40})
    return schema


def job_offer() -> dict[str, Any]:
    return {
        "type": "record",
        "name": "JobOfferMade",
        "namespace": NS,
        "fields": [
            {"name": "envelope", "type": envelope()},
            {
                "name": "payload",
                "type": {
                    "type": "record",
                    "name": "JobOfferMadePayload",
                    "fields": [
                        {"name": "offer_id", "type": {"type": "string", "logicalType": "uuid"}},
                        {"name": "occupation_codes", "type": {"type": "array", "items": "string"}},
                        {"name": "terms", "type": {"type": "map", "values": "string"}},
                        {
                            "name": "deadline",
                            "type": ["null", {"type": "int", "logicalType": "date"}],
                            "default": None,
                        },
                    ],
                },
            },
        ],
    }


def write_schema_dir(root: Path) -> Path:
    """``root/<Name>.avsc`` and ``root/history/<Name>/v<N>.avsc`` like the real layout."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "JobseekerRegistered.avsc": jobseeker_v2(),
        "history/JobseekerRegistered/v1.avsc": jobseeker_v1(),
        "history/JobseekerRegistered/v2.avsc": jobseeker_v2(),
        "JobOfferMade.avsc": job_offer(),
        "history/JobOfferMade/v1.avsc": job_offer(),
    }
    for name, schema in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(schema, indent=2), encoding="utf-8")
    return root


def envelope_record(event_type: str) -> dict[str, Any]:
    return {
        "event_id": uuid.UUID("0b5b8e6a-3c1e-4d9a-9d7e-6f1a2b3c4d5e"),
        "event_type": event_type,
        "occurred_at": datetime(2025, 3, 3, 8, 15, 30, 123000, tzinfo=UTC),
        "recorded_at": datetime(2025, 3, 3, 8, 15, 31, 456000, tzinfo=UTC),
        "source_system": "urn:fi:te-hub:test",
        "subject": "psn_4f1c2a",
        "municipality_code": "091",
        "employment_area_code": "01",
        "correlation_id": uuid.UUID("7a1e6f3c-2b4d-4e8a-8c9d-0a1b2c3d4e5f"),
        "causation_id": None,
    }


def jobseeker_v1_record() -> dict[str, Any]:
    return {
        "envelope": envelope_record("JobseekerRegistered"),
        "payload": {
            "registration_date": date(2025, 3, 3),
            "identity_code": "010190-123A",
            "language": "SV",
            "education_level": "upper-secondary",
            "legacy_note": "from the old register",
        },
    }


def jobseeker_v2_record() -> dict[str, Any]:
    record = jobseeker_v1_record()
    del record["payload"]["legacy_note"]
    record["envelope"]["causation_id"] = uuid.UUID("11111111-2222-4333-8444-555555555555")
    record["payload"].update(language="EN", unemployment_fund=None, weekly_hours=25)
    return record


def job_offer_record() -> dict[str, Any]:
    return {
        "envelope": envelope_record("JobOfferMade"),
        "payload": {
            "offer_id": uuid.UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"),
            "occupation_codes": ["2512", "2519"],
            "terms": {"hours": "full-time", "contract": "permanent"},
            "deadline": date(2025, 4, 1),
        },
    }
