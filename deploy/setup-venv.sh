#!/usr/bin/env bash
# Create .venv and install the hub with its test tools from requirements.lock: every package at
# the version and with the sha256 the lock names (pip --require-hashes), then the hub itself
# without dependencies. Re-installs only when pyproject.toml or the lock changed. Sourced by
# deploy/demo.sh and tests/run.sh (and so CI) so all of them start from the same environment;
# `bash deploy/lock.sh` refreshes the lock.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
LOCK="$REPO/requirements.lock"

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
lock_sha="$(sha256sum "$LOCK" | cut -c1-64)"
stamp="$REPO/.venv/.installed-$(cat "$REPO/pyproject.toml" "$LOCK" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing the hub's dependencies into .venv from requirements.lock (first run: about a minute)"
  log="$REPO/.venv/install.log"
  if ! "$REPO/.venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
    --require-hashes -r "$LOCK" >"$log" 2>&1; then
    cat "$log" >&2
    echo "error: installing from requirements.lock failed (log: $log)" >&2
    exit 1
  fi
  grep -E "^Successfully installed" "$log" || true
  # The locked hatchling builds the editable install: nothing is fetched outside the lock.
  "$REPO/.venv/bin/python" -m pip install --disable-pip-version-check --quiet \
    --no-deps --no-build-isolation -e "$REPO"
  "$REPO/.venv/bin/hub" --version >/dev/null
  rm -f "$REPO"/.venv/.installed-*
  echo "$lock_sha" >"$stamp"
fi
echo "==> .venv installed from requirements.lock (sha256 $lock_sha)"
export PATH="$REPO/.venv/bin:$PATH"
