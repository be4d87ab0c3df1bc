#!/usr/bin/env bash
# The whole test suite: lint, format, types, schema compatibility, then pytest (unit tests and
# integration tests against a real Kafka broker that the test fixture starts), in two processes.
# Extra arguments go to one pytest process instead, e.g. `bash tests/run.sh -m "not kafka"`.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/setup-venv.sh

# The HTML report test opens the report in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "==> installing chromium (Debian package) for the HTML report test"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

echo "==> ruff (lint and format)"
ruff check .
ruff format --check .
echo "==> mypy (hub, connectors)"
mypy
echo "==> schema check (drift from the models, BACKWARD-transitive compatibility)"
hub schemas check
if [ "$#" -gt 0 ]; then
  echo "==> pytest $*"
  pytest -ra --durations=10 "$@"
else
  # Two processes (pytest-xdist), each with its own broker, a test file on one of them. The API
  # fuzz runs apart: schemathesis gives its cases one test id, which xdist cannot share out.
  echo "==> pytest (two processes, a broker each)"
  pytest -ra --durations=10 -n 2 --dist loadfile -m "not fuzz"
  echo "==> pytest: the ingest API fuzz (schemathesis)"
  pytest -ra -m fuzz
fi
