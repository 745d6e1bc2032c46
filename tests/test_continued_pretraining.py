"""Continued pretraining from an existing model dir: shape from the model, frozen layers stay put, a tokenizer
whose vocabulary differs is an error unless the embeddings are resized."""

import json
import logging

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


def test_frozen_layers_stay_unchanged_and_the_rest_trains(pretrained, sample_corpus, tiny_tokenizer_dir, caplog):
    out = pretrained["root"] / "further"
    with caplog.at_level(logging.INFO, logger="lmpretrain"):
        summary = train(make_args(sample_corpus, tiny_tokenizer_dir, out, pretrained["params"], "bert-further"))
    # one line says what was loaded and frozen (issue 28): the counts are transformers' own
    from transformers import BertForPreTraining

    reference = BertForPreTraining.from_pretrained(pretrained["base"])
    frozen = [p for n, p in reference.named_parameters() if n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    count, total = sum(p.numel() for p in frozen), reference.num_parameters()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("continued pretraining from ")]
    assert lines == [f"continued pretraining from {pretrained['base']}: BertForPreTraining, {total:,} parameters; "
                     f"flozen-layers 1: the embeddings and layer 0 of the main model frozen ({count:,} parameters: "
                     f"{count:,} in {len(frozen)} frozen tensors), {total - count:,} train; vocabulary: "
                     f"the model's own ({reference.config.vocab_size} tokens)"]
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


def test_freezing_more_layers_than_the_model_has_names_the_parameter_file(pretrained, sample_corpus,
                                                                          tiny_tokenizer_dir, tmp_path):
    # issue 28: the original's bert-small-further (flozen-layers 6) given a 2-layer model; the error, as every
    # preset problem, starts with the file
    params = tmp_path / "p.json"
    preset = json.loads(pretrained["params"].read_text())["bert-further"]
    params.write_text(json.dumps({"bert-small-further": {**preset, "flozen-layers": 6}}))
    with pytest.raises(UserError) as error:
        train(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", params, "bert-small-further"))
    assert str(error.value) == f"{params}: bert-small-further.flozen-layers: 6 is more than number-of-layers 2"


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


@pytest.fixture(scope="module")
def electra_pair(tmp_path_factory, tiny_tokenizer_dir):
    """A discriminator (hidden 32, 2 heads) with its generator (hidden 16, 1 head: generator-size 1/2) in
    ``generator/``, saved by transformers with the tokenizer files; the preset default 1/4 would give 0.5 heads."""
    import shutil

    from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

    from lmpretrain.tokenization import FastEncoder

    root = tmp_path_factory.mktemp("electra-pair")
    vocab = FastEncoder.from_pretrained(tiny_tokenizer_dir).vocab_size
    common = dict(vocab_size=vocab, embedding_size=16, num_hidden_layers=2, max_position_embeddings=64)
    torch.manual_seed(0)
    ElectraForPreTraining(ElectraConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, **common)) \
        .save_pretrained(root / "pair")
    ElectraForMaskedLM(ElectraConfig(hidden_size=16, num_attention_heads=1, intermediate_size=32, **common)) \
        .save_pretrained(root / "pair" / "generator")
    for file in tiny_tokenizer_dir.iterdir():
        shutil.copy(file, root / "pair" / file.name)
    further = {"warmup-steps": 1, "learning-rate": 5e-3, "batch-size": {"-1": 8}, "train-steps": 2,
               "save-steps": 2, "logging-steps": 1, "eval-share": 0.1}
    params = root / "parameter.json"
    params.write_text(json.dumps({
        "electra-further": {**further, "pretrained_discriminator_model_name_or_path": str(root / "pair")},
        "electra-further-cli": further,  # the pretrained dir comes from --pretrained_model_name_or_path
        "electra-further-matching": {**further, "generator-size": "1/2", "hidden-size": 32,
                                     "pretrained_discriminator_model_name_or_path": str(root / "pair")},
        "electra-further-wrong": {**further, "generator-size": "1/4",
                                  "pretrained_discriminator_model_name_or_path": str(root / "pair")},
        "electra-further-separate": {**further, "pretrained_discriminator_model_name_or_path": str(root / "pair"),
                                     "pretrained_generator_model_name_or_path": str(root / "pair" / "generator")}}))
    return root, params


@pytest.mark.parametrize("model_type", ["electra-further", "electra-further-cli", "electra-further-matching",
                                        "electra-further-separate"])
def test_electra_continues_with_the_shapes_of_both_loaded_models(electra_pair, sample_corpus, tiny_tokenizer_dir,
                                                                  model_type, caplog):
    from transformers import ElectraForMaskedLM

    root, params = electra_pair
    out = root / f"out-{model_type}"
    cli = {"pretrained_model_name_or_path": str(root / "pair")} if model_type.endswith("-cli") else {}
    with caplog.at_level("INFO", logger="lmpretrain"):
        summary = train(make_args(sample_corpus, tiny_tokenizer_dir, out, params, model_type, **cli))
    assert summary["step"] == 2
    if model_type != "electra-further-matching":  # the default is replaced by the loaded shape, with a note
        assert f"{model_type}.generator-size: 0.5, taken from the models loaded from" in caplog.text
    generator = ElectraForMaskedLM.from_pretrained(out / "generator")
    loaded = ElectraForMaskedLM.from_pretrained(root / "pair" / "generator")
    assert generator.config.to_diff_dict() | {"transformers_version": None} == \
        loaded.config.to_diff_dict() | {"transformers_version": None}
    assert json.loads((out / "lmpretrain_config.json").read_text())["model"]["params"]["generator_size"] == 0.5


def test_electra_generator_size_contradicting_the_loaded_generator_is_an_error(electra_pair, sample_corpus,
                                                                                tiny_tokenizer_dir):
    root, params = electra_pair
    with pytest.raises(UserError, match=r"electra-further-wrong\.generator-size: 0\.25 in the preset but 0\.5 in "
                                        r"the models loaded from"):
        train(make_args(sample_corpus, tiny_tokenizer_dir, root / "out-wrong", params, "electra-further-wrong"))
    assert not (root / "out-wrong").exists()
