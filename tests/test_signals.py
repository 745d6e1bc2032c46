"""Signals mean the same before and inside the loop (issue 13, item 7): SIGTERM during the dataset build and SIGUSR1
during the first evaluation end the run with exit code 0 and a message, leave no temporary dir, no lock and no cache
taken as complete, and the next run picks up from there. Real processes, real signals sent to the whole process
group, as a cluster sends them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmpretrain.run_dir import LOCK_FILE
from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")]

PRESET = {"number-of-layers": 2, "hidden-size": 128, "sequence-length": 128, "ffn-inner-hidden-size": 256,
          "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 4},
          "train-steps": 3, "save-steps": 10, "logging-steps": 1, "eval-steps": 100, "eval-share": 0.2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("signals")
    corpus = root / "big.txt"  # 13 MB: two tokenizing processes and a build of several seconds
    text = sample_corpus.read_text(encoding="utf-8")
    corpus.write_text("".join(f"{text}\n" for _ in range(400)), encoding="utf-8")
    params = root / "parameter.json"
    params.write_text(json.dumps({"bert-s": PRESET}))
    return {"root": root, "corpus": corpus, "params": params, "tokenizer": tiny_tokenizer_dir, "cache": root / "cache"}


def start(setup, model_dir: Path, log: Path, *extra: str) -> subprocess.Popen:
    args = ["--input_file", str(setup["corpus"]), "--tokenizer_dir", str(setup["tokenizer"]), "--model_dir",
            str(model_dir), "--parameter_file", str(setup["params"]), "--model_type", "bert-s", "--cache_dir",
            str(setup["cache"]), "--num_workers", "2", "--dataloader_workers", "0", "--max_eval_samples", "3000",
            *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LMP_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, str(REPO / "run_pretraining.py"), *args], cwd=setup["root"],
                                env=env, stdout=subprocess.DEVNULL, stderr=handle, start_new_session=True)


def wait_for(proc: subprocess.Popen, log: Path, text: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"ended before {text!r}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} after {timeout} s"
        time.sleep(0.1)


def finish(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return log.read_text()


def test_sigterm_during_the_dataset_build_then_sigusr1_during_the_first_eval(setup):
    model_dir, root, cache = setup["root"] / "model", setup["root"], setup["cache"]

    # (1) SIGTERM to the whole job while the cache is being built by two tokenizing processes
    log = root / "build.log"
    proc = start(setup, model_dir, log)
    wait_for(proc, log, "building the dataset cache")
    time.sleep(1.5)
    assert proc.poll() is None, "the build finished before the signal"
    os.killpg(proc.pid, signal.SIGTERM)
    err = finish(proc, log)
    assert proc.returncode == 0, err[-3000:]
    assert "preempted (SIGTERM) before training started" in err, err[-3000:]
    assert "Traceback" not in err and "error:" not in err, err[-3000:]
    assert "built the dataset cache" not in err
    leftovers = [p.name for p in cache.iterdir() if ".tmp-" in p.name or p.name.endswith(".lock")]
    assert leftovers == [], leftovers
    assert not [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")], "a cache left as complete"
    assert not (model_dir / LOCK_FILE).exists()
    assert not list(model_dir.glob("checkpoint-*"))

    # (2) the next run builds the cache; SIGUSR1 lands during its first evaluation (step 0)
    log = root / "eval.log"
    proc = start(setup, model_dir, log)
    wait_for(proc, log, "TensorBoard:", timeout=300)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGUSR1)
    err = finish(proc, log)
    assert proc.returncode == 0, err[-3000:]
    assert err.index("received SIGUSR1") < err.index("step 0:"), "the signal landed after the first evaluation"
    assert "preempted: saved checkpoint-1; rerun with --do_continue to resume" in err, err[-3000:]
    assert not (model_dir / LOCK_FILE).exists()
    assert (model_dir / "checkpoint-1").is_dir() and not (model_dir / "train_summary.json").exists()

    # (3) --do_continue picks up at step 1 and finishes
    log = root / "resume.log"
    proc = start(setup, model_dir, log, "--do_continue")
    err = finish(proc, log)
    assert proc.returncode == 0, err[-3000:]
    assert "resumed from" in err and "at step 1" in err, err[-3000:]
    assert "reusing the dataset cache" in err
    assert json.loads((model_dir / "train_summary.json").read_text())["step"] == 3
