"""The Kubernetes sketch in deploy/k8s agrees with the code: security, users, ids and topics.

No cluster runs here, so these read the manifests as data and check them against what the hub
itself computes: the settings each workload gets must pass production validation, each
service's Kafka user must be allowed exactly the topics and transactional ids the hub uses,
and the topics must match hub/kafka/topics.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.delivery.dlq import replay_transactional_id
from hub.kafka.topics import outbox_spec, outbox_topic, topic_specs
from hub.routing.routes import Transport, load_routes
from hub.settings import HubSettings
from hub.sink.kafka import writer_settings
from tests.conftest import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
WORKLOADS = ("StatefulSet", "Deployment")


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _kafka() -> dict[str, Any]:
    return next(d for d in _documents("kafka-cluster.yaml") if d["kind"] == "Kafka")


def _users() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _documents("kafka-users.yaml")}


def _workloads() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _documents("hub.yaml") if d["kind"] in WORKLOADS}


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = workload["spec"]["template"]["spec"]["containers"][0]
    return container


def _environment(workload: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The HUB_* variables the workload's container gets (Secrets stubbed, fieldRefs resolved)."""
    config_map = next(d for d in _documents("hub.yaml") if d["kind"] == "ConfigMap")
    env = dict(config_map["data"])
    for variable in _container(workload).get("env", []):
        source = variable.get("valueFrom", {})
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            env[variable["name"]] = pod_name
        elif "secretKeyRef" in source:
            env[variable["name"]] = f"secret-from-{source['secretKeyRef']['name']}-0123456789"
        else:
            env[variable["name"]] = variable["value"]
    return env


def _settings(
    workload: dict[str, Any], pod_name: str, monkeypatch: pytest.MonkeyPatch
) -> HubSettings:
    for name in [n for n in os.environ if n.startswith("HUB_")]:
        monkeypatch.delenv(name)
    for name, value in _environment(workload, pod_name).items():
        monkeypatch.setenv(name, value)
    return HubSettings(_env_file=None)  # type: ignore[call-arg]


def _default_outboxes(settings: HubSettings) -> dict[str, str]:
    """Destination name -> outbox topic, for every destination of the packaged routes."""
    return {name: outbox_topic(settings, name) for name in load_routes(settings).destinations}


def _allowed(user: dict[str, Any], kind: str, name: str, operation: str) -> bool:
    for acl in user["spec"]["authorization"]["acls"]:
        resource = acl["resource"]
        if resource["type"] != kind or operation not in acl["operations"]:
            continue
        pattern = resource.get("patternType", "literal")
        if (pattern == "literal" and resource["name"] == name) or (
            pattern == "prefix" and name.startswith(resource["name"])
        ):
            return True
    return False


def test_no_plaintext_listener_and_no_superusers() -> None:
    kafka = _kafka()["spec"]["kafka"]

    assert "superUsers" not in kafka["authorization"]
    assert "ANONYMOUS" not in (K8S / "kafka-cluster.yaml").read_text().replace("# ", "")
    for listener in kafka["listeners"]:
        assert listener["tls"] is True, listener["name"]
        assert listener["authentication"]["type"] in ("scram-sha-512", "tls"), listener["name"]


def test_every_hub_workload_passes_production_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, workload in _workloads().items():
        settings = _settings(workload, f"{name}-0", monkeypatch)

        assert settings.environment == "production"
        assert settings.kms == "vault"
        assert not settings.uses_dev_kek
        assert settings.kafka_security_protocol == "SASL_SSL"
        assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
        port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])
        listener = next(li for li in _kafka()["spec"]["kafka"]["listeners"] if li["port"] == port)
        assert listener["authentication"]["type"] == "scram-sha-512"


