#!/usr/bin/env bash
# Wheels for a CUDA machine that cannot reach a package index (Python 3.12, x86-64 Linux): the pins of
# requirements.txt that such an image may lack or hold in another version (transformers, tokenizers; fugashi +
# ipadic for the tests' MeCab tokenizers). torch is not fetched: the machine's CUDA build is used; nor is
# huggingface_hub (2.x needs httpx2, which such images lack; transformers takes the image's 1.x). Writes them to .whl/ (git-ignored); scripts/gpu_checks.sh installs them when it finds them.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pin() { grep -i "^$1==" requirements.txt; }
py=${PYTHON:-.venv/bin/python}
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "$(pin transformers)" "$(pin tokenizers)" "$(pin fugashi)"
"$py" -m pip download -q --no-deps -d .whl "$(pin ipadic)"  # an sdist only: built there, with no index
du -sh .whl
