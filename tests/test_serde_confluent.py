"""Registry client and Confluent framing, over real HTTP against tests/registry_server.py.

No Confluent-compatible registry (Confluent, Karapace, Apicurio, Redpanda) can be started on
the development machines, so the server is a small in-process implementation of the documented
endpoints; the client's requests, caching and error mapping go over a real socket.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from fastavro import schemaless_writer

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

try:
    from tests.registry_server import RunningRegistry, running_registry
    from tests.serde_samples import (
        job_offer,
        job_offer_record,
        jobseeker_v1,
        jobseeker_v1_record,
        jobseeker_v2,
        jobseeker_v2_record,
        write_schema_dir,
    )
except ImportError:
    from registry_server import RunningRegistry, running_registry  # type: ignore[no-redef]
    from serde_samples import (  # type: ignore[no-redef]
        job_offer,
        job_offer_record,
        jobseeker_v1,
        jobseeker_v1_record,
        jobseeker_v2,
        jobseeker_v2_record,
        write_schema_dir,
    )

JOBSEEKER = "fi.te.hub.JobseekerRegistered"


@pytest.fixture
def registry() -> Iterator[RunningRegistry]:
    with running_registry() as running:
        yield running


@pytest.fixture
def client(registry: RunningRegistry) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient(registry.url, timeout=5) as client:
        yield client


@pytest.fixture
def catalog(tmp_path: Path) -> SchemaCatalog:
    return SchemaCatalog.from_directory(write_schema_dir(tmp_path / "schemas"))


def test_register_is_idempotent_and_cached(
    client: SchemaRegistryClient, registry: RunningRegistry
) -> None:
    first = client.register(JOBSEEKER, jobseeker_v1())
    assert client.register(JOBSEEKER, jobseeker_v1()) == first
    assert registry.state.requests[f"POST /subjects/{JOBSEEKER}/versions"] == 1
    # A fresh client (no cache) gets the same id from the registry.
    with SchemaRegistryClient(registry.url) as other:
        assert other.register(JOBSEEKER, json.dumps(jobseeker_v1())) == first
    second = client.register(JOBSEEKER, jobseeker_v2())
    assert second != first
    assert registry.state.subjects[JOBSEEKER] == [first, second]
    assert registry.state.content_types == {CONTENT_TYPE}
    assert client.subjects() == [JOBSEEKER]


def test_same_schema_under_two_subjects_has_one_id(client: SchemaRegistryClient) -> None:
    assert client.register("a.Subject", job_offer()) == client.register("b.Subject", job_offer())


def test_get_by_id_and_lookup(client: SchemaRegistryClient, registry: RunningRegistry) -> None:
    schema_id = client.register(JOBSEEKER, jobseeker_v2())
    with SchemaRegistryClient(registry.url) as fresh:
        assert json.loads(fresh.get_by_id(schema_id)) == jobseeker_v2()
        fresh.get_by_id(schema_id)
        assert registry.state.requests[f"GET /schemas/ids/{schema_id}"] == 1
        assert fresh.lookup(JOBSEEKER, jobseeker_v2()) == schema_id
        assert fresh.cached_id(JOBSEEKER, jobseeker_v2()) == schema_id
        fresh.lookup(JOBSEEKER, jobseeker_v2())
        assert registry.state.requests[f"POST /subjects/{JOBSEEKER}"] == 1


def test_errors_carry_the_registry_error_code(client: SchemaRegistryClient) -> None:
    with pytest.raises(SchemaNotFound, match="40403") as missing_id:
        client.get_by_id(999)
    assert missing_id.value.status_code == 404
    assert missing_id.value.error_code == 40403
    with pytest.raises(SubjectNotFound, match=r"Subject 'no\.Such' not found") as no_subject:
        client.lookup("no.Such", job_offer())
    assert no_subject.value.error_code == 40401
    client.register(JOBSEEKER, jobseeker_v1())
    with pytest.raises(SchemaNotFound, match="Schema not found"):
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
    with pytest.raises(IncompatibleSchema, match="incompatible"):
        client.register(JOBSEEKER, breaking)


def test_unreachable_registry_is_a_clear_error() -> None:
    with (
        SchemaRegistryClient("http://127.0.0.1:9", timeout=1) as client,
        pytest.raises(SchemaRegistryError, match="no response"),
    ):
        client.get_by_id(1)


def test_register_all_uses_record_name_subjects(
    client: SchemaRegistryClient, catalog: SchemaCatalog, registry: RunningRegistry
) -> None:
    ids = register_all(catalog, client, include_history=True)
    assert set(ids) == {"fi.te.hub.JobOfferMade", JOBSEEKER}
    assert sorted(registry.state.subjects) == ["fi.te.hub.JobOfferMade", JOBSEEKER]
    assert len(registry.state.subjects[JOBSEEKER]) == 2  # v1, then v2 (= current)
    assert register_all(catalog, client) == ids


def test_confluent_round_trip(
    client: SchemaRegistryClient, catalog: SchemaCatalog, registry: RunningRegistry
) -> None:
    ids = register_all(catalog, client)
    producer = ConfluentSerializer(SchemaRegistryClient(registry.url), catalog)
    assert isinstance(producer, EventSerializer)
    assert producer.prepare() == ids
    data = producer.encode("JobseekerRegistered", jobseeker_v2_record())
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == ids[JOBSEEKER]
    body = BytesIO()
    schemaless_writer(body, catalog.current(JOBSEEKER).parsed, jobseeker_v2_record())
    assert data[5:] == body.getvalue()

    consumer = ConfluentSerializer(SchemaRegistryClient(registry.url), catalog)
    decoded = consumer.decode(data)
    assert decoded == DecodedEvent(JOBSEEKER, jobseeker_v2_record(), str(ids[JOBSEEKER]))
    offer = consumer.decode(producer.encode("fi.te.hub.JobOfferMade", job_offer_record()))
    assert offer.record == job_offer_record()
    assert producer.schema_ref("JobOfferMade") == str(ids["fi.te.hub.JobOfferMade"])


def test_confluent_old_writer_resolves_to_current_reader(
    client: SchemaRegistryClient, catalog: SchemaCatalog, registry: RunningRegistry
) -> None:
    """A producer still on v1 wrote with the v1 id; the consumer gets the current shape."""
    v1_id = client.register(JOBSEEKER, jobseeker_v1())
    client.register(JOBSEEKER, jobseeker_v2())
    buf = BytesIO()
    buf.write(b"\x00" + v1_id.to_bytes(4, "big"))
    schemaless_writer(buf, catalog.history(JOBSEEKER)[0].parsed, jobseeker_v1_record())
    consumer = ConfluentSerializer(SchemaRegistryClient(registry.url), catalog)
    decoded = consumer.decode(buf.getvalue())
    assert decoded.writer_schema_ref == str(v1_id)
    assert decoded.record["payload"]["weekly_hours"] == 40
    assert "legacy_note" not in decoded.record["payload"]


async def test_async_prepare_and_decode(catalog: SchemaCatalog, registry: RunningRegistry) -> None:
    with SchemaRegistryClient(registry.url) as setup:
        ids = register_all(catalog, setup)
    producer = ConfluentSerializer(SchemaRegistryClient(registry.url), catalog)
    assert await producer.aprepare() == ids
    data = producer.encode(JOBSEEKER, jobseeker_v2_record())
    consumer_client = SchemaRegistryClient(registry.url)
    consumer = ConfluentSerializer(consumer_client, catalog)
    decoded = await consumer.adecode(data)
    assert decoded.record == jobseeker_v2_record()
    assert consumer_client._client is None  # the blocking client was never needed
    await consumer_client.aclose()
    await producer.client.aclose()


def test_lookup_only_unless_auto_register(
    catalog: SchemaCatalog, registry: RunningRegistry
) -> None:
    strict = ConfluentSerializer(SchemaRegistryClient(registry.url), catalog)
    with pytest.raises(SubjectNotFound):
        strict.encode("JobOfferMade", job_offer_record())
    lenient = ConfluentSerializer(SchemaRegistryClient(registry.url), catalog, auto_register=True)
    data = lenient.encode("JobOfferMade", job_offer_record())
    assert strict.decode(data).record == job_offer_record()
    assert strict.encode("JobOfferMade", job_offer_record()) == data


def test_framing_errors(catalog: SchemaCatalog, registry: RunningRegistry) -> None:
    serde = ConfluentSerializer(SchemaRegistryClient(registry.url), catalog)
    with pytest.raises(BadMagic, match="expected marker 00, found c3 01"):
        serde.decode(b"\xc3\x01abcdefgh")
    with pytest.raises(TruncatedPayload, match="5-byte header"):
        serde.decode(b"\x00\x00\x01")
    with pytest.raises(SchemaNotFound, match="Schema 77 not found"):
        serde.decode(b"\x00\x00\x00\x00\x4d\x02")


def test_writer_of_a_type_we_do_not_know(catalog: SchemaCatalog, registry: RunningRegistry) -> None:
    foreign = {"type": "record", "name": "other.Thing", "fields": [{"name": "x", "type": "int"}]}
    with SchemaRegistryClient(registry.url) as setup:
        foreign_id = setup.register("other.Thing", foreign)
    serde = ConfluentSerializer(SchemaRegistryClient(registry.url), catalog)
    with pytest.raises(UnknownEventType, match=r"other\.Thing"):
        serde.decode(b"\x00" + foreign_id.to_bytes(4, "big") + b"\x02")


def test_prime_avoids_the_network(catalog: SchemaCatalog) -> None:
    serde = ConfluentSerializer(SchemaRegistryClient("http://127.0.0.1:9"), catalog)
    serde.prime({JOBSEEKER: 7, "JobOfferMade": 8})
    data = serde.encode("JobseekerRegistered", jobseeker_v2_record())
    assert data[:5] == b"\x00\x00\x00\x00\x07"
    assert serde.decode(data).record == jobseeker_v2_record()


def test_build_serializer_picks_framing_from_settings(
    catalog: SchemaCatalog, registry: RunningRegistry
) -> None:
    plain = build_serializer(HubSettings(schema_registry_url=None), catalog)
    assert isinstance(plain, SingleObjectSerializer)
    with_registry = build_serializer(HubSettings(schema_registry_url=registry.url), catalog)
    assert isinstance(with_registry, ConfluentSerializer)
    assert with_registry.client.url == registry.url
    assert jobseeker_v2() == catalog.current(JOBSEEKER).raw
