"""Routes as data: every refusal at load names the route and the reason; resolution to payers,
funds (merged ones to their successor on the date), providers and municipal systems; the
person's payer state; ``hub routes explain`` and ``hub routes check`` with their exit codes."""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connectors.simulator.config import SimulationConfig
from connectors.simulator.paths import simulate
from connectors.simulator.population import simulator_providers
from hub.cli import cli
from hub.identity import Pseudonymizer
from hub.routing.cli import explain_text, missing_secrets
from hub.routing.resolve import PersonState, Unroutable, fund_on, next_state, route_event
from hub.routing.routes import (
    DEFAULT_ROUTES_FILE,
    RoutesConfig,
    RoutesError,
    Transport,
    development_signing_secret,
    load_routes,
    parse_routes,
)
from hub.serde.catalog import default_catalog
from hub.serde.single_object import SingleObjectSerializer
from hub.settings import HubSettings

# --- shared samples ------------------------------------------------------------------------------


@cache
def default_routes() -> RoutesConfig:
    return load_routes(HubSettings(routes_file=None))


@cache
def _sample_records() -> dict[str, dict[str, Any]]:
    """One decoded record per event type, from the simulator (so shaped exactly like the log)."""
    serializer = SingleObjectSerializer()
    found: dict[str, dict[str, Any]] = {}
    pseudonymizer = Pseudonymizer.from_settings(HubSettings())
    for path in simulate(SimulationConfig(jobseekers=80, seed=3), pseudonymizer):
        for event in path:
            if event.event_type not in found:
                decoded = serializer.decode(serializer.encode(event.event_type, event.to_avro()))
                found[event.event_type] = decoded.record
    assert len(found) == len(default_catalog()), sorted(found)
    return found


def sample(type_name: str) -> dict[str, Any]:
    """A fresh copy of the sample record of a type (tests may change it)."""
    return copy.deepcopy(_sample_records()[type_name])


def destinations(routed: list[Any]) -> set[tuple[str, str | None]]:
    return {(r.destination, r.endpoint) for r in routed}


# --- the default routes --------------------------------------------------------------------------


def test_default_routes_load_with_every_destination_of_the_contract() -> None:
    config = default_routes()
    assert set(config.destinations) == {"kela", "funds", "providers", "municipal", "reporting"}
    assert config.destinations["reporting"].transport is Transport.OUTBOX
    assert config.destinations["kela"].endpoint is not None
    assert str(config.destinations["kela"].endpoint.url) == "http://127.0.0.1:8700/kela"
    funds = config.destinations["funds"].endpoints or {}
    assert {"a-kassa", "erko", "ote"} <= set(funds)
    assert str(funds["ote"].url) == "http://127.0.0.1:8700/fund/ote"
    assert len(config.destinations["municipal"].endpoints or {}) == 45


def test_the_provider_directory_lists_the_simulators_providers_whatever_the_seed() -> None:
    providers = default_routes().destinations["providers"].endpoints or {}
    assert set(providers) == set(simulator_providers())
    assert len(providers) == 25
    business_id = simulator_providers()[0]
    assert str(providers[business_id].url) == f"http://127.0.0.1:8700/provider/{business_id}"


def test_every_special_grant_of_the_default_routes_names_a_law() -> None:
    for route in default_routes().routes:
        for kind, basis in route.grants.items():
            assert re.search(r"\d+/\d{4}|GDPR", basis), (route.name, kind)


def test_reporting_gets_every_type_but_no_direct_contact_or_health_grant() -> None:
    reporting = [r for r in default_routes().routes if r.to.destination == "reporting"]
    assert len(reporting) == 1
    assert set(reporting[0].types) == {e.short_name for e in default_catalog()}
    assert set(reporting[0].grants) == {"membership"}


# --- refusals ------------------------------------------------------------------------------------

_BASE = """
[destinations.kela]
transport = "webhook"
endpoint = { url = "http://127.0.0.1:8700/kela", secret_env = "KELA_SECRET" }

[destinations.stats]
transport = "outbox"
"""


