"""run_pretraining.py --list_presets: one line per preset (family, shape, exact parameter count, budget), a broken
preset listed with its one-line error, and nothing else the run needs."""

import json

import pytest
import transformers

from lmpretrain.preset_list import DEFAULT_VOCAB
from tests.helpers import run_script

SHAPE = {"number-of-layers": 2, "hidden-size": 64, "sequence-length": 128, "ffn-inner-hidden-size": 128,
         "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 8}}
PRESETS = {
    "bert-mini": {**SHAPE, "train-steps": 10},
    "gpt-mini": {**SHAPE, "train-tokens": 2000000},
    "llama-mini": {**SHAPE, "train-epochs": 1.5},
    "bert-broken": {**SHAPE, "hidden-size": 65, "train-steps": 10},
    "nofamily-x": {**SHAPE, "train-steps": 10},
    "bert-continued": {"pretrained_model_name_or_path": "some/model", "warmup-steps": 1, "learning-rate": 1e-3,
                       "batch-size": {"-1": 8}, "train-steps": 5},
}


def _count(model) -> str:
    number = sum(p.numel() for p in model.parameters())
    return f"{number / 1e6:.1f}M" if number >= 1e6 else f"{number / 1e3:.1f}K"


@pytest.fixture(scope="module")
def listing(tmp_path_factory):
    path = tmp_path_factory.mktemp("presets") / "presets.json"
    path.write_text(json.dumps(PRESETS))
    result = run_script("run_pretraining.py", "--list_presets", "--parameter_file", str(path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return {line.split()[0]: line for line in result.stdout.splitlines()[2:]}, result.stdout


def test_one_line_per_preset_with_shape_count_and_budget(listing):
    lines, text = listing
    assert list(lines) == list(PRESETS)
    assert f"vocabulary of {DEFAULT_VOCAB:,} tokens" in text.splitlines()[0]
    bert = transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=DEFAULT_VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=128))
    assert lines["bert-mini"].split()[1] == "bert"
    assert "2 x 64, 2 heads, seq 128" in lines["bert-mini"]
    assert f" {_count(bert)} " in lines["bert-mini"] and lines["bert-mini"].endswith("10 steps")
    assert lines["gpt-mini"].split()[1] == "gpt" and lines["gpt-mini"].endswith("2,000,000 tokens")
    assert lines["llama-mini"].endswith("1.5 epochs")
    assert "continues some/model" in lines["bert-continued"] and lines["bert-continued"].endswith("5 steps")


def test_a_broken_preset_is_its_one_line_error(listing):
    lines, _ = listing
    assert "error: bert-broken.hidden-size: 65 is not divisible by attention-heads 2" in lines["bert-broken"]
    assert "error: nofamily-x.model-family: missing" in lines["nofamily-x"]


def test_exact_count_of_the_real_parameter_file(repo_root):
    """The README's presets: bert-tiny's count equals transformers' model built at the listing's vocabulary."""
    result = run_script("run_pretraining.py", "--list_presets")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("bert-tiny "))
    preset = json.loads((repo_root / "parameter.json").read_text())["bert-tiny"]
    bert = transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=DEFAULT_VOCAB, hidden_size=preset["hidden-size"], num_hidden_layers=preset["number-of-layers"],
        num_attention_heads=preset["attention-heads"], intermediate_size=preset["ffn-inner-hidden-size"],
        max_position_embeddings=preset["sequence-length"]))
    assert f" {_count(bert)} " in line
    assert "error" not in result.stdout


def test_without_list_presets_the_run_flags_stay_required():
    result = run_script("run_pretraining.py", "--parameter_file", "parameter.json")
    assert result.returncode == 2
    assert "the following arguments are required: --tokenizer_dir/--tokenizer_name_or_path, --model_dir, " \
        "--model_type" in result.stderr  # --input_file or --dataset_dir: checked once these are given


def test_a_bad_parameter_file_is_one_error_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"bert-x": {')
    result = run_script("run_pretraining.py", "--list_presets", "--parameter_file", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{path}:1:" in result.stderr and "invalid JSON" in result.stderr


def test_counts_are_exact_against_models_built_for_real():
    """The meta-device count equals the parameters of the same family's model built in memory."""
    import torch

    from lmpretrain.models import build_model, parse_preset
    from lmpretrain.preset_list import parameter_counts

    for name in ("bert-mini", "gpt-mini"):
        params = parse_preset(name, PRESETS[name], "presets.json")
        main, total = parameter_counts(params, 1000)
        model = build_model(params, vocab_size=1000, pad_token_id=0, seed=0, eos_token_id=999)
        assert total == sum(p.numel() for p in model.parameters())
        assert main == sum(p.numel() for p in next(iter(model.hf_models().values())).parameters())
        assert all(p.device != torch.device("meta") for p in model.parameters())


def test_other_flags_are_still_checked_with_list_presets():
    result = run_script("run_pretraining.py", "--list_presets", "--fp16_type", "7")
    assert result.returncode == 2 and "--fp16_type: invalid choice: 7" in result.stderr
