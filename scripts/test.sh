#!/usr/bin/env bash
# The whole test command: lint, format check, type check, then every test (unit, datapath, lab,
# conformance). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff check";   ruff check src tests
echo "== ruff format";  ruff format --check src tests
echo "== mypy";         mypy
echo "== pytest";       pytest "$@"