def _routes_text(route: str, destinations: str = _BASE) -> str:
    return destinations + "\n" + route


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        pytest.param(
            """[[routes]]
name = "r-direct"
types = ["LabourPolicyStatementIssued"]
to = { destination = "kela" }
grants = { direct = "" }""",
            "route r-direct: grants: grants direct without a legal basis",
            id="direct-without-basis",
        ),
        pytest.param(
            """[[routes]]
name = "r-health"
types = ["ServiceParticipationReported"]
to = { destination = "kela" }
grants = { health = "because we need it" }""",
            "route r-health: grants: grants health without a legal basis",
            id="health-basis-names-no-law",
        ),
        pytest.param(
            """[[routes]]
name = "r-member"
types = ["JobseekerRegistered"]
to = { destination = "stats" }
grants = { membership = "   " }""",
            "route r-member: grants: grants membership without a legal basis",
            id="membership-blank-basis",
        ),
        pytest.param(
            """[[routes]]
name = "r-dest"
types = ["JobseekerRegistered"]
to = { destination = "nowhere" }""",
            "route r-dest: unknown destination nowhere",
            id="unknown-destination",
        ),
        pytest.param(
            """[[routes]]
name = "r-type"
types = ["JobseekerRegisterd"]
to = { destination = "stats" }""",
            "route r-type: unknown event type JobseekerRegisterd",
            id="unknown-type",
        ),
        pytest.param(
            """[[routes]]
name = "r-field"
types = ["ServiceEnrolled"]
to = { destination = "stats" }
fields = ["payload.enrolment_id", "payload.participant_shoe_size"]""",
            "route r-field: unknown field payload.participant_shoe_size",
            id="unknown-field",
        ),
        pytest.param(
            """[[routes]]
name = "r-outside"
types = ["ServiceEnrolled"]
to = { destination = "stats" }
fields = ["envelope.subject"]""",
            "route r-outside: field envelope.subject: fields are paths under payload.",
            id="field-outside-payload",
        ),
        pytest.param(
            """[[routes]]
name = "r-ungranted"
types = ["ServiceEnrolled"]
to = { destination = "stats" }
fields = ["payload.enrolment_id", "payload.participant_email"]
grants = { direct = "Laki työvoimapalveluiden järjestämisestä (380/2023)" }""",
            "route r-ungranted: field payload.participant_email of ServiceEnrolled is contact and "
            "the route grants no legal basis for contact",
            id="field-of-ungranted-class",
        ),
        pytest.param(
            """[[routes]]
name = "r-typo"
types = ["JobseekerRegistered"]
to = { destination = "stats" }
grant = { membership = "Tilastolaki (280/2004)" }""",
            "route r-typo: grant: Extra inputs are not permitted",
            id="unknown-key",
        ),
        pytest.param(
            """[[routes]]
name = "r-both"
types = ["JobseekerRegistered"]
to = { destination = "stats", directory = "payer_named" }""",
            "route r-both: to: give exactly one of destination or directory",
            id="destination-and-directory",
        ),
        pytest.param(
            """[[routes]]
name = "r-payer"
types = ["JobSearchEnded"]
to = { directory = "payer_named" }""",
            "route r-payer: directory payer_named needs payload.payer, JobSearchEnded has none",
            id="directory-needs-field",
        ),
        pytest.param(
            """[[routes]]
name = "r-one"
types = ["JobSearchEnded"]
to = { destination = "stats" }

[[routes]]
name = "r-two"
types = ["JobSearchEnded"]
to = { destination = "stats" }""",
            "route r-two: route r-one already sends JobSearchEnded to destination stats",
            id="two-routes-one-destination",
        ),
        pytest.param(
            """[[routes]]
name = "r-area"
types = ["JobSearchEnded"]
to = { destination = "stats" }
employment_areas = ["01", "99"]""",
            "route r-area: unknown employment area codes 99",
            id="unknown-area",
        ),
    ],
)
def test_a_bad_route_is_refused_naming_the_route_and_the_reason(route: str, reason: str) -> None:
    with pytest.raises(RoutesError) as caught:
        parse_routes(_routes_text(route), "test.toml")
    assert reason in str(caught.value)
    assert str(caught.value).startswith("test.toml: ")


@pytest.mark.parametrize(
    ("destination", "reason"),
    [
        pytest.param(
            '[destinations.hook]\ntransport = "webhook"\nendpoint = { secret_env = "S" }',
            "destination hook: endpoint: a webhook endpoint needs url",
            id="webhook-without-url",
        ),
        pytest.param(
            '[destinations.xr]\ntransport = "xroad"\n'
            'endpoint = { url = "https://ss.example.fi/r1/FI/GOV/1/x/y" }',
            "destination xr: endpoint: an xroad endpoint needs xroad_service",
            id="xroad-without-service",
        ),
        pytest.param(
            '[destinations.hook]\ntransport = "webhook"\n'
            'endpoint = { url = "http://127.0.0.1:1/x", secret = "whsec_abc" }',
            "destination hook: endpoint: a secret is never written in the routes file (secret)",
            id="inline-secret",
        ),
        pytest.param(
            '[destinations.hook]\ntransport = "webhook"\n'
            'endpoint = { url = "http://127.0.0.1:1/x", '
            'secret_env = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }',
            "destination hook: endpoint.secret_env: secret_env must be the name of an environment",
            id="secret-in-secret-env",
        ),
        pytest.param(
            '[destinations.hook]\ntransport = "webhook"',
            "destination hook: a webhook destination needs endpoint or endpoints",
            id="no-endpoint",
        ),
        pytest.param(
            '[destinations.Bad_Name]\ntransport = "outbox"',
            "destination Bad_Name: name: String should match pattern",
            id="bad-name",
        ),
    ],
)
def test_a_bad_destination_is_refused_naming_it_and_the_reason(
    destination: str, reason: str
) -> None:
    text = destination + '\n[[routes]]\nname = "r"\ntypes = ["JobSearchEnded"]\n'
    text += 'to = { destination = "stats" }\n[destinations.stats]\ntransport = "outbox"\n'
    with pytest.raises(RoutesError) as caught:
        parse_routes(text, "test.toml")
    assert reason in str(caught.value)


