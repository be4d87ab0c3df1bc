"""Registry client and Confluent framing against a real registry (Apicurio Registry).

The session's Apicurio (tests/registry_fixture.py) is emptied before each test. What the client
sends is counted by a transport between the client and the real server; the faults a working
registry cannot be made to show (5xx, timeouts) come from tests/registry_server.py.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastavro import parse_schema, schemaless_writer

from hub.events.sensitivity import sensitive_fields
from hub.serde import (
    BadMagic,
    ConfluentSerializer,
    DecodedEvent,
    EventSerializer,
    SingleObjectSerializer,
    TruncatedPayload,
    UnknownEventType,
    build_serializer,
)
from hub.serde.catalog import SchemaCatalog
from hub.serde.fingerprint import canonical_form
from hub.serde.registry import (
    CONTENT_TYPE,
    IncompatibleSchema,
    SchemaNotFound,
    SchemaRegistryClient,
    SchemaRegistryError,
    SubjectNotFound,
    register_all,
)
from hub.settings import HubSettings
from tests.registry_server import Fault, faulty_registry
from tests.serde_samples import (
    job_offer,
    job_offer_record,
    jobseeker_v1,
    jobseeker_v1_record,
    jobseeker_v2,
    jobseeker_v2_record,
    write_schema_dir,
)

JOBSEEKER = "fi.te.hub.JobseekerRegistered"


class CountingTransport(httpx.HTTPTransport):
    """Passes requests to the real registry and counts them by ``METHOD /path`` (the path
    relative to the Confluent API root)."""

    def __init__(self, root_path: str) -> None:
        super().__init__()
        self.root_path = root_path
        self.requests: Counter[str] = Counter()
        self.content_types: set[str] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(self.root_path)
        self.requests[f"{request.method} {path}"] += 1
        if request.method == "POST":
            self.content_types.add(request.headers.get("Content-Type", ""))
        return super().handle_request(request)


@pytest.fixture
def transport(schema_registry: str) -> CountingTransport:
    return CountingTransport(httpx.URL(schema_registry).path)


@pytest.fixture
def client(schema_registry: str, transport: CountingTransport) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient(schema_registry, timeout=10, transport=transport) as client:
        yield client


@pytest.fixture
def catalog(tmp_path: Path) -> SchemaCatalog:
    return SchemaCatalog.from_directory(write_schema_dir(tmp_path / "schemas"))


def versions_of(url: str, subject: str) -> list[int]:
    """The schema ids of a subject's versions, oldest first, as the registry lists them."""
    path = f"{url}/subjects/{quote(subject, safe='')}/versions"
    versions = httpx.get(path, timeout=10).json()
    return [httpx.get(f"{path}/{v}", timeout=10).json()["id"] for v in versions]


def test_register_is_idempotent_and_cached(
    client: SchemaRegistryClient, schema_registry: str, transport: CountingTransport
) -> None:
    first = client.register(JOBSEEKER, jobseeker_v1())
    assert client.register(JOBSEEKER, jobseeker_v1()) == first
    assert transport.requests[f"POST /subjects/{JOBSEEKER}/versions"] == 1
    # A fresh client (no cache) gets the same id from the registry, also for other JSON text.
    with SchemaRegistryClient(schema_registry) as other:
        assert other.register(JOBSEEKER, json.dumps(jobseeker_v1(), indent=2)) == first
    second = client.register(JOBSEEKER, jobseeker_v2())
    assert second != first
    assert versions_of(schema_registry, JOBSEEKER) == [first, second]
    assert transport.content_types == {CONTENT_TYPE}
    assert client.subjects() == [JOBSEEKER]


def test_same_schema_under_two_subjects_has_one_id(client: SchemaRegistryClient) -> None:
    assert client.register("a.Subject", job_offer()) == client.register("b.Subject", job_offer())


def test_get_by_id_and_lookup(client: SchemaRegistryClient, schema_registry: str) -> None:
    schema_id = client.register(JOBSEEKER, jobseeker_v2())
    counted = CountingTransport(httpx.URL(schema_registry).path)
    with SchemaRegistryClient(schema_registry, transport=counted) as fresh:
        # The registry returns the schema normalised (a nested record's inherited namespace is
        # dropped): the same schema by its canonical form, custom attributes (pii) kept.
        fetched = json.loads(fresh.get_by_id(schema_id))
        assert canonical_form(parse_schema(fetched, named_schemas={})) == canonical_form(
            parse_schema(jobseeker_v2(), named_schemas={})
        )
        assert sensitive_fields(fetched) == sensitive_fields(jobseeker_v2())
        fresh.get_by_id(schema_id)
        assert counted.requests[f"GET /schemas/ids/{schema_id}"] == 1
        assert fresh.lookup(JOBSEEKER, jobseeker_v2()) == schema_id
        assert fresh.cached_id(JOBSEEKER, jobseeker_v2()) == schema_id
        fresh.lookup(JOBSEEKER, jobseeker_v2())
        assert counted.requests[f"POST /subjects/{JOBSEEKER}"] == 1


