"""Fault tolerance with real processes: kill -9 at random points (training, checkpoint writes, dataset build, tokenizer
training), SIGTERM/SIGUSR1 preemption, corrupt checkpoints, NaN losses and a full disk. Every case either resumes to
exactly the uninterrupted run's weights and loss curve, or fails with one clear error and the last checkpoint intact.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmpretrain.checkpoint import MANIFEST, STATE_FILE, list_checkpoints, verify_checkpoint
from lmpretrain.errors import UserError
from lmpretrain.run_config import TrainArgs
from lmpretrain.trainer import train
from tests.helpers import run_script, wait_for_exit

REPO = Path(__file__).resolve().parent.parent
TRAIN_STEPS = 12
# dropout on, so that a resume must restore the RNG too; save-steps 1 makes checkpoint writes frequent kill targets
PRESET = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
          "attention-heads": 2, "warmup-steps": 2, "learning-rate": 2e-3, "batch-size": {"-1": 8},
          "train-steps": TRAIN_STEPS, "save-steps": 1, "logging-steps": 1, "eval-steps": 6, "dropout": 0.1,
          "attention-dropout": 0.1, "eval-share": 0.1}
PRESETS = {"bert-ft": PRESET, "bert-ft-rare": {**PRESET, "save-steps": 100}}  # the same run, saving only at the end
TOKENIZER_SPEC = ["--vocab_size", "2000", "--min_frequency", "1", "--limit_alphabet", "1000",
                  "--num_unused_tokens", "5", "--num_files", "1"]  # as conftest's tiny_tokenizer_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("fault")
    parameter_file = root / "parameter.json"
    parameter_file.write_text(json.dumps(PRESETS))
    return {"root": root, "parameter_file": parameter_file, "corpus": sample_corpus, "tokenizer": tiny_tokenizer_dir,
            "cache": root / "cache"}


def make_args(setup, model_dir, model_type="bert-ft", **kw) -> TrainArgs:
    return TrainArgs(input_file=[str(setup["corpus"])], tokenizer_dir=str(setup["tokenizer"]),
                     model_dir=str(model_dir), model_type=model_type, parameter_file=str(setup["parameter_file"]),
                     cache_dir=str(setup["cache"]), num_workers=1, max_eval_samples=16, **kw)


def cli_args(setup, model_dir, model_type="bert-ft") -> list[str]:
    return ["--input_file", str(setup["corpus"]), "--tokenizer_dir", str(setup["tokenizer"]), "--model_dir",
            str(model_dir), "--parameter_file", str(setup["parameter_file"]), "--model_type", model_type,
            "--cache_dir", str(setup["cache"]), "--num_workers", "1", "--max_eval_samples", "16"]


@pytest.fixture(scope="module")
def reference(setup):
    """The uninterrupted run: its per-step losses and final weights."""
    model_dir = setup["root"] / "reference"
    train(make_args(setup, model_dir))
    return {"dir": model_dir, "losses": losses(model_dir), "weights": load_file(model_dir / "model.safetensors")}


def losses(model_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def assert_same_as_reference(model_dir: Path, reference: dict) -> None:
    assert losses(model_dir) == reference["losses"]  # exact: the toolkit promises an exact resume on CPU fp32
    weights = load_file(model_dir / "model.safetensors")
    assert weights.keys() == reference["weights"].keys()
    for name, tensor in reference["weights"].items():
        assert torch.equal(weights[name], tensor), name
    assert json.loads((model_dir / "train_summary.json").read_text())["step"] == TRAIN_STEPS


class Processes:
    """Starts the scripts as real processes (output to files: no pipe can fill up) and kills leftovers at the end."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.started: list[subprocess.Popen] = []

    def start(self, script: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO), "LMP_NO_PROGRESS": "1"}
        n = len(self.started)
        out = open(self.directory / f"proc{n}.out", "w")
        err = open(self.directory / f"proc{n}.err", "w")
        proc = subprocess.Popen([sys.executable, str(REPO / script), *args], cwd=REPO, env=full_env, stdout=out,
                                stderr=err)
        proc.stderr_path = self.directory / f"proc{n}.err"
        out.close()
        err.close()
        self.started.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def procs(tmp_path):
    processes = Processes(tmp_path)
    yield processes
    processes.cleanup()


