"""parameter.json: the shipped presets, the original tool's files, and every problem named by key."""

import json
from pathlib import Path

import pytest

from lmpretrain.errors import UserError
from lmpretrain.models import family_of, load_parameters, parse_preset, resolve_pretrained_shape

# The original tool's presets (sizes, learning rates, steps), which ours must reproduce.
ORIGINAL = {
    "bert-small": dict(number_of_layers=12, hidden_size=256, sequence_length=128, ffn_inner_hidden_size=1024,
                       attention_heads=4, learning_rate=5e-4, train_steps=1450000, node_batch_sizes={-1: 128}),
    "bert-base": dict(number_of_layers=12, hidden_size=768, sequence_length=512, ffn_inner_hidden_size=3072,
                      attention_heads=12, learning_rate=1e-4, train_steps=1000000, node_batch_sizes={-1: 256}),
    "bert-large": dict(number_of_layers=24, hidden_size=1024, sequence_length=512, ffn_inner_hidden_size=4096,
                       attention_heads=16, learning_rate=1e-4, train_steps=464000, node_batch_sizes={-1: 256}),
    "electra-small-paper": dict(number_of_layers=12, hidden_size=256, sequence_length=128, embedding_size=128,
                                generator_size=0.25, mlm_probability=0.15, learning_rate=5e-4, train_steps=1000000),
    "electra-small": dict(hidden_size=256, sequence_length=128, embedding_size=128, generator_size=1.0,
                          learning_rate=5e-4, train_steps=1000000),
    "electra-base": dict(hidden_size=768, sequence_length=512, embedding_size=768, generator_size=1 / 3,
                         learning_rate=2e-4, train_steps=766000, node_batch_sizes={-1: 256}),
    "electra-large": dict(number_of_layers=24, hidden_size=1024, embedding_size=1024, generator_size=0.25,
                          mlm_probability=0.25, learning_rate=2e-4, train_steps=400000, node_batch_sizes={-1: 2048}),
    "bert-base-dist": dict(node_batch_sizes={0: 80, 1: 80, 2: 48, 3: 48}),
}


