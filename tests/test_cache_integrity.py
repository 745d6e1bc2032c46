"""A damaged dataset cache in real runs of run_pretraining.py (issue 25): ids rewritten on disk to other in-range ids,
or to ids beyond the vocabulary, are found on the next run: the cache is rebuilt with a warning (the same data as a
clean build, and training runs), or refused with one error under --disable_overwrite_cache; never trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_script

PRESET = {"bert-c": {"number-of-layers": 1, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
                     "attention-heads": 2, "warmup-steps": 1, "learning-rate": 2e-3, "batch-size": {"-1": 4},
                     "train-steps": 1, "save-steps": 1, "logging-steps": 1}}
DATA_FILES = ("ids.bin", "word_starts.bin", "sentence_offsets.bin", "document_offsets.bin")


@pytest.fixture(scope="module")
def clean(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    """A clean build of the sample corpus's cache (in its own cache dir), and the parameter file."""
    root = tmp_path_factory.mktemp("integrity")
    (root / "parameter.json").write_text(json.dumps(PRESET))
    setup = {"root": root, "corpus": sample_corpus, "tokenizer": tiny_tokenizer_dir}
    result = run_script("run_pretraining.py", *args(setup, root / "clean_cache", root / "clean_model"),
                        "--build_dataset_only")
    assert result.returncode == 0, result.stderr
    setup["clean"] = cache_of(root / "clean_cache")
    return setup


def args(setup, cache_dir: Path, model_dir: Path) -> list[str]:
    return ["--input_file", str(setup["corpus"]), "--tokenizer_dir", str(setup["tokenizer"]), "--model_dir",
            str(model_dir), "--parameter_file", str(setup["root"] / "parameter.json"), "--model_type", "bert-c",
            "--cache_dir", str(cache_dir), "--num_workers", "1", "--max_eval_samples", "4"]


def cache_of(cache_dir: Path) -> Path:
    (directory,) = [p for p in cache_dir.iterdir() if (p / "manifest.json").is_file()]
    return directory


def damage(directory: Path, out_of_range: bool) -> None:
    """Rewrite 10% of the ids (file size unchanged) to other in-range ids, or to ids beyond the vocabulary."""
    manifest = json.loads((directory / "manifest.json").read_text())
    vocab_size = manifest["vocab_size"]
    ids = np.fromfile(directory / "ids.bin", dtype=manifest["dtype"])
    where = np.random.default_rng(0).choice(len(ids), size=len(ids) // 10, replace=False)
    ids[where] = vocab_size + 7 if out_of_range else (ids[where].astype(np.int64) + 1) % vocab_size
    ids.tofile(directory / "ids.bin")


def one_error(result) -> str:
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


@pytest.mark.parametrize("out_of_range", [False, True], ids=["other-in-range-ids", "out-of-range-ids"])
def test_a_damaged_cache_is_refused_or_rebuilt_to_the_clean_builds_data(clean, tmp_path, out_of_range):
    cache_dir = tmp_path / "cache"
    built = run_script("run_pretraining.py", *args(clean, cache_dir, tmp_path / "m0"), "--build_dataset_only")
    assert built.returncode == 0, built.stderr
    directory = cache_of(cache_dir)
    damage(directory, out_of_range)

    refused = run_script("run_pretraining.py", *args(clean, cache_dir, tmp_path / "m1"), "--build_dataset_only",
                         "--disable_overwrite_cache")
    error = one_error(refused)
    assert f"--disable_overwrite_cache: the dataset cache {directory} is unusable" in error
    assert ("beyond the tokenizer's vocabulary" if out_of_range else "the content of ids.bin differs") in error

    # rebuilt, then trained on (one step): no IndexError, and the data are the clean build's
    rerun = run_script("run_pretraining.py", *args(clean, cache_dir, tmp_path / "m2"), "--train_steps", "1",
                       *(() if out_of_range else ("--build_dataset_only",)))
    assert rerun.returncode == 0, rerun.stderr
    warnings = [line for line in rerun.stderr.splitlines() if "contents are damaged and it is rebuilt" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], rerun.stderr
    assert "unchanged" not in rerun.stderr
    for name in DATA_FILES:
        assert (directory / name).read_bytes() == (clean["clean"] / name).read_bytes(), name
    if out_of_range:
        assert (tmp_path / "m2" / "model.safetensors").is_file() or (tmp_path / "m2" / "checkpoint-1").is_dir()