def stderr_of(proc) -> str:
    return Path(proc.stderr_path).read_text()


def wait_until(proc: subprocess.Popen, condition, timeout: float = 900.0) -> bool:
    """Poll ``condition`` every few ms; True once it holds, False if the process ended first. ``timeout`` only
    catches a hang: on a loaded machine a step can take many times its usual time, so waits follow progress."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.002)
    raise AssertionError(f"timed out waiting; stderr:\n{stderr_of(proc)[-3000:]}")


def exit_code(proc: subprocess.Popen, model_dir: Path | None = None) -> int:
    """The process's exit code, waited for as long as it makes progress (its stderr or its training log grows)."""
    watched = [Path(proc.stderr_path)] + ([model_dir / "train_log.jsonl"] if model_dir is not None else [])
    return wait_for_exit(proc, *watched)


def kill9(proc: subprocess.Popen) -> bool:
    """SIGKILL and reap (a zombie would still look alive to a lock check); True if it was still running."""
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return alive


def hidden(directory: Path, prefix: str) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(prefix)] if directory.is_dir() else []


def logged_steps(model_dir: Path) -> int:
    try:
        return (model_dir / "train_log.jsonl").read_text().count('"train/loss"')
    except OSError:
        return 0


def assert_only_complete_checkpoints(model_dir: Path) -> None:
    """Whatever the moment of death, every folder named checkpoint-N verifies (temporary ones are hidden)."""
    for _, path in list_checkpoints(model_dir):
        verify_checkpoint(path)


# ---------------------------------------------------------------------------------------------------------------
# (1) kill -9 during training and checkpoint writes, then --do_continue
# ---------------------------------------------------------------------------------------------------------------

def _kill_plan(seed: int = 8) -> list[tuple[str, int, float]]:
    """Where each of four successive processes of one run dies: (moment, step, extra random delay in seconds)."""
    rng = random.Random(seed)
    write1 = rng.randint(2, 4)
    mid = rng.randint(write1 + 1, write1 + 3)
    write2 = rng.randint(mid + 2, 10)
    return [("checkpoint write", write1, rng.uniform(0, 0.004)),
            ("mid-step", mid, rng.uniform(0, 0.05)),
            ("checkpoint write", write2, rng.uniform(0, 0.004)),
            ("final export", TRAIN_STEPS, rng.uniform(0, 0.3))]


def _reached(where: str, step: int, model_dir: Path):
    if where == "checkpoint write":
        return lambda: hidden(model_dir, f".checkpoint-{step}.tmp-")
    if where == "mid-step":
        return lambda: logged_steps(model_dir) >= step
    return lambda: (model_dir / f"checkpoint-{step}").is_dir()  # the final checkpoint: export and verification next


def _start_or_continue(procs, setup, model_dir: Path, model_type: str = "bert-ft"):
    """Start the run, or continue it when it has a checkpoint; returns (process, the checkpoint it resumes from)."""
    complete = [s for s, _ in list_checkpoints(model_dir)]
    extra = ["--do_continue"] if complete else []
    proc = procs.start("run_pretraining.py", *cli_args(setup, model_dir, model_type), *extra)
    return proc, (model_dir / f"checkpoint-{max(complete)}" if complete else None)