def test_each_workload_logs_in_as_its_own_user_with_its_own_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One user per hub command: the delivery workers of every destination share theirs."""
    users = _users()
    user_of_command: dict[str, set[str]] = {}
    for name, workload in _workloads().items():
        username = _settings(workload, f"{name}-0", monkeypatch).kafka_sasl_username
        assert username in users, f"{name} logs in as {username}, which has no KafkaUser"
        assert users[username]["spec"]["authentication"]["type"] == "scram-sha-512"
        volumes = workload["spec"]["template"]["spec"]["volumes"]
        user_volume = next(v for v in volumes if v["name"] == "kafka-user")
        assert user_volume["secret"]["secretName"] == username
        user_of_command.setdefault(_container(workload)["args"][0], set()).add(username)

    assert all(len(names) == 1 for names in user_of_command.values()), user_of_command
    every = [name for names in user_of_command.values() for name in names]
    assert len(every) == len(set(every))


def test_api_replicas_have_stable_transactional_ids_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = _workloads()["te-hub-ingest"]
    assert api["kind"] == "StatefulSet"
    assert _container(api)["args"][0] == "serve"
    assert "--host" not in _container(api)["args"]  # the image's HUB_API_HOST=0.0.0.0 applies
    replicas = api["spec"]["replicas"]
    ids = {
        _settings(api, f"te-hub-ingest-{n}", monkeypatch).ingest_transactional_id
        for n in range(replicas)
    }

    assert len(ids) == replicas
    for transactional_id in ids:
        assert _allowed(_users()["te-hub-ingest"], "transactionalId", transactional_id, "Write")


@pytest.mark.parametrize(("user", "role"), [("te-hub-poller", "poll"), ("te-hub-import", "import")])
def test_poller_and_import_may_use_the_ids_they_derive_and_not_the_apis(
    user: str, role: str
) -> None:
    settings = HubSettings(_env_file=None)  # type: ignore[call-arg]
    derived = writer_settings(settings, role, "FI/GOV/0245437-2/KEHA/customer-changes")

    assert _allowed(_users()[user], "transactionalId", derived.ingest_transactional_id, "Write")
    assert not _allowed(_users()[user], "transactionalId", "te-hub-ingest-0", "Write")
    assert not _allowed(
        _users()["te-hub-ingest"], "transactionalId", derived.ingest_transactional_id, "Write"
    )


def test_two_deployments_on_one_cluster_derive_different_writer_ids() -> None:
    """Transactional ids are global in a cluster: two areas' pollers of one feed must not
    fence each other."""
    feed = "FI/GOV/0245437-2/KEHA/customer-changes"
    area = HubSettings(_env_file=None, writer_id_prefix="te-hub-091")  # type: ignore[call-arg]
    other = HubSettings(_env_file=None, writer_id_prefix="te-hub-049")  # type: ignore[call-arg]
    ids = [writer_settings(s, "poll", feed).ingest_transactional_id for s in (area, other)]
    assert ids[0] != ids[1]
    assert ids[0].startswith("te-hub-091-poll-")
    assert ids[1].startswith("te-hub-049-poll-")
    # Stable: a restarted poller of the same deployment fences its predecessor.
    assert writer_settings(area, "poll", feed).ingest_transactional_id == ids[0]


def test_users_may_describe_every_hub_topic_and_write_only_what_they_write() -> None:
    settings = HubSettings(_env_file=None)  # type: ignore[call-arg]
    outboxes = set(_default_outboxes(settings).values())
    names = [spec.name for spec in topic_specs(settings)] + sorted(outboxes)
    keys = settings.topic_person_keys
    writes = {
        "te-hub-ingest": {settings.topic_customer_path, settings.topic_ingest_receipts, keys},
        "te-hub-poller": {
            settings.topic_customer_path,
            settings.topic_ingest_receipts,
            settings.topic_source_positions,
            keys,
        },
        "te-hub-import": {settings.topic_customer_path, settings.topic_ingest_receipts, keys},
        "te-hub-router": {
            *outboxes,
            settings.topic_router_state,
            settings.topic_dead_letter,
        },
        "te-hub-deliver": {settings.topic_dead_letter, settings.topic_disclosures},
        "te-hub-dlq": {*outboxes, settings.topic_dead_letter},
        "te-hub-audit": set(),
        "te-hub-privacy": {keys, settings.topic_disclosures},
    }
    users = _users()

    assert set(users) == set(writes)
    for username, written in writes.items():
        for topic in names:
            assert _allowed(users[username], "topic", topic, "Describe"), (username, topic)
            assert _allowed(users[username], "topic", topic, "Write") == (topic in written), (
                username,
                topic,
            )


def test_router_and_workers_read_only_their_inputs_in_their_own_groups() -> None:
    """The router reads the log (and its state back), a worker its outbox: nothing else.

    Consumer groups are the hub's contract names: the router's <prefix>-router, a worker's
    <prefix>-deliver-<destination>; neither may join the other's group.
    """
    settings = HubSettings(_env_file=None)  # type: ignore[call-arg]
    outboxes = _default_outboxes(settings)
    router, deliver = _users()["te-hub-router"], _users()["te-hub-deliver"]
    router_group = f"{settings.writer_id_prefix}-router"
    keys = settings.topic_person_keys
    reads = {
        "te-hub-router": {settings.topic_customer_path, settings.topic_router_state, keys},
        "te-hub-deliver": {*outboxes.values(), settings.topic_disclosures, keys},
        "te-hub-dlq": {settings.topic_dead_letter, settings.topic_router_state},
        "te-hub-audit": {settings.topic_disclosures},
    }
    names = [spec.name for spec in topic_specs(settings)] + sorted(outboxes.values())
    for username, read in reads.items():
        for topic in names:
            assert _allowed(_users()[username], "topic", topic, "Read") == (topic in read), (
                username,
                topic,
            )

    assert _allowed(router, "group", router_group, "Read")
    for destination in outboxes:
        group = f"{settings.writer_id_prefix}-deliver-{destination}"
        assert _allowed(deliver, "group", group, "Read"), group
        assert not _allowed(router, "group", group, "Read"), group
    assert not _allowed(deliver, "group", router_group, "Read")
    for user in ("te-hub-ingest", "te-hub-poller", "te-hub-import", "te-hub-dlq", "te-hub-audit"):
        assert not any(
            acl["resource"]["type"] == "group"
            for acl in _users()[user]["spec"]["authorization"]["acls"]
        ), user


def test_who_opens_the_person_keys_may_check_their_policy_and_erasures_write_their_chains() -> None:
    """KafkaPersonKeys checks the topic's cleanup.policy at start (DescribeConfigs); the
    erasure, restriction and reveal receipts are written under their chain's transactional id
    (<prefix>-disclosures-<chain>) by the privacy user only."""
    settings = HubSettings(_env_file=None)  # type: ignore[call-arg]
    keys = settings.topic_person_keys
    for username, user in _users().items():
        opens = _allowed(user, "topic", keys, "Read")
        assert _allowed(user, "topic", keys, "DescribeConfigs") == opens, username
    privacy = _users()["te-hub-privacy"]
    for chain in ("person-keys/0", "person-keys/5", "reveal/alice"):
        transactional_id = f"{settings.writer_id_prefix}-disclosures-{chain}"
        for username, user in _users().items():
            allowed = _allowed(user, "transactionalId", transactional_id, "Write")
            assert allowed == (username == "te-hub-privacy"), (username, chain)
    assert _allowed(privacy, "topic", settings.topic_customer_path, "Read")  # hub tail --reveal
    assert not _allowed(privacy, "topic", settings.topic_customer_path, "Write")


def test_router_replicas_have_transactional_ids_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    router = _workloads()["te-hub-router"]
    assert _container(router)["args"][0] == "route"
    replicas = router["spec"]["replicas"]
    ids = {
        _settings(router, f"te-hub-router-{n}", monkeypatch).router_transactional_id
        for n in range(replicas)
    }

    assert len(ids) == replicas
    for transactional_id in ids:
        assert _allowed(_users()["te-hub-router"], "transactionalId", transactional_id, "Write")
        for other in set(_users()) - {"te-hub-router"}:
            assert not _allowed(_users()[other], "transactionalId", transactional_id, "Write")


def test_kafka_topics_match_the_hubs_topic_specs() -> None:
    settings = HubSettings(_env_file=None, topic_partitions=12, topic_replication_factor=3)  # type: ignore[call-arg]
    topics = {d["spec"]["topicName"]: d["spec"] for d in _documents("topics.yaml")}
    outboxes = [outbox_spec(settings, name) for name in _default_outboxes(settings)]

    assert outboxes, "the packaged routes have no destination"
    for spec in [*topic_specs(settings), *outboxes]:
        assert spec.name in topics, f"deploy/k8s/topics.yaml has no KafkaTopic for {spec.name}"
        manifest = topics[spec.name]
        assert manifest["partitions"] == spec.partitions, spec.name
        assert manifest["replicas"] == spec.replication_factor, spec.name
        configs = {k: str(v) for k, v in manifest["config"].items()}
        assert configs == spec.configs, spec.name
    assert set(topics) == {s.name for s in [*topic_specs(settings), *outboxes]}


def test_only_dlq_replays_and_only_under_its_one_id() -> None:
    """hub dlq replay and purge share one transactional id, so they fence each other."""
    settings = HubSettings(_env_file=None)  # type: ignore[call-arg]
    replay_id = replay_transactional_id(settings)

    for username, user in _users().items():
        assert _allowed(user, "transactionalId", replay_id, "Write") == (username == "te-hub-dlq")
    assert not _allowed(_users()["te-hub-dlq"], "transactionalId", f"{replay_id}-2", "Write")


def test_a_delivery_deployment_per_destination_with_a_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every webhook/X-Road destination of the routes has its Deployment (its own consumer
    group, so a receiver that is down holds back only its own workers); an outbox destination
    (reporting) has none. Each worker reads the routes file and serves metrics it announces."""
    settings = HubSettings(_env_file=None)  # type: ignore[call-arg]
    routes = load_routes(settings)
    delivered = {
        _container(w)["args"][_container(w)["args"].index("--destination") + 1]: w
        for w in _workloads().values()
        if _container(w)["args"][0] == "deliver"
    }

    assert set(delivered) == {
        name for name, d in routes.destinations.items() if d.transport is not Transport.OUTBOX
    }
    for name, workload in delivered.items():
        assert workload["kind"] == "Deployment"
        assert "--all" not in _container(workload)["args"]
        worker = _settings(workload, f"te-hub-deliver-{name}-abc12", monkeypatch)
        assert worker.routes_file is not None
        _assert_scraped(workload)
    _assert_scraped(_workloads()["te-hub-router"])


def _assert_scraped(workload: dict[str, Any]) -> None:
    args = _container(workload)["args"]
    port = args[args.index("--metrics-port") + 1]
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == port
    ports = {p["name"]: p["containerPort"] for p in _container(workload)["ports"]}
    assert ports["metrics"] == int(port)


def test_no_manifest_names_a_path_outside_its_mounts() -> None:
    """Every file a workload's settings name lies in one of its mounted volumes (the Vault
    Agent injector mounts /vault/secrets into a pod annotated for it)."""
    for name, workload in _workloads().items():
        mounts = [m["mountPath"] for m in _container(workload)["volumeMounts"]]
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("vault.hashicorp.com/agent-inject") == "true":
            mounts.append("/vault/secrets")
        for variable, value in _environment(workload, f"{name}-0").items():
            if value.startswith("/etc/") or variable.endswith(("_FILE", "_CAFILE")):
                assert any(Path(value).is_relative_to(m) for m in mounts), (name, variable)
