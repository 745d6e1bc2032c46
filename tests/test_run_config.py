"""Flags over preset values over defaults, settled once into RunConfig."""

import os

from lmpretrain.models import parse_preset
from lmpretrain.run_config import RunConfig, TrainArgs

PRESET = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
          "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 8}, "train-steps": 7,
          "logging-steps": 3}


def args(**kw) -> TrainArgs:
    return TrainArgs(input_file=["c.txt"], tokenizer_dir="tok", model_dir="out", model_type="bert-x", **kw)


def test_defaults_come_from_the_preset_and_the_machine():
    config = RunConfig.resolve(args(), parse_preset("bert-x", PRESET, "p"))
    assert (config.train_steps, config.eval_steps) == (7, 3)  # eval-steps falls back to logging-steps
    assert config.pretrained_model_name_or_path is None and not config.resize_embeddings
    assert not config.whole_word_mask
    assert config.cache_dir == os.path.join("out", "cache")
    assert config.num_workers == (os.cpu_count() or 1)
    assert config.run_name == "bert-x"


def test_flags_win_over_the_preset():
    preset = parse_preset("bert-x", {**PRESET, "eval-steps": 5, "whole-word-mask": True}, "p")
    config = RunConfig.resolve(args(train_steps=2, do_whole_word_mask=False, cache_dir="c", num_workers=3,
                                    run_name="r", resize_embeddings=True), preset)
    assert (config.train_steps, config.eval_steps, config.cache_dir, config.num_workers, config.run_name) == \
        (2, 5, "c", 3, "r")
    assert config.whole_word_mask and config.resize_embeddings  # a flag can turn these on, the preset too


def test_precision_in_the_preset_as_the_newest_original_writes_it():
    # the original's current parameter.json puts fp16-type and bf16 in every preset; a flag given wins
    assert RunConfig.resolve(args(), parse_preset("bert-x", {**PRESET, "fp16-type": 0, "bf16": False}, "p")) \
        .fp16_type == 0
    in_preset = parse_preset("bert-x", {**PRESET, "fp16-type": 2, "bf16": False}, "p")
    assert RunConfig.resolve(args(), in_preset).fp16_type == 2
    assert RunConfig.resolve(args(fp16_type=0), in_preset).fp16_type == 0  # --fp16_type 0 given: fp32
    assert RunConfig.resolve(args(), parse_preset("bert-x", {**PRESET, "bf16": True}, "p")).bf16
    assert RunConfig.resolve(args(bf16=True), parse_preset("bert-x", PRESET, "p")).bf16
