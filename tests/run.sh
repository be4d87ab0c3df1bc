#!/usr/bin/env bash
# The whole test suite: lint, format, types, schema compatibility, then pytest (unit tests and
# integration tests against a real Kafka broker that the test fixture starts). Extra arguments
# go to pytest, e.g. `bash tests/run.sh -m "not kafka"`.
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
echo "==> pytest"
pytest -ra --durations=10 "$@"