def test_kill9_at_random_points_then_resume_equals_uninterrupted(setup, reference, procs, tmp_path):
    """One run, killed four times (twice inside a checkpoint write, once mid-step, once during the final export) and
    continued each time with --do_continue, ends with exactly the uninterrupted run's weights and loss curve."""
    model_dir = tmp_path / "run"
    during_write, killed = 0, 0
    for where, step, delay in _kill_plan():
        proc, resumes_from = _start_or_continue(procs, setup, model_dir)
        wait_until(proc, _reached(where, step, model_dir))
        time.sleep(delay)
        killed += kill9(proc)
        print(f"killed at {where} {step} (+{delay:.3f} s): resumed from {resumes_from}, left "
              f"{sorted(p.name for p in model_dir.iterdir() if 'checkpoint' in p.name)}")
        if resumes_from is not None:
            assert f"resumed from {resumes_from}" in stderr_of(proc), (where, step)
        during_write += bool(hidden(model_dir, ".checkpoint-"))
        assert_only_complete_checkpoints(model_dir)  # no partial checkpoint under a checkpoint-N name, ever

    # the last kill may land after the export finished (train_summary.json written): then the run is finished and
    # --do_continue leaves it as it is; otherwise it resumes from the final checkpoint and redoes the export
    finished = (model_dir / "train_summary.json").is_file()
    proc, resumes_from = _start_or_continue(procs, setup, model_dir)
    assert exit_code(proc, model_dir) == 0, stderr_of(proc)[-3000:]
    assert ("nothing to do" if finished else f"resumed from {resumes_from}") in stderr_of(proc)
    assert not hidden(model_dir, ".checkpoint-")  # leftovers of the interrupted writes are cleaned up
    assert_same_as_reference(model_dir, reference)
    assert killed >= 3, "the processes ended before their kill points"
    assert during_write >= 1, "no kill landed inside a checkpoint write; the kill points need adjusting"


# ---------------------------------------------------------------------------------------------------------------
# (2) kill -9 during a dataset build and during tokenizer training
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory, sample_corpus) -> Path:
    """~7 MB: long enough to build (a second or two) that a kill lands mid-build."""
    text = sample_corpus.read_text(encoding="utf-8")
    path = tmp_path_factory.mktemp("big") / "big.txt"
    path.write_text("".join(text.replace("。", f"。{i}") + "\n" for i in range(200)), encoding="utf-8")
    return path


def test_kill9_during_dataset_build_leaves_no_cache_taken_as_complete(setup, big_corpus, procs, tmp_path, caplog):
    from lmpretrain.data import build_or_load_dataset
    from lmpretrain.data.shards import DATA_FILES

    cache = tmp_path / "cache"
    args = cli_args(setup, tmp_path / "model", "bert-ft")
    args[args.index("--input_file") + 1] = str(big_corpus)
    args[args.index("--cache_dir") + 1] = str(cache)
    proc = procs.start("run_pretraining.py", *args, "--build_dataset_only")
    wait_until(proc, lambda: any(".tmp-" in name for name in hidden(cache, ".big-")))
    time.sleep(random.Random(3).uniform(0.0, 0.5))
    assert kill9(proc), "the build finished before the kill"
    visible = [p for p in cache.iterdir() if not p.name.startswith(".")]
    for directory in visible:  # the kill came after the rename: then it must be complete
        assert (directory / "manifest.json").is_file()

    caplog.set_level("INFO")
    shards = build_or_load_dataset([str(big_corpus)], setup["tokenizer"], cache, num_workers=1)
    if not visible:
        assert "building the dataset cache" in caplog.text
        assert "stale lock" in caplog.text  # the dead builder's lock was taken over, not waited on
    reference = build_or_load_dataset([str(big_corpus)], setup["tokenizer"], tmp_path / "clean", num_workers=1)
    assert shards.fingerprint == reference.fingerprint
    for name in DATA_FILES:
        assert (shards.directory / name).read_bytes() == (reference.directory / name).read_bytes(), name
    assert not hidden(cache, ".big-")  # the dead build's temporary folder and lock are gone


