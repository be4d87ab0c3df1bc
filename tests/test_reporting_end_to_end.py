"""The reporting side end to end, as a person runs it: ``hub simulate`` (twice the same run, with
late corrections), ``hub archive --once``, ``hub replay`` from Kafka (twice) and from the archive,
``hub report`` for each store: the report files are byte-identical, and no identity code, name,
e-mail or phone of the simulated people is in the store, the Parquet or CSV files or the page.

What the people's personal data is comes from the simulator run in this process with the same
seed and secret, never from the code under test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from pydantic import SecretStr

from connectors.simulator import SimulationConfig, simulate
from hub.identity import Pseudonymizer
from hub.kafka.topics import ensure_topics
from tests.conftest import REPO_ROOT, SIMULATION_SECRET, hub_environment, settings_for

pytestmark = pytest.mark.kafka

JOBSEEKERS = 60
SEED = 31
CORRECTIONS = 0.2


def _hub(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hub", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"hub {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _personal_values() -> set[str]:
    """Identity codes, names, e-mails and phones the simulated people carry in their events."""
    config = SimulationConfig(jobseekers=JOBSEEKERS, seed=SEED, correction_share=CORRECTIONS)
    values: set[str] = set()
    keys = (
        "personal_identity_code",
        "first_name",
        "last_name",
        "email",
        "phone",
        "participant_first_name",
        "participant_last_name",
        "participant_email",
        "participant_phone",
    )
    for person in simulate(config, Pseudonymizer(SIMULATION_SECRET)):
        for event in person:
            payload = event.payload.model_dump()
            values |= {str(payload[k]) for k in keys if payload.get(k)}
    # Short first names ("Aino") could occur inside other words; identity codes, e-mails,
    # phones and last names are specific enough to be searched as they are.
    return {v for v in values if len(v) >= 5}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _store_text(path: Path) -> str:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [row[0] for row in con.execute("SHOW TABLES").fetchall()]
        parts: list[str] = []
        for table in tables:
            rows = con.execute(f"SELECT * FROM {table}").fetchall()
            parts.extend(" ".join(map(str, row)) for row in rows)
        return "\n".join(parts)
    finally:
        con.close()


async def test_replays_from_kafka_and_the_archive_give_byte_identical_reports_without_personal_data(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_for(
        kafka_bootstrap,
        partitions=3,
        state_dir=tmp_path / "hub-state",
        pseudonym_secret=SecretStr(SIMULATION_SECRET),
        archive_dir=tmp_path / "archive",
    )
    await ensure_topics(settings)
    env = hub_environment(settings, HUB_LOG_LEVEL="WARNING")
    simulate_args = (
        "simulate",
        f"--jobseekers={JOBSEEKERS}",
        f"--seed={SEED}",
        f"--correction-share={CORRECTIONS}",
    )
    _hub(env, *simulate_args)
    _hub(env, *simulate_args)  # the same run again: every fact is in the log twice
    _hub(env, "archive", "--once")

    from_kafka, from_archive = tmp_path / "kafka.duckdb", tmp_path / "archive.duckdb"
    _hub(env, "replay", "--from-offset=0", f"--store={from_kafka}")
    again = _hub(env, "replay", "--from-offset=0", f"--store={from_kafka}")
    assert " 0 row(s) added" in again, again
    _hub(env, "replay", f"--from-archive={settings.archive_dir}", f"--store={from_archive}")

    reports: dict[str, dict[str, bytes]] = {}
    for name, store in (("kafka", from_kafka), ("archive", from_archive)):
        for as_of in ("", "2026-01-20"):
            out = tmp_path / f"report-{name}-{as_of or 'now'}"
            args = ["report", "--period=2026-01", "--from=2025-11", f"--store={store}"]
            args += [f"--out={out}"] + ([f"--as-of={as_of}"] if as_of else [])
            _hub(env, *args)
            reports[f"{name}-{as_of or 'now'}"] = _files(out)

    now, then = reports["kafka-now"], reports["kafka-2026-01-20"]
    assert "report.html" in now
    assert any(n.endswith(".parquet") for n in now)
    assert reports["archive-now"] == now, "the archive's report differs from the log's"
    assert reports["archive-2026-01-20"] == then
    # Late corrections and later facts: what was known on 20.1.2026 is not what is known now.
    assert then != now

    personal = _personal_values()
    assert len(personal) > JOBSEEKERS  # identity codes, last names, e-mails, phones
    haystacks = {"store (Kafka replay)": _store_text(from_kafka)}
    haystacks["store (archive replay)"] = _store_text(from_archive)
    for report, files in reports.items():
        for file_name, content in files.items():
            haystacks[f"{report}/{file_name}"] = content.decode("utf-8", errors="replace")
    reader = duckdb.connect()
    parquet_text = " ".join(
        str(reader.execute(f"SELECT * FROM read_parquet('{p}')").fetchall())
        for p in sorted((tmp_path / "report-kafka-now").glob("*.parquet"))
    )
    haystacks["parquet (decoded)"] = parquet_text
    found = {
        where: sorted(v for v in personal if v in text)[:3]
        for where, text in haystacks.items()
        if any(v in text for v in personal)
    }
    assert not found, f"personal data found: {found}"
