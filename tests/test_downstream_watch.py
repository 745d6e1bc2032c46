"""run_pretraining.py --downstream_task: checkpoints probed in a background process during the run, their metrics in
TensorBoard at the checkpoints' steps and in downstream_log.jsonl, equal to evaluate_downstream.py's for the same
checkpoint and seed; a failed probe is a warning, a resume probes only what is not recorded, and bad settings are one
clear error before any work."""

from __future__ import annotations

import json
import logging

import pytest

from lmpretrain.errors import UserError
from lmpretrain.trainer import train
from tests.test_bad_input import run_in_process
from tests.test_downstream import reversal_task  # noqa: F401  (module fixture)
from tests.test_run_pretraining import make_args
from tests.test_tensorboard import scalar_tags

TAG = "downstream/reversal/accuracy"
PRESET = {"bert-probe": {"number-of-layers": 1, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
                         "attention-heads": 2, "warmup-steps": 2, "learning-rate": 2e-3, "batch-size": {"-1": 8},
                         "train-steps": 10, "save-steps": 4, "logging-steps": 2, "eval-steps": 10,
                         "save-total-limit": 2, "dropout": 0.0, "attention-dropout": 0.0, "eval-share": 0.1}}


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "parameter.json"
    path.write_text(json.dumps(PRESET))
    return path


def probe_args(sample_corpus, tokenizer, out, preset, task, **kw):
    kw = {"downstream_task": str(task), "downstream_every": 4, "downstream_epochs": 1, "run_name": "tb", **kw}
    return make_args(sample_corpus, tokenizer, out, preset, "bert-probe", **kw)


def log_lines(out):
    return [json.loads(line) for line in (out / "downstream_log.jsonl").read_text().splitlines()]


