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


@pytest.fixture(scope="session")
def tokenizer_factory(tmp_path_factory):
    """Return a function (dic, algorithm, corpus=sample) -> a trained tokenizer dir, cached for the session."""
    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer

    made: dict = {}

    def make(dic: str = "ipadic", algorithm: str = "wordpiece", corpus: Path | None = None) -> Path:
        corpus = corpus or SAMPLE_CORPUS
        key = (dic, algorithm, str(corpus))
        if key not in made:
            out = tmp_path_factory.mktemp(f"tok-{dic}-{algorithm}") / "tokenizer"
            spec = TokenizerSpec(mecab_dic_type=dic, tokenizer_type=algorithm, vocab_size=2000, min_frequency=1,
                                 limit_alphabet=1000, num_unused_tokens=5)
            train_tokenizer([str(corpus)], out, spec, num_workers=1)
            made[key] = out
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tokenizer_factory) -> Path:
    """MeCab (ipadic) + WordPiece on the bundled sample corpus."""
    return tokenizer_factory("ipadic", "wordpiece")
