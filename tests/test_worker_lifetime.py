"""Worker processes die with their parent (issue 13, item 4): kill -9 of the script during a dataset build or a
tokenizer training leaves no tokenizing process behind. Real processes, a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, alive

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory, sample_corpus):
    """The sample, 400 times (4.6 M characters, 13 MB: two tokenizing processes, several seconds on 2 cores)."""
    path = tmp_path_factory.mktemp("big") / "big.txt"
    text = sample_corpus.read_text(encoding="utf-8")
    path.write_text("".join(f"{text}\n" for _ in range(400)), encoding="utf-8")
    return path


def _command(kind: str, big_corpus, tiny_tokenizer_dir, tmp_path) -> list[str]:
    if kind == "dataset build":
        params = tmp_path / "parameter.json"
        params.write_text(json.dumps({"bert-w": {
            "number-of-layers": 1, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
            "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 4},
            "train-steps": 2, "save-steps": 2, "logging-steps": 1}}))
        return ["run_pretraining.py", "--input_file", str(big_corpus), "--tokenizer_dir", str(tiny_tokenizer_dir),
                "--model_dir", str(tmp_path / "model"), "--parameter_file", str(params), "--model_type", "bert-w",
                "--num_workers", "2", "--build_dataset_only"]
    return ["train_tokenizer.py", "--input_file", str(big_corpus), "--model_dir", str(tmp_path / "tok"),
            "--vocab_size", "2000", "--min_frequency", "1", "--limit_alphabet", "1000", "--num_files", "2"]


@pytest.mark.parametrize("kind", ["dataset build", "tokenizer training"])
def test_workers_die_with_a_killed_parent(kind, big_corpus, tiny_tokenizer_dir, tmp_path):
    script, *args = _command(kind, big_corpus, tiny_tokenizer_dir, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LMP_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / script), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while len(workers) < 2:  # both tokenizing processes started (a spawn context adds its resource tracker)
            assert proc.poll() is None, f"{kind} ended before its workers started: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, f"{kind}: no workers after 120 s"
            time.sleep(0.2)
            workers = [p for p in _children(proc.pid) if alive(p)]
        time.sleep(1.0)  # into the work itself
        assert proc.poll() is None, f"{kind} finished too fast to be killed mid-work"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in workers if alive(p)], f"{kind}: workers outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # what a failing test would leave
        except ProcessLookupError:
            pass