def test_an_unknown_provider_in_the_directory_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "providers.toml").write_text(
        '[endpoints."1234567-2"]\nurl = "http://127.0.0.1:8700/provider/x"\n', encoding="utf-8"
    )
    text = (
        '[destinations.providers]\ntransport = "webhook"\nendpoints_file = "providers.toml"\n'
        '[[routes]]\nname = "p"\ntypes = ["ServiceEnrolled"]\n'
        'to = { directory = "provider_of_enrolment" }\n'
    )
    routes_file = tmp_path / "routes.toml"
    routes_file.write_text(text, encoding="utf-8")
    with pytest.raises(RoutesError, match="destination providers: not business IDs: 1234567-2"):
        load_routes(HubSettings(routes_file=routes_file))


def test_not_toml_is_one_error_naming_the_file() -> None:
    with pytest.raises(RoutesError, match=r"^bad\.toml: not valid TOML"):
        parse_routes("[[routes]\nname=", "bad.toml")


# --- resolution ----------------------------------------------------------------------------------


def _statement(kind: str, fund: str | None, issued_on: date) -> dict[str, Any]:
    record = sample("LabourPolicyStatementIssued")
    record["payload"]["payer"] = {"kind": kind, "fund_code": fund}
    record["payload"]["issued_on"] = issued_on
    return record


def test_a_statement_goes_to_kela_when_it_names_kela() -> None:
    routed = route_event(
        default_routes(),
        "LabourPolicyStatementIssued",
        _statement("KELA", None, date(2025, 6, 2)),
        None,
    )
    assert destinations(routed) == {("kela", None), ("reporting", None)}
    to_kela = next(r for r in routed if r.destination == "kela")
    assert "personal_identity_code" in to_kela.record["payload"]
    assert "direct" in to_kela.legal_basis
    assert "1290/2002" in to_kela.legal_basis["direct"]
    reporting = next(r for r in routed if r.destination == "reporting")
    assert "personal_identity_code" not in reporting.record["payload"]


def test_a_statement_goes_to_the_fund_it_names() -> None:
    record = _statement("UNEMPLOYMENT_FUND", "jhl", date(2025, 6, 2))
    routed = route_event(default_routes(), "LabourPolicyStatementIssued", record, None)
    assert ("funds", "jhl") in destinations(routed)


def test_a_merged_fund_resolves_to_its_successor_valid_on_the_issue_date() -> None:
    config = default_routes()
    before = _statement("UNEMPLOYMENT_FUND", "erko", date(2025, 12, 31))
    after = _statement("UNEMPLOYMENT_FUND", "erko", date(2026, 1, 1))
    assert ("funds", "erko") in destinations(
        route_event(config, "LabourPolicyStatementIssued", before, None)
    )
    assert ("funds", "ote") in destinations(
        route_event(config, "LabourPolicyStatementIssued", after, None)
    )
    assert fund_on("r", "opetus-ja-tiede", date(2026, 3, 1)) == "ote"


@pytest.mark.parametrize(
    ("fund", "issued_on", "reason"),
    [
        ("no-such-fund", date(2025, 6, 2), "fund no-such-fund is not in the fund code list"),
        ("ote", date(2025, 6, 2), "fund ote is not valid on 2025-06-02"),
    ],
)
def test_a_fund_unknown_or_not_valid_on_the_date_is_unroutable(
    fund: str, issued_on: date, reason: str
) -> None:
    record = _statement("UNEMPLOYMENT_FUND", fund, issued_on)
    with pytest.raises(Unroutable) as caught:
        route_event(default_routes(), "LabourPolicyStatementIssued", record, None)
    assert caught.value.route == "statement-to-payer"
    assert caught.value.reason == reason


