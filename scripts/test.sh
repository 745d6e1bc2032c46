#!/usr/bin/env bash
# Install the dev requirements into .venv, lint, and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements-dev.txt
.venv/bin/ruff check .
LMP_NO_PROGRESS=1 .venv/bin/python -m pytest -q "$@"
