"""The AsyncAPI document: every channel, every type, the projections, and valid AsyncAPI 3.0.

The document is generated from the code (topic specs, models, routes, dead-letter headers), so
these tests check it against that code and against the official AsyncAPI 3.0.0 JSON Schema
(tests/data/asyncapi, see its SOURCE.md). The records the hub writes on its JSON channels are
validated against the document's schemas, so an encoder that changes without the document
fails here. No broker is needed; the page is served by the app over ASGI (the rendering in a
browser is in tests/test_docs_offline.py, on a real `hub serve`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from uuid import uuid4

import fastavro
import httpx
import jsonschema_rs
import pytest
import yaml  # type: ignore[import-untyped]

from connectors.rest_api.app import create_app, utc_now
from connectors.webhook.transport import WebhookTransport
from hub.delivery.disclosure import Disclosure, DisclosureStatus, chained_entry, encode_entry
from hub.delivery.dlq import LetterStatus, StoredLetter, _marker
from hub.delivery.transport import DeliveryRequest, json_body, static_headers
from hub.docs.asyncapi import AVRO_SCHEMA_FORMAT, asyncapi_document, to_yaml
from hub.events import EVENT_TYPES, CustomerPathEvent, Sensitivity
from hub.events.avro_schema import avro_schema
from hub.events.sensitivity import sensitive_fields
from hub.kafka.dead_letters import DeadLetter, DeadLetterStage
from hub.kafka.publisher import encode_event
from hub.kafka.topics import outbox_topic, topic_specs
from hub.privacy import access_log
from hub.privacy.datakeys import Restricted
from hub.privacy.keystore import ForgetResult, RestrictionResult
from hub.privacy.sealing import DataKey
from hub.routing.projection import project, projected_schema
from hub.routing.resolve import PersonState
from hub.routing.routes import RoutesConfig, Transport, load_routes
from hub.serde import build_serializer
from hub.settings import HubSettings
from hub.sink.base import Receipt, SourcePosition
from hub.sink.kafka import encode_position, encode_receipt
from tests.conftest import REPO_ROOT, hub_environment, settings_for
from tests.ingest_fakes import FakeEnrolments, FakeSink, make_clients

SPEC_SCHEMA = REPO_ROOT / "tests" / "data" / "asyncapi" / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def settings() -> HubSettings:
    return HubSettings(_env_file=None)


@pytest.fixture(scope="module")
def routes(settings: HubSettings) -> RoutesConfig:
    return load_routes(settings)


@pytest.fixture(scope="module")
def document(settings: HubSettings, routes: RoutesConfig) -> dict[str, Any]:
    return asyncapi_document(settings, routes)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _messages(document: dict[str, Any], channel: str) -> dict[str, dict[str, Any]]:
    return {
        name: _resolve(document, ref["$ref"])
        for name, ref in document["channels"][channel]["messages"].items()
    }


def _channel_by_address(document: dict[str, Any], address: str) -> str:
    found = [
        cid
        for cid, c in document["channels"].items()
        if c["address"] == address and "kafka" in c.get("bindings", {})
    ]
    assert len(found) == 1, (address, found)
    channel: str = found[0]
    return channel


def _json_validator(document: dict[str, Any], payload: dict[str, Any]) -> Any:
    """A validator of *payload* whose refs (#/components/schemas/...) resolve in *document*."""
    return jsonschema_rs.validator_for({**payload, "components": document["components"]})


# --- the document -----------------------------------------------------------------------------


def test_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    validator = jsonschema_rs.validator_for(json.loads(SPEC_SCHEMA.read_text()))
    errors = [
        f"{list(e.instance_path)}: {e.message[:200]}" for e in validator.iter_errors(document)
    ]

    assert document["asyncapi"] == "3.0.0"
    assert errors == []
    for ref in set(_refs(document)):
        _resolve(document, ref)  # every reference points at something
    for operation in document["operations"].values():
        channel = _resolve(document, operation["channel"]["$ref"])
        for message in operation["messages"]:
            # An operation's messages are its channel's (AsyncAPI 3 requires it).
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")
            assert message["$ref"].rsplit("/", 1)[1] in channel["messages"]


def test_every_channel_is_present_once_with_its_topic_spec(
    document: dict[str, Any], settings: HubSettings, routes: RoutesConfig
) -> None:
    addresses = [
        c["address"] for c in document["channels"].values() if "kafka" in c.get("bindings", {})
    ]
    expected = [s.name for s in topic_specs(settings)] + [
        outbox_topic(settings, name) for name in routes.destinations
    ]

    assert sorted(addresses) == sorted(expected)
    for spec in topic_specs(settings):
        binding = document["channels"][_channel_by_address(document, spec.name)]["bindings"]
        kafka = binding["kafka"]
        assert (kafka["topic"], kafka["partitions"], kafka["replicas"]) == (
            spec.name,
            spec.partitions,
            spec.replication_factor,
        )
        assert {
            k: str(v) if not isinstance(v, list) else ",".join(v)
            for k, v in kafka["topicConfiguration"].items()
        } == spec.configs


def test_the_document_follows_the_settings() -> None:
    other = settings_for("127.0.0.1:1", partitions=5)
    document = asyncapi_document(other)

    addresses = {c["address"] for c in document["channels"].values()}
    assert other.topic_customer_path in addresses
    assert outbox_topic(other, "kela") in addresses
    assert document["servers"]["development"]["host"] == "127.0.0.1:1"
    outbox = document["channels"][_channel_by_address(document, outbox_topic(other, "kela"))]
    assert outbox["bindings"]["kafka"]["partitions"] == 5


def test_a_secured_cluster_is_a_kafka_secure_server_with_its_sasl_scheme() -> None:
    secured = settings_for(
        "kafka-1.example.fi:9094,kafka-2.example.fi:9094",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="te-hub-router",
        kafka_sasl_password="not-a-real-password",
    )
    document = asyncapi_document(secured)
    validator = jsonschema_rs.validator_for(json.loads(SPEC_SCHEMA.read_text()))

    assert validator.is_valid(document)
    assert document["components"]["securitySchemes"]["sasl"]["type"] == "scramSha512"
    assert "not-a-real-password" not in json.dumps(document)
    kafka = [s for s in document["servers"].values() if s["protocol"] != "http"]
    assert len(kafka) == 2
    for server in kafka:
        assert server["protocol"] == "kafka-secure"
        assert server["security"] == [{"$ref": "#/components/securitySchemes/sasl"}]


def test_the_log_has_one_message_per_event_type_with_its_avro_schema(
    document: dict[str, Any],
) -> None:
    messages = _messages(document, "customer-path")

    assert set(messages) == set(EVENT_TYPES)
    for name, model in EVENT_TYPES.items():
        message = messages[name]
        assert message["payload"]["schemaFormat"] == AVRO_SCHEMA_FORMAT
        assert message["payload"]["schema"] == avro_schema(model)
        # The shipped .avsc file is the same schema.
        shipped = json.loads((REPO_ROOT / "schemas" / f"{name}.avsc").read_text())
        assert message["payload"]["schema"] == shipped
        assert message["headers"]["properties"]["ce_type"]["const"] == f"fi.te.hub.{name}"
        assert message["bindings"]["kafka"]["key"]["pattern"] == "^[0-9a-f]{32}$"
        fastavro.parse_schema(message["payload"]["schema"])


def test_each_outbox_has_the_projected_types_of_its_routes(
    document: dict[str, Any], settings: HubSettings, routes: RoutesConfig
) -> None:
    for name in routes.destinations:
        channel = _channel_by_address(document, outbox_topic(settings, name))
        messages = _messages(document, channel)
        wanted = {
            t
            for route in routes.routes
            if name in routes.destinations_of(route)
            for t in route.types
        }
        assert {m["payload"]["schema"]["name"] for m in messages.values()} == wanted, name
        for route in routes.routes:
            if name not in routes.destinations_of(route):
                continue
            for type_name in route.types:
                derived = projected_schema(
                    avro_schema(EVENT_TYPES[type_name]), set(route.grants), route.fields, name
                )
                assert any(m["payload"]["schema"] == derived for m in messages.values()), (
                    name,
                    route.name,
                    type_name,
                )
        for message in messages.values():
            fastavro.parse_schema(message["payload"]["schema"])
            assert message["payload"]["schema"]["namespace"].startswith("fi.te.hub.outbox.")


def test_a_projected_outbox_message_lacks_the_withheld_pii_fields(
    document: dict[str, Any], settings: HubSettings
) -> None:
    messages = _messages(
        document, _channel_by_address(document, outbox_topic(settings, "reporting"))
    )
    registered = messages["reporting.JobseekerRegistered"]
    full = sensitive_fields(avro_schema(EVENT_TYPES["JobseekerRegistered"]))
    sent = sensitive_fields(registered["payload"]["schema"])

    for path in ("payload.personal_identity_code", "payload.first_name", "payload.email"):
        assert full[path] in (Sensitivity.DIRECT, Sensitivity.CONTACT)
        assert path not in sent
        assert path in registered["description"]  # named as withheld
    assert "payload.reduced_work_ability" not in sent  # health
    for message in messages.values():  # reporting never gets direct, contact or health
        classes = set(sensitive_fields(message["payload"]["schema"]).values())
        assert not classes & {Sensitivity.DIRECT, Sensitivity.CONTACT, Sensitivity.HEALTH}


def test_only_destinations_with_a_worker_have_a_delivery_operation(
    document: dict[str, Any], routes: RoutesConfig, settings: HubSettings
) -> None:
    for name, destination in routes.destinations.items():
        channel = _channel_by_address(document, outbox_topic(settings, name))
        receivers = [
            op
            for op in document["operations"].values()
            if op["channel"]["$ref"] == f"#/channels/{channel}" and op["action"] == "receive"
        ]
        if destination.transport == Transport.OUTBOX:
            assert receivers == [], name
        else:
            (receiver,) = receivers
            group = receiver["bindings"]["kafka"]["groupId"]["enum"]
            assert group == [f"{settings.writer_id_prefix}-deliver-{name}"]


def test_webhook_bodies_and_headers_are_what_delivery_sends(
    document: dict[str, Any], routes: RoutesConfig, simulated_paths: list[list[Any]]
) -> None:
    """Each webhook destination's channel documents the JSON body of every type its routes
    send; real bodies (the routes' projection of simulated events, through json_body) and the
    signed headers validate against it."""
    webhook = [n for n, d in routes.destinations.items() if d.transport == Transport.WEBHOOK]
    events = [e for path in simulated_paths[:80] for e in path]
    checked: Counter[str] = Counter()

    for name in webhook:
        messages = _messages(document, f"webhook-{name}")
        operation = document["operations"][f"postWebhook-{name}"]
        assert operation["bindings"]["http"]["method"] == "POST"
        for route in (r for r in routes.routes if name in routes.destinations_of(r)):
            for event in (e for e in events if e.event_type in route.types):
                raw = avro_schema(EVENT_TYPES[event.event_type])
                record = project(event.to_avro(), set(route.grants), route.fields, raw)
                body = json.loads(json_body(event.event_type, record))
                message = messages[f"{name}.{event.event_type}.webhook"]
                _json_validator(document, message["payload"]).validate(body)
                checked[name] += 1
        request = DeliveryRequest(str(uuid4()), "JobSearchEnded", b"{}", static_headers("x"))
        headers = WebhookTransport(
            "http://127.0.0.1:1/", "whsec_" + "A" * 43 + "=", httpx.AsyncClient()
        ).signed_headers(request)
        for message in messages.values():
            _json_validator(document, message["headers"]).validate(headers)
    assert all(checked[name] > 0 for name in webhook), checked


def test_a_webhook_body_holds_no_field_the_route_withholds(document: dict[str, Any]) -> None:
    body = _messages(document, "webhook-providers")["providers.ServiceEnrolled.webhook"]
    data = body["payload"]["properties"]["data"]
    payload = data["properties"]["payload"]

    assert data["additionalProperties"] is False
    assert payload["additionalProperties"] is False
    kept = set(payload["properties"])
    outbox = _messages(document, "outbox-providers")["providers.ServiceEnrolled"]
    avro_payload = next(f for f in outbox["payload"]["schema"]["fields"] if f["name"] == "payload")[
        "type"
    ]
    assert kept == {f["name"] for f in avro_payload["fields"]}


def test_dead_letter_headers_are_what_dead_letter_writes(document: dict[str, Any]) -> None:
    moment = datetime(2026, 3, 2, tzinfo=UTC)
    letter = DeadLetter(
        DeadLetterStage.DELIVER,
        "ReceiverRefused",
        "422",
        "t",
        1,
        2,
        3,
        moment,
        moment,
        "kela",
        str(uuid4()),
        "JobSearchEnded",
    )
    headers = {k: v.decode() for k, v in letter.headers()}
    messages = _messages(document, "dead-letters")
    marker = messages.pop("deadLetter.marker")

    assert set(messages) == {"deadLetter.logRecord", "deadLetter.outboxRecord"}
    for message in messages.values():
        schema = message["headers"]
        dlq = {k for k in schema["properties"] if k.startswith("hub-dlq-")}
        assert dlq == set(headers)
        _json_validator(
            document,
            {**schema, "required": [r for r in schema["required"] if r.startswith("hub-dlq-")]},
        ).validate(headers)
    # What hub dlq replay/purge write next to the letters.
    stored = StoredLetter(0, 17, moment, b"k", b"v", list(letter.headers()), letter)
    for status in (LetterStatus.REPLAYED, LetterStatus.PURGED):
        _json_validator(document, marker["headers"]).validate(
            {k: v.decode() for k, v in _marker(stored, status, "fixed the receiver")}
        )


def test_log_headers_of_an_encoded_event_match_its_message(
    document: dict[str, Any], settings: HubSettings, simulated_paths: list[list[Any]]
) -> None:
    serializer = build_serializer(settings)
    messages = _messages(document, "customer-path")
    seen = set()
    for path in simulated_paths[:60]:
        for event in path:
            assert isinstance(event, CustomerPathEvent)
            record = encode_event(serializer, event, None)
            headers = {k: v.decode() for k, v in record.headers}
            _json_validator(document, messages[event.event_type]["headers"]).validate(headers)
            seen.add(event.event_type)
    assert len(seen) >= 8


def test_json_channels_describe_what_the_hub_writes(document: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    disclosure = Disclosure(
        destination="kela",
        event_id=uuid4(),
        subject="0" * 32,
        event_type="JobSearchEnded",
        fields=("payload.ended_on",),
        legal_basis={"direct": "Työttömyysturvalaki 1290/2002 11 luku"},
        status=DisclosureStatus.DELIVERED,
        attempts=1,
        first_attempt_at=now,
        last_attempt_at=now,
        route="end-to-payer",
        outbox_partition=3,
        outbox_offset=7,
    )
    written = {
        "disclosures": encode_entry(chained_entry(disclosure, "kela/3", 0, "0" * 64, now)),
        "ingest-receipts": encode_receipt(Receipt("client:key", uuid4(), "d" * 64, False)),
        "source-positions": encode_position(SourcePosition("poller:x", "cursor-17")),
    }
    for channel, value in written.items():
        (message,) = _messages(document, channel).values()
        assert message["contentType"] == "application/json"
        validator = _json_validator(document, message["payload"])
        validator.validate(json.loads(value))
        assert not validator.is_valid({**json.loads(value), "unexpected": 1}), channel


async def test_privacy_receipts_and_the_sealed_router_state_are_described(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Erasure, restriction and reveal receipts as :mod:`hub.privacy.access_log` builds them
    (its writer replaced by a list), and the router state with its fund code sealed or not
    kept, each valid against its message; nothing else is."""
    written: list[Disclosure] = []

    async def no_log(settings: HubSettings) -> None:
        return None

    async def keep(settings: HubSettings, chain: str, items: Any, **_: Any) -> set[str]:
        written.extend(entry for entry, _ in items)
        return set()

    monkeypatch.setattr(access_log, "_ensure_log", no_log)
    monkeypatch.setattr(access_log, "_write_chain", keep)
    settings = settings_for("127.0.0.1:1")
    now = datetime.now(UTC)
    subject = "0" * 32
    forgotten = ForgetResult(subject, (uuid4(),), now, 2, 41, ())
    await access_log.record_erasures(
        settings, [forgotten], "case 17", basis="order", operator="op", recipients={subject: []}
    )
    restricted = RestrictionResult(subject, now, 2, 42, "accuracy-contested", None)
    await access_log.record_restriction(settings, restricted, operator="op", recipients=[])
    lifted = RestrictionResult(subject, now, 2, 43, None, Restricted(subject, now, "contested"))
    await access_log.record_restriction(settings, lifted, operator="op", recipients=[])
    await access_log.record_reveal(
        settings, "op", [subject], [uuid4()], ["payload.last_name"], "the customer asked"
    )
    assert [str(e.status) for e in written] == [
        "erased",
        "restricted",
        "restriction-lifted",
        "revealed",
    ]
    (message,) = _messages(document, "disclosures").values()
    receipts = _json_validator(document, message["payload"])
    for entry in written:
        value = json.loads(encode_entry(chained_entry(entry, "person-keys/2", 0, "0" * 64, now)))
        receipts.validate(value)
        assert not receipts.is_valid({**value, "status": "shown"})

    key = DataKey(subject, uuid4(), bytes(32), now)
    fund = PersonState("UNEMPLOYMENT_FUND", "ote")
    states = _messages(document, "router-state")
    for name, value in (
        ("RouterPersonStateSealed", fund.to_bytes(key, subject)),
        ("RouterPersonStateSealed", fund.to_bytes(None, subject)),  # the key not had
        ("RouterPersonState", PersonState("KELA").to_bytes()),
    ):
        state = json.loads(value)
        validator = _json_validator(document, states[name]["payload"])
        validator.validate(state)
        assert not validator.is_valid({**state, "v": 3}), name
        assert not validator.is_valid({**state, "unexpected": 1}), name
    sealed = json.loads(fund.to_bytes(key, subject))
    validator = _json_validator(document, states["RouterPersonStateSealed"]["payload"])
    assert not validator.is_valid({**sealed, "fund_code": "ote"})  # never in clear beside it
    assert b"ote" not in fund.to_bytes(key, subject)


# --- hub asyncapi -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_hub_asyncapi_writes_the_document(
    tmp_path: Path, settings: HubSettings, document: dict[str, Any], suffix: str
) -> None:
    output = tmp_path / f"asyncapi{suffix}"
    finished = subprocess.run(
        [sys.executable, "-m", "hub", "asyncapi", "--output", str(output)],
        env=hub_environment(settings, HUB_STATE_DIR=str(tmp_path / "state")),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert finished.returncode == 0, finished.stderr
    assert "AsyncAPI 3.0.0" in finished.stderr
    text = output.read_text()
    written = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert written == json.loads(json.dumps(document))


def test_hub_asyncapi_refuses_a_broken_routes_file_in_one_line(
    tmp_path: Path, settings: HubSettings
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text('[destinations.x]\ntransport = "webhook"\n')
    finished = subprocess.run(
        [sys.executable, "-m", "hub", "asyncapi", "--output", str(tmp_path / "a.json")],
        env=hub_environment(settings, HUB_ROUTES_FILE=str(routes)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert finished.returncode == 1
    assert "the routes are not valid" in finished.stderr
    assert "destination x" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert not (tmp_path / "a.json").exists()


def test_yaml_output_reads_back_as_the_same_document(document: dict[str, Any]) -> None:
    tricky = {"a": ["no", "1.0", "*x", "- y", "k: v", "#c", "", None, True, 3, "ok text"], "b": {}}
    for value in (document, tricky):
        assert yaml.safe_load(to_yaml(value)) == json.loads(json.dumps(value))


# --- served by hub serve (over ASGI) ----------------------------------------------------------

REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|"url"\s*:\s*"([^"]+)\"""")


async def test_asyncapi_page_and_document_are_served_from_the_hub_itself(
    settings: HubSettings, document: dict[str, Any]
) -> None:
    app = create_app(settings, FakeSink(), make_clients(), FakeEnrolments(), utc_now)
    base = "http://hub.test"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as client:
        served = await client.get("/asyncapi.json")
        page = await client.get("/asyncapi")
        # data: URLs (the empty icon, so the browser asks no /favicon.ico) load nothing.
        references = [
            r for a, b in REFERENCE.findall(page.text) if not (r := a or b).startswith("data:")
        ]
        assets = {r: await client.get(urljoin(f"{base}/asyncapi", r)) for r in references}
        missing = await client.get("/asyncapi-assets/3.2.1/index.html")

    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(document))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "://" not in page.text
    assert {urljoin(f"{base}/asyncapi", r) for r in references} == {
        f"{base}/asyncapi.json",
        f"{base}/asyncapi-assets/3.2.1/standalone.js",
        f"{base}/asyncapi-assets/3.2.1/default.min.css",
    }
    for reference, answer in assets.items():
        assert urlsplit(urljoin(base, reference)).netloc == "hub.test"
        assert answer.status_code == 200, reference
        assert len(answer.content) > 10_000, reference
    assert missing.status_code == 404  # only the page's own files


def test_receivers_are_told_personal_fields_in_their_plaintext_type_never_sealed_bytes() -> None:
    """The log holds a pii field as a union with sealed bytes; a receiver always gets the
    opened value, so the webhook body schema names the plaintext type only."""
    from hub.docs.webhooks import body_schema
    from hub.serde import default_catalog

    schema = body_schema(
        "JobseekerRegistered", default_catalog().current("JobseekerRegistered").raw
    )
    payload = schema["properties"]["data"]["properties"]["payload"]["properties"]
    personal = {name: field for name, field in payload.items() if "x-pii" in field}
    assert len(personal) == 7
    assert personal["personal_identity_code"]["type"] == "string"
    for name, field in personal.items():
        members = field.get("anyOf", [field])
        assert all(m.get("description") != "Hexadecimal." for m in members), name
        assert {m["type"] for m in members} <= {"null", "string", "boolean"}, name