def test_a_statement_request_is_not_sent_back_to_a_payer() -> None:
    routed = route_event(default_routes(), "StatementRequested", sample("StatementRequested"), None)
    assert destinations(routed) == {("reporting", None)}


def test_an_enrolment_goes_to_its_provider_with_only_name_contact_and_service() -> None:
    record = sample("ServiceEnrolled")
    business_id = simulator_providers()[3]
    record["payload"]["provider_business_id"] = business_id
    routed = route_event(default_routes(), "ServiceEnrolled", record, None)
    assert destinations(routed) == {("providers", business_id), ("reporting", None)}
    to_provider = next(r for r in routed if r.destination == "providers")
    assert set(to_provider.record["payload"]) == {
        "enrolment_id",
        "service_type",
        "provider_business_id",
        "planned_start",
        "planned_end",
        "participant_first_name",
        "participant_last_name",
        "participant_email",
        "participant_phone",
    }
    assert to_provider.record["envelope"] == record["envelope"]
    assert "payload.handled_by.expert_id" not in to_provider.fields
    assert set(to_provider.legal_basis) == {"direct", "contact", "disclosure"}


def test_an_enrolment_with_a_provider_outside_the_directory_is_unroutable() -> None:
    record = sample("ServiceEnrolled")
    record["payload"]["provider_business_id"] = "1234567-1"
    with pytest.raises(Unroutable) as caught:
        route_event(default_routes(), "ServiceEnrolled", record, None)
    assert caught.value.route == "enrolment-to-provider"
    assert caught.value.reason == "provider 1234567-1 is not in the provider directory"


def test_a_participation_report_goes_to_the_municipal_system_of_the_area() -> None:
    record = sample("ServiceParticipationReported")
    record["envelope"]["employment_area_code"] = "27"
    routed = route_event(default_routes(), "ServiceParticipationReported", record, None)
    assert destinations(routed) == {("municipal", "27"), ("reporting", None)}
    reporting = next(r for r in routed if r.destination == "reporting")
    assert "interruption_reason" not in reporting.record["payload"]


@pytest.mark.parametrize("type_name", ["EmploymentStarted", "JobSearchEnded"])
def test_job_start_and_end_go_to_the_payer_of_the_person(type_name: str) -> None:
    config = default_routes()
    record = sample(type_name)
    record["envelope"]["occurred_at"] = datetime(2026, 2, 2, 10, tzinfo=UTC)
    assert destinations(route_event(config, type_name, record, None)) == {("reporting", None)}
    kela = PersonState("KELA", None)
    assert ("kela", None) in destinations(route_event(config, type_name, record, kela))
    merged = PersonState("UNEMPLOYMENT_FUND", "erko")
    assert ("funds", "ote") in destinations(route_event(config, type_name, record, merged))


def test_the_person_state_learns_the_payer_from_registration_statements_and_accruals() -> None:
    registered = sample("JobseekerRegistered")
    registered["payload"]["unemployment_fund_code"] = "jhl"
    state = next_state(None, "JobseekerRegistered", registered)
    assert state == PersonState("UNEMPLOYMENT_FUND", "jhl")
    registered["payload"]["unemployment_fund_code"] = None
    assert next_state(state, "JobseekerRegistered", registered) == PersonState("KELA", None)
    accrual = sample("BenefitDaysAccrued")
    accrual["payload"]["payer"] = {"kind": "UNEMPLOYMENT_FUND", "fund_code": "ytk"}
    state = next_state(PersonState("KELA", None), "BenefitDaysAccrued", accrual)
    assert state == PersonState("UNEMPLOYMENT_FUND", "ytk")
    request = sample("StatementRequested")
    request["payload"]["payer"] = {"kind": "KELA", "fund_code": None}
    assert next_state(state, "StatementRequested", request) == PersonState("KELA", None)
    statement = _statement("UNEMPLOYMENT_FUND", "pro", date(2025, 6, 2))
    assert next_state(None, "LabourPolicyStatementIssued", statement) == PersonState(
        "UNEMPLOYMENT_FUND", "pro"
    )
    assert next_state(state, "JobOfferMade", sample("JobOfferMade")) is state
    assert next_state(None, "JobSearchEnded", sample("JobSearchEnded")) is None
    assert PersonState.from_bytes(state.to_bytes()) == state


