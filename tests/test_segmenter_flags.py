"""The original's word-segmenter flags: ``--word_tokenizer`` next to ``--mecab_dic_type`` (and its alias
``--mecab_dic``), contradicting combinations, ``--mecab_option`` with a user dictionary through AutoTokenizer, dirs
written before these flags, and Juman++ (an error saying what to install where its binary is absent)."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import AutoTokenizer

from lmpretrain.errors import UserError
from lmpretrain.tokenization import META_FILE, FastEncoder, TokenizerSpec, train_tokenizer, word_tokenizer_of
from lmpretrain.tokenization.segmenters import get_segmenter
from lmpretrain.tokenization.segmenters import mecab as mecab_module
from tests.test_bad_input import check_one_clear_error, run_in_process
from tests.test_tokenization import EDGE_CASES, first_difference, reference_ids, sample_lines

SMALL = {"vocab_size": 2000, "min_frequency": 1, "limit_alphabet": 1000, "num_unused_tokens": 5}


@pytest.mark.parametrize("flags,expected", [
    ({}, TokenizerSpec(mecab_dic_type="ipadic")),
    ({"mecab_dic_type": "unidic_lite"}, TokenizerSpec(mecab_dic_type="unidic_lite")),
    ({"mecab_dic": "unidic_lite"}, TokenizerSpec(mecab_dic_type="unidic_lite")),
    ({"mecab_dic": "ipadic", "mecab_dic_type": "ipadic"}, TokenizerSpec(mecab_dic_type="ipadic")),
    ({"word_tokenizer": "mecab"}, TokenizerSpec(mecab_dic_type="ipadic")),
    ({"word_tokenizer": "mecab", "mecab_dic_type": "unidic_lite", "mecab_option": "-N1"},
     TokenizerSpec(mecab_dic_type="unidic_lite", mecab_option="-N1")),
    ({"mecab_dic_type": "none"}, TokenizerSpec(mecab_dic_type="none")),
    ({"word_tokenizer": "none"}, TokenizerSpec(mecab_dic_type="none")),
    ({"word_tokenizer": "none", "mecab_dic_type": "none"}, TokenizerSpec(mecab_dic_type="none")),
    ({"word_tokenizer": "sudachi"}, TokenizerSpec(mecab_dic_type=None, word_tokenizer="sudachi",
                                                  sudachi_split_mode="A", sudachi_dict_type="core")),
    ({"word_tokenizer": "sudachi", "sudachi_split_mode": "C", "mecab_dic_type": ""},
     TokenizerSpec(mecab_dic_type=None, word_tokenizer="sudachi", sudachi_split_mode="C", sudachi_dict_type="core")),
    ({"word_tokenizer": "juman"}, TokenizerSpec(mecab_dic_type=None, word_tokenizer="juman")),
])
def test_flags_resolve_to_one_spec_per_tokenizer(flags, expected):
    """MeCab and none keep the spec they had before --word_tokenizer existed, whichever flags name them."""
    assert TokenizerSpec.from_flags(**flags) == expected
    assert TokenizerSpec(word_tokenizer="none", mecab_dic_type="ipadic") == TokenizerSpec(mecab_dic_type="none")


@pytest.mark.parametrize("flags,message", [
    ({"word_tokenizer": "mecab", "mecab_dic_type": "none"}, "--word_tokenizer mecab and --mecab_dic_type none"),
    ({"word_tokenizer": "none", "mecab_dic_type": "ipadic"},
     "--mecab_dic_type is for MeCab, not --word_tokenizer none"),
    ({"word_tokenizer": "sudachi", "mecab_option": "-N1"}, "--mecab_option is for MeCab, not --word_tokenizer sudachi"),
    ({"word_tokenizer": "juman", "sudachi_split_mode": "A"}, "--sudachi_split_mode needs --word_tokenizer sudachi"),
    ({"mecab_dic": "ipadic", "mecab_dic_type": "unidic_lite"}, "--mecab_dic ipadic and --mecab_dic_type unidic_lite"),
    ({"word_tokenizer": "spacy"}, "--word_tokenizer 'spacy' is not one of mecab, sudachi, juman, none"),
])
def test_contradicting_flags_are_one_error(flags, message):
    with pytest.raises(UserError) as error:
        TokenizerSpec.from_flags(**flags)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_script_accepts_the_original_names(tmp_path, sample_corpus, capsys):
    argv = ["--input_file", str(sample_corpus), "--model_dir", str(tmp_path / "tok"), "--vocab_size", "2000",
            "--min_frequency", "1", "--num_files", "1", "--word_tokenizer", "mecab", "--mecab_dic", "unidic_lite"]
    code, err = run_in_process("train_tokenizer.py", argv, capsys)
    assert code in (0, None), err
    meta = json.loads((tmp_path / "tok" / META_FILE).read_text(encoding="utf-8"))
    assert (meta["word_tokenizer"], meta["mecab_dic_type"]) == ("mecab", "unidic_lite")
    code, err = run_in_process("train_tokenizer.py", argv[:-4] + ["--word_tokenizer", "mecab", "--mecab_dic_type",
                                                                  "none"], capsys)
    check_one_clear_error(code, err, "--word_tokenizer mecab and --mecab_dic_type none contradict each other")


@pytest.mark.parametrize("dic", ["ipadic", "none"])
def test_a_dir_written_before_the_new_flags_is_the_same_settings(tmp_path, sample_corpus, dic):
    """Its recorded spec and metadata lack word_tokenizer and the sudachi fields: retraining with the same flags
    replaces it (same settings), and it still loads with the same ids."""
    directory = tmp_path / "tok"
    spec = TokenizerSpec.from_flags(mecab_dic_type=dic, **SMALL)
    train_tokenizer([str(sample_corpus)], directory, spec, num_workers=1)
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    for key in ("word_tokenizer", "sudachi_split_mode", "sudachi_dict_type"):
        del meta["spec"][key]
    del meta["word_tokenizer"]
    (directory / META_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    assert word_tokenizer_of(meta) == ("mecab" if dic == "ipadic" else "none") and word_tokenizer_of({}) is None
    texts = sample_lines(sample_corpus)[:40] + EDGE_CASES
    with FastEncoder.from_pretrained(directory) as encoder:
        ids = encoder.encode_batch(texts)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    assert first_difference(texts, ids, reference_ids(tokenizer, texts, False)) is None
    for flags in ({"mecab_dic_type": dic}, {"word_tokenizer": "mecab" if dic == "ipadic" else "none"}):
        train_tokenizer([str(sample_corpus)], directory, TokenizerSpec.from_flags(**flags, **SMALL), num_workers=1)
    with pytest.raises(UserError, match="holds a different tokenizer"):
        train_tokenizer([str(sample_corpus)], directory, TokenizerSpec.from_flags(word_tokenizer="sudachi", **SMALL),
                        num_workers=1)


# ---- --mecab_option with a user dictionary ------------------------------------------------------------------------

USER_WORD = "猫である語"


@pytest.fixture(scope="module")
def user_dictionary(tmp_path_factory):
    """A one-word MeCab user dictionary for ipadic, compiled with fugashi's bundled mecab-dict-index."""
    import fugashi

    root = tmp_path_factory.mktemp("userdic")
    (root / "user.csv").write_text(f"{USER_WORD},1285,1285,100,名詞,固有名詞,一般,*,*,*,{USER_WORD},ネコデアルゴ,"
                                   f"ネコデアルゴ\n", encoding="utf-8")
    directory = mecab_module.dictionary_dir("ipadic")
    fugashi.build_dictionary(f'mecab-dict-index -d "{directory}" -u "{root / "user.dic"}" -f utf-8 -t utf-8 '
                             f'"{root / "user.csv"}"')
    if not (root / "user.dic").is_file():
        pytest.skip("fugashi could not compile a user dictionary here")
    return root / "user.dic"