def test_errors_carry_the_registry_error_code(client: SchemaRegistryClient) -> None:
    with pytest.raises(SchemaNotFound, match="40403") as missing_id:
        client.get_by_id(999_999)
    assert missing_id.value.status_code == 404
    assert missing_id.value.error_code == 40403
    with pytest.raises(SubjectNotFound, match=r"Subject 'no\.Such' not found") as no_subject:
        client.lookup("no.Such", job_offer())
    assert no_subject.value.error_code == 40401
    client.register(JOBSEEKER, jobseeker_v1())
    with pytest.raises(SchemaNotFound, match="40403"):
        client.lookup(JOBSEEKER, job_offer())
    with pytest.raises(SchemaRegistryError, match="42201"):
        client.register("x.Bad", {"type": "record", "name": "Bad", "fields": [{"name": 1}]})


def test_compatibility(client: SchemaRegistryClient) -> None:
    assert client.check_compatibility(JOBSEEKER, jobseeker_v1())  # no subject yet
    client.register(JOBSEEKER, jobseeker_v1())
    assert client.check_compatibility(JOBSEEKER, jobseeker_v2())
    breaking = jobseeker_v2()
    breaking["fields"][1]["type"]["fields"].append({"name": "required_now", "type": "string"})
    assert not client.check_compatibility(JOBSEEKER, breaking)
    with pytest.raises(IncompatibleSchema, match=r"(?i)incompatible"):
        client.register(JOBSEEKER, breaking)


def test_unreachable_registry_is_a_clear_error() -> None:
    with (
        SchemaRegistryClient("http://127.0.0.1:9", timeout=1) as client,
        pytest.raises(SchemaRegistryError, match="no response"),
    ):
        client.get_by_id(1)


@pytest.mark.parametrize(
    "fault",
    [
        Fault(),  # a proxy's HTML page
        Fault(
            status=500,
            body=b'{"error_code": 50001, "message": "Error in the backend data store"}',
            content_type="application/vnd.schemaregistry.v1+json",
        ),
    ],
    ids=["proxy-503-html", "backend-500-json"],
)
def test_server_errors_are_registry_errors(fault: Fault) -> None:
    with (
        faulty_registry(fault) as registry,
        SchemaRegistryClient(registry.url, timeout=5) as client,
        pytest.raises(SchemaRegistryError, match=f"HTTP {fault.status}") as error,
    ):
        client.register(JOBSEEKER, jobseeker_v1())
    assert error.value.status_code == fault.status
    if fault.status == 500:
        assert error.value.error_code == 50001
        assert "backend data store" in str(error.value)