def test_filters_by_municipality_and_area() -> None:
    text = _routes_text(
        '[[routes]]\nname = "helsinki"\ntypes = ["JobSearchEnded"]\n'
        'to = { destination = "stats" }\nmunicipalities = ["091"]\n'
        '[[routes]]\nname = "area"\ntypes = ["EmploymentStarted"]\n'
        'to = { destination = "stats" }\nemployment_areas = ["01"]\n'
    )
    config = parse_routes(text, "filters.toml")
    ended = sample("JobSearchEnded")
    ended["envelope"]["municipality_code"] = "091"
    assert [r.route for r in route_event(config, "JobSearchEnded", ended, None)] == ["helsinki"]
    ended["envelope"]["municipality_code"] = "049"
    assert route_event(config, "JobSearchEnded", ended, None) == []
    started = sample("EmploymentStarted")
    started["envelope"]["employment_area_code"] = "01"
    assert len(route_event(config, "EmploymentStarted", started, None)) == 1
    started["envelope"]["employment_area_code"] = "02"
    assert route_event(config, "EmploymentStarted", started, None) == []


# --- secrets -------------------------------------------------------------------------------------


@pytest.fixture
def unset_kela_secret() -> Iterator[None]:
    saved = os.environ.pop("HUB_WEBHOOK_SECRET_KELA", None)
    yield
    if saved is not None:
        os.environ["HUB_WEBHOOK_SECRET_KELA"] = saved


