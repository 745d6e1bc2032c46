"""ALBERT: its losses against transformers' own AlbertForPreTraining, the paper's shapes in the presets, what
``flozen-layers`` means with one shared layer, and a tiny Japanese run end to end (both loss terms logged), continued
with frozen layers and exported for AutoModelForMaskedLM and the fill-mask pipeline."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lmpretrain.errors import UserError
from lmpretrain.models import build_model, load_parameters, parse_preset, resolve_pretrained_shape
from lmpretrain.trainer import train
from tests.helpers import run_script
from tests.test_run_pretraining import make_args

TINY = {"number-of-layers": 3, "hidden-size": 32, "sequence-length": 16, "ffn-inner-hidden-size": 64,
        "attention-heads": 4, "embedding-size": 16, "warmup-steps": 1, "learning-rate": 1e-3,
        "batch-size": {"-1": 4}, "train-steps": 2}
VOCAB = 60


def tiny_model():
    params = parse_preset("albert-test", TINY, "test")
    return build_model(params, vocab_size=VOCAB, pad_token_id=0, seed=0)


def a_batch():
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, VOCAB, (3, 16), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 11:] = 0
    labels = torch.full_like(input_ids, -100)
    labels[:, 2:6] = input_ids[:, 2:6]
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 8:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
            "labels": labels, "sentence_order_label": torch.tensor([0, 1, 1]), "positions": torch.arange(3)}


def test_losses_are_transformers_albert_for_pretraining_s():
    model = tiny_model().eval()
    batch = a_batch()
    hf = model.model
    assert type(hf).__name__ == "AlbertForPreTraining"
    assert (hf.config.embedding_size, hf.config.num_hidden_groups) == (16, 1)  # factorized, one shared layer
    with torch.no_grad():
        ours = model(batch)
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"], labels=batch["labels"],
                    sentence_order_label=batch["sentence_order_label"])
    mlm = F.cross_entropy(theirs.prediction_logits.flatten(0, 1), batch["labels"].flatten())
    sop = F.cross_entropy(theirs.sop_logits, batch["sentence_order_label"])
    torch.testing.assert_close(ours["mlm_loss"], mlm)
    torch.testing.assert_close(ours["sop_loss"], sop)
    torch.testing.assert_close(ours["mlm_loss"] + ours["sop_loss"], theirs.loss)  # transformers sums the two
    # the gathered path (the collator's masked_index, as on a GPU) gives the same losses
    masked = batch["labels"].flatten() != -100
    gathered = {**batch, "masked_index": masked.nonzero().squeeze(1),
                "masked_labels": batch["labels"].flatten()[masked]}
    with torch.no_grad():
        again = model(gathered)
    torch.testing.assert_close(again["mlm_loss"], ours["mlm_loss"])
    torch.testing.assert_close(again["sop_loss"], ours["sop_loss"])


def test_presets_have_the_papers_shapes():
    """Lan et al. 2019, table 1: base 12M and large 18M parameters with a 30k vocabulary (E = 128, all shared)."""
    for name, layers, hidden, millions in (("albert-base", 12, 768, 12), ("albert-large", 24, 1024, 18)):
        params = load_parameters("parameter.json", name)
        with torch.device("meta"):
            model = build_model(params, vocab_size=30000, pad_token_id=0, seed=0)
        config = model.model.config
        assert (config.num_hidden_layers, config.hidden_size, config.embedding_size) == (layers, hidden, 128)
        assert config.num_hidden_groups == 1 and params.sequence_length == 512
        assert round(sum(p.numel() for p in model.model.albert.parameters()) / 1e6) == millions
    assert load_parameters("parameter.json", "albert-tiny").family == "albert"


def test_flozen_layers_freezes_the_embeddings_or_everything_shared_never_part(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "base")
    further = {key: value for key, value in TINY.items() if key not in ("number-of-layers", "hidden-size")}
    further["pretrained_model_name_or_path"] = str(tmp_path / "base")
    params = parse_preset("albert-further", {**further, "flozen-layers": 1}, "p.json")
    with pytest.raises(UserError, match=r"albert-further\.flozen-layers: 1 would freeze part of ALBERT's layers, "
                                        r"but the 3 layers of .* share one set of weights; use 0 or 3"):
        resolve_pretrained_shape(params, str(tmp_path / "base"))
    # a model with two groups (layers 0-1 run one, 2-3 the other) may also stop between them
    from transformers import AlbertConfig

    from lmpretrain.models.albert import _frozen_layers_problems

    two_groups = AlbertConfig(num_hidden_layers=4, num_hidden_groups=2)
    assert [n for n in range(5) if not _frozen_layers_problems(parse_preset(
        "albert-further", {**further, "flozen-layers": n}, "p.json"), "m", two_groups)] == [0, 2, 4]
    for frozen in (0, 3):
        params = resolve_pretrained_shape(parse_preset("albert-further", {**further, "flozen-layers": frozen},
                                                       "p.json"), str(tmp_path / "base"))
        continued = build_model(params, vocab_size=VOCAB, pad_token_id=0, seed=0,
                                pretrained_dir=str(tmp_path / "base"))
        albert = continued.model.albert
        trains = {name for name, p in continued.named_parameters() if p.requires_grad}
        assert not any(".embeddings." in n or "embedding_hidden_mapping_in" in n for n in trains)
        shared = any("albert_layer_groups" in n for n in trains)
        assert shared == (frozen == 0)
        assert any("predictions" in n for n in trains) and any("sop_classifier" in n for n in trains)
        assert not albert.embeddings.word_embeddings.weight.requires_grad


def test_flops_count_the_projection_the_shared_layer_at_every_depth_and_the_sop_head():
    from torch.utils.flop_counter import FlopCounterMode

    from lmpretrain.data.loader import count_units
    from lmpretrain.models import BatchShape

    model = tiny_model()
    model.model.set_attn_implementation("eager")
    batch = a_batch()
    units = count_units(batch)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model(batch)
    shape = BatchShape(3, 16, masked=int(units["masked"]))
    assert model.train_flops(shape) == 3 * counter.get_total_flops()
    h, e, f, length = 32, 16, 64, 16
    per_depth = 3 * length * (8 * h * h + 4 * h * f + 4 * length * h)
    hand = 3 * per_depth + 3 * length * 2 * e * h + 12 * (2 * h * e + 2 * e * VOCAB) + 3 * (2 * h * h + 2 * h * 2)
    assert model.train_flops(shape) == 3 * hand


def test_without_a_sentence_order_head_it_is_transformers_albert_for_masked_lm():
    """``sentence-order-head: false`` (with sentence-order prediction off) builds an AlbertForMaskedLM: its loss is
    transformers' own, and the FLOPs (counted by torch) have no pooler or SOP classifier."""
    from torch.utils.flop_counter import FlopCounterMode

    from lmpretrain.data.loader import count_units
    from lmpretrain.models import BatchShape, get_family

    params = parse_preset("albert-mlm", {**TINY, "sentence-order-prediction": False, "sentence-order-head": False},
                          "test")
    model = build_model(params, vocab_size=VOCAB, pad_token_id=0, seed=0).eval()
    assert type(model.model).__name__ == "AlbertForMaskedLM"
    assert [p.hf_class for p in model.parts] == ["AlbertForMaskedLM"]
    assert [t.name for t in get_family("albert").loss_terms_for(params)] == ["mlm_loss"]
    batch = {k: v for k, v in a_batch().items() if k != "sentence_order_label"}
    model.model.set_attn_implementation("eager")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        ours = model(batch)
    assert set(ours) == {"mlm_loss", "mlm_accuracy"}
    shape = BatchShape(3, 16, masked=int(count_units(batch)["masked"]))
    assert model.train_flops(shape) == 3 * counter.get_total_flops()
    with torch.no_grad():
        theirs = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             token_type_ids=batch["token_type_ids"], labels=batch["labels"])
    torch.testing.assert_close(ours["mlm_loss"], theirs.loss)


