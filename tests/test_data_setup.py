"""The collators a run builds from its preset and tokenizer."""

from lmpretrain.data_setup import make_collator
from lmpretrain.models import get_family, parse_preset
from lmpretrain.run_config import TrainArgs
from lmpretrain.run_description import describe
from lmpretrain.tokenization import FastEncoder

PRESET = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
          "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 8}, "train-steps": 2}


def test_unused_tokens_are_never_masked_nor_drawn_as_replacements(tiny_tokenizer_dir):
    with FastEncoder.from_pretrained(tiny_tokenizer_dir) as encoder:
        unused = encoder.unused_token_ids
        flags = TrainArgs(input_file=["c.txt"], tokenizer_dir="t", model_dir="m", model_type="bert-x")
        data = describe(flags, parse_preset("bert-x", PRESET, "p"), get_family("bert")).data
        collator = make_collator("mlm", data, encoder, seed=0)
    assert len(unused) == 5  # the fixture's --num_unused_tokens
    drawable = set(collator.random_ids.tolist())
    assert not drawable & set(unused)
    assert not drawable & {encoder.pad_token_id, encoder.cls_token_id, encoder.sep_token_id, encoder.mask_token_id,
                           encoder.unk_token_id}
    assert len(drawable) == encoder.vocab_size - 5 - len(unused)