def test_signing_secret_from_the_environment_then_the_development_fallback(
    unset_kela_secret: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = default_routes().destinations["kela"].endpoint
    assert endpoint is not None
    assert endpoint.endpoint_id == "kela"
    settings = HubSettings()
    derived = endpoint.signing_secret(settings)
    assert derived == development_signing_secret(settings, "kela")
    assert derived.startswith("whsec_")
    assert derived != development_signing_secret(settings, "funds/ote")
    monkeypatch.setenv("HUB_WEBHOOK_SECRET_KELA", "whsec_c2VjcmV0LWZyb20tdGhlLWVudmlyb25tZW50IQ==")
    assert endpoint.signing_secret(settings) == "whsec_c2VjcmV0LWZyb20tdGhlLWVudmlyb25tZW50IQ=="


def test_production_refuses_an_absent_secret_naming_the_variable(unset_kela_secret: None) -> None:
    endpoint = default_routes().destinations["kela"].endpoint
    assert endpoint is not None
    production = HubSettings.model_construct(environment="production")
    with pytest.raises(RoutesError, match=r"endpoint kela: .*HUB_WEBHOOK_SECRET_KELA is not set"):
        endpoint.signing_secret(production)


def test_signing_secret_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("whsec_ZmlsZS1zZWNyZXQtb2YtYXQtbGVhc3QtMjQtYnl0ZXM=\n", encoding="utf-8")
    text = (
        '[destinations.hook]\ntransport = "webhook"\n'
        f'endpoint = {{ url = "http://127.0.0.1:1/x", secret_file = "{secret}" }}\n'
        '[[routes]]\nname = "r"\ntypes = ["JobSearchEnded"]\nto = { destination = "hook" }\n'
    )
    endpoint = parse_routes(text, "f.toml").destinations["hook"].endpoint_for(None)
    assert (
        endpoint.signing_secret(HubSettings())
        == "whsec_ZmlsZS1zZWNyZXQtb2YtYXQtbGVhc3QtMjQtYnl0ZXM="
    )


# --- explain and check ---------------------------------------------------------------------------


def test_explain_lists_the_fields_each_destination_gets_and_what_is_withheld() -> None:
    text = explain_text(default_routes(), default_catalog(), "ServiceEnrolled")
    provider, reporting = text.split("\nroute all-to-reporting")
    assert "route enrolment-to-provider" in provider
    assert re.search(r"payload\.participant_email\s+\[contact: Laki", provider)
    assert "payload.handled_by" not in provider.split("left out by the route's fields")[0]
    assert "left out by the route's fields: payload.handled_by.team_code" in provider
    assert "payload.participant_first_name   [direct: no legal basis for direct" in reporting
    assert "payload.participant_email   [contact: no legal basis for contact" in reporting


def test_explain_says_a_person_without_a_known_payer_is_sent_to_no_payer() -> None:
    text = explain_text(default_routes(), default_catalog(), "JobSearchEnded")
    assert "route job-start-to-payer" in text
    assert "no known payer is sent to no payer" in text


def test_hub_routes_check_the_default_file() -> None:
    result = CliRunner().invoke(cli, ["routes", "check"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK ")
    assert "5 routes, 5 destinations" in result.output


def test_hub_routes_check_a_bad_file_exits_1_with_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "routes.toml"
    bad.write_text(
        _routes_text(
            '[[routes]]\nname = "leaky"\ntypes = ["JobseekerRegistered"]\n'
            'to = { destination = "stats" }\ngrants = { health = "ok" }\n'
            '[[routes]]\nname = "lost"\ntypes = ["JobseekerRegistered"]\n'
            'to = { destination = "nowhere" }\n'
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["routes", "check", str(bad)])
    assert result.exit_code == 1
    assert "route leaky: grants: grants health without a legal basis" in result.output
    assert "Traceback" not in result.output
    # pydantic refuses the first problem before the cross-checks run: fix it and see the next
    bad.write_text(bad.read_text().replace('"ok"', '"Laki 380/2023"'), encoding="utf-8")
    result = CliRunner().invoke(cli, ["routes", "check", str(bad)])
    assert result.exit_code == 1
    assert "route lost: unknown destination nowhere" in result.output


def test_hub_routes_check_a_missing_file_exits_1_without_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["routes", "check", str(tmp_path / "none.toml")])
    assert result.exit_code == 1
    assert "cannot read routes file" in result.output
    assert "Traceback" not in result.output


def test_hub_routes_explain_and_an_unknown_type() -> None:
    result = CliRunner().invoke(cli, ["routes", "explain", "LabourPolicyStatementIssued"])
    assert result.exit_code == 0, result.output
    assert "route statement-to-payer" in result.output
    assert "sends" in result.output
    assert "to kela, funds" in result.output
    result = CliRunner().invoke(cli, ["routes", "explain", "NoSuchEvent"])
    assert result.exit_code == 2
    assert "unknown event type NoSuchEvent" in result.output


def test_the_packaged_routes_file_is_plain_toml_with_no_secret_values() -> None:
    data = tomllib.loads(DEFAULT_ROUTES_FILE.read_text(encoding="utf-8"))
    assert not re.search(r"whsec_[A-Za-z0-9+/=]{8}", DEFAULT_ROUTES_FILE.read_text("utf-8"))
    assert set(data) == {"directories", "destinations", "routes"}


def test_explain_names_the_destinations_that_do_not_get_a_type() -> None:
    text = explain_text(default_routes(), default_catalog(), "StatementRequested")
    assert text.splitlines()[0] == (
        "StatementRequested: 1 route(s); not sent to: funds, kela, municipal, providers"
    )
    assert "envelope.{event_id, event_type, occurred_at" in text


def test_a_whole_simulated_stream_routes_with_no_unroutable_event_for_any_seed() -> None:
    """The packaged directory knows every simulated provider, fund and area, whatever --seed."""
    config = default_routes()
    serializer = SingleObjectSerializer()
    pseudonymizer = Pseudonymizer.from_settings(HubSettings())
    reached: set[str] = set()
    for seed in (1, 99):
        states: dict[str, PersonState | None] = {}
        for path in simulate(SimulationConfig(jobseekers=60, seed=seed), pseudonymizer):
            for event in path:
                record = serializer.decode(serializer.encode(event.event_type, event.to_avro()))
                person = event.envelope.subject
                states[person] = next_state(states.get(person), event.event_type, record.record)
                routed = route_event(config, event.event_type, record.record, states[person])
                reached |= {r.destination for r in routed}
    assert reached == {"kela", "funds", "providers", "municipal", "reporting"}


def test_check_in_production_names_every_endpoint_without_a_readable_secret(
    unset_kela_secret: None,
) -> None:
    production = HubSettings.model_construct(environment="production")
    problems = missing_secrets(default_routes(), production)
    assert (
        "endpoint kela: no signing secret: environment variable HUB_WEBHOOK_SECRET_KELA is not set"
        in problems
    )
    assert len(problems) == 1 + 14 + 25 + 45  # kela, every fund, provider and area
    assert missing_secrets(default_routes(), HubSettings()) == []


def test_a_relative_secret_file_is_read_beside_the_file_that_names_it(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "p.secret").write_text(
        "whsec_cHJvdmlkZXItc2VjcmV0LTI0LWJ5dGVzLWxvbmc=", encoding="utf-8"
    )
    business_id = simulator_providers()[0]
    (tmp_path / "providers.toml").write_text(
        f'[endpoints."{business_id}"]\nurl = "http://127.0.0.1:1/p"\n'
        'secret_file = "secrets/p.secret"\n',
        encoding="utf-8",
    )
    routes_file = tmp_path / "routes.toml"
    routes_file.write_text(
        '[destinations.providers]\ntransport = "webhook"\nendpoints_file = "providers.toml"\n'
        '[[routes]]\nname = "p"\ntypes = ["ServiceEnrolled"]\n'
        'to = { directory = "provider_of_enrolment" }\n',
        encoding="utf-8",
    )
    config = load_routes(HubSettings(routes_file=routes_file))
    endpoint = config.destinations["providers"].endpoint_for(business_id)
    assert (
        endpoint.signing_secret(HubSettings()) == "whsec_cHJvdmlkZXItc2VjcmV0LTI0LWJ5dGVzLWxvbmc="
    )
    (tmp_path / "providers.toml").unlink()
    with pytest.raises(RoutesError, match=r"routes\.toml: destination providers: cannot read"):
        load_routes(HubSettings(routes_file=routes_file))


# --- limits the delivery worker relies on, credentials, secrets, legal bases ---------------------


def _destination_text(settings: str) -> str:
    return (
        '[destinations.hook]\ntransport = "webhook"\n'
        'endpoint = { url = "http://127.0.0.1:1/x", secret_env = "HOOK_SECRET" }\n'
        f"{settings}\n"
        '[[routes]]\nname = "r"\ntypes = ["JobSearchEnded"]\nto = { destination = "hook" }\n'
    )


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        pytest.param("retry_schedule_s = [5, inf]", "must be finite", id="inf-delay"),
        pytest.param("retry_schedule_s = [5, nan]", "must be finite", id="nan-delay"),
        pytest.param("retry_schedule_s = [300, 5]", "must not decrease: [300.0, 5.0]", id="down"),
        pytest.param("retry_schedule_s = [0, 5]", "must be positive", id="zero-delay"),
        pytest.param("retry_schedule_s = [-1]", "must be positive", id="negative-delay"),
        pytest.param("retry_schedule_s = [604801]", "at most 604800 s", id="over-7-days"),
        pytest.param("retry_schedule_s = [true]", "retry_schedule_s.0: Input should be", id="bool"),
        pytest.param("breaker_open_s = inf", "breaker_open_s: Input should be a finite", id="inf"),
        pytest.param("breaker_open_s = nan", "breaker_open_s: Input should be a finite", id="nan"),
        pytest.param("breaker_open_s = 86401", "breaker_open_s: Input should be less", id="day"),
        pytest.param("breaker_open_s = 0", "breaker_open_s: Input should be greater", id="zero"),
        pytest.param("breaker_failures = 0", "breaker_failures: Input should be greater", id="0"),
        pytest.param(
            "breaker_failures = true", "breaker_failures: Input should be a valid", id="b"
        ),
    ],
)
def test_a_schedule_or_breaker_the_worker_cannot_keep_is_refused(
    settings: str, reason: str
) -> None:
    """inf/nan in the worker's timer heap stall a destination and spin a CPU; a decreasing
    schedule passed `hub routes check` but `hub deliver` refused it at start."""
    with pytest.raises(RoutesError) as caught:
        parse_routes(_destination_text(settings), "test.toml")
    assert str(caught.value).startswith("test.toml: destination hook: ")
    assert reason in str(caught.value)


def test_every_schedule_the_routes_accept_the_delivery_worker_accepts() -> None:
    """One rule: what the routes accept, RetrySchedule (hub deliver) accepts too."""
    from hub.delivery.schedule import RetrySchedule

    candidates = [[], [5], [1, 1, 1], [0.2, 0.4, 1.0], [300, 5], [5, 1e-9], [7 * 86400, 7 * 86400]]
    accepted = 0
    for steps in candidates:
        text = _destination_text(f"retry_schedule_s = {steps!r}")
        try:
            schedule = parse_routes(text, "t.toml").destinations["hook"].retry_schedule_s
        except RoutesError:
            continue
        RetrySchedule(tuple(schedule))  # raises if the worker would refuse it
        accepted += 1
    assert accepted == 5


def test_a_routes_file_that_is_not_utf8_is_one_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "routes.toml"
    bad.write_bytes(b'[destinations.kela]\ntransport = "\xff\xfe webhook"\n')
    with pytest.raises(RoutesError, match=r"^routes file .*routes\.toml is not UTF-8 text$"):
        load_routes(HubSettings(routes_file=bad))
    result = CliRunner().invoke(cli, ["routes", "check", str(bad)])
    assert result.exit_code == 1
    assert "is not UTF-8 text" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "providers.toml").write_bytes(b"\x80\x81")
    bad.write_text(
        '[destinations.providers]\ntransport = "webhook"\nendpoints_file = "providers.toml"\n',
        encoding="utf-8",
    )
    with pytest.raises(RoutesError, match=r"destination providers: .*providers\.toml is not UTF-8"):
        load_routes(HubSettings(routes_file=bad))


