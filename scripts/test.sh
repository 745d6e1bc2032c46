#!/usr/bin/env bash
# Install the dev requirements into .venv, lint, and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements-dev.txt
.venv/bin/ruff check .
# tests run in parallel processes (pytest-xdist), one per core up to 4; a later -n in "$@" wins (-n 0: serially)
cores=$(nproc 2>/dev/null || echo 1)
LMP_NO_PROGRESS=1 .venv/bin/python -m pytest -q -n "$(( cores < 4 ? cores : 4 ))" "$@"
