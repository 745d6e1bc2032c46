"""Masking on real text (issue 29, item 3): the collators each preset trains with, on instances of the bundled
Japanese sample built by our dataset code, select the preset's share of the maskable tokens, split them as the preset
says ([MASK] / random / kept), never select a special token or padding, and keep MeCab words whole; transformers'
``DataCollatorForLanguageModeling`` on the same batches is the reference (bench/bench_masking_shares.py measures the
same on ja_aozora_medium)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
from bench_masking_shares import CASES, measure_case  # noqa: E402


@pytest.fixture(scope="module")
def measured(tiny_tokenizer_dir, sample_corpus, tmp_path_factory):
    from transformers import AutoTokenizer

    from lmpretrain.tokenization import FastEncoder

    cache = tmp_path_factory.mktemp("shares") / "cache"
    hf_tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    with FastEncoder.from_pretrained(tiny_tokenizer_dir) as encoder:
        return {(preset, whole_word): measure_case(preset, whole_word, str(tiny_tokenizer_dir), str(sample_corpus),
                                                   str(cache), encoder, hf_tokenizer, instances=10_000, batch_size=32)
                for _, preset, whole_word in CASES}


@pytest.mark.parametrize("preset,whole_word", [(preset, whole_word) for _, preset, whole_word in CASES])
def test_the_preset_collator_masks_real_text_as_defined(measured, preset, whole_word):
    result = measured[(preset, whole_word)]
    ours, theirs = result["ours"], result["transformers"]
    assert result["rate"] == 0.15 and ours.selected > 1000, result  # every case here is the 15% preset rate
    # the rate: ours takes round(rate x maskable) per sequence (whole words: the nearer side of the last word)
    assert abs(ours.share - result["rate"]) < (0.002 if not whole_word else 0.006), ours.share
    assert abs(theirs.share - result["rate"]) < 0.01, theirs.share  # a Bernoulli per token: the same on average
    assert np.std(ours.row_shares) < np.std(theirs.row_shares)  # per sequence, ours is exact where theirs varies
    # what the selected tokens become: the preset's split (3.5 standard errors at these counts)
    for got, want in zip(ours.split(), result["split"]):
        assert abs(got - want) < 0.035, (ours.split(), result["split"])
    for got, want in zip(theirs.split(), result["split"]):
        assert abs(got - want) < 0.035, (theirs.split(), result["split"])
    # never selected; our random tokens are never special
    assert ours.selected_special == ours.selected_padding == ours.random_special == 0
    assert theirs.selected_special == theirs.selected_padding == 0
    if whole_word:  # every MeCab word fully selected or not at all, and many multi-token words taken whole
        assert ours.words > 1000 and ours.words_split == 0 and ours.multi_token_words_selected > 20, ours
    else:
        assert ours.words == 0
