"""Shared fixtures: paths to the bundled sample corpus and to ../shared/corpora (skipped where absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = REPO / "samples" / "ja_sample.txt"
SHARED_CORPORA = REPO.parent / "shared" / "corpora"

os.environ.setdefault("LMP_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def sample_corpus() -> Path:
    return SAMPLE_CORPUS


@pytest.fixture(scope="session")
def shared_corpus():
    """Return a function name -> path of ``../shared/corpora/<name>/train.txt``; skips the test where absent."""

    def get(name: str) -> Path:
        path = SHARED_CORPORA / name / "train.txt"
        if not path.is_file():
            pytest.skip(f"needs ../shared/corpora/{name} (not present in a user's fresh clone)")
        return path

    return get