def test_kill9_during_tokenizer_training_keeps_the_existing_tokenizer(tiny_tokenizer_dir, big_corpus, procs,
                                                                       tmp_path):
    from lmpretrain.tokenization import FastEncoder

    out = tmp_path / "out"
    out.mkdir()
    tokenizer = out / "tok"
    shutil.copytree(tiny_tokenizer_dir, tokenizer)
    before = {p.name: p.read_bytes() for p in tokenizer.iterdir()}
    proc = procs.start("train_tokenizer.py", "--input_file", str(big_corpus), "--model_dir", str(tokenizer),
                       *TOKENIZER_SPEC)
    wait_until(proc, lambda: hidden(out, ".tok.tmp-"))
    time.sleep(random.Random(5).uniform(0.0, 0.3))
    assert kill9(proc), "tokenizer training finished before the kill"
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == ["tok"]  # no half-written visible dir
    after = {p.name: p.read_bytes() for p in tokenizer.iterdir()}
    if after != before:  # killed after the swap: then it must be the new tokenizer, complete to the last byte
        reference = tmp_path / "reference"
        done = run_script("train_tokenizer.py", "--input_file", str(big_corpus), "--model_dir", str(reference),
                          *TOKENIZER_SPEC)
        assert done.returncode == 0, done.stderr[-3000:]
        assert after == {p.name: p.read_bytes() for p in reference.iterdir()}
    with FastEncoder.from_pretrained(tokenizer) as encoder:
        assert encoder.encode_batch(["吾輩は猫である。"])[0]


# ---------------------------------------------------------------------------------------------------------------
# (3) SIGTERM / SIGUSR1: a checkpoint at the step boundary, exit 0, resume on the same curve
# ---------------------------------------------------------------------------------------------------------------

def test_sigterm_and_sigusr1_save_exit_cleanly_and_resume_on_the_same_curve(setup, reference, procs, tmp_path):
    model_dir = tmp_path / "run"
    rng = random.Random(15)
    at = rng.randint(2, 3)
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        proc, resumes_from = _start_or_continue(procs, setup, model_dir, "bert-ft-rare")
        wait_until(proc, _reached("mid-step", at, model_dir))
        os.kill(proc.pid, signum)
        assert exit_code(proc, model_dir) == 0, stderr_of(proc)[-3000:]
        err = stderr_of(proc)
        assert f"received {signal.Signals(signum).name}" in err
        assert resumes_from is None or f"resumed from {resumes_from}" in err
        saved = int(re.search(r"preempted: saved checkpoint-(\d+)", err).group(1))
        assert at <= saved < TRAIN_STEPS
        assert max(s for s, _ in list_checkpoints(model_dir)) == saved
        verify_checkpoint(model_dir / f"checkpoint-{saved}")
        assert not (model_dir / "train_summary.json").exists()  # not finished: no final model claimed
        assert "Traceback" not in err and "error:" not in err
        at = saved + rng.randint(1, 2)

    train(make_args(setup, model_dir, "bert-ft-rare", do_continue=True))
    assert_same_as_reference(model_dir, reference)


# ---------------------------------------------------------------------------------------------------------------
# (4) a corrupt newest checkpoint: reported by name, --do_continue falls back with a warning
# ---------------------------------------------------------------------------------------------------------------

def _truncate(path: Path) -> None:
    with open(path / "model.safetensors", "r+b") as f:
        f.truncate(1000)


def _garbage_state(path: Path) -> None:
    size = (path / STATE_FILE).stat().st_size
    (path / STATE_FILE).write_bytes(random.Random(0).randbytes(size))


def _garbage_state_matching_manifest(path: Path) -> None:
    """Garbage written as if it were the real file (the manifest agrees), so only loading it can tell."""
    import hashlib

    _garbage_state(path)
    manifest = json.loads((path / MANIFEST).read_text())
    data = (path / STATE_FILE).read_bytes()
    manifest["files"][STATE_FILE] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (path / MANIFEST).write_text(json.dumps(manifest))


def _no_manifest(path: Path) -> None:
    (path / MANIFEST).unlink()


