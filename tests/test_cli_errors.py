"""Commands fail with one clear line, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _hub(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unreachable_kafka_is_one_line_with_what_to_do() -> None:
    bootstrap = f"127.0.0.1:{_closed_port()}"
    for command in (["simulate", "--jobseekers", "3"], ["tail"], ["topics", "create"]):
        result = _hub(*command, HUB_KAFKA_BOOTSTRAP=bootstrap)
        assert result.returncode == 1, command
        assert f"Error: cannot reach Kafka at {bootstrap}" in result.stderr
        assert "hub broker start" in result.stderr
        assert "Traceback" not in result.stderr


def test_bad_simulation_options_are_usage_errors() -> None:
    result = _hub("simulate", "--area", "99", "--jobseekers", "0")
    assert result.returncode == 2
    assert "--area: Value error, employment area '99' is not one of the 45 areas" in result.stderr
    assert "--jobseekers: Input should be greater than or equal to 1" in result.stderr


def test_bad_settings_are_reported_by_name() -> None:
    result = _hub("simulate", HUB_TOPIC_PARTITIONS="zero")
    assert result.returncode == 2
    assert "invalid configuration: HUB_TOPIC_PARTITIONS: Input should be a valid integer" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_serve_with_a_bad_clients_file_names_the_problem(tmp_path: Path) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text('[[clients]]\nclient_id = "x"\n')
    result = _hub("serve", "--port", "1", HUB_INGEST_CLIENTS_FILE=str(clients))
    assert result.returncode == 1
    assert f"{clients} is not a valid clients file" in result.stderr
    assert "hub clients check" in result.stderr
    assert "Traceback" not in result.stderr
