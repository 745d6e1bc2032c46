"""Nothing lost, nothing mixed (issue 13): one run per model dir, a fresh run into a used dir, resumes with changed
inputs, resuming a finished run, strict JSON outputs. Real processes where the promise is about processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lmpretrain.errors import UserError
from lmpretrain.run_config import TrainArgs
from lmpretrain.run_dir import LOCK_FILE, ModelDirLock
from lmpretrain.trainer import train
from tests.helpers import run_script, wait_for, wait_for_exit

REPO = Path(__file__).resolve().parent.parent
BASE = {"number-of-layers": 1, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
        "attention-heads": 2, "warmup-steps": 2, "learning-rate": 2e-3, "batch-size": {"-1": 8},
        "train-steps": 8, "save-steps": 4, "logging-steps": 1, "eval-steps": 4, "dropout": 0.0,
        "attention-dropout": 0.0, "eval-share": 0.1}
PRESETS = {"bert-r": BASE, "bert-r-lr": {**BASE, "learning-rate": 5e-3}, "bert-r-seq": {**BASE, "sequence-length": 32},
           "bert-r-batch": {**BASE, "batch-size": {"-1": 4}},
           "bert-r-long": {**BASE, "train-steps": 400, "save-steps": 1000}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("reliab")
    parameter_file = root / "parameter.json"
    parameter_file.write_text(json.dumps(PRESETS))
    s = {"root": root, "parameter_file": parameter_file, "corpus": sample_corpus, "tokenizer": tiny_tokenizer_dir,
         "cache": root / "cache"}
    s["finished"] = root / "finished"  # a finished 8-step run: checkpoint-4, checkpoint-8, the final model
    train(make_args(s, s["finished"]))
    return s


def make_args(setup, model_dir, model_type="bert-r", **kw) -> TrainArgs:
    kw = {"cache_dir": str(setup["cache"]), "num_workers": 1, "max_eval_samples": 16, **kw}
    return TrainArgs(input_file=[str(setup["corpus"])], tokenizer_dir=str(setup["tokenizer"]),
                     model_dir=str(model_dir), model_type=model_type, parameter_file=str(setup["parameter_file"]),
                     **kw)


def cli(setup, model_dir, model_type="bert-r", *extra: str) -> list[str]:
    return ["--input_file", str(setup["corpus"]), "--tokenizer_dir", str(setup["tokenizer"]), "--model_dir",
            str(model_dir), "--parameter_file", str(setup["parameter_file"]), "--model_type", model_type,
            "--cache_dir", str(setup["cache"]), "--num_workers", "1", "--max_eval_samples", "16", *extra]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def one_error(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return errors[0]


def rows(model_dir: Path) -> list[dict]:
    def no_nan(name):
        raise ValueError(f"non-strict JSON literal {name}")

    lines = (model_dir / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line, parse_constant=no_nan) for line in lines]


def half_done(setup, tmp_path, name="run") -> Path:
    """A copy of the finished run as it was after step 4 (as if it had died there)."""
    model_dir = tmp_path / name
    model_dir.mkdir()
    shutil.copytree(setup["finished"] / "checkpoint-4", model_dir / "checkpoint-4")
    (model_dir / "train_log.jsonl").write_text("".join(
        json.dumps(r) + "\n" for r in rows(setup["finished"]) if r["step"] <= 4))
    return model_dir


def linear_lr(step: int, lr: float, warmup: int, train_steps: int) -> float:
    factor = (step + 1) / warmup if step < warmup else max(0.0, (train_steps - step) / (train_steps - warmup))
    return lr * factor


def logged_lr(model_dir: Path) -> dict[int, float]:
    return {r["step"]: r["train/learning_rate"] for r in rows(model_dir) if "train/learning_rate" in r}


# --- (1) one run per model dir ----------------------------------------------------------------------------------

def test_a_second_run_on_the_same_dir_fails_at_once_and_the_first_is_intact(setup, tmp_path):
    model_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LMP_NO_PROGRESS": "1"}
    with open(tmp_path / "first.err", "w") as err:
        first = subprocess.Popen([sys.executable, str(REPO / "run_pretraining.py"),
                                  *cli(setup, model_dir, "bert-r-long")], cwd=REPO, env=env,
                                 stdout=subprocess.DEVNULL, stderr=err)
    try:
        log = model_dir / "train_log.jsonl"
        wait_for(lambda: log.is_file() and log.read_text(), first, what="the first run's first logged step")
        second = run_script("run_pretraining.py", *cli(setup, model_dir, "bert-r-long"))
        error = one_error(second)
        assert str(model_dir) in error and f"host {socket.gethostname()}, pid {first.pid}" in error, error
        assert "dataset cache" not in second.stderr  # refused before any long work
        assert first.poll() is None, "the first run did not survive the second"
    finally:
        first.terminate()  # SIGTERM: the first run saves a checkpoint and exits 0
        assert wait_for_exit(first, tmp_path / "first.err", model_dir / "train_log.jsonl") == 0, \
            (tmp_path / "first.err").read_text()[-3000:]
    steps = [r["step"] for r in rows(model_dir) if "train/loss" in r]
    assert steps == list(range(1, len(steps) + 1))  # one run's log: no interleaving
    assert not (model_dir / LOCK_FILE).exists()  # released on exit


def test_lock_of_a_dead_run_is_taken_over_and_of_another_host_refused(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "start": "1"}))
    with ModelDirLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(UserError, match=rf"in use by another run \(host {socket.gethostname()}, pid {os.getpid()}"):
            ModelDirLock(tmp_path).__enter__()
        assert lock.held
    assert "taking over the lock" in caplog.text and not (tmp_path / LOCK_FILE).exists()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "now"}))
    with pytest.raises(UserError, match=r"host elsewhere, pid 1.*if no run is alive on elsewhere, delete"):
        ModelDirLock(tmp_path).__enter__()


def test_a_fresh_run_into_a_used_dir_is_refused_or_overwrites(setup, tmp_path):
    model_dir = tmp_path / "used"
    shutil.copytree(setup["finished"], model_dir)
    before = snapshot(model_dir)
    refused = run_script("run_pretraining.py", *cli(setup, model_dir))
    error = one_error(refused)
    assert "holds an earlier run" in error and "--overwrite_output_dir" in error and "--do_continue" in error
    assert snapshot(model_dir) == before  # byte-identical

    # with the flag: the old run's files are gone before the new one writes; the dataset cache under it is kept
    (model_dir / "cache").mkdir()
    (model_dir / "cache" / "keep.txt").write_text("kept")
    done = run_script("run_pretraining.py", *cli(setup, model_dir), "--train_steps", "3", "--overwrite_output_dir")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "removed the earlier run's outputs" in done.stderr
    assert sorted(p.name for p in model_dir.glob("checkpoint-*")) == ["checkpoint-3"]
    assert [r["step"] for r in rows(model_dir) if "train/loss" in r] == [1, 2, 3]
    assert json.loads((model_dir / "train_summary.json").read_text())["step"] == 3
    assert (model_dir / "cache" / "keep.txt").read_text() == "kept"


def test_an_interrupted_overwrite_leaves_no_run_to_resume(setup, tmp_path):
    """SIGTERM while --overwrite_output_dir deletes the earlier run (its summary gone, its first checkpoint being
    deleted, checkpoint-8 and the final model still there): no later run resumes or exports the leftovers;
    --do_continue and a plain run are refused with one line; --overwrite_output_dir finishes the deletion."""
    import signal

    from lmpretrain.run_dir import REPLACING_FILE

    model_dir, ready = tmp_path / "used", tmp_path / "ready"
    shutil.copytree(setup["finished"], model_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LMP_NO_PROGRESS": "1"}
    with open(tmp_path / "stopped.err", "w") as err:
        proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "stop_at.py"), "overwrite-delete:1", str(ready),
                                 "run_pretraining.py", *cli(setup, model_dir), "--train_steps", "3",
                                 "--overwrite_output_dir"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(ready.is_file, proc, what="the first folder deletion")
        proc.send_signal(signal.SIGTERM)
        assert wait_for_exit(proc, tmp_path / "stopped.err") == 0
    finally:
        proc.kill()
        proc.wait()
    stopped = (tmp_path / "stopped.err").read_text()
    assert "--overwrite_output_dir was stopped after deleting 1 of the" in stopped, stopped[-3000:]
    # the preemption line says what is left, not the generic "nothing half-written is left"
    assert "nothing half-written is left" not in stopped, stopped[-3000:]
    assert (f"preempted (SIGTERM) before training started: --model_dir {model_dir} is left half-cleared, marked as "
            f"being replaced ({REPLACING_FILE}") in stopped, stopped[-3000:]
    assert "rerun with --overwrite_output_dir to finish the replacement" in stopped
    assert (model_dir / REPLACING_FILE).is_file()
    assert (model_dir / "checkpoint-8").is_dir() and (model_dir / "model.safetensors").is_file()  # the leftovers
    assert not (model_dir / "train_summary.json").exists()
    before = snapshot(model_dir)

    for extra in (["--do_continue"], []):
        refused = run_script("run_pretraining.py", *cli(setup, model_dir), *extra)
        error = one_error(refused)
        assert f"--model_dir {model_dir} was being cleared by --overwrite_output_dir when it was stopped" in error
        assert "rerun with --overwrite_output_dir" in error and REPLACING_FILE in error
        assert "resumed from" not in refused.stderr and snapshot(model_dir) == before

    done = run_script("run_pretraining.py", *cli(setup, model_dir), "--train_steps", "3", "--overwrite_output_dir")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished deleting what an interrupted --overwrite_output_dir left" in done.stderr
    assert sorted(p.name for p in model_dir.glob("checkpoint-*")) == ["checkpoint-3"]
    assert not list(model_dir.glob(".checkpoint-*")) and not (model_dir / REPLACING_FILE).exists()
    assert [r["step"] for r in rows(model_dir) if "train/loss" in r] == [1, 2, 3]
    assert json.loads((model_dir / "train_summary.json").read_text())["step"] == 3


def test_logs_of_a_run_that_saved_nothing_are_not_mixed_in(setup, tmp_path):
    model_dir = tmp_path / "crashed"
    model_dir.mkdir()
    (model_dir / "train_log.jsonl").write_text('{"step": 1, "train/loss": 9.0}\n{"step": 2, "train/loss": 9.0}\n')
    train(make_args(setup, model_dir, train_steps=1))
    assert [r["step"] for r in rows(model_dir) if "train/loss" in r] == [1]
    assert rows(model_dir)[0]["train/loss"] != 9.0


# --- (2) resume knows what it resumes ---------------------------------------------------------------------------

def test_new_learning_rate_takes_effect_from_the_resume_step(setup, tmp_path, caplog):
    model_dir = half_done(setup, tmp_path)
    train(make_args(setup, model_dir, "bert-r-lr", do_continue=True, run_name="bert-r"))
    assert "learning-rate 0.002 -> 0.005 (takes effect from the resume step on)" in caplog.text
    lr = logged_lr(model_dir)
    for step in range(1, 5):
        assert lr[step] == pytest.approx(linear_lr(step, 2e-3, 2, 8))
    for step in range(5, 9):
        assert lr[step] == pytest.approx(linear_lr(step, 5e-3, 2, 8)), step
    change = next(r for r in rows(model_dir) if "resumed_with_changes" in r)
    assert change["step"] == 4 and change["resumed_with_changes"] == ["learning-rate 0.002 -> 0.005"]
    saved = json.loads((model_dir / "checkpoint-8" / "lmpretrain_config.json").read_text())
    assert saved["history"][0]["step"] == 4 and saved["model"]["params"]["learning_rate"] == 5e-3


def test_more_train_steps_extend_the_schedule(setup, tmp_path):
    model_dir = half_done(setup, tmp_path)
    summary = train(make_args(setup, model_dir, do_continue=True, train_steps=12))
    lr = logged_lr(model_dir)
    assert sorted(lr) == list(range(1, 13)) and summary["step"] == 12
    for step in range(5, 13):
        assert lr[step] == pytest.approx(linear_lr(step, 2e-3, 2, 12)), step
    assert lr[12] == 0.0


def test_machine_dependent_values_are_not_differences(setup, tmp_path, caplog):
    model_dir = half_done(setup, tmp_path)
    train(make_args(setup, model_dir, do_continue=True, cache_dir=str(tmp_path / "other-cache"), num_workers=2,
                    device="cpu"))
    assert "--do_continue: checkpoint-4:" not in caplog.text


@pytest.mark.parametrize("model_type, extra, named", [
    ("bert-r-seq", (), "sequence-length 64 -> 32"),
    ("bert-r", ("--tokenizer_dir", "{other_tokenizer}"), "the tokenizer differs"),
], ids=["sequence-length", "tokenizer"])
def test_a_change_that_breaks_the_run_is_one_error_before_the_build(model_type, extra, named, setup, tmp_path):
    model_dir = half_done(setup, tmp_path)
    other = tmp_path / "other_tokenizer"
    shutil.copytree(setup["tokenizer"], other)
    with open(other / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("追加語\n")
    before = snapshot(model_dir)
    args = cli(setup, model_dir, model_type, "--do_continue")
    if extra:
        args[args.index(extra[0]) + 1] = extra[1].format(other_tokenizer=other)
    error = one_error(run_script("run_pretraining.py", *args))
    assert "cannot be continued" in error and named in error, error
    assert "size mismatch" not in error
    assert snapshot(model_dir) == before


@pytest.mark.slow
def test_a_change_that_makes_another_run_is_refused_unless_accepted(setup, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(setup["corpus"].read_text(encoding="utf-8") + "\n追加した文書です。\n", encoding="utf-8")
    cases = [("bert-r-batch", [], "global batch size 8 -> 4"), ("bert-r", ["--seed", "7"], "--seed 42 -> 7"),
             ("bert-r", ["--input_file", str(corpus)], "corpus <")]
    for number, (model_type, extra, named) in enumerate(cases):
        model_dir = half_done(setup, tmp_path, f"run-{number}")
        before = snapshot(model_dir)
        args = cli(setup, model_dir, model_type, "--do_continue")
        if extra[:1] == ["--input_file"]:
            args[args.index("--input_file") + 1] = extra[1]
        else:
            args += extra
        result = run_script("run_pretraining.py", *args)
        error = one_error(result)
        assert "another run, not a continuation" in error and named in error and "--accept_changed_run" in error
        assert "dataset cache" not in result.stderr
        assert snapshot(model_dir) == before
    # accepted: the run continues and says so, in the log and in the checkpoints' history
    accepted = run_script("run_pretraining.py", *args, "--accept_changed_run")
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert "accepted (--accept_changed_run)" in accepted.stderr
    change = next(r for r in rows(model_dir) if "resumed_with_changes" in r)
    assert change["step"] == 4 and "corpus" in change["resumed_with_changes"][0]
    saved = json.loads((model_dir / "checkpoint-8" / "lmpretrain_config.json").read_text())
    assert saved["history"][0]["kinds"] == ["different run"]


# --- (8) a finished run stays finished; strict JSON ---------------------------------------------------------------

@pytest.mark.parametrize("extra", [(), ("--train_steps", "6")], ids=["same-steps", "fewer-steps"])
def test_continuing_a_finished_run_changes_nothing(extra, setup, tmp_path):
    model_dir = tmp_path / "done"
    shutil.copytree(setup["finished"], model_dir)
    before = snapshot(model_dir)
    result = run_script("run_pretraining.py", *cli(setup, model_dir), "--do_continue", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "is finished" in result.stderr and "nothing to do" in result.stderr
    assert snapshot(model_dir) == before


def test_summary_and_log_are_strict_json_when_the_loss_is_nan(setup, tmp_path):
    model_dir = tmp_path / "nan"
    result = run_script("tests/inject_nan.py", "4", *cli(setup, model_dir), "--train_steps", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    logged = rows(model_dir)  # raises on NaN / Infinity literals
    assert logged[-1]["step"] == 4 and [r["train/loss"] for r in logged if r["step"] == 4 and "train/loss" in r] == [
        None]
    summary = json.loads((model_dir / "train_summary.json").read_text(),
                         parse_constant=lambda name: pytest.fail(f"{name} in train_summary.json"))
    assert summary["final_loss"] is None and summary["step"] == 4