@pytest.mark.parametrize("corrupt, named", [
    (_truncate, "model.safetensors is truncated"),
    (_garbage_state, "training_state.pt is corrupt (checksum mismatch)"),
    (_garbage_state_matching_manifest, "training_state.pt cannot be loaded"),
    (_no_manifest, "is incomplete"),
], ids=["truncated-weights", "garbage-state", "garbage-state-matching-manifest", "no-manifest"])
def test_corrupt_newest_checkpoint_falls_back_with_warning(corrupt, named, setup, reference, tmp_path, caplog):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    for step in (9, 10):
        shutil.copytree(reference["dir"] / f"checkpoint-{step}", model_dir / f"checkpoint-{step}")
    shutil.copy(reference["dir"] / "train_log.jsonl", model_dir / "train_log.jsonl")
    corrupt(model_dir / "checkpoint-10")
    caplog.set_level("INFO")
    train(make_args(setup, model_dir, do_continue=True))
    assert "cannot resume from checkpoint-10" in caplog.text and named in caplog.text
    assert "falling back to checkpoint-9" in caplog.text
    assert f"resumed from {model_dir / 'checkpoint-9'}" in caplog.text
    assert_same_as_reference(model_dir, reference)


def test_corrupt_newest_checkpoint_warning_in_a_real_process(setup, reference, procs, tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    for step in (10, 11):
        shutil.copytree(reference["dir"] / f"checkpoint-{step}", model_dir / f"checkpoint-{step}")
    _truncate(model_dir / "checkpoint-11")
    proc = procs.start("run_pretraining.py", *cli_args(setup, model_dir), "--do_continue")
    assert exit_code(proc, model_dir) == 0, stderr_of(proc)[-3000:]
    err = stderr_of(proc)
    warning = next(line for line in err.splitlines() if "falling back to checkpoint-10" in line)
    assert "WARNING" in warning and "checkpoint-11" in warning and "model.safetensors is truncated" in warning
    assert "Traceback" not in err and "error:" not in err
    weights = load_file(model_dir / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in reference["weights"].items())


def test_every_checkpoint_unusable_is_one_error(setup, reference, procs, tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    shutil.copytree(reference["dir"] / "checkpoint-10", model_dir / "checkpoint-10")
    _truncate(model_dir / "checkpoint-10")
    with pytest.raises(UserError, match=r"no usable checkpoint in .*checkpoint-10: .*model.safetensors is truncated"):
        train(make_args(setup, model_dir, do_continue=True))


# ---------------------------------------------------------------------------------------------------------------
# (5) non-finite losses: skipped and counted, then a stop with an error; NaN weights are never saved
# ---------------------------------------------------------------------------------------------------------------

def test_nan_loss_is_skipped_counted_then_stops(setup, procs, tmp_path):
    model_dir = tmp_path / "run"
    proc = procs.start("tests/inject_nan.py", "4", *cli_args(setup, model_dir), "--max_nonfinite_steps", "3")
    assert exit_code(proc) == 2
    err = stderr_of(proc)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "NaN/inf for 3 consecutive steps" in errors[0], err[-3000:]
    assert "Traceback" not in err
    assert err.count("update skipped") == 3
    rows = {r["step"]: r for r in map(json.loads, (model_dir / "train_log.jsonl").read_text().splitlines())
            if "train/loss" in r}
    assert [rows[s]["train/skipped_steps"] for s in range(1, 7)] == [0, 0, 0, 1, 2, 3]
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert not (model_dir / "train_summary.json").exists() and not (model_dir / "model.safetensors").exists()
    saved = list_checkpoints(model_dir)
    assert [s for s, _ in saved] == [1, 2, 3, 4, 5]
    for _, path in saved:
        verify_checkpoint(path)
        assert all(torch.isfinite(t).all() for t in load_file(path / "model.safetensors").values()), path


def test_nan_weights_are_never_saved(setup, tmp_path, monkeypatch):
    from lmpretrain import prepare

    build = prepare.Run.build_model
    calls = {"training": 0}

    def poisoned_build(self):
        model = build(self)

        def poison(module, args):
            if module.training:
                calls["training"] += 1
                if calls["training"] == 3:  # during step 3's forward
                    with torch.no_grad():
                        next(module.parameters()).fill_(float("nan"))

        model.register_forward_pre_hook(poison)
        return model

    monkeypatch.setattr(prepare.Run, "build_model", poisoned_build)
    model_dir = tmp_path / "run"
    with pytest.raises(UserError, match="step 3: the weights contain NaN/inf; not saving them"):
        train(make_args(setup, model_dir))
    assert [s for s, _ in list_checkpoints(model_dir)] == [1, 2]
    assert not hidden(model_dir, ".checkpoint-")
    for _, path in list_checkpoints(model_dir):
        assert all(torch.isfinite(t).all() for t in load_file(path / "model.safetensors").values())


# ---------------------------------------------------------------------------------------------------------------
# (6) a full disk during a checkpoint write (a real one on a small tmpfs, and a simulated one)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """Mount tiny tmpfs filesystems (needs root / CAP_SYS_ADMIN; skipped elsewhere); unmounted afterwards."""
    mounted = []

    def mount(name: str, size_bytes: int) -> Path:
        path = tmp_path / name
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode})")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_during_checkpoint_write(setup, reference, procs, small_disk, tmp_path):
    checkpoint_bytes = sum(p.stat().st_size for p in (reference["dir"] / "checkpoint-12").rglob("*") if p.is_file())
    disk = small_disk("disk", int(checkpoint_bytes * 1.5) + (64 << 10))  # room for one checkpoint and the logs
    model_dir = disk / "run"
    proc = procs.start("run_pretraining.py", *cli_args(setup, model_dir))
    assert exit_code(proc) == 2
    err = stderr_of(proc)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert re.search(r"could not write checkpoint \S+checkpoint-2: no space left on device.*"
                     r"the previous checkpoint checkpoint-1 is intact", errors[0]), errors[0]
    assert [s for s, _ in list_checkpoints(model_dir)] == [1]
    assert not hidden(model_dir, ".checkpoint-")  # the partial folder is gone
    verify_checkpoint(model_dir / "checkpoint-1")

    # intact means usable: continuing from it on a roomy disk ends where the uninterrupted run did
    moved = tmp_path / "moved"
    shutil.copytree(model_dir, moved)
    train(make_args(setup, moved, do_continue=True))
    assert_same_as_reference(moved, reference)


