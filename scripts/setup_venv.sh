#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned requirements into it. Usage: scripts/setup_venv.sh [requirements file]
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first and alone, so that nothing else can pull a different (CUDA) build.
.venv/bin/python -m pip install -q "$(grep -E '^torch==' requirements.txt)"
.venv/bin/python -m pip install -q -r "$req"
