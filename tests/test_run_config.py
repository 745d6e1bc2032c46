"""Flags over preset values over defaults, settled once into the run description (phase (a))."""

import os

from lmpretrain.models import get_family, parse_preset
from lmpretrain.run_config import TrainArgs
from lmpretrain.run_description import describe

PRESET = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
          "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 8}, "train-steps": 7,
          "logging-steps": 3}


def args(**kw) -> TrainArgs:
    return TrainArgs(input_file=["c.txt"], tokenizer_dir="tok", model_dir="out", model_type="bert-x", **kw)


def resolve(flags: TrainArgs, params):
    return describe(flags, params, get_family(params.family))


def test_defaults_come_from_the_preset_and_the_machine():
    run = resolve(args(), parse_preset("bert-x", PRESET, "p"))
    assert (run.optim.train_steps, run.outputs.eval_steps) == (7, 3)  # eval-steps falls back to logging-steps
    assert run.model.pretrained is None and not run.model.resize_embeddings
    assert not run.data.whole_word_mask
    assert run.data.cache_dir == os.path.join("out", "cache")
    assert run.data.num_workers == (os.cpu_count() or 1)
    assert run.outputs.run_name == "bert-x"


def test_flags_win_over_the_preset():
    preset = parse_preset("bert-x", {**PRESET, "eval-steps": 5, "whole-word-mask": True}, "p")
    run = resolve(args(train_steps=2, do_whole_word_mask=False, cache_dir="c", num_workers=3, run_name="r",
                       resize_embeddings=True), preset)
    assert (run.optim.train_steps, run.outputs.eval_steps, run.data.cache_dir, run.data.num_workers,
            run.outputs.run_name) == (2, 5, "c", 3, "r")
    assert run.data.whole_word_mask and run.model.resize_embeddings  # a flag can turn these on, the preset too


def test_precision_in_the_preset_as_the_newest_original_writes_it():
    # the original's current parameter.json puts fp16-type and bf16 in every preset; a flag given wins
    assert resolve(args(), parse_preset("bert-x", {**PRESET, "fp16-type": 0, "bf16": False}, "p")) \
        .optim.fp16_type == 0
    in_preset = parse_preset("bert-x", {**PRESET, "fp16-type": 2, "bf16": False}, "p")
    assert resolve(args(), in_preset).optim.fp16_type == 2
    assert resolve(args(fp16_type=0), in_preset).optim.fp16_type == 0  # --fp16_type 0 given: fp32
    assert resolve(args(), parse_preset("bert-x", {**PRESET, "bf16": True}, "p")).optim.bf16
    assert resolve(args(bf16=True), parse_preset("bert-x", PRESET, "p")).optim.bf16