def tb_values(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


@pytest.mark.slow  # three probes, each a process that imports torch and transformers (about 25 s each here)
def test_checkpoints_are_probed_as_evaluate_downstream_probes_them(sample_corpus, tiny_tokenizer_dir, preset,
                                                                   reversal_task, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    train(probe_args(sample_corpus, tiny_tokenizer_dir, out, preset, reversal_task))
    # every 4 steps, and the final model (step 10); checkpoint-4 was deleted by save-total-limit 2 meanwhile
    lines = log_lines(out)
    assert [line["step"] for line in lines] == [4, 8, 10], lines
    assert not (out / "checkpoint-4").exists() and not list((out / "downstream" / "reversal").glob(".snapshot-*"))
    tags = scalar_tags(out / "runs" / "tb")
    assert tags[TAG] == [4, 8, 10] and tags["downstream/reversal/dev_accuracy"] == [4, 8, 10]
    assert "downstream/reversal/accuracy_std" not in tags  # one seed
    values = tb_values(out / "runs" / "tb", TAG)
    for line in lines:
        assert values[line["step"]] == pytest.approx(line[TAG], rel=1e-6)  # TensorBoard keeps float32
    # the same checkpoint and seed through evaluate_downstream.py (in this process, at the probe's thread count):
    # the same results
    import torch

    threads = torch.get_num_threads()
    try:
        for step in (8, 10):
            line = next(line for line in lines if line["step"] == step)
            torch.set_num_threads(line["threads"])
            reference = tmp_path / f"reference-{step}"
            code, err = run_in_process("evaluate_downstream.py", [
                "--model_dir", str(out / f"checkpoint-{step}"), "--task", str(reversal_task), "--output_dir",
                str(reference), "--seeds", "1", "--seed", "0", "--epochs", "1", "--device", "cpu"], capsys)
            assert code == 0, err
            expected = json.loads((reference / "downstream_results.json").read_text())
            probed = json.loads((out / "downstream/reversal" / f"step-{step}/downstream_results.json").read_text())
            assert probed["mean"] == expected["mean"] and probed["per_seed"] == expected["per_seed"]
            assert line[TAG] == expected["mean"]["test"]["accuracy"]
            assert line["downstream/reversal/dev_accuracy"] == expected["mean"]["dev"]["accuracy"]
    finally:
        torch.set_num_threads(threads)  # the worker's other tests reduce in their own thread count
    record = json.loads((out / "lmpretrain_config.json").read_text())["outputs"]["downstream"]
    assert record == {"task_dir": str(reversal_task.resolve()), "task": "reversal", "every": 4, "seeds": 1,
                      "epochs": 1, "device": "cpu"}


@pytest.mark.slow  # two runs and two probes
def test_a_resume_probes_only_what_is_not_recorded(sample_corpus, tiny_tokenizer_dir, preset, tmp_path, caplog,
                                                   reversal_task):  # noqa: F811
    out = tmp_path / "out"
    train(probe_args(sample_corpus, tiny_tokenizer_dir, out, preset, reversal_task, train_steps=4))
    first = log_lines(out)
    assert [line["step"] for line in first] == [4]
    with caplog.at_level(logging.INFO, logger="lmpretrain"):
        train(probe_args(sample_corpus, tiny_tokenizer_dir, out, preset, reversal_task, train_steps=6,
                         do_continue=True))
    lines = log_lines(out)
    assert [line["step"] for line in lines] == [4, 6] and lines[0] == first[0]  # 4 not probed again
    assert scalar_tags(out / "runs" / "tb")[TAG] == [4, 6]
    assert "waiting for the downstream probe(s) of checkpoint-6" in caplog.text


def test_a_failed_probe_is_a_warning(sample_corpus, tiny_tokenizer_dir, preset, tmp_path, caplog,
                                     reversal_task):  # noqa: F811
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="lmpretrain"):
        summary = train(probe_args(sample_corpus, tiny_tokenizer_dir, out, preset, reversal_task, train_steps=4,
                                   downstream_device="no-such-device"))
    assert summary["step"] == 4 and (out / "train_summary.json").is_file()
    [line] = log_lines(out)
    assert line["step"] == 4 and "no-such-device" in line["error"], line
    assert "downstream probe of checkpoint-4 failed" in caplog.text and "no-such-device" in caplog.text
    assert TAG not in scalar_tags(out / "runs" / "tb")


@pytest.mark.parametrize("flags, message", [
    ({"downstream_every": 6}, "--downstream_every 6: the probe fine-tunes saved checkpoints, so it must be a "
                              "positive multiple of save-steps 4"),
    ({"downstream_seeds": 0}, "--downstream_seeds must be at least 1"),
    ({"downstream_task": None}, "--downstream_every needs --downstream_task"),
    ({"downstream_task": "missing"}, "no such task dir"),
    ({"fsdp": "full_shard"}, "--downstream_task with --fsdp full_shard"),
])
def test_bad_settings_are_one_error_before_any_work(flags, message, sample_corpus, tiny_tokenizer_dir, preset,
                                                    reversal_task, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        train(probe_args(sample_corpus, tiny_tokenizer_dir, out, preset, reversal_task, **flags))
    assert not (out / "checkpoint-4").exists()


def test_a_bad_task_file_names_its_line(sample_corpus, tiny_tokenizer_dir, preset, tmp_path,
                                        reversal_task):  # noqa: F811
    task = tmp_path / "broken"
    task.mkdir()
    for split in ("train", "dev", "test"):
        (task / f"{split}.jsonl").write_text((reversal_task / f"{split}.jsonl").read_text())
    with open(task / "dev.jsonl", "a") as f:
        f.write('{"text": "no label here"}\n')
    with pytest.raises(UserError, match=r"dev.jsonl:33: no 'label'"):
        train(probe_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", preset, task))


def test_a_stopped_watch_ends_its_probe_and_a_resume_probes_it_again(tmp_path, monkeypatch, caplog,
                                                                      reversal_task):  # noqa: F811
    """The pieces without a training run: a snapshot is hard links (no optimizer state); stop() (a preempted
    or failed run) ends the running child and records nothing; a watch resumed at that step probes it again."""
    import subprocess
    import time
    from types import SimpleNamespace

    from lmpretrain import downstream_watch
    from lmpretrain.run_description import DownstreamSettings

    model_dir = tmp_path / "out"
    checkpoint = model_dir / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    for name in ("config.json", "lmpretrain_checkpoint.json", "training_state.pt"):
        (checkpoint / name).write_text("{}")
    settings = DownstreamSettings(task_dir=str(reversal_task), task="reversal", every=4, seeds=1, epochs=1,
                                  device="cpu")
    description = SimpleNamespace(outputs=SimpleNamespace(downstream=settings, model_dir=str(model_dir)),
                                  optim=SimpleNamespace(train_steps=8))
    started, popen = [], subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(downstream_watch.subprocess, "Popen", recording_popen)
    watch = downstream_watch.DownstreamWatch(description, SimpleNamespace(is_main=True), step=0)
    watch.saved(3, writer=None)  # not a multiple of 4, not the final step: not probed
    watch.saved(4, writer=None)
    snapshot = model_dir / "downstream" / "reversal" / ".snapshot-4"
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "lmpretrain_checkpoint.json"]
    assert (snapshot / "config.json").stat().st_ino == (checkpoint / "config.json").stat().st_ino  # a hard link
    while not started:  # the probe's child process has started
        time.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="lmpretrain"):
        watch.stop()
    assert started[0].poll() is not None and not snapshot.exists()
    assert "stopped the downstream probe(s) of checkpoint-4: --do_continue probes them again" in caplog.text
    assert (model_dir / "downstream_log.jsonl").read_text() == ""
    resumed = downstream_watch.DownstreamWatch(description, SimpleNamespace(is_main=True), step=4)
    while len(started) < 2:  # the resumed watch probes checkpoint-4, which nothing recorded
        time.sleep(0.05)
    resumed.stop()
    assert started[1].poll() is not None and "--model_dir" in started[1].args
