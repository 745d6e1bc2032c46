"""Continued pretraining from an existing model dir: shape from the model, frozen layers stay put, a tokenizer
whose vocabulary differs is an error unless the embeddings are resized."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lmpretrain.errors import UserError
from lmpretrain.trainer import train
from tests.test_run_pretraining import BASE, make_args


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    """A tiny BERT trained from scratch for a few steps, and a parameter file with presets continuing from it."""
    root = tmp_path_factory.mktemp("continued")
    base = root / "base"
    further = {"warmup-steps": 1, "learning-rate": 5e-3, "batch-size": {"-1": 8}, "train-steps": 4,
               "save-steps": 4, "logging-steps": 1, "dropout": 0.0, "attention-dropout": 0.0, "eval-share": 0.1,
               "pretrained_model_name_or_path": str(base)}
    params = root / "parameter.json"
    params.write_text(json.dumps({"bert-test": BASE, "bert-further": {**further, "flozen-layers": 1},
                                  "bert-further-all": {**further, "flozen-layers": -1}}))
    train(make_args(sample_corpus, tiny_tokenizer_dir, base, params, "bert-test", train_steps=4))
    return {"root": root, "base": base, "params": params}


def test_frozen_layers_stay_unchanged_and_the_rest_trains(pretrained, sample_corpus, tiny_tokenizer_dir):
    out = pretrained["root"] / "further"
    summary = train(make_args(sample_corpus, tiny_tokenizer_dir, out, pretrained["params"], "bert-further"))
    assert summary["step"] == 4
    before, after = load_file(pretrained["base"] / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    frozen = [n for n in before if n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    trained = [n for n in before if n.startswith("bert.encoder.layer.1.")]
    assert frozen and trained
    for name in frozen:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
    assert all(not torch.equal(after[name], before[name]) for name in trained)
    # the preset named no sizes: they came from the model
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (32, 2)
    # the saved tokenizer truncates at what the model takes, not at a generic 512
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 64
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(out)("猫" * 500, truncation=True)["input_ids"]) == 64


def test_continuing_starts_from_the_pretrained_weights(pretrained, sample_corpus, tiny_tokenizer_dir):
    out = pretrained["root"] / "further-all"
    summary = train(make_args(sample_corpus, tiny_tokenizer_dir, out, pretrained["params"], "bert-further-all"))
    base_summary = json.loads((pretrained["base"] / "train_summary.json").read_text())
    # the eval loss before the first step of the continued run is the base model's final eval loss
    assert summary["eval/perplexity_at_start"] == pytest.approx(base_summary["eval/perplexity"], rel=1e-4)
    name = "bert.embeddings.word_embeddings.weight"
    assert not torch.equal(load_file(out / "model.safetensors")[name],
                           load_file(pretrained["base"] / "model.safetensors")[name])


def test_a_tokenizer_of_another_size_needs_resize(pretrained, sample_corpus, tokenizer_factory):
    other = tokenizer_factory("none", "wordpiece")
    args = make_args(sample_corpus, other, pretrained["root"] / "mismatch", pretrained["params"], "bert-further-all")
    with pytest.raises(UserError, match="use the model's own tokenizer, or pass --resize_embeddings"):
        train(args)
    args = make_args(sample_corpus, other, pretrained["root"] / "resized", pretrained["params"], "bert-further-all",
                     resize_embeddings=True)
    train(args)
    from lmpretrain.tokenization import FastEncoder

    with FastEncoder.from_pretrained(other) as encoder:
        vocab_size = encoder.vocab_size
    config = json.loads((pretrained["root"] / "resized" / "config.json").read_text())
    assert config["vocab_size"] == vocab_size


def test_truncated_pretrained_weights_are_one_clear_error(pretrained, sample_corpus, tiny_tokenizer_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(pretrained["base"], broken, ignore=shutil.ignore_patterns("checkpoint-*", "cache", "runs"))
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    args = make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", pretrained["params"], "bert-further-all",
                     pretrained_model_name_or_path=str(broken))
    with pytest.raises(UserError, match=f"cannot load a BertForPreTraining from {broken}"):
        train(args)