SHIPPED = json.loads((Path(__file__).resolve().parent.parent / "parameter.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("model_type", sorted(SHIPPED))
def test_every_shipped_preset_loads(model_type, repo_root):
    params = load_parameters(repo_root / "parameter.json", model_type)
    expected = model_type.split("-")[0].replace("gpt2", "gpt")
    if expected == "deberta":  # deberta-v3-* is the v3 family; deberta-* and deberta-v2-* the v2 masked LM
        expected = "debertav3" if model_type.startswith("deberta-v3-") else "debertav2"
    assert params.family == expected
    if model_type.endswith("-tiny"):
        assert params.train_steps <= 1000 and params.hidden_size <= 128  # trains in minutes on a CPU
    for field, expected in ORIGINAL.get(model_type, {}).items():
        value = getattr(params, field) if hasattr(params, field) else params.option(field)
        assert value == pytest.approx(expected), field


def test_electra_defaults_follow_the_original_masking_split(repo_root):
    electra = load_parameters(repo_root / "parameter.json", "electra-small")
    bert = load_parameters(repo_root / "parameter.json", "bert-small")
    assert (electra.mask_token_prob, electra.random_token_prob) == (0.85, 0.0)
    assert (bert.mask_token_prob, bert.random_token_prob, bert.mlm_probability) == (0.8, 0.1, 0.15)


def test_a_preset_in_the_originals_style_loads_with_its_defaults():
    # no save-steps / logging-steps (the original defaults them), its "accumulation-steps" spelling
    preset = {"number-of-layers": 2, "hidden-size": 64, "sequence-length": 128, "ffn-inner-hidden-size": 128,
              "attention-heads": 2, "warmup-steps": 10, "learning-rate": 1e-4, "batch-size": {"0": 100, "1": 56},
              "train-steps": 100, "accumulation-steps": 4}
    params = parse_preset("bert-mine", preset, "p.json")
    assert (params.save_steps, params.logging_steps) == (50000, 5000)
    assert params.gradient_accumulation_steps == 4
    assert params.node_batch_sizes == {0: 100, 1: 56}
    assert params.frozen_layers == -1


def test_the_newest_originals_presets_load():
    # its current parameter.json: fp16-type and bf16 in every preset, "-additional" continued-pretraining presets
    common = {"warmup-steps": 10000, "learning-rate": 5e-4, "batch-size": {"-1": 128}, "train-steps": 1000000,
              "save-steps": 100000, "fp16-type": 0, "bf16": False}
    shape = {"number-of-layers": 12, "hidden-size": 256, "sequence-length": 128, "ffn-inner-hidden-size": 1024,
             "attention-heads": 4}
    bert = parse_preset("bert-small", {**shape, **common}, "p.json")
    electra = parse_preset("electra-small", {**shape, **common, "embedding-size": 128, "generator-size": "1/1",
                                             "mask-percent": 15}, "p.json")
    additional = parse_preset("electra-small-additional", {
        **common, "flozen-layers": -1, "pretrained_generator_model_name_or_path": "gen",
        "pretrained_discriminator_model_name_or_path": "disc"}, "p.json")
    assert (bert.fp16_type, bert.bf16, electra.option("generator_size")) == (0, False, 1.0)
    assert (additional.pretrained_model_name_or_path, additional.pretrained_generator) == ("disc", "gen")
    with pytest.raises(UserError, match=r"bert-small\.fp16-type: expected 0 \(fp32\), 1, 2 or 3"):
        parse_preset("bert-small", {**shape, **common, "fp16-type": 4}, "p.json")


def test_every_problem_is_reported_together_naming_its_key():
    preset = {"number-of-layers": 0, "hidden-size": "768", "sequence-length": 128, "ffn-inner-hidden-size": 256,
              "warmup-steps": -5, "learning-rate": 1e-4, "batch-size": {"-1": 0}, "train-steps": 10,
              "lerning-rate": 3, "generator-size": "a/b", "flozen-layers": -2}
    with pytest.raises(UserError) as error:
        parse_preset("electra-bad", preset, "params.json")
    message = str(error.value)
    for expected in ("params.json: electra-bad.number-of-layers: must be positive",
                     "electra-bad.hidden-size: expected an integer, got '768'",
                     "electra-bad.attention-heads: missing",
                     "electra-bad.warmup-steps: must be zero or more",
                     "electra-bad.batch-size: node '-1': batch size must be a positive integer",
                     "electra-bad.lerning-rate: unknown key (did you mean 'learning-rate'?)",
                     "electra-bad.generator-size: expected a fraction",
                     "electra-bad.flozen-layers: expected -1"):
        assert expected in message, (expected, message)
    assert message.count("\n") == 7  # one line per problem, all in one error


@pytest.mark.parametrize("preset, expected", [
    ({"hidden-size": 100, "attention-heads": 3}, "hidden-size: 100 is not divisible by attention-heads 3"),
    ({"sequence-length": 600, "max-position-embeddings": 512}, "sequence-length: 600 is above"),
    ({"mask-token-prob": 0.9, "random-token-prob": 0.2}, "mask-token-prob + random-token-prob exceed 1"),
    ({"batch-size": {"x": 3}}, "node rank 'x' is not an integer"),
    ({"flozen-layers": 3}, "flozen-layers: 3 is more than number-of-layers 2"),
    ({"flozen-layers": 1, "frozen-layers": 1}, "given together with another spelling"),
])
def test_inconsistent_values_name_the_key(preset, expected):
    base = {"number-of-layers": 2, "hidden-size": 64, "sequence-length": 128, "ffn-inner-hidden-size": 128,
            "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-4, "batch-size": {"-1": 8},
            "train-steps": 10}
    with pytest.raises(UserError, match=expected.replace("+", r"\+")):
        parse_preset("bert-x", {**base, **preset}, "p.json")


def test_family_comes_from_an_explicit_key_or_a_word_of_the_name():
    assert family_of("bert-base", None) == "bert"
    assert family_of("roberta-base", None) == "roberta"  # not "bert": whole words only
    assert family_of("my-electra-small", None) == "electra"
    assert family_of("gpt2-small", None) == "gpt"
    assert family_of("finance-base", None) is None
    assert family_of("finance-base", "roberta") == "roberta"
    with pytest.raises(UserError, match="model-family: missing"):
        parse_preset("finance-base", {"warmup-steps": 1, "learning-rate": 1e-4, "batch-size": {"-1": 8},
                                      "train-steps": 10, "number-of-layers": 2, "hidden-size": 64,
                                      "sequence-length": 128, "ffn-inner-hidden-size": 128, "attention-heads": 2},
                     "p.json")


def test_parameter_file_errors_name_the_file_line_and_model_type(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_parameters(tmp_path / "missing.json", "bert-tiny")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "bert-tiny": {\n    "hidden-size": 12,,\n  }\n}\n')
    with pytest.raises(UserError, match=r"bad.json:3:\d+: invalid JSON"):
        load_parameters(bad, "bert-tiny")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"bert-tiny": {}}))
    with pytest.raises(UserError, match=r"--model_type 'bert-tiyn' is not in .*did you mean 'bert-tiny'"):
        load_parameters(good, "bert-tiyn")


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertForPreTraining

    directory = tmp_path_factory.mktemp("pretrained") / "bert"
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    BertForPreTraining(config).save_pretrained(directory)
    return directory


