"""The collators a run builds from its preset and tokenizer."""

from lmpretrain.data_setup import make_collator
from lmpretrain.models import parse_preset
from lmpretrain.tokenization import FastEncoder

PRESET = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
          "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 8}, "train-steps": 2}


def test_unused_tokens_are_never_masked_nor_drawn_as_replacements(tiny_tokenizer_dir):
    with FastEncoder.from_pretrained(tiny_tokenizer_dir) as encoder:
        unused = encoder.unused_token_ids
        collator = make_collator(parse_preset("bert-x", PRESET, "p"), encoder, seed=0, whole_word=False)
    assert len(unused) == 5  # the fixture's --num_unused_tokens
    drawable = set(collator.random_ids.tolist())
    assert not drawable & set(unused)
    assert not drawable & {encoder.pad_token_id, encoder.cls_token_id, encoder.sep_token_id, encoder.mask_token_id,
                           encoder.unk_token_id}
    assert len(drawable) == encoder.vocab_size - 5 - len(unused)
