"""Model FLOPs per step (issue 15, item 3): each family's count against a hand count and against torch's FLOP
counter, and the peak table MFU is measured against."""

import dataclasses
import logging

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lmpretrain.data.loader import count_units
from lmpretrain.models import BatchShape, build_model, family_names, get_family, load_parameters, parse_preset
from lmpretrain.models.flops import BACKWARD_FACTOR
from lmpretrain.throughput import device_peak_tflops, known_peak_tflops, throughput_scalars
from tests.helpers import pair_label
from tests.test_run_pretraining import parameter_file  # noqa: F401  (module fixture)

BASE = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 16, "ffn-inner-hidden-size": 64,
        "attention-heads": 4, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 4}, "train-steps": 2}
# shapes where a family's count has a term of its own: grouped-query attention, a narrow ELECTRA embedding, fewer
# relative-position buckets than the default
EXTRA = {"llama": {"num-key-value-heads": 2}, "electra": {"embedding-size": 16},
         "debertav2": {"position-buckets": 8}, "debertav3": {"position-buckets": 8},
         "modernbert": {"local-attention": 8}}
VOCAB = 50


def tiny(name: str):
    params = parse_preset(f"{name}-test", {**BASE, **EXTRA.get(name, {})}, "test")
    model = build_model(params, vocab_size=VOCAB, pad_token_id=0, seed=0, eos_token_id=3)
    for part in model.hf_models().values():  # attention as matrix products the counter sees (SDPA on CPU is not)
        if hasattr(part, "set_attn_implementation") and part.config._attn_implementation != "eager":
            part.set_attn_implementation("eager")
    return model


def a_batch(family, sequences=3, length=16):
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, VOCAB, (sequences, length), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, length - 5:] = 0  # padding: the backbone still computes it, the heads do not
    if family.collator == "causal":
        labels = input_ids.masked_fill(attention_mask == 0, -100)
    else:
        labels = torch.full_like(input_ids, -100)
        labels[:, 2:5] = input_ids[:, 2:5]
        labels[0, 9] = input_ids[0, 9]
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
             "positions": torch.arange(sequences)}
    label = pair_label(family.layout)  # the label the family's layout gives a pair
    if label is not None:
        batch["token_type_ids"] = torch.zeros_like(input_ids)
        batch[label] = torch.tensor([0, 1, 0][:sequences])
    return batch


def shape_of(batch) -> BatchShape:
    units = count_units(batch)
    return BatchShape(*batch["input_ids"].shape, masked=int(units["masked"]), predicted=int(units["next_tokens"]))


@pytest.mark.parametrize("name", family_names())
def test_each_familys_count_is_torchs_flop_counter(name):
    """Forward: the counter's total, exactly (both count the same matrix products); forward + backward: within 1%
    of 3x the forward (the backward computes two products per forward product)."""
    model = tiny(name)
    batch = a_batch(model.family)
    expected = model.train_flops(shape_of(batch))
    with FlopCounterMode(display=False) as forward:
        with torch.no_grad():
            model(batch)
    assert expected == BACKWARD_FACTOR * forward.get_total_flops()
    with FlopCounterMode(display=False) as step:
        out = model(batch)
        sum(out[t.name] for t in model.family.loss_terms).backward()
    assert expected == pytest.approx(step.get_total_flops(), rel=0.01)


def test_the_count_follows_the_batch():
    """A longer batch costs more than linearly (attention), more masked positions cost exactly the head's rows."""
    model = tiny("bert")
    short, long = BatchShape(4, 64, masked=10), BatchShape(4, 128, masked=10)
    assert model.train_flops(long) > 2 * model.train_flops(short)
    head = 3 * 2 * (32 * 32 + 32 * VOCAB)  # transform + decoder, per masked row
    assert model.train_flops(dataclasses.replace(short, masked=11)) - model.train_flops(short) == head


def meta_model(model_type: str, vocab: int):
    params = load_parameters("parameter.json", model_type)
    with torch.device("meta"):
        return build_model(params, vocab_size=vocab, pad_token_id=0, seed=0, eos_token_id=2)


def layer_weights(module) -> int:
    """Weights of the Linear / Conv1D layers of the transformer blocks: N in the 2·N-per-token rule."""
    return sum(p.numel() for n, p in module.named_parameters() if n.endswith("weight") and p.dim() == 2)


def test_bert_base_against_a_hand_count():
    """BERT-base at 128 tokens, 20 masked: 12 layers x 128 positions x (8h² + 4hf + 4·128·h), the MLM head on 20 rows
    (h² + hV each, x2), pooler and NSP on one sequence; and the layers' part is 2 x their weights per position plus
    the attention term (the 6N rule's forward third)."""
    h, f, vocab, length, masked = 768, 3072, 32768, 128, 20
    model = meta_model("bert-base", vocab)
    layers = 12 * length * (8 * h * h + 4 * h * f + 4 * length * h)
    hand = layers + masked * (2 * h * h + 2 * h * vocab) + 2 * h * h + 2 * h * 2
    assert hand == 23_378_660_352
    assert model.train_flops(BatchShape(1, length, masked=masked)) == 3 * hand
    weights = layer_weights(model.model.bert.encoder)
    assert layers == 2 * weights * length + 12 * 4 * length * length * h


