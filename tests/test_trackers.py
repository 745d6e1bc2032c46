"""--report_to: TensorBoard, W&B (offline) and MLflow (a local file store) get the same scalars; a resumed run
continues the same tracker run; a tracker that is not installed is one clear error."""

import json
import struct
from pathlib import Path

import pytest

from lmpretrain import trackers
from lmpretrain.errors import UserError
from lmpretrain.trainer import train
from tests.test_run_pretraining import losses, make_args, parameter_file  # noqa: F401  (module fixture)
from tests.test_tensorboard import scalar_tags


def test_report_to_names_follow_transformers(monkeypatch):
    monkeypatch.setattr(trackers, "installed", lambda name: name != "mlflow")
    assert trackers.resolve_report_to(None) == ("tensorboard",)
    assert trackers.resolve_report_to(["wandb,tensorboard"]) == ("tensorboard", "wandb")
    assert trackers.resolve_report_to(["wandb", "tensorboard"]) == ("tensorboard", "wandb")
    assert trackers.resolve_report_to(["none"]) == ()
    assert trackers.resolve_report_to(["all"]) == ("tensorboard", "wandb")  # the installed ones
    with pytest.raises(UserError, match="--report_to comet: not a tracker"):
        trackers.resolve_report_to(["comet"])
    with pytest.raises(UserError, match="'none' reports to no tracker"):
        trackers.resolve_report_to(["none,wandb"])
    with pytest.raises(UserError, match=r'mlflow is not installed; pip install mlflow \(or pip install "\.\[mlflow'):
        trackers.resolve_report_to(["tensorboard", "mlflow"])


def test_a_missing_tracker_stops_the_script_with_one_line(sample_corpus, tiny_tokenizer_dir, parameter_file,  # noqa: F811
                                                          tmp_path):
    """The script, in a subprocess where wandb is not found: error line, exit 2, nothing written."""
    from tests.helpers import run_script

    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import importlib.util, sys\n_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'wandb' else _find(name, *a)\n")
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    result = run_script("run_pretraining.py", "--input_file", str(sample_corpus), "--tokenizer_dir",
                        str(tiny_tokenizer_dir), "--model_dir", str(tmp_path / "out"), "--parameter_file",
                        str(parameter_file), "--model_type", "bert-test", "--report_to", "wandb", env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        'error: --report_to wandb: wandb is not installed; pip install wandb (or pip install ".[wandb]")')
    assert not (tmp_path / "out").exists()


def test_report_to_none_writes_no_events(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", train_steps=2,
                    report_to=["none"]))
    assert len(losses(out)) == 2
    assert not (out / "runs").exists() and not (out / trackers.IDS_FILE).exists()


def wandb_records(run_file: Path):
    """The records of an offline W&B run file (``run-<id>.wandb``): W&B's LevelDB-style log of protobuf records
    (a 7-byte header, then 32 KiB blocks of chunks, each with a 7-byte header: crc32, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B"
    block, offset, pending = 32768, 7, b""
    while offset + 7 <= len(data):
        room = block - offset % block
        if room < 7:
            offset += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        if length == 0 and kind == 0:
            offset += room  # zero padding up to the block's end
            continue
        pending += data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_history(run_dir: Path, key: str) -> dict[int, float]:
    history = {}
    for run_file in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in wandb_records(run_file):
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                if key in items:
                    history[int(items["_step"])] = items[key]
    return history


def test_wandb_offline_and_mlflow_local_hold_tensorboards_history_across_a_resume(
        sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path, monkeypatch):  # noqa: F811
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    for name in ("WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "out"
    report = ["tensorboard,wandb", "mlflow"]
    train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", run_name="tb", train_steps=4,
                    report_to=report))
    first = json.loads((out / trackers.IDS_FILE).read_text())
    summary = train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", run_name="tb",
                              train_steps=8, do_continue=True, report_to=report))
    ids = json.loads((out / trackers.IDS_FILE).read_text())
    assert ids == first  # the resume continued both tracker runs

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "runs" / "tb"))
    events.Reload()
    board = {e.step: e.value for e in events.Scalars("train/loss")}
    assert sorted(board) == list(range(1, 9)) and scalar_tags(out / "runs" / "tb")["eval/perplexity"] == [0, 4, 8]

    # W&B, offline: two run files (one per process) of one run id, whose history is TensorBoard's
    run_dirs = sorted((out / "runs" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 2 and all(d.name.endswith(ids["wandb"]["id"]) for d in run_dirs)
    wandb_loss = wandb_history(out / "runs", "train/loss")
    assert sorted(wandb_loss) == sorted(board)
    assert all(abs(wandb_loss[s] - board[s]) < 1e-6 for s in board)
    assert sorted(wandb_history(out / "runs", "eval/perplexity")) == [0, 4, 8]
    records = [r for f in run_dirs for r in wandb_records(next(f.glob("run-*.wandb")))]
    config = {}
    for record in records:
        if record.WhichOneof("record_type") == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
    assert config["outputs"]["run_name"] == "tb" and config["model"]["family"] == "bert"
    assert config["optim"]["train_steps"] == 8  # the resume's values
    summaries = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summaries.update({i.key: json.loads(i.value_json) for i in record.summary.update})
    assert summaries["final_loss"] == pytest.approx(summary["final_loss"])

    # MLflow, a file store under the logging dir: one run, the same history, the record as params, the summary
    client = MlflowClient(tracking_uri=ids["mlflow"]["tracking_uri"])
    assert ids["mlflow"]["tracking_uri"] == (out / "runs" / "mlruns").absolute().as_uri()
    run = client.get_run(ids["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "tb"
    mlflow_loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert sorted(mlflow_loss) == sorted(board) and all(abs(mlflow_loss[s] - board[s]) < 1e-6 for s in board)
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 8  # each step once
    assert run.data.params["outputs.run_name"] == "tb" and run.data.params["model.family"] == "bert"
    assert run.data.params["optim.train_steps"] == "4"  # MLflow keeps a param as first logged
    assert run.data.metrics["summary/final_loss"] == pytest.approx(summary["final_loss"])
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_a_fresh_run_starts_new_tracker_runs(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path,  # noqa: F811
                                             monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    args = {"run_name": "tb", "train_steps": 2, "report_to": ["mlflow"]}
    train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", **args))
    first = json.loads((out / trackers.IDS_FILE).read_text())["mlflow"]["run_id"]
    train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", overwrite_output_dir=True,
                    **args))
    second = json.loads((out / trackers.IDS_FILE).read_text())["mlflow"]["run_id"]
    assert first != second
    assert not (out / "runs" / "tb").exists()  # no TensorBoard events: it was not asked for