def test_full_disk_during_dataset_cache_build(setup, big_corpus, procs, small_disk):
    cache = small_disk("cache", 512 << 10)
    args = cli_args(setup, cache / "model")
    args[args.index("--input_file") + 1] = str(big_corpus)
    args[args.index("--cache_dir") + 1] = str(cache)
    proc = procs.start("run_pretraining.py", *args, "--build_dataset_only")
    assert exit_code(proc) == 2
    err = stderr_of(proc)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left" in errors[0] and "Traceback" not in err, err[-3000:]
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == []  # nothing that looks like a cache


def test_full_disk_simulated(setup, tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: the training state's write fails with ENOSPC on the second checkpoint."""
    from lmpretrain import checkpoint

    real = checkpoint.save_training_state
    calls = {"n": 0}

    def full_disk(path, state):
        calls["n"] += 1
        if calls["n"] == 2:
            (path / STATE_FILE).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path / STATE_FILE))
        real(path, state)

    monkeypatch.setattr(checkpoint, "save_training_state", full_disk)
    model_dir = tmp_path / "run"
    with pytest.raises(UserError, match=r"checkpoint-2: no space left on device; the previous checkpoint "
                                        r"checkpoint-1 is intact"):
        train(make_args(setup, model_dir))
    assert [s for s, _ in list_checkpoints(model_dir)] == [1]
    assert not hidden(model_dir, ".checkpoint-")
    verify_checkpoint(model_dir / "checkpoint-1")