def test_a_url_with_credentials_is_refused_without_repeating_them() -> None:
    text = _destination_text("").replace("http://127.0.0.1", "http://admin:hunter2@127.0.0.1")
    with pytest.raises(RoutesError) as caught:
        parse_routes(text, "test.toml")
    assert "destination hook: endpoint.url: credentials are never written" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "admin" not in str(caught.value)
    user_only = _destination_text("").replace("http://127.0.0.1", "http://admin@127.0.0.1")
    with pytest.raises(RoutesError, match="credentials are never written"):
        parse_routes(user_only, "test.toml")


def _file_endpoint(secret_file: Path) -> Any:
    text = _destination_text("").replace(
        'secret_env = "HOOK_SECRET"', f'secret_file = "{secret_file}"'
    )
    return parse_routes(text, "f.toml").destinations["hook"].endpoint_for(None)


def test_an_unusable_secret_file_is_an_error_naming_it_never_the_development_secret(
    tmp_path: Path,
) -> None:
    development = HubSettings()
    assert development.environment == "development"
    folder = tmp_path / "secrets"
    folder.mkdir()
    cases = {
        folder: "is not a regular file",
        tmp_path / "absent": "cannot be read (No such file or directory)",
        tmp_path / "latin1": "is not UTF-8 text",
        tmp_path / "empty": "is empty",
    }
    (tmp_path / "latin1").write_bytes(b"whsec_\xe4\xe4")
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    for path, reason in cases.items():
        endpoint = _file_endpoint(path)
        with pytest.raises(RoutesError) as caught:
            endpoint.signing_secret(development)
        assert str(caught.value) == f"endpoint hook: secret file {path} {reason}"
        config = parse_routes(
            _destination_text("").replace('secret_env = "HOOK_SECRET"', f'secret_file = "{path}"'),
            "f.toml",
        )
        assert missing_secrets(config, development) == [str(caught.value)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_a_secret_file_the_process_cannot_read_is_an_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.write_text("whsec_" + "A" * 43 + "=", encoding="utf-8")
    locked.chmod(0)
    with pytest.raises(RoutesError, match=r"secret file .*locked cannot be read"):
        _file_endpoint(locked).signing_secret(HubSettings())


def test_a_signing_key_shorter_than_24_bytes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """standardwebhooks' Webhook("abc") signs with a 2-byte key: such a secret is refused."""
    import base64

    endpoint = parse_routes(_destination_text(""), "t.toml").destinations["hook"].endpoint_for(None)
    short = {
        "abc": 2,
        "whsec_" + base64.b64encode(b"x" * 23).decode(): 23,
        "whsec_c2VjcmV0": 6,
    }
    for secret, size in short.items():
        monkeypatch.setenv("HOOK_SECRET", secret)
        with pytest.raises(RoutesError) as caught:
            endpoint.signing_secret(HubSettings())
        assert f"environment variable HOOK_SECRET: the signing key is {size} bytes" in str(
            caught.value
        )
        assert secret not in str(caught.value)
    good = "whsec_" + base64.b64encode(b"k" * 24).decode()
    monkeypatch.setenv("HOOK_SECRET", good)
    assert endpoint.signing_secret(HubSettings()) == good
    short_file = tmp_path / "short"
    short_file.write_text("whsec_c2VjcmV0", encoding="utf-8")
    with pytest.raises(RoutesError, match=r"secret file .*short: the signing key is 6 bytes"):
        _file_endpoint(short_file).signing_secret(HubSettings())


@pytest.mark.parametrize(
    "basis",
    ["Act", "Data Protection Act", "laki", "Työttömyysturvalaki", "GDPR", "§ 4", "Regulation"],
)
def test_a_legal_basis_must_cite_a_statute_not_just_a_word(basis: str) -> None:
    route = (
        '[[routes]]\nname = "r-word"\ntypes = ["ServiceParticipationReported"]\n'
        f'to = {{ destination = "kela" }}\ngrants = {{ health = "{basis}" }}'
    )
    with pytest.raises(RoutesError, match="route r-word: grants: grants health without a legal"):
        parse_routes(_routes_text(route), "test.toml")


@pytest.mark.parametrize(
    "basis",
    [
        "Työttömyysturvalaki (1290/2002) 2 a luku",
        "Laki työvoimapalveluiden järjestämisestä 380/2023",
        "GDPR art. 9(2)(b)",
        "GDPR article 6(1)(e)",
        "Regulation (EU) 2016/679, art. 9",
        "tietosuoja-asetuksen 9 artikla",
    ],
)
def test_a_legal_basis_citing_a_statute_number_or_a_regulation_article_is_accepted(
    basis: str,
) -> None:
    route = (
        '[[routes]]\nname = "r-law"\ntypes = ["ServiceParticipationReported"]\n'
        f'to = {{ destination = "kela" }}\ngrants = {{ health = "{basis}" }}'
    )
    assert parse_routes(_routes_text(route), "test.toml").route("r-law").grants
