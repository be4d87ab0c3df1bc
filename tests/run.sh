#!/usr/bin/env bash
# The whole test suite: lint, format, types, schema compatibility, then pytest (unit tests and
# integration tests against a real Kafka broker that the test fixture starts). Extra arguments
# go to pytest, e.g. `bash tests/run.sh -m "not kafka"`.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/setup-venv.sh

echo "==> ruff (lint and format)"
ruff check .
ruff format --check .
echo "==> mypy (hub, connectors)"
mypy
echo "==> schema check (drift from the models, BACKWARD-transitive compatibility)"
hub schemas check
echo "==> pytest"
pytest -ra --durations=10 "$@"
