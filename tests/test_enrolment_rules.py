"""Who may use an enrolment, at the API: its provider, about its person; its id, only its maker.

Handler logic against the in-memory sink and directory; the directory's own rules on the real
log are in tests/test_enrolment_directory.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from tests.ingest_fakes import ESPOO_KEY, MUNICIPAL_KEY, PROVIDER_KEY
from tests.test_ingest_api import OTHER_PERSON, Api, changed, item, pointers, problem

REPORT = "ServiceParticipationReported"
ENROL = "ServiceEnrolled"
OTHER_PROVIDER = "2345678-0"


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    client = Api()
    async with client.http:
        yield client


async def test_a_provider_reports_only_on_the_person_enrolled(api: Api) -> None:
    someone_else = changed(REPORT, personal_identity_code=OTHER_PERSON)
    body = problem(await api.post(REPORT, someone_else), 403, "enrolment-person-mismatch")
    assert pointers(body) == [("#/personal_identity_code", "enrolment-person-mismatch")]
    # The same, with a health-class reason: refused before it could reach the log.
    interrupted = changed(
        REPORT, payload__kind="INTERRUPTION", payload__interruption_reason="ILLNESS"
    )
    about_someone_else = interrupted | {"personal_identity_code": OTHER_PERSON}
    problem(await api.post(REPORT, about_someone_else), 403, "enrolment-person-mismatch")
    # Nor may it send the report to another employment area than the one that enrolled.
    elsewhere = changed(REPORT, municipality_code="049")
    body = problem(await api.post(REPORT, elsewhere), 403, "enrolment-municipality-mismatch")
    assert pointers(body) == [("#/municipality_code", "enrolment-municipality-mismatch")]
    bulk = await api.bulk(
        [item(REPORT), item(REPORT, personal_identity_code=OTHER_PERSON)], key=PROVIDER_KEY
    )
    assert pointers(problem(bulk, 403, "forbidden-items")) == [
        ("#/1/personal_identity_code", "enrolment-person-mismatch")
    ]
    assert api.sink.events == []
    assert (await api.post(REPORT, interrupted)).status_code == 202


async def test_another_client_may_not_take_over_an_enrolment(api: Api) -> None:
    # espoo-crm re-sends helsinki-crm's enrolment id for an Espoo resident with its provider.
    takeover = changed(
        ENROL,
        municipality_code="049",
        personal_identity_code=OTHER_PERSON,
        payload__provider_business_id=OTHER_PROVIDER,
    )
    body = problem(await api.post(ENROL, takeover, key=ESPOO_KEY), 403, "enrolment-taken")
    assert pointers(body) == [("#/payload/enrolment_id", "enrolment-taken")]
    assert "another client's enrolment" in body["detail"]
    # Not even with the same person and provider: the id is helsinki-crm's.
    same_facts = changed(ENROL, municipality_code="049")
    problem(await api.post(ENROL, same_facts, key=ESPOO_KEY), 403, "enrolment-taken")
    bulk = await api.bulk(
        [item("JobSearchEnded", municipality_code="049"), {"event_type": ENROL, **takeover}],
        key=ESPOO_KEY,
    )
    assert pointers(problem(bulk, 403, "forbidden-items")) == [
        ("#/1/payload/enrolment_id", "enrolment-taken")
    ]
    assert api.sink.events == []


async def test_the_maker_may_retry_its_enrolment_but_not_change_whose_it_is(api: Api) -> None:
    first = await api.post(ENROL, key=MUNICIPAL_KEY)
    assert first.status_code == 202
    again = await api.post(ENROL, key=MUNICIPAL_KEY)
    assert again.status_code == 202
    assert again.json() == first.json()
    as_bulk = await api.bulk([item(ENROL)], key=MUNICIPAL_KEY)
    assert as_bulk.status_code == 202, as_bulk.text
    for change, differs in (
        ({"payload__provider_business_id": OTHER_PROVIDER}, "another provider"),
        ({"personal_identity_code": OTHER_PERSON}, "another person"),
    ):
        body = problem(await api.post(ENROL, changed(ENROL, **change)), 403, "enrolment-taken")
        assert differs in body["detail"]
    assert len(api.sink.events) == 1


async def test_inside_a_bulk_the_first_item_of_an_enrolment_id_owns_it(api: Api) -> None:
    new_id = str(uuid4())
    items = [
        item(ENROL, payload__enrolment_id=new_id),
        item(ENROL, payload__enrolment_id=new_id, payload__provider_business_id=OTHER_PROVIDER),
    ]
    body = problem(await api.bulk(items, key=MUNICIPAL_KEY), 403, "forbidden-items")
    assert pointers(body) == [("#/1/payload/enrolment_id", "enrolment-taken")]
    retried = await api.bulk([items[0], items[0]], key=MUNICIPAL_KEY)
    assert retried.status_code == 202, retried.text


async def test_a_directory_catching_up_is_a_503_not_a_refusal(api: Api) -> None:
    api.enrolments.catching_up = True
    for event_type, key in ((REPORT, PROVIDER_KEY), (ENROL, MUNICIPAL_KEY)):
        response = await api.post(event_type, key=key)
        body = problem(response, 503, "directory-catching-up")
        assert response.headers["retry-after"] == "3"
        assert body["retry_after_s"] == 3
    bulk = await api.bulk([item(ENROL)], key=MUNICIPAL_KEY)
    problem(bulk, 503, "directory-catching-up")
    assert bulk.headers["retry-after"] == "3"
    # Events that name no enrolment do not wait for the directory.
    assert (await api.post("JobSearchEnded")).status_code == 202
    assert [e.event_type for e in api.sink.events] == ["JobSearchEnded"]
    api.enrolments.catching_up = False
    assert (await api.post(REPORT, key=PROVIDER_KEY)).status_code == 202
