"""Reporting, the archive readers and replay never get keys, and still count a person's facts.

Sealed values go through the archive as the sealed bytes the log holds (never plaintext), the
reporting projection drops every personal field before a column is read, and nothing on the
reporting side imports the key store, the key-encryption keys or Vault: a forgotten person's
facts count exactly as they did before.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.simulator import SimulationConfig, simulate
from hub.events import CustomerPathEvent
from hub.identity import Pseudonymizer
from hub.kafka.clients import make_producer
from hub.kafka.topics import ensure_topics
from hub.privacy.datakeys import MemoryPersonKeys
from hub.privacy.fields import SealedFields
from hub.privacy.kek import LocalKeyEncryptionKeys
from hub.privacy.sealing import is_sealed
from hub.reporting.archive import iter_archive
from hub.reporting.store import ReportingStore
from hub.reporting.tables import FACT_TABLES, TABLE_OF_TYPE
from hub.serde import SingleObjectSerializer
from hub.settings import HubSettings
from tests.conftest import REPO_ROOT, SIMULATION_SECRET, hub_environment, settings_for

KEY_MODULES = ("hub.privacy.keystore", "hub.privacy.kek", "hub.privacy.vault")
"""What holds or builds keys: none of it may be imported on the reporting side."""

REPORTING_MODULES = (
    "hub.reporting",
    "hub.reporting.archive",
    "hub.reporting.archive_cli",
    "hub.reporting.facts",
    "hub.reporting.indicators",
    "hub.reporting.render",
    "hub.reporting.render_html",
    "hub.reporting.replay",
    "hub.reporting.replay_cli",
    "hub.reporting.report_cli",
    "hub.reporting.store",
    "hub.reporting.tables",
)


def _loaded_after(script: str, env: dict[str, str] | None = None) -> list[str]:
    """The ``hub.privacy`` modules loaded in a fresh interpreter after ``script`` ran."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script + "\nimport sys, json\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('hub.privacy'))))",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_importing_the_reporting_side_loads_no_key_code() -> None:
    loaded = _loaded_after("\n".join(f"import {m}" for m in REPORTING_MODULES))
    assert not set(KEY_MODULES) & set(loaded), loaded


def test_the_check_sees_a_key_module_when_one_is_imported() -> None:
    loaded = _loaded_after("import hub.reporting.store\nimport hub.privacy.kek")
    assert "hub.privacy.kek" in loaded  # the check above can fail


# -- on the broker: archive, replay, report of a log with sealed values -------------------------


@dataclass
class Log:
    settings: HubSettings
    events: list[CustomerPathEvent]
    plain_subject: str
    forgotten_subject: str
    sealed_codes: set[str]
    sealed_names: set[str]
    plain_code: str


