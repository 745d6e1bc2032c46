"""The run description: resolved once in two phases, frozen, recorded in every checkpoint; checkpoints written before
it (the flat params/args/resolved record) still resume, and give what the run that wrote them gave."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lmpretrain.data.loader import default_dataloader_workers
from lmpretrain.models import get_family, parse_preset
from lmpretrain.resume import compare
from lmpretrain.run_config import TrainArgs
from lmpretrain.run_description import RECORD_FORMAT, describe

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_s21"
"""Made by the code of commit 809b9fb (before the run description): a tokenizer trained on samples/ja_sample.txt
(--vocab_size 1000 --min_frequency 1 --limit_alphabet 400 --num_unused_tokens 2), the preset in parameter.json,
checkpoint-1 of a 3-step run (--num_workers 1 --dataloader_workers 0 --max_eval_samples 8), and what that run,
uninterrupted, reported at its end (expected_summary.json)."""
SAMPLE = Path(__file__).parent.parent / "samples" / "ja_sample.txt"

PRESET = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
          "attention-heads": 2, "warmup-ratio": 0.1, "learning-rate": 1e-3, "batch-size": {"-1": 8},
          "train-tokens": 64 * 8 * 30, "logging-steps": 3}


def layout(global_batch_size: int, device: str = "cpu"):
    return SimpleNamespace(global_batch_size=global_batch_size, local_world_size=1, num_nodes=1,
                           device=torch.device(device))


def flags(**kw) -> TrainArgs:
    return TrainArgs(input_file=["c.txt"], tokenizer_dir="tok", model_dir="out", model_type="bert-x", **kw)


def test_the_description_is_frozen_and_settled_on_the_process_layout():
    params = parse_preset("bert-x", PRESET, "p")
    draft = describe(flags(), params, get_family("bert"))
    assert draft.model.family is get_family("bert")  # the family object itself, looked up once
    assert draft.data.layout == "sentence_pairs"
    assert not draft.is_settled and draft.optim.train_steps is None and draft.data.dataloader_workers is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        draft.optim.learning_rate = 1.0
    placed = draft.placed(layout(16))
    # a token budget at global batch 16: 64 x 8 x 30 tokens / (16 x 64) = 15 steps; warmup ceil(1.5) = 2
    assert (placed.optim.train_steps, placed.optim.warmup_steps) == (15, 2)
    assert placed.is_settled and placed.data.gather_masked is False
    assert placed.data.dataloader_workers == default_dataloader_workers(1)
    assert placed.system.global_batch_size == placed.system.report_batch_size == 16
    assert draft.optim.train_steps is None  # the first phase's object is left as it was
    given = describe(flags(dataloader_workers=0, compile=True), params, get_family("bert"))
    placed = given.placed(layout(16))
    assert placed.data.dataloader_workers == 0 and placed.data.gather_masked and placed.data.fixed_shapes
    epochs = describe(flags(train_epochs=2.0), params, get_family("bert"))
    placed = epochs.placed(layout(8, "cuda"))  # a layout on a GPU: masked positions gathered
    assert placed.optim.train_steps is None and placed.data.gather_masked  # an epoch budget waits for instances
    assert placed.settled(instances=20).optim.train_steps == 5


def test_the_record_is_json_and_compares_equal_to_itself():
    params = parse_preset("bert-x", PRESET, "p")
    run = describe(flags(), params, get_family("bert")).placed(layout(8))
    record = json.loads(json.dumps(run.record()))
    assert record["format"] == RECORD_FORMAT and record["model"]["family"] == "bert"
    assert record["model"]["params"]["hidden_size"] == 32 and record["optim"]["budget"] == ["train-tokens", 15360]
    assert compare(record, record) == []
    other = describe(flags(seed=7, lr_schedule="cosine"), params, get_family("bert"))
    changes = {c.name: c.kind for c in compare(record, other.placed(layout(8)).record())}
    assert changes == {"--seed": "different run", "lr schedule": "continues"}


def test_a_checkpoint_written_before_the_run_description_resumes_exactly(tmp_path, caplog):
    from lmpretrain.trainer import train

    model_dir = tmp_path / "run"
    shutil.copytree(FIXTURE / "run", model_dir)
    saved = json.loads((model_dir / "checkpoint-1" / "lmpretrain_config.json").read_text())
    assert "format" not in saved and "resolved" in saved  # the record of the older version
    with caplog.at_level(logging.WARNING):
        summary = train(TrainArgs(input_file=[str(SAMPLE)], tokenizer_dir=str(FIXTURE / "tokenizer"),
                                  model_dir=str(model_dir), parameter_file=str(FIXTURE / "parameter.json"),
                                  model_type="bert-resume-v1", do_continue=True, num_workers=1,
                                  dataloader_workers=0, max_eval_samples=8))
    reported = [r.getMessage() for r in caplog.records if "--do_continue" in r.getMessage()]
    # nothing reported as changed but the corpus's path (the fixture was made in another checkout): noted only
    assert all("corpus paths" in line and "noted only" in line for line in reported), reported
    expected = json.loads((FIXTURE / "expected_summary.json").read_text())
    assert summary["step"] == expected["step"] == 3
    assert summary["tokens_seen"] == expected["tokens_seen"]
    for key in ("final_loss", "eval/mlm_loss", "eval/nsp_loss"):  # the same as the older code's uninterrupted run
        assert summary[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), key
    record = json.loads((model_dir / "checkpoint-3" / "lmpretrain_config.json").read_text())
    assert record["format"] == RECORD_FORMAT
    assert all(kinds == ["noted"] for kinds in (h["kinds"] for h in record["history"]))
    # an old record and the new one of the same run: no difference but the noted path
    assert [(c.name, c.kind) for c in compare(saved, record)] in ([], [("corpus paths", "noted")])


def test_a_resume_keeps_the_instance_version_its_checkpoint_trained_on(tmp_path):
    """Issue 29 changed which instances a seed gives: a new run records version 2; a resumed run takes its
    checkpoint's (the fixture, written before versions were recorded: 1, the builders it trained on)."""
    from lmpretrain.data import INSTANCE_VERSION
    from lmpretrain.prepare import prepare_run
    from lmpretrain.resume import trained_data_versions

    params = parse_preset("bert-x", PRESET, "p")
    fresh = describe(flags(), params, get_family("bert")).placed(layout(8))
    assert fresh.data.instance_version == INSTANCE_VERSION == 2 and fresh.record()["data"]["instance_version"] == 2
    model_dir = tmp_path / "run"
    shutil.copytree(FIXTURE / "run", model_dir)
    args = TrainArgs(input_file=[str(SAMPLE)], tokenizer_dir=str(FIXTURE / "tokenizer"), model_dir=str(model_dir),
                     parameter_file=str(FIXTURE / "parameter.json"), model_type="bert-resume-v1", do_continue=True,
                     num_workers=1)
    run = prepare_run(args)
    try:
        assert run.description.data.instance_version == 1 and run.record()["data"]["instance_version"] == 1
    finally:
        run.resources.close()
    config = model_dir / "checkpoint-1" / "lmpretrain_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "format": 2, "data": {"instance_version": 2}}))
    assert trained_data_versions(model_dir)["instance_version"] == 2
