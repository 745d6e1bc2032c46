"""Outputs others can read (issue 25): every file and dir the scripts leave behind (the tokenizer dir, a checkpoint,
the final model, the extracted ELECTRA parts) has the modes the user's umask gives, although they are written
privately (mkdtemp's 0700 dirs, safetensors' 0600 files) and renamed into place. Real processes under two umasks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lmpretrain.fsutil import process_umask, publish

REPO = Path(__file__).resolve().parent.parent
PRESET = {"number-of-layers": 1, "hidden-size": 32, "sequence-length": 32, "ffn-inner-hidden-size": 64,
          "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 4},
          "train-steps": 2, "save-steps": 2, "logging-steps": 1, "eval-steps": 2, "eval-share": 0.1,
          "embedding-size": 16, "generator-size": "1/2", "mask-percent": 15}


def run(umask: int, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LMP_NO_PROGRESS": "1"}
    result = subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, env=env, capture_output=True,
                            text=True, umask=umask)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def modes(root: Path) -> dict[str, int]:
    """Every entry under ``root`` (hidden ones too), root included: its permission bits."""
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_process_umask_reads_the_umask_without_changing_it():
    old = os.umask(0o027)
    try:
        assert process_umask() == 0o027 and process_umask() == 0o027
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_outputs_get_the_umask_modes_in_real_processes(umask, tmp_path, sample_corpus):
    parameter_file = tmp_path / "parameter.json"
    parameter_file.write_text(json.dumps({"electra-m": PRESET}))
    tokenizer, model, parts = tmp_path / "tok", tmp_path / "electra", tmp_path / "parts"
    run(umask, "train_tokenizer.py", "--input_file", str(sample_corpus), "--model_dir", str(tokenizer),
        "--vocab_size", "2000", "--min_frequency", "1", "--limit_alphabet", "1000", "--num_files", "1")
    run(umask, "run_pretraining.py", "--input_file", str(sample_corpus), "--tokenizer_dir", str(tokenizer),
        "--model_dir", str(model), "--parameter_file", str(parameter_file), "--model_type", "electra-m",
        "--cache_dir", str(tmp_path / "cache"), "--num_workers", "1", "--max_eval_samples", "8")
    run(umask, "extract_electra_model.py", "--input_dir", str(model / "checkpoint-2"), "--output_dir", str(parts),
        "--generator", "--discriminator")

    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    found = {}
    for root in (tokenizer, model, parts, tmp_path / "cache"):
        found.update(modes(root))
    expected = {name: dir_mode if (tmp_path / name).is_dir() else file_mode for name in found}
    wrong = {name: f"{mode:o} (expected {expected[name]:o})" for name, mode in found.items() if mode != expected[name]}
    assert not wrong
    # the files the issue named, there and checked
    for weights in ("electra/model.safetensors", "electra/checkpoint-2/model.safetensors",
                    "electra/checkpoint-2/generator/model.safetensors", "parts/generator/model.safetensors",
                    "parts/discriminator/model.safetensors", "tok/vocab.txt"):
        assert found[weights] == file_mode, weights
    assert found["tok"] == dir_mode and found["parts/discriminator"] == dir_mode


def test_publish_keeps_executable_bits_and_leaves_links_alone(tmp_path):
    old = os.umask(0o022)
    try:
        root = tmp_path / "d"
        (root / "sub").mkdir(parents=True, mode=0o700)
        os.chmod(root, 0o700)
        (root / "sub" / "script").write_text("x")
        os.chmod(root / "sub" / "script", 0o700)
        (root / "data").write_text("x")
        os.chmod(root / "data", 0o600)
        outside = tmp_path / "outside"
        outside.write_text("x")
        os.chmod(outside, 0o600)
        (root / "link").symlink_to(outside)
        publish(root)
        assert {name: oct(mode) for name, mode in modes(root).items() if name != "d/link"} == {
            "d": "0o755", "d/sub": "0o755", "d/sub/script": "0o755", "d/data": "0o644"}
        assert stat.S_IMODE(outside.stat().st_mode) == 0o600  # a link's target is not ours to change
    finally:
        os.umask(old)
