#!/usr/bin/env bash
# Create .venv and install the hub with its test tools; re-installs only when pyproject.toml
# changed. Sourced by deploy/demo.sh and tests/run.sh so both start from the same environment.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

for tool in java mvn; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: '$tool' is not on PATH; the local Kafka broker needs Java 17+ and Maven" >&2
    exit 1
  fi
done

if [ ! -x "$REPO/.venv/bin/python" ]; then
  echo "==> creating virtualenv $REPO/.venv ($("$PYTHON" --version))"
  "$PYTHON" -m venv "$REPO/.venv"
fi
stamp="$REPO/.venv/.installed-$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing the hub and its dependencies into .venv (first run: about a minute)"
  "$REPO/.venv/bin/python" -m pip install --quiet --upgrade pip
  "$REPO/.venv/bin/python" -m pip install --progress-bar on -e "$REPO[test]" \
    | grep -vE "^(Requirement already satisfied|  )" || true
  "$REPO/.venv/bin/hub" --version >/dev/null
  rm -f "$REPO"/.venv/.installed-*
  touch "$stamp"
fi
export PATH="$REPO/.venv/bin:$PATH"
