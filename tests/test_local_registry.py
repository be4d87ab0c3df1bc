"""hub/broker/registry.py: which Java runs Apicurio, and what a missing one says."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hub.broker import registry
from hub.broker.registry import MIN_JAVA, RegistryStartError, find_java, java_major


def fake_java(tmp_path: Path, name: str, version_line: str) -> str:
    """An executable that answers ``-version`` like a JDK does (on standard error)."""
    path = tmp_path / name / "bin" / "java"
    path.parent.mkdir(parents=True)
    path.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize(
    ("line", "major"),
    [
        ('openjdk version "25.0.3" 2026-04-21 LTS', 25),
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
    ],
)
def test_java_major_reads_the_version_line(tmp_path: Path, line: str, major: int) -> None:
    assert java_major(fake_java(tmp_path, "jdk", line)) == major


def test_find_java_takes_the_newest_that_is_new_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = fake_java(tmp_path, "jdk17", 'openjdk version "17.0.15"')
    new = fake_java(tmp_path, "jdk21", 'openjdk version "21.0.4"')
    newest = fake_java(tmp_path, "jdk25", 'openjdk version "25.0.3"')
    monkeypatch.setattr(registry, "java_candidates", lambda: [old, new, newest])
    assert find_java() == newest
    assert find_java(min_version=17) == newest


def test_no_new_enough_java_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = fake_java(tmp_path, "jdk17", 'openjdk version "17.0.15"')
    monkeypatch.setattr(registry, "java_candidates", lambda: [old])
    with pytest.raises(
        RegistryStartError, match=rf"needs Java {MIN_JAVA} or newer; found: .*\(17\)"
    ):
        find_java()


def test_this_machine_has_a_java_for_the_registry() -> None:
    """The test suite starts Apicurio: a JDK 21+ must be found where JDKs are installed."""
    java = find_java()
    assert (java_major(java) or 0) >= MIN_JAVA


@pytest.mark.kafka
def test_the_registry_starts_while_something_else_holds_port_9000(tmp_path: Path) -> None:
    """Quarkus' management interface is on at build time and takes *:9000 by default; a
    second registry (a concurrent test run) or any other service there made start-up fail."""
    import socket

    from hub.broker.registry import LocalRegistry
    from tests.conftest import _free_ports
    from tests.registry_fixture import APP_CACHE

    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("0.0.0.0", 9000))
            holder.listen()
        except OSError:
            pass  # something holds 9000 already: the situation this test is about
        [port] = _free_ports(1)
        registry = LocalRegistry(APP_CACHE, port=port, log_file=tmp_path / "registry.log")
        try:
            started = registry.start(timeout_s=120)
            assert started.url.endswith("/apis/ccompat/v7")
        finally:
            registry.stop()