def test_gpt2_small_against_a_hand_count():
    """GPT-2 small at 1024 tokens: 12 layers x 1024 positions x (8h² + 4hf + 4·1024·h), the LM head on the 1023
    positions with a next token."""
    h, f, vocab, length = 768, 3072, 50257, 1024
    model = meta_model("gpt2-small", vocab)
    hand = 12 * length * (8 * h * h + 4 * h * f + 4 * length * h) + (length - 1) * 2 * h * vocab
    assert hand == 291_571_112_448
    assert model.train_flops(BatchShape(1, length, predicted=length - 1)) == 3 * hand
    weights = layer_weights(model.model.transformer.h)
    assert 12 * length * (8 * h * h + 4 * h * f) == 2 * weights * length


def test_modernbert_counts_its_window_only_under_flash_attention():
    model = tiny("modernbert")
    shape = BatchShape(2, 16, masked=4)
    full = model.train_flops(shape)
    model.model.config._attn_implementation = "flash_attention_2"
    windowed = model.train_flops(shape)
    # layer 1 of 2 is local (window 8: 9 keys instead of 16): 3 x 4·(16 - 9)·h per position
    assert full - windowed == 3 * 2 * 16 * 4 * (16 - 9) * 32


def test_the_peak_table():
    assert known_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert known_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert known_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert known_peak_tflops("NVIDIA A10") == 125.0
    assert known_peak_tflops("NVIDIA L4") == 121.0
    assert known_peak_tflops("NVIDIA L40S") == 362.0
    assert known_peak_tflops("NVIDIA H200") == 989.4
    assert known_peak_tflops("Tesla V100-SXM2-16GB") == 125.0
    assert known_peak_tflops("NVIDIA GeForce RTX 4090") == 165.2
    assert known_peak_tflops("NVIDIA A10G") is None and known_peak_tflops("Some Future GPU") is None
    assert device_peak_tflops(torch.device("cpu"))[0] is None
    assert device_peak_tflops(torch.device("cpu"), 2.0)[0] == 2.0


def test_mfu_only_with_a_peak():
    without = throughput_scalars(tokens=1000, flops=4e12, data_wait=0.5, elapsed=2.0, peak_tflops=None)
    assert without == {"train/tokens_per_second": 500.0, "train/tflops_per_device": 2.0,
                       "train/data_wait_fraction": 0.25}
    with_peak = throughput_scalars(tokens=1000, flops=4e12, data_wait=0.5, elapsed=2.0, peak_tflops=8.0)
    assert with_peak["train/mfu"] == 0.25


def test_every_family_declares_its_count():
    """The generic count fits a plain decoder only; a family whose shapes it misses must declare its own."""
    generic = [name for name in family_names() if get_family(name).forward_flops is None]
    assert generic == ["gpt"]


def test_a_run_logs_tflops_and_mfu_and_its_summary_reports_them(sample_corpus, tiny_tokenizer_dir, parameter_file,  # noqa: F811
                                                                 tmp_path, caplog):
    import json

    from lmpretrain.trainer import train
    from tests.test_run_pretraining import make_args

    out = tmp_path / "with_peak"
    summary = train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", train_steps=3,
                              peak_tflops=0.5))
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/loss" in r]
    assert len(logged) == 3
    for row in logged:
        assert row["train/tflops_per_device"] > 0 and 0 <= row["train/data_wait_fraction"] < 1
        assert row["train/mfu"] == pytest.approx(row["train/tflops_per_device"] / 0.5)
    written = json.loads((out / "train_summary.json").read_text())
    for key in ("tokens_per_second", "tflops_per_device", "mfu", "data_wait_fraction"):
        assert written[key] == summary[key] and summary[key] >= 0, key
    # both are rounded to 6 decimals in the summary: tflops' rounding error is doubled by the division by 0.5
    assert summary["mfu"] == pytest.approx(summary["tflops_per_device"] / 0.5, abs=1.5e-6)

    caplog.clear()
    caplog.set_level(logging.INFO, logger="lmpretrain.trainer")
    out = tmp_path / "cpu"
    summary = train(make_args(sample_corpus, tiny_tokenizer_dir, out, parameter_file, "bert-test", train_steps=2))
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert not any("train/mfu" in r for r in rows) and "mfu" not in summary and summary["tflops_per_device"] > 0
    said = [r.getMessage() for r in caplog.records if "train/mfu not logged" in r.getMessage()]
    assert len(said) == 1 and "--peak_tflops" in said[0]


def test_a_bad_peak_is_one_error(sample_corpus, tiny_tokenizer_dir, parameter_file, tmp_path):  # noqa: F811
    from lmpretrain.errors import UserError
    from lmpretrain.prepare import prepare_run
    from tests.test_run_pretraining import make_args

    with pytest.raises(UserError, match="--peak_tflops must be a positive number"):
        prepare_run(make_args(sample_corpus, tiny_tokenizer_dir, tmp_path / "out", parameter_file, "bert-test",
                              peak_tflops=0.0))