FURTHER = {"warmup-steps": 1, "learning-rate": 1e-4, "batch-size": {"-1": 8}, "train-steps": 10}


def test_continued_pretraining_preset_takes_its_shape_from_the_model(tiny_bert_dir):
    params = parse_preset("bert-further", {**FURTHER, "pretrained_model_name_or_path": str(tiny_bert_dir),
                                           "flozen-layers": 2}, "p.json")
    assert params.hidden_size is None
    resolved = resolve_pretrained_shape(params, params.pretrained_model_name_or_path)
    assert (resolved.number_of_layers, resolved.hidden_size, resolved.ffn_inner_hidden_size,
            resolved.attention_heads, resolved.sequence_length, resolved.frozen_layers) == (3, 32, 64, 2, 256, 2)


def test_continued_pretraining_checks_given_sizes_and_family(tiny_bert_dir):
    preset = {**FURTHER, "pretrained_model_name_or_path": str(tiny_bert_dir), "hidden-size": 64,
              "sequence-length": 1024}
    with pytest.raises(UserError) as error:
        resolve_pretrained_shape(parse_preset("bert-further", preset, "p.json"), str(tiny_bert_dir))
    assert "bert-further.hidden-size: 64 in the preset but 32 in" in str(error.value)
    assert "bert-further.sequence-length: 1024 is above the 256 positions" in str(error.value)
    electra = parse_preset("electra-further", {**FURTHER, "pretrained_model_name_or_path": str(tiny_bert_dir)},
                           "p.json")
    with pytest.raises(UserError, match="is a 'bert' model, but --model_type electra-further trains the electra"):
        resolve_pretrained_shape(electra, str(tiny_bert_dir))
    too_many = parse_preset("bert-further", {**FURTHER, "pretrained_model_name_or_path": str(tiny_bert_dir),
                                             "flozen-layers": 4}, "p.json")
    with pytest.raises(UserError, match="flozen-layers: 4 is more than number-of-layers 3"):
        resolve_pretrained_shape(too_many, str(tiny_bert_dir))


def test_freezing_without_a_pretrained_model_is_an_error():
    preset = {**FURTHER, "number-of-layers": 2, "hidden-size": 64, "sequence-length": 128,
              "ffn-inner-hidden-size": 128, "attention-heads": 2, "flozen-layers": 1}
    with pytest.raises(UserError, match="flozen-layers: freezing layers needs a pretrained model"):
        resolve_pretrained_shape(parse_preset("bert-x", preset, "p.json"), None)


@pytest.mark.parametrize("text, line, named", [
    ('{\n "bert-tiny": {"hidden-size": 32,\n   "hidden-size": 64}\n}\n', 3, "key bert-tiny.hidden-size is given twice"),
    ('{\n "bert-tiny": {"hidden-size": 32},\n "bert-base": {},\n "bert-tiny": {"hidden-size": 64}\n}\n', 4,
     "preset 'bert-tiny' is given twice"),
    ('{"bert-tiny": {"batch-size": {"-1": 8, "0": 2,\n "-1": 16}}}', 2, "key bert-tiny.batch-size.-1 is given twice"),
], ids=["key", "preset", "nested key"])
def test_a_key_or_preset_given_twice_is_one_error_naming_file_line_and_key(tmp_path, text, line, named):
    path = tmp_path / "twice.json"
    path.write_text(text)
    with pytest.raises(UserError) as error:
        load_parameters(path, "bert-tiny")
    assert str(error.value).startswith(f"{path}:{line}: {named} (JSON would silently keep the last one)")


def test_the_same_key_in_two_presets_or_levels_is_not_a_duplicate(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"bert-tiny": {"hidden-size": 32, "batch-size": {"hidden-size": 1}},
                                "bert-small": {"hidden-size": 32}}))
    from lmpretrain.config import read_preset

    assert read_preset(path, "bert-tiny")["hidden-size"] == 32


def test_a_share_of_one_says_the_range_is_half_open_and_why():
    for key in ("eval-share", "warmup-ratio"):
        with pytest.raises(UserError, match=rf"{key}: expected a share in \[0, 1\), got 1: 1 would leave nothing "
                                            rf"for the rest"):
            parse_preset("bert-tiny", {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64,
                                       "ffn-inner-hidden-size": 64, "attention-heads": 2, key: 1.0}, "p.json")