async def test_a_registry_that_answers_too_late_is_a_timeout_not_a_hang() -> None:
    with faulty_registry(Fault(status=200, body=b"{}", delay_s=3)) as registry:
        client = SchemaRegistryClient(registry.url, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(SchemaRegistryError, match="no response"):
            await client.aget_by_id(1)
        with pytest.raises(SchemaRegistryError, match="no response"):
            client.get_by_id(2)
        assert time.monotonic() - started < 2.5  # two timeouts of 0.5 s, not the 3 s answers
        client.close()
        await client.aclose()


def test_register_all_uses_record_name_subjects(
    client: SchemaRegistryClient, catalog: SchemaCatalog, schema_registry: str
) -> None:
    ids = register_all(catalog, client, include_history=True)
    assert set(ids) == {"fi.te.hub.JobOfferMade", JOBSEEKER}
    assert client.subjects() == ["fi.te.hub.JobOfferMade", JOBSEEKER]
    assert len(versions_of(schema_registry, JOBSEEKER)) == 2  # v1, then v2 (= current)
    with SchemaRegistryClient(schema_registry) as fresh:
        assert register_all(catalog, fresh) == ids


def test_confluent_round_trip(
    client: SchemaRegistryClient, catalog: SchemaCatalog, schema_registry: str
) -> None:
    ids = register_all(catalog, client)
    producer = ConfluentSerializer(SchemaRegistryClient(schema_registry), catalog)
    assert isinstance(producer, EventSerializer)
    assert producer.prepare() == ids
    data = producer.encode("JobseekerRegistered", jobseeker_v2_record())
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == ids[JOBSEEKER]
    body = BytesIO()
    schemaless_writer(body, catalog.current(JOBSEEKER).parsed, jobseeker_v2_record())
    assert data[5:] == body.getvalue()

    consumer = ConfluentSerializer(SchemaRegistryClient(schema_registry), catalog)
    decoded = consumer.decode(data)
    assert decoded == DecodedEvent(JOBSEEKER, jobseeker_v2_record(), str(ids[JOBSEEKER]))
    offer = consumer.decode(producer.encode("fi.te.hub.JobOfferMade", job_offer_record()))
    assert offer.record == job_offer_record()
    assert producer.schema_ref("JobOfferMade") == str(ids["fi.te.hub.JobOfferMade"])


def test_confluent_old_writer_resolves_to_current_reader(
    client: SchemaRegistryClient, catalog: SchemaCatalog, schema_registry: str
) -> None:
    """A producer still on v1 wrote with the v1 id; the consumer gets the current shape."""
    v1_id = client.register(JOBSEEKER, jobseeker_v1())
    client.register(JOBSEEKER, jobseeker_v2())
    buf = BytesIO()
    buf.write(b"\x00" + v1_id.to_bytes(4, "big"))
    schemaless_writer(buf, catalog.history(JOBSEEKER)[0].parsed, jobseeker_v1_record())
    consumer = ConfluentSerializer(SchemaRegistryClient(schema_registry), catalog)
    decoded = consumer.decode(buf.getvalue())
    assert decoded.writer_schema_ref == str(v1_id)
    assert decoded.record["payload"]["weekly_hours"] == 40
    assert "legacy_note" not in decoded.record["payload"]


async def test_async_prepare_and_decode(catalog: SchemaCatalog, schema_registry: str) -> None:
    with SchemaRegistryClient(schema_registry) as setup:
        ids = register_all(catalog, setup)
    producer = ConfluentSerializer(SchemaRegistryClient(schema_registry), catalog)
    assert await producer.aprepare() == ids
    data = producer.encode(JOBSEEKER, jobseeker_v2_record())
    consumer_client = SchemaRegistryClient(schema_registry)
    consumer = ConfluentSerializer(consumer_client, catalog)
    decoded = await consumer.adecode(data)
    assert decoded.record == jobseeker_v2_record()
    assert consumer_client._client is None  # the blocking client was never needed
    await consumer_client.aclose()
    await producer.client.aclose()


def test_lookup_only_unless_auto_register(catalog: SchemaCatalog, schema_registry: str) -> None:
    strict = ConfluentSerializer(SchemaRegistryClient(schema_registry), catalog)
    with pytest.raises(SubjectNotFound):
        strict.encode("JobOfferMade", job_offer_record())
    lenient = ConfluentSerializer(
        SchemaRegistryClient(schema_registry), catalog, auto_register=True
    )
    data = lenient.encode("JobOfferMade", job_offer_record())
    assert strict.decode(data).record == job_offer_record()
    assert strict.encode("JobOfferMade", job_offer_record()) == data


def test_framing_errors(catalog: SchemaCatalog, schema_registry: str) -> None:
    serde = ConfluentSerializer(SchemaRegistryClient(schema_registry), catalog)
    with pytest.raises(BadMagic, match=r"expected marker c3 01 .* or 00 .*, found 7b 7d"):
        serde.decode(b"{}")
    with pytest.raises(TruncatedPayload, match="5-byte header"):
        serde.decode(b"\x00\x00\x01")
    with pytest.raises(SchemaNotFound, match="Schema 77 not found"):
        serde.decode(b"\x00\x00\x00\x00\x4d\x02")


async def test_single_object_values_decode_with_a_registry_too(catalog: SchemaCatalog) -> None:
    """A log written before the registry was switched on reads whole: the marker decides."""
    serde = ConfluentSerializer(SchemaRegistryClient("http://127.0.0.1:9"), catalog)
    single = SingleObjectSerializer(catalog)
    old = single.encode("JobseekerRegistered", jobseeker_v2_record())
    expected = single.decode(old)
    assert serde.decode(old) == expected
    assert await serde.adecode(old) == expected
    assert serde.decode(bytearray(old)) == expected
    assert expected.writer_schema_ref == catalog.current(JOBSEEKER).fingerprint_hex


def test_writer_of_a_type_we_do_not_know(catalog: SchemaCatalog, schema_registry: str) -> None:
    foreign = {"type": "record", "name": "other.Thing", "fields": [{"name": "x", "type": "int"}]}
    with SchemaRegistryClient(schema_registry) as setup:
        foreign_id = setup.register("other.Thing", foreign)
    serde = ConfluentSerializer(SchemaRegistryClient(schema_registry), catalog)
    with pytest.raises(UnknownEventType, match=r"other\.Thing"):
        serde.decode(b"\x00" + foreign_id.to_bytes(4, "big") + b"\x02")


def test_prime_avoids_the_network(catalog: SchemaCatalog) -> None:
    serde = ConfluentSerializer(SchemaRegistryClient("http://127.0.0.1:9"), catalog)
    serde.prime({JOBSEEKER: 7, "JobOfferMade": 8})
    data = serde.encode("JobseekerRegistered", jobseeker_v2_record())
    assert data[:5] == b"\x00\x00\x00\x00\x07"
    assert serde.decode(data).record == jobseeker_v2_record()


def test_build_serializer_picks_the_writing_framing_from_settings(
    catalog: SchemaCatalog,
) -> None:
    plain = build_serializer(HubSettings(schema_registry_url=None), catalog)
    assert isinstance(plain, SingleObjectSerializer)
    url = "http://127.0.0.1:9/apis/ccompat/v7"
    with_registry = build_serializer(HubSettings(schema_registry_url=url), catalog)
    assert isinstance(with_registry, ConfluentSerializer)
    assert with_registry.client.url == url
    assert jobseeker_v2() == catalog.current(JOBSEEKER).raw
