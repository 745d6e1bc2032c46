"""The word-segmenter interface: the registry, what a tokenizer dir records of its segmenter, and tokenizer dirs
written before the segmenter was recorded."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
from transformers import AutoTokenizer, BertJapaneseTokenizer

from lmpretrain.errors import UserError
from lmpretrain.tokenization import META_FILE, FastEncoder, read_vocabulary
from lmpretrain.tokenization.segmenters import SEGMENTERS, WordSegmenter, get_segmenter, segmenter_from_meta

TEXTS = ["吾輩は猫である。名前はまだ無い。", "東京都に住んでいます", "ＡＢＣ１２３ です…",
         "Hello, World! 東京 1,400", ""]


def test_registry_rejects_an_unknown_segmenter_by_name():
    with pytest.raises(UserError) as error:
        get_segmenter("spacy", {})
    message = str(error.value)
    assert "unknown word segmenter 'spacy'" in message and "mecab, sudachi" in message and "\n" not in message
    with pytest.raises(UserError, match="word segmenter mecab: bad options"):
        get_segmenter("mecab", {"no_such_option": 1})
    assert get_segmenter(None) is None and get_segmenter("none", {}) is None
    assert set(SEGMENTERS) == {"mecab", "sudachi", "juman"}


def test_a_segmenter_is_rebuilt_from_its_options_in_another_process():
    segmenter = get_segmenter("mecab", {"mecab_dic_type": "ipadic", "mecab_option": None})
    assert isinstance(segmenter, WordSegmenter) and segmenter.name == "mecab"
    copy = pickle.loads(pickle.dumps(segmenter))
    assert copy.options == segmenter.options and [copy.words(t) for t in TEXTS] == [segmenter.words(t) for t in TEXTS]
    assert segmenter.words("東京都に住んでいます")[0] == "東京"
    assert segmenter.transformers_config() == {
        "tokenizer_class": "BertJapaneseTokenizer", "word_tokenizer_type": "mecab",
        "mecab_kwargs": {"mecab_dic": "ipadic", "mecab_option": None}}


@pytest.mark.parametrize("dic", ["ipadic", "none"])
def test_the_tokenizer_dir_records_its_segmenter(tokenizer_factory, dic):
    directory = tokenizer_factory(dic, "wordpiece")
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert (meta["mecab_dic_type"], meta["tokenizer_type"], meta["mecab_option"]) == (dic, "wordpiece", None)
    if dic == "none":
        assert meta["word_segmenter"] is None and meta["dictionary"] == {"name": "none"}
        assert "word_tokenizer_type" not in config and config["tokenizer_class"] == "PreTrainedTokenizerFast"
        return
    recorded = meta["word_segmenter"]
    assert recorded["name"] == "mecab" and recorded["options"] == {"mecab_dic_type": "ipadic", "mecab_option": None}
    assert recorded["dictionary"] == meta["dictionary"] and recorded["dictionary"]["name"] == "ipadic"
    assert segmenter_from_meta(meta) == ("mecab", recorded["options"])
    # tokenizer_config.json holds what the segmenter maps itself to for transformers
    segmenter = get_segmenter(*segmenter_from_meta(meta))
    assert {k: config[k] for k in segmenter.transformers_config()} == segmenter.transformers_config()


@pytest.mark.parametrize("dic,algorithm", [("ipadic", "wordpiece"), ("ipadic", "unigram"), ("none", "bpe")])
def test_a_tokenizer_dir_of_the_previous_version_still_loads_with_the_same_ids(tokenizer_factory, tmp_path, dic,
                                                                               algorithm):
    directory = tokenizer_factory(dic, algorithm)
    old = tmp_path / "old"
    shutil.copytree(directory, old)
    meta = json.loads((old / META_FILE).read_text(encoding="utf-8"))
    del meta["word_segmenter"]  # as the previous version wrote it: the dictionary in mecab_dic_type only
    (old / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    assert segmenter_from_meta(meta) == ((None, {}) if dic == "none" else
                                         ("mecab", {"mecab_dic_type": dic, "mecab_option": None}))
    assert read_vocabulary(old, meta) == read_vocabulary(directory, json.loads((directory / META_FILE).read_text()))
    with FastEncoder.from_pretrained(directory) as new_encoder, FastEncoder.from_pretrained(old) as old_encoder:
        assert old_encoder.encode_batch_with_word_starts(TEXTS) == new_encoder.encode_batch_with_word_starts(TEXTS)
        ids = old_encoder.encode_batch(TEXTS, add_special_tokens=True)
    tokenizer = AutoTokenizer.from_pretrained(str(old))
    if dic != "none":
        assert isinstance(tokenizer, BertJapaneseTokenizer)
    assert [tokenizer(t)["input_ids"] for t in TEXTS] == ids


def test_a_recorded_segmenter_that_is_unknown_is_a_clear_error(tokenizer_factory, tmp_path):
    directory = tmp_path / "tok"
    shutil.copytree(tokenizer_factory("ipadic", "wordpiece"), directory)
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    meta["word_segmenter"]["name"] = "jumanpp"
    (directory / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(UserError, match="unknown word segmenter 'jumanpp'"):
        FastEncoder.from_pretrained(directory)
