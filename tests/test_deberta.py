"""DeBERTa-v2 (MLM) and DeBERTa-v3 (RTD + GDES): losses against transformers' own, the GDES gradients, RTD labels,
exports that transformers loads as plain DeBERTa-v2 dirs, training on the sample corpus, continued pretraining."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

from lmpretrain.errors import UserError
from lmpretrain.models import build_model, family_of, load_parameters, parse_preset
from lmpretrain.models.deberta import RTD_HEAD_FILE, GdesEmbedding
from lmpretrain.trainer import train
from tests.test_models import batch, total_loss
from tests.test_run_pretraining import make_args

BASE = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 16, "ffn-inner-hidden-size": 64,
        "attention-heads": 4, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 4}, "train-steps": 2,
        "dropout": 0.0, "attention-dropout": 0.0, "position-buckets": 8}
VOCAB, PAD = 50, 0


def make(name: str, **extra):
    params = parse_preset(name, {**BASE, **extra}, "test")
    return build_model(params, vocab_size=VOCAB, pad_token_id=PAD, seed=0)


def test_preset_names_find_their_family():
    # the upstream's deberta-base (fp16-type / bf16 keys included) validates, as the v2 masked LM: "deberta" names
    # the v2 family (the v1 architecture is not trained here); "deberta-v3-..." and "debertav3-..." name v3
    assert load_parameters("parameter.json", "deberta-base").family == "debertav2"
    assert family_of("deberta-v3-tiny") == "debertav3" and family_of("debertav3-base") == "debertav3"
    assert family_of("deberta-v2-tiny") == "debertav2" and family_of("my-deberta-large") == "debertav2"
    for name in ("deberta-v3-xsmall", "deberta-v3-small", "deberta-v3-base", "deberta-v3-large"):
        params = load_parameters("parameter.json", name)
        shape = (params.number_of_layers, params.hidden_size, params.attention_heads, params.ffn_inner_hidden_size)
        assert shape == {"xsmall": (12, 384, 6, 1536), "small": (6, 768, 12, 3072), "base": (12, 768, 12, 3072),
                         "large": (24, 1024, 16, 4096)}[name.split("-")[-1]]
        assert params.option("generator_depth") == 0.5 and params.option("discriminator_weight") == 50.0
    assert parse_preset("deberta-x", {**BASE, "fp16-type": 1}, "p.json").fp16_type == 1  # --fp16_type given wins


def test_v2_settings_reach_the_config_and_the_mlm_loss_equals_transformers():
    model, b = make("deberta-v2-test").eval(), batch()
    config = model.model.config
    assert (config.relative_attention, config.position_buckets, config.share_att_key) == (True, 8, True)
    assert (config.position_biased_input, config.norm_rel_ebd, config.type_vocab_size) == (False, "layer_norm", 0)
    assert sorted(config.pos_att_type) == ["c2p", "p2c"]
    ours = model(b)
    theirs = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
    torch.testing.assert_close(total_loss(model, ours), theirs.loss)


def test_bad_attention_settings_and_generator_depth_are_one_error_each():
    with pytest.raises(UserError, match=r"pos-att-type: expected c2p, p2c or p2c\|c2p"):
        parse_preset("deberta-v2-x", {**BASE, "pos-att-type": "p2p"}, "p.json")
    with pytest.raises(UserError, match="generator-depth: 0.333 of 2 layers"):
        parse_preset("deberta-v3-x", {**BASE, "generator-depth": "1/3"}, "p.json")


def test_v3_generator_is_half_depth_same_width_and_gdes_starts_at_zero():
    model = make("deberta-v3-test")
    assert model.generator.config.num_hidden_layers == 1 and model.discriminator.config.num_hidden_layers == 2
    assert model.generator.config.hidden_size == model.discriminator.config.hidden_size
    embedding = model.discriminator.embeddings.word_embeddings
    assert isinstance(embedding, GdesEmbedding) and torch.count_nonzero(embedding.delta) == 0
    assert model.family.loss_weights(model.params)["discriminator_loss"] == 50.0


def test_gdes_gradients_rtd_never_reaches_e_generator_mlm_never_reaches_e_delta():
    model, b = make("deberta-v3-test"), batch()
    e_generator = model.generator.deberta.embeddings.word_embeddings.weight
    e_delta = model.discriminator.embeddings.word_embeddings.delta
    model(b)["discriminator_loss"].backward()
    assert e_generator.grad is None or torch.count_nonzero(e_generator.grad) == 0
    assert e_delta.grad is not None and torch.count_nonzero(e_delta.grad) > 0
    model.zero_grad(set_to_none=True)
    model(b)["generator_loss"].backward()
    assert e_generator.grad is not None and torch.count_nonzero(e_generator.grad) > 0
    assert e_delta.grad is None or torch.count_nonzero(e_delta.grad) == 0


def test_rtd_labels_are_one_for_replaced_tokens(monkeypatch):
    model, b = make("deberta-v3-test").eval(), batch()
    masked = b["labels"] != -100
    captured = {}
    from torch.nn import functional

    real_bce = functional.binary_cross_entropy_with_logits

    def spy(logits, target, *args, **kwargs):
        captured["target"] = target
        return real_bce(logits, target, *args, **kwargs)

    monkeypatch.setattr("lmpretrain.models.deberta.F.binary_cross_entropy_with_logits", spy)
    # a generator that always predicts the original token: nothing is replaced, every label 0
    monkeypatch.setattr("lmpretrain.models.electra.sample_replacements",
                        lambda seed, logits, positions, m: b["labels"][m])
    model(b)
    assert captured["target"].sum() == 0
    # one that always predicts token 7 (never an input here unless drawn): exactly the changed positions are 1
    monkeypatch.setattr("lmpretrain.models.electra.sample_replacements",
                        lambda seed, logits, positions, m: torch.full((int(m.sum()),), 7))
    out = model(b)
    real = b["attention_mask"].bool()
    changed = (masked & (b["labels"] != 7))[real].float()
    torch.testing.assert_close(captured["target"][real], changed)  # padding is weighted out, not selected away
    assert out["replaced_share"] == changed.mean()


def test_saved_discriminator_is_a_plain_deberta_with_merged_embeddings(tmp_path):
    model = make("deberta-v3-test")
    with torch.no_grad():
        model.discriminator.embeddings.word_embeddings.delta.normal_()
    model.save_pretrained(tmp_path)
    merged = model.generator.deberta.embeddings.word_embeddings.weight + model.gdes.delta
    loaded = transformers.AutoModel.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "DebertaV2Model"
    torch.testing.assert_close(loaded.embeddings.word_embeddings.weight, merged.detach())
    assert sorted(load_file(tmp_path / RTD_HEAD_FILE)) == sorted(
        f"mask_predictions.{k}" for k in model.rtd_head.state_dict())
    for auto in (transformers.AutoModelForSequenceClassification, transformers.AutoModelForTokenClassification):
        assert auto.from_pretrained(tmp_path, num_labels=3).deberta.embeddings.word_embeddings.weight.shape == (50, 32)
    # loading it back (as a checkpoint is loaded: discriminator first, then generator) restores E_delta
    again = make("deberta-v3-test")
    again.discriminator.load_state_dict(loaded.state_dict())
    again.generator.load_state_dict(transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "generator")
                                    .state_dict())
    torch.testing.assert_close(again.gdes.delta, model.gdes.delta.detach(), atol=1e-6, rtol=0)


# --- end to end on the sample corpus ---------------------------------------------------------------------------

TRAIN = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
         "attention-heads": 2, "warmup-steps": 2, "learning-rate": 3e-3, "batch-size": {"-1": 8},
         "train-steps": 16, "save-steps": 8, "logging-steps": 1, "eval-steps": 8, "dropout": 0.0,
         "attention-dropout": 0.0, "eval-share": 0.1, "position-buckets": 16}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("deberta")
    further = {**{k: TRAIN[k] for k in ("warmup-steps", "learning-rate", "batch-size", "logging-steps",
                                        "dropout", "attention-dropout", "eval-share", "position-buckets")},
               "train-steps": 4, "save-steps": 4, "eval-steps": 4}
    presets = {"deberta-v2-t": TRAIN, "deberta-v3-t": TRAIN,
               "deberta-v3-further": {**further, "pretrained_model_name_or_path": str(root / "extracted" /
                                                                                     "discriminator")},
               "deberta-v3-further-frozen": {**further, "flozen-layers": 1,
                                             "pretrained_model_name_or_path": str(root / "v3")},
               "deberta-v2-from-v3": {**further, "pretrained_model_name_or_path": str(root / "v3")},
               "deberta-v3-from-v2": {**further, "pretrained_model_name_or_path": str(root / "v2")}}
    parameter_file = root / "parameter.json"
    parameter_file.write_text(json.dumps(presets))
    summaries = {}
    for name, out in (("deberta-v2-t", "v2"), ("deberta-v3-t", "v3")):
        summaries[out] = train(make_args(sample_corpus, tiny_tokenizer_dir, root / out, parameter_file, name))
    return {"root": root, "params": parameter_file, "summaries": summaries, "corpus": sample_corpus,
            "tokenizer": tiny_tokenizer_dir}


def _curve(model_dir, key):
    rows = [json.loads(x) for x in (model_dir / "train_log.jsonl").read_text().splitlines()]
    values = [r[key] for r in rows if key in r]
    assert len(values) >= 12, (key, rows[:2])
    return sum(values[:3]) / 3, sum(values[-3:]) / 3


@pytest.mark.slow
def test_v2_and_v3_train_with_falling_losses(trained):
    first, last = _curve(trained["root"] / "v2", "train/loss")
    assert last < first
    for key in ("train/generator_loss", "train/discriminator_loss"):
        first, last = _curve(trained["root"] / "v3", key)
        assert last < first, key
    for summary in trained["summaries"].values():
        assert summary["eval/perplexity"] < summary["eval/perplexity_at_start"]
    # the final v3 model: a plain DeBERTa-v2 encoder with the RTD head beside it and the generator under generator/
    v3 = trained["root"] / "v3"
    assert json.loads((v3 / "config.json").read_text())["architectures"] == ["DebertaV2Model"]
    assert (v3 / RTD_HEAD_FILE).is_file() and (v3 / "generator" / "config.json").is_file()


@pytest.mark.slow
def test_extraction_writes_loadable_verified_parts_and_fill_mask_runs(trained):
    from lmpretrain.export import extract_parts

    out = trained["root"] / "extracted"
    written = extract_parts(trained["root"] / "v3" / "checkpoint-16", out, ["generator", "discriminator"],
                            load_parameters(trained["params"], "deberta-v3-t"))
    assert set(written) == {"generator", "discriminator"}
    discriminator = transformers.AutoModel.from_pretrained(out / "discriminator")
    checkpoint = load_file(trained["root"] / "v3" / "checkpoint-16" / "model.safetensors")
    torch.testing.assert_close(discriminator.embeddings.word_embeddings.weight,
                               checkpoint["embeddings.word_embeddings.weight"])
    assert (out / "discriminator" / RTD_HEAD_FILE).is_file()
    transformers.AutoModelForSequenceClassification.from_pretrained(out / "discriminator", num_labels=2)
    transformers.AutoModelForTokenClassification.from_pretrained(out / "discriminator", num_labels=5)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "discriminator")
    assert tokenizer("吾輩は猫である。")["input_ids"]
    fill = transformers.pipeline("fill-mask", model=str(out / "generator"), tokenizer=str(out / "generator"))
    assert len(fill(f"吾輩は{fill.tokenizer.mask_token}である。")) == 5


@pytest.mark.slow
def test_continued_pretraining_from_the_exported_discriminator_alone(trained):
    test_extraction_ran = (trained["root"] / "extracted" / "discriminator").is_dir()
    if not test_extraction_ran:
        test_extraction_writes_loadable_verified_parts_and_fill_mask_runs(trained)
    out = trained["root"] / "further"
    summary = train(make_args(trained["corpus"], trained["tokenizer"], out, trained["params"], "deberta-v3-further"))
    assert summary["step"] == 4
    assert json.loads((out / "generator" / "config.json").read_text())["num_hidden_layers"] == 1


@pytest.mark.slow
def test_continued_pretraining_with_frozen_layers_keeps_the_merged_embedding(trained):
    out = trained["root"] / "frozen"
    train(make_args(trained["corpus"], trained["tokenizer"], out, trained["params"], "deberta-v3-further-frozen"))
    before, after = load_file(trained["root"] / "v3" / "model.safetensors"), load_file(out / "model.safetensors")
    for name in [n for n in before if n.startswith(("embeddings.", "encoder.layer.0."))]:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
    assert not torch.equal(after["encoder.layer.1.output.dense.weight"], before["encoder.layer.1.output.dense.weight"])


@pytest.mark.slow
def test_a_v3_dir_for_a_v2_preset_and_the_reverse_are_one_clear_error(trained):
    with pytest.raises(UserError, match="is a DeBERTa-v3 discriminator"):
        train(make_args(trained["corpus"], trained["tokenizer"], trained["root"] / "x", trained["params"],
                        "deberta-v2-from-v3"))
    with pytest.raises(UserError, match="is a DeBERTa-v2 masked LM, not a DeBERTa-v3 discriminator"):
        train(make_args(trained["corpus"], trained["tokenizer"], trained["root"] / "y", trained["params"],
                        "deberta-v3-from-v2"))


@pytest.mark.slow
def test_a_resumed_v3_run_equals_the_uninterrupted_one(trained, tmp_path):
    """E_delta (restored exactly from the training state, not as merged - E_generator) and the RTD head resume too."""
    import shutil

    straight, resumed = trained["root"] / "v3", tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-8", resumed / "checkpoint-8")  # as if the run had died after step 8
    train(make_args(trained["corpus"], trained["tokenizer"], resumed, trained["params"], "deberta-v3-t",
                    do_continue=True))
    rows = {}
    for name, model_dir in (("straight", straight), ("resumed", resumed)):
        lines = [json.loads(x) for x in (model_dir / "train_log.jsonl").read_text().splitlines()]
        rows[name] = {r["step"]: r["train/loss"] for r in lines if "train/loss" in r and r["step"] > 8}
    assert sorted(rows["resumed"]) == list(range(9, 17)) and rows["resumed"] == rows["straight"]
    for name in ("model.safetensors", "generator/model.safetensors", RTD_HEAD_FILE):
        a, b = load_file(straight / name), load_file(resumed / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
