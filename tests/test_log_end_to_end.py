"""Simulate → Kafka → tail on the real broker: the log a person (and a reporting job) reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from connectors.simulator import SimulationConfig, simulate
from hub.identity import IDENTITY_CODE_PATTERN, Pseudonymizer
from hub.settings import HubSettings
from tests.conftest import hub_environment

pytestmark = pytest.mark.kafka
SECRET = "end-to-end-test-secret-0123456789"
HUB = [sys.executable, "-m", "hub"]


def _run(args: list[str], settings: HubSettings, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        HUB + args,
        env=hub_environment(
            settings,
            HUB_PSEUDONYM_SECRET=SECRET,
            HUB_LOG_LEVEL="DEBUG",
            NO_COLOR="1",
            COLUMNS="120",
        ),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def simulated_log(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("e2e")
    settings = HubSettings(
        kafka_bootstrap=kafka_bootstrap,
        topic_customer_path=f"test.e2e.{workdir.name}",
        topic_partitions=6,
        state_dir=workdir / "state",
    )
    published = _run(["simulate", "--jobseekers", "1000", "--seed", "7"], settings, workdir)
    assert published.returncode == 0, published.stderr[-3000:]
    tail = _run(["tail", "--from-beginning", "--limit", "100000"], settings, workdir)
    assert tail.returncode == 0, tail.stderr[-3000:]
    revealed = _run(
        ["tail", "--from-beginning", "--limit", "50", "--reveal", "--reason", "test"],
        settings,
        workdir,
    )
    config = SimulationConfig(jobseekers=1000, seed=7)
    paths = list(simulate(config, Pseudonymizer(SECRET)))
    return {
        "simulate": published,
        "tail": tail,
        "revealed": revealed,
        "entries": [json.loads(line) for line in tail.stdout.splitlines()],
        "paths": paths,
    }


def test_every_published_event_is_in_the_log_once_and_decodes(
    simulated_log: dict[str, Any],
) -> None:
    entries = simulated_log["entries"]
    expected = {str(e.envelope.event_id) for p in simulated_log["paths"] for e in p}
    assert all(entry["error"] is None for entry in entries)
    ids = [entry["event"]["envelope"]["event_id"] for entry in entries]
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected
    assert f"{len(expected)}" in simulated_log["simulate"].stdout  # the printed total


def test_each_persons_events_are_on_one_partition_in_causal_order(
    simulated_log: dict[str, Any],
) -> None:
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in sorted(simulated_log["entries"], key=lambda e: (e["partition"], e["offset"])):
        by_key[entry["key"]].append(entry)
    assert len(by_key) == 1000
    for key, entries in by_key.items():
        assert len({e["partition"] for e in entries}) == 1
        seen: set[str] = set()
        for entry in entries:
            envelope = entry["event"]["envelope"]
            assert envelope["subject"] == key
            if envelope["causation_id"] is not None:
                assert envelope["causation_id"] in seen
            seen.add(envelope["event_id"])
        times = [e["event"]["envelope"]["occurred_at"] for e in entries]
        assert times == sorted(times)
        assert entries[0]["type_name"] == "fi.te.hub.JobseekerRegistered"


def test_records_carry_cloudevents_headers(simulated_log: dict[str, Any]) -> None:
    entry = simulated_log["entries"][0]
    headers = entry["headers"]
    envelope = entry["event"]["envelope"]
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_id"] == envelope["event_id"]
    assert headers["ce_type"] == entry["type_name"]
    assert headers["ce_source"] == envelope["source_system"]
    assert headers["ce_subject"] == entry["key"]
    assert headers["ce_time"].startswith(envelope["occurred_at"][:16])
    assert headers["content-type"].startswith("application/")
    assert headers["ce_dataschema"] == f"urn:avro:schema:{entry['writer_schema']}"
    assert headers["ce_correlationid"] == envelope["correlation_id"]
    caused = next(e for e in simulated_log["entries"] if e["event"]["envelope"]["causation_id"])
    assert caused["headers"]["ce_causationid"] == caused["event"]["envelope"]["causation_id"]


def test_no_identity_code_in_keys_or_logs_and_tail_masks_it(
    simulated_log: dict[str, Any],
) -> None:
    codes = {p[0].payload.personal_identity_code for p in simulated_log["paths"]}
    names = {p[0].payload.last_name for p in simulated_log["paths"]}
    pattern = re.compile(IDENTITY_CODE_PATTERN)
    for entry in simulated_log["entries"]:
        assert entry["key"] not in codes
        assert not pattern.search(entry["key"])
    logs = simulated_log["simulate"].stderr + simulated_log["tail"].stderr
    assert "event published" in logs  # debug logs were on: there was something to leak
    assert not any(code in logs for code in codes)
    assert not pattern.search(logs)
    assert not any(code in simulated_log["tail"].stdout for code in codes)
    assert not any(f'"{name}"' in simulated_log["tail"].stdout for name in names)
    # --reveal shows them, so the masking above is masking and not absence
    assert any(code in simulated_log["revealed"].stdout for code in codes)
