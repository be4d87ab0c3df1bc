"""Every error text of the ``hub`` command passes the log redactor: terminals and CI keep it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from aiokafka.errors import KafkaError
from click.testing import CliRunner

from hub.cli import cli, main
from hub.kafka.cli_support import run_kafka_command
from hub.logging import REDACTED_IDENTITY_CODE
from hub.settings import HubSettings

CODE = "010594Y9032"


def _hub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args], capture_output=True, text=True, timeout=120
    )


def test_a_click_error_of_a_subcommand_is_redacted(tmp_path: Path) -> None:
    result = _hub("import", str(tmp_path / f"{CODE}.ndjson"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert REDACTED_IDENTITY_CODE in result.stderr
    assert CODE not in result.stderr


def test_a_usage_error_of_the_group_itself_is_redacted() -> None:
    result = _hub(f"--{CODE}")
    assert result.returncode == 2
    assert "No such option" in result.stderr
    assert CODE not in result.stderr


def test_an_invalid_clients_file_is_reported_redacted(tmp_path: Path) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(f'[[clients]]\nclient_id = "x {CODE}"\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["clients", "check", str(clients)])
    assert result.exit_code == 1
    assert "is not a valid clients file" in result.output
    assert REDACTED_IDENTITY_CODE in result.output
    assert CODE not in result.output


def test_a_missing_clients_file_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_INGEST_CLIENTS_FILE", raising=False)
    result = CliRunner().invoke(cli, ["clients", "check"])
    assert result.exit_code == 2
    assert "HUB_INGEST_CLIENTS_FILE is not set" in result.output


@click.command("kafka-fails")
def _kafka_fails() -> None:
    async def work() -> None:
        raise KafkaError(f"record for {CODE} refused; raw value b'\\x16{CODE}'")

    run_kafka_command(HubSettings(), work())


@click.command("crashes")
def _crashes() -> None:
    raise RuntimeError(f"unexpected state for x{CODE}")


def test_a_kafka_error_text_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.commands, "kafka-fails", _kafka_fails)
    result = CliRunner().invoke(cli, ["kafka-fails"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "refused" in result.output
    assert CODE not in result.output


def test_an_unexpected_crash_prints_a_redacted_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.commands, "crashes", _crashes)
    monkeypatch.setattr(sys, "argv", ["hub", "crashes"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert f"RuntimeError: unexpected state for x{REDACTED_IDENTITY_CODE}" in err
    assert CODE not in err