@pytest.fixture(scope="module")
def log(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Log:
    root = tmp_path_factory.mktemp("privacy-reporting")
    settings = settings_for(
        kafka_bootstrap,
        state_dir=root / "hub-state",
        archive_dir=root / "archive",
        archive_group=f"test-archive-{uuid.uuid4().hex[:8]}",
    )
    asyncio.run(ensure_topics(settings))
    config = SimulationConfig(jobseekers=6, seed=95)
    paths = list(simulate(config, Pseudonymizer(SIMULATION_SECRET)))
    plain, forgotten, *sealed = paths
    keys = MemoryPersonKeys(
        LocalKeyEncryptionKeys.from_text("r1:" + base64.b64encode(b"r" * 32).decode())
    )
    fields = SealedFields()
    serializer = SingleObjectSerializer()
    records: list[tuple[str, bytes]] = []
    for path in paths:
        subject = path[0].envelope.subject
        for event in path:
            record = event.to_avro()
            if path is not plain:  # the plaintext person was written before field encryption
                record = fields.seal(event.full_name(), record, keys.ensure([subject])[subject])
            records.append((subject, serializer.encode(event.full_name(), record)))
    keys.forget(forgotten[0].envelope.subject, reason="test: forgotten before the archive run")
    asyncio.run(_write(settings, records))
    people = [forgotten, *sealed]
    return Log(
        settings,
        [e for p in paths for e in p],
        plain[0].envelope.subject,
        forgotten[0].envelope.subject,
        {p[0].payload.personal_identity_code for p in people},  # type: ignore[attr-defined]
        {p[0].payload.last_name for p in people},  # type: ignore[attr-defined]
        plain[0].payload.personal_identity_code,  # type: ignore[attr-defined]
    )


async def _write(settings: HubSettings, records: list[tuple[str, bytes]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        for subject, value in records:
            await producer.send_and_wait(
                settings.topic_customer_path, key=subject.encode(), value=value
            )
    finally:
        await producer.stop()


def _run_reporting(log: Log, work: Path) -> list[str]:
    """``hub archive --once``, ``hub replay`` from the archive and from Kafka and ``hub report``,
    their click commands run in one fresh interpreter (``python -m hub`` loads every command,
    the router's key code with them); a KEK setting that cannot be used proves none is built."""
    script = f"""
from hub.reporting.archive_cli import archive_command
from hub.reporting.replay_cli import replay_command
from hub.reporting.report_cli import report_command
runs = [
    (archive_command, ["--once", "--idle", "0.5"]),
    (replay_command, ["--from-archive", {str(log.settings.archive_dir)!r},
                      "--store", {str(work / "from-archive.duckdb")!r}]),
    (replay_command, ["--from-offset", "0", "--store", {str(work / "from-kafka.duckdb")!r}]),
    (report_command, ["--period", "2026-01", "--store", {str(work / "from-archive.duckdb")!r},
                      "--out", {str(work / "report")!r}]),
]
for command, args in runs:
    try:
        command.main(args, standalone_mode=False)
    except SystemExit as stop:
        if stop.code:
            raise
"""
    env = hub_environment(log.settings, HUB_LOG_LEVEL="WARNING", HUB_KEK="not a keyring")
    return _loaded_after(script, env)


def _dump(value: Any) -> str:
    return json.dumps(value, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))


@pytest.mark.kafka
def test_archive_keeps_sealed_bytes_and_replay_and_report_count_every_fact(
    log: Log, tmp_path: Path
) -> None:
    loaded = _run_reporting(log, tmp_path)
    assert not set(KEY_MODULES) & set(loaded), loaded

    archived = list(iter_archive(log.settings.archive_dir, log.settings.topic_customer_path))
    assert len(archived) == len(log.events)
    registrations = {
        r.record["envelope"]["subject"]: r.record["payload"]
        for r in archived
        if r.record is not None and (r.type_name or "").endswith("JobseekerRegistered")
    }
    forgotten = registrations[log.forgotten_subject]
    assert is_sealed(forgotten["personal_identity_code"])
    assert is_sealed(forgotten["last_name"])
    assert registrations[log.plain_subject]["personal_identity_code"] == log.plain_code
    text = "\n".join(_dump(r.record) for r in archived)
    assert log.plain_code in text  # plaintext written before encryption stays plaintext
    for code in log.sealed_codes:
        assert code not in text
    for name in log.sealed_names:
        assert f'"{name}"' not in text

    expected = Counter(TABLE_OF_TYPE[e.event_type].name for e in log.events)
    persons = Counter(
        TABLE_OF_TYPE[e.event_type].name
        for e in log.events
        if e.envelope.subject == log.forgotten_subject
    )
    assert persons["spells"] >= 1
    exports = []
    for name in ("from-archive.duckdb", "from-kafka.duckdb"):
        with ReportingStore(tmp_path / name, read_only=True) as store:
            assert {k: v for k, v in store.counts().items() if v} == dict(expected)
            for table in FACT_TABLES:
                row = store.con.execute(
                    f"SELECT count(*) FROM {table.name} WHERE subject = ?",
                    [log.forgotten_subject],
                ).fetchone()
                assert row is not None
                assert row[0] == persons.get(table.name, 0)
            exported = store.export()
            exports.append(exported)
            for rows in exported.values():
                for row in rows:
                    assert not any(isinstance(v, bytes) for v in row)
            dumped = _dump(exported)
            for code in log.sealed_codes | {log.plain_code}:
                assert code not in dumped
    assert exports[0] == exports[1]
    report = tmp_path / "report"
    assert any(report.glob("*.csv")), list(report.iterdir())
    written = "".join(p.read_text("utf-8", "replace") for p in report.glob("*.csv"))
    for code in log.sealed_codes | {log.plain_code}:
        assert code not in written


def test_the_archive_record_schema_holds_the_bytes_member_of_every_personal_field() -> None:
    from hub.reporting.archive import archive_schema

    text = json.dumps(archive_schema())
    fields = SealedFields()
    assert fields.paths("JobseekerRegistered")
    schema = archive_schema()
    event_union = next(f for f in schema["fields"] if f["name"] == "event")["type"]
    registered = next(
        t
        for t in event_union
        if isinstance(t, dict) and t.get("name", "").endswith("JobseekerRegistered")
    )
    payload = next(f for f in registered["fields"] if f["name"] == "payload")["type"]
    code = next(f for f in payload["fields"] if f["name"] == "personal_identity_code")
    assert "bytes" in code["type"]
    assert '"pii"' in text


def test_a_sealed_value_a_reporting_route_may_carry_is_null_in_the_store_not_its_ciphertext() -> (
    None
):
    """Reporting grants fund membership (statistics of payers) but holds no keys: the sealed
    registration's fund code is unknown there, never the repr of its ciphertext."""
    from hub.privacy.sealing import new_data_key, seal_value
    from hub.reporting.facts import arrow_column

    key = new_data_key("0" * 32, uuid.uuid4(), datetime.now(UTC))
    sealed = seal_value(key, uuid.uuid4(), "payload.unemployment_fund_code", b"ERTO")
    assert arrow_column([sealed, "ERTO", None], "VARCHAR").to_pylist() == [None, "ERTO", None]
