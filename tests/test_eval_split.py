"""The eval split of a run (issue 28, item 3): new runs hold out eval-share of the tokens (split version 2, recorded
with each checkpoint), a run resumed from a checkpoint recorded before the version existed keeps the documents it was
trained without (version 1), and an eval split too small to mean anything is warned about."""

from __future__ import annotations

import json
import logging

import pytest

from lmpretrain import data_setup
from lmpretrain.checkpoint import CONFIG_FILE, MANIFEST
from lmpretrain.data import EVAL_SPLIT_DOCUMENTS, EVAL_SPLIT_TOKENS
from lmpretrain.fsutil import sha256_file
from lmpretrain.resume import _flat
from lmpretrain.trainer import train
from tests.test_run_pretraining import BASE, make_args


@pytest.fixture()
def versions(monkeypatch):
    """The split version each dataset build draws its eval split with."""
    seen, real = [], data_setup.split_eval

    def spy(shards, share, seed, version):
        seen.append(version)
        return real(shards, share, seed, version)

    monkeypatch.setattr(data_setup, "split_eval", spy)
    return seen


def _params(tmp_path, **preset):
    path = tmp_path / "parameter.json"
    path.write_text(json.dumps({"bert-test": {**BASE, **preset}}))
    return path


def _as_recorded_before_split_versions(checkpoint):
    """The checkpoint as a version before the split version was recorded wrote it (manifest updated to match)."""
    config = json.loads((checkpoint / CONFIG_FILE).read_text())
    del config["data"]["eval_split"]
    (checkpoint / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    path = checkpoint / CONFIG_FILE
    manifest["files"][CONFIG_FILE] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    (checkpoint / MANIFEST).write_text(json.dumps(manifest, indent=1))


def test_a_resume_keeps_the_split_its_checkpoint_trained_with(versions, sample_corpus, tiny_tokenizer_dir, tmp_path):
    params, out = _params(tmp_path), tmp_path / "out"
    train(make_args(sample_corpus, tiny_tokenizer_dir, out, params, "bert-test", train_steps=4))
    assert versions == [EVAL_SPLIT_TOKENS]  # a new run
    assert json.loads((out / "checkpoint-4" / CONFIG_FILE).read_text())["data"]["eval_split"] == EVAL_SPLIT_TOKENS
    train(make_args(sample_corpus, tiny_tokenizer_dir, out, params, "bert-test", train_steps=6, do_continue=True))
    assert versions[1:] == [EVAL_SPLIT_TOKENS]  # resumed from a version-2 record

    _as_recorded_before_split_versions(out / "checkpoint-6")
    versions.clear()
    summary = train(make_args(sample_corpus, tiny_tokenizer_dir, out, params, "bert-test", train_steps=8,
                              do_continue=True))
    assert summary["step"] == 8 and versions == [EVAL_SPLIT_DOCUMENTS]  # the old record: the old split
    # not a change of the run (only the longer budget is), and the later checkpoints keep saying so
    changes = [json.loads(line)["resumed_with_changes"] for line in (out / "train_log.jsonl").read_text().splitlines()
               if "resumed_with_changes" in line]
    assert len(changes) == 2 and not [c for step in changes for c in step if "eval" in c]
    assert json.loads((out / "checkpoint-8" / CONFIG_FILE).read_text())["data"]["eval_split"] == EVAL_SPLIT_DOCUMENTS


def test_records_without_a_split_version_mean_the_document_split():
    assert _flat({"params": {}, "args": {"seed": 1}})[1]["eval_split"] == EVAL_SPLIT_DOCUMENTS
    assert _flat({"format": 2, "data": {"seed": 1}})[1]["eval_split"] == EVAL_SPLIT_DOCUMENTS
    assert _flat({"format": 2, "data": {"eval_split": 2}})[1]["eval_split"] == EVAL_SPLIT_TOKENS


def test_a_tiny_eval_split_is_warned_about(caplog, sample_corpus, tiny_tokenizer_dir, tmp_path):
    caplog.set_level(logging.WARNING, logger="lmpretrain")
    params = _params(tmp_path, **{"eval-share": 0.01, "model-family": "roberta"})  # one document of 24, packed:
    # a handful of instances
    train(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", params, "bert-test",
                    build_dataset_only=True))
    warnings = [r.getMessage() for r in caplog.records if "the eval split has" in r.getMessage()]
    assert len(warnings) == 1
    assert "(eval-share 0.01 of the corpus), fewer than 10" in warnings[0] and "--eval_file" in warnings[0]
    caplog.clear()
    train(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out2", _params(tmp_path, **{"eval-share": 0.2}),
                    "bert-test", build_dataset_only=True))
    assert not [r for r in caplog.records if "the eval split has" in r.getMessage()]