@pytest.mark.parametrize("algorithm", ["wordpiece", "unigram"])
def test_a_user_dictionary_through_mecab_option_reaches_autotokenizer(user_dictionary, tmp_path, sample_corpus,
                                                                       algorithm):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(sample_corpus.read_text(encoding="utf-8") + f"吾輩は{USER_WORD}を話す。\n" * 5, encoding="utf-8")
    spec = TokenizerSpec.from_flags(word_tokenizer="mecab", mecab_option=f"-u {user_dictionary}",
                                    tokenizer_type=algorithm, **SMALL)
    train_tokenizer([str(corpus)], tmp_path / "tok", spec, num_workers=1)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert tokenizer.mecab_kwargs["mecab_option"] == f"-u {user_dictionary}"
    assert USER_WORD in tokenizer.word_tokenizer.tokenize(f"吾輩は{USER_WORD}を話す")
    plain = get_segmenter("mecab", {"mecab_dic_type": "ipadic", "mecab_option": None})
    assert USER_WORD not in plain.words(f"吾輩は{USER_WORD}を話す")  # the user dictionary is what splits it so
    texts = [f"吾輩は{USER_WORD}を話す", *sample_lines(sample_corpus)[:40], *EDGE_CASES]
    with FastEncoder.from_pretrained(tmp_path / "tok") as encoder:
        assert first_difference(texts, encoder.encode_batch(texts), reference_ids(tokenizer, texts, False)) is None
        (ids, starts), = encoder.encode_batch_with_word_starts([f"吾輩は{USER_WORD}を話す"])
    assert sum(starts) == len(tokenizer.word_tokenizer.tokenize(f"吾輩は{USER_WORD}を話す"))


# ---- Juman++ ------------------------------------------------------------------------------------------------------

def test_juman_without_its_binary_says_what_to_install(tmp_path, sample_corpus, capsys):
    if shutil.which("jumanpp") is not None:
        pytest.skip("jumanpp is installed here")
    argv = ["--input_file", str(sample_corpus), "--model_dir", str(tmp_path / "tok"), "--num_files", "1",
            "--word_tokenizer", "juman"]
    code, err = run_in_process("train_tokenizer.py", argv, capsys)
    check_one_clear_error(code, err, "--word_tokenizer juman: the jumanpp binary is not installed")
    assert "pip install rhoknp" in err and "github.com/ku-nlp/jumanpp" in err
    assert not (tmp_path / "tok").exists()


def test_juman_ids_equal_autotokenizer(tmp_path, sample_corpus):
    if shutil.which("jumanpp") is None:
        pytest.skip("needs the jumanpp binary (not installable with pip)")
    pytest.importorskip("rhoknp")
    spec = TokenizerSpec.from_flags(word_tokenizer="juman", **SMALL)
    train_tokenizer([str(sample_corpus)], tmp_path / "tok", spec, num_workers=1)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert tokenizer.word_tokenizer_type == "jumanpp"
    texts = [t for t in sample_lines(sample_corpus)[:100] if t.strip()]
    with FastEncoder.from_pretrained(tmp_path / "tok") as encoder:
        assert first_difference(texts, encoder.encode_batch(texts), reference_ids(tokenizer, texts, False)) is None