# a tiny Japanese run through the script: both loss terms, whole-word masking, continued with frozen layers, exported
RUN = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
       "attention-heads": 2, "embedding-size": 16, "warmup-steps": 1, "learning-rate": 2e-3, "batch-size": {"-1": 8},
       "train-steps": 6, "save-steps": 6, "logging-steps": 1, "eval-steps": 6, "eval-share": 0.1}


def run(corpus, tokenizer, out, parameter_file, model_type, *extra):
    result = run_script("run_pretraining.py", "--input_file", str(corpus), "--tokenizer_dir", str(tokenizer),
                        "--model_dir", str(out), "--parameter_file", str(parameter_file), "--model_type",
                        model_type, "--num_workers", "1", "--do_whole_word_mask", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_japanese_run_logs_both_terms_continues_frozen_and_exports_for_fill_mask(sample_corpus, tiny_tokenizer_dir,
                                                                                   tmp_path):
    from transformers import AlbertForPreTraining, AutoModelForMaskedLM, AutoTokenizer, pipeline

    base, further = tmp_path / "base", tmp_path / "further"
    parameter_file = tmp_path / "parameter.json"
    parameter_file.write_text(json.dumps({
        "albert-test": RUN,
        "albert-further": {**{k: v for k, v in RUN.items() if k not in ("number-of-layers", "hidden-size")},
                           "train-steps": 3, "save-steps": 3, "eval-steps": 3,
                           "pretrained_model_name_or_path": str(base), "flozen-layers": 2}}))
    log = run(sample_corpus, tiny_tokenizer_dir, base, parameter_file, "albert-test")
    steps = [r for r in log if "train/loss" in r]
    assert len(steps) == 6
    for record in steps:  # both terms every step, and the step's loss is their sum (weights 1, 1)
        assert record["train/loss"] == pytest.approx(record["train/mlm_loss"] + record["train/sop_loss"], rel=1e-4)
        assert 0.0 <= record["train/sop_accuracy"] <= 1.0
    assert json.loads((base / "config.json").read_text())["architectures"] == ["AlbertForPreTraining"]

    # continued in this process (the script's run above already went through a subprocess)
    summary = train(make_args(sample_corpus, tiny_tokenizer_dir, further, parameter_file, "albert-further",
                              do_whole_word_mask=True))
    assert summary["step"] == 3
    before, after = load_file(base / "model.safetensors"), load_file(further / "model.safetensors")
    frozen = [n for n in before if n.startswith(("albert.embeddings.", "albert.encoder."))]
    heads = [n for n in before if n.startswith(("predictions.dense.", "sop_classifier."))]
    assert frozen and heads and any("albert_layer_groups" in n for n in frozen)
    for name in frozen:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
    assert all(not torch.equal(after[name], before[name]) for name in heads)

    masked_lm = AutoModelForMaskedLM.from_pretrained(further)
    assert type(masked_lm).__name__ == "AlbertForMaskedLM"
    tokenizer = AutoTokenizer.from_pretrained(further)
    fill = pipeline("fill-mask", model=masked_lm, tokenizer=tokenizer, device="cpu")
    predictions = fill(f"吾輩は{tokenizer.mask_token}である。")
    assert len(predictions) == 5 and all(p["token_str"] for p in predictions)
    # the masked-LM load is the pretraining model's MLM head: same logits as our model's
    pretraining = AlbertForPreTraining.from_pretrained(further).eval()
    inputs = tokenizer(["吾輩は猫である。"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(masked_lm.eval()(**inputs).logits, pretraining(**inputs).prediction_logits)

