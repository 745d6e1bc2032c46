"""FastEncoder against the real transformers AutoTokenizer, for every (dictionary, algorithm) combination.

The reference is always transformers' own class loaded from the saved dir (BertJapaneseTokenizer with MeCab,
the tokenizer.json backend without), never our code.
"""

from __future__ import annotations

import json
import pickle
import random
import sys
import types

import pytest
from transformers import AutoTokenizer, BertJapaneseTokenizer

from lmpretrain.errors import UserError
from lmpretrain.tokenization import (
    META_FILE,
    FastEncoder,
    TokenizerSpec,
    normalization,
    tokenizer_fingerprint,
    train_tokenizer,
)
from lmpretrain.tokenization import encoder as encoder_module
from lmpretrain.tokenization.segmenters import mecab

DICS = ("ipadic", "unidic_lite", "none")
ALGORITHMS = ("wordpiece", "bpe", "unigram")
COMBOS = [(d, a) for d in DICS for a in ALGORITHMS]

EDGE_CASES = [
    # NFKC: full-width Latin and digits, squared era name, half-width kana (with voiced marks), ligature, circled
    "ＡＢＣ１２３とａｂｃ", "㍻３１年に", "ﾊﾝｶｸｶﾀｶﾅとｶﾞｷﾞｸﾞ", "ﬁ①Ⅻ㌔", "ｶﾞｰﾃﾞﾝ",
    "絵文字😀👍🏽🇯🇵です", "家族👨‍👩‍👧",
    # very long words: > 100 characters is [UNK] for WordPiece; exactly 100 is not
    "あ" * 150, "x" * 101, "y" * 100, "ｱ" * 120, "Supercalifragilisticexpialidocious" * 4,
    # Latin text and digits, with sentencepiece's digit-comma rule
    "The quick brown fox jumps over the lazy dog.", "Hello, World! It's 9:30 a.m.", "1,400円", "人口は1,234,567人",
    "12,34,5", "1,", ",1", "a1,b2,", "１，４００", "3.14159と2,5",
    # whitespace: runs, tabs, empty, ideographic space, line breaks inside a text
    "a  b   c", "\tタブ\tと\tスペース ", "", " ", "   \t ", "\u3000全角スペース\u3000", "改行\r\nを含む",
    "段落\u2028区切り",
    # unknown and odd characters
    "\U0001F9FF", "\ue000私用領域", "\u0378未割当", "NUL\x00の後は", "\x07制御\x1c文字", "\u200bゼロ幅", "\ufeffBOM",
    "é と é", "x``y''z", "——「」『』…‥",
    # special tokens written in the text are split off as transformers does; look-alikes are not
    "[MASK]と[SEP]を含む", "東京[UNK]都", "[unused0]", "［ＭＡＳＫ］", "[[CLS]]", "[mask]",
]

_POOL = (list("あいうえおかきくけこアイウエオ漢字東京都日本語、。「」・ー") + list("abcXYZ019,.!?-_'\"`()[]{}#@&%$")
         + [" ", "  ", "\t", "\u3000", "\u00a0", "\x1c", "\x85", "\u2028", "\u200b", "ＡＢＣ", "１２３", "，", "㍻",
            "ﾊﾝｶｸ", "ｶﾞ", "😀", "👍🏽", "\U0001F9FF", "\ue000", "\u0301", "é", "ﬁ", "①", "1,400", "1,", "``", "''",
            "x" * 30, "あ" * 40, "\x00", "𠮷", "[MASK]", "[SEP]", "[unused0]", "［ＭＡＳＫ］"])


def fuzz_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_POOL) for _ in range(rng.randint(0, 20))) for _ in range(count)]


def sample_lines(sample_corpus) -> list[str]:
    return sample_corpus.read_text(encoding="utf-8").split("\n")  # every line, blank ones included


@pytest.fixture(scope="module")
def loaded(tokenizer_factory):
    """(dic, algorithm) -> (tokenizer dir, AutoTokenizer, FastEncoder), built once per module."""
    cache: dict = {}

    def get(dic: str, algorithm: str):
        if (dic, algorithm) not in cache:
            directory = tokenizer_factory(dic, algorithm)
            cache[dic, algorithm] = (directory, AutoTokenizer.from_pretrained(str(directory)),
                                     FastEncoder.from_pretrained(directory))
        return cache[dic, algorithm]

    yield get
    for _, _, encoder in cache.values():
        encoder.close()


def reference_ids(tokenizer, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    return [tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"] for text in texts]


def first_difference(texts, ours, theirs):
    for text, mine, reference in zip(texts, ours, theirs):
        if mine != reference:
            return f"{text!r}: FastEncoder {mine} != AutoTokenizer {reference}"
    return None


def assert_same_ids(encoder, tokenizer, texts: list[str]) -> None:
    """FastEncoder's ids equal AutoTokenizer's on every text, without and with the special tokens."""
    for special in (False, True):
        ours = encoder.encode_batch(texts, add_special_tokens=special)
        assert first_difference(texts, ours, reference_ids(tokenizer, texts, special)) is None


# ---- the saved dir ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dic,algorithm", COMBOS)
def test_saved_dir_loads_with_autotokenizer(loaded, dic, algorithm):
    directory, tokenizer, encoder = loaded(dic, algorithm)
    if dic == "none":
        assert tokenizer.is_fast and (directory / "tokenizer.json").is_file()
    else:
        assert isinstance(tokenizer, BertJapaneseTokenizer)
        assert tokenizer.word_tokenizer_type == "mecab" and tokenizer.mecab_kwargs["mecab_dic"] == dic
        assert tokenizer.subword_tokenizer_type == ("wordpiece" if algorithm == "wordpiece" else "sentencepiece")
    vocab = tokenizer.get_vocab()
    assert [f"[unused{i}]" in vocab for i in range(6)] == [True] * 5 + [False]  # the fixture asks for 5
    for name in ("pad", "unk", "cls", "sep", "mask"):
        assert getattr(tokenizer, f"{name}_token_id") == getattr(encoder, f"{name}_token_id")
    assert len(tokenizer) == encoder.vocab_size <= 2000

    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    assert meta["normalization"] == "NFKC" and meta["mecab_option"] is None
    assert meta["spec"]["mecab_dic_type"] == dic and meta["spec"]["num_unused_tokens"] == 5
    if dic != "none":
        assert meta["dictionary"]["name"] == dic
        assert meta["dictionary"]["package_version"]  # e.g. ipadic 1.0.0
        assert meta["dictionary"]["dictionary_version"]  # MeCab's own dictionary version, e.g. [102]


# ---- ids ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dic,algorithm", COMBOS)
def test_ids_equal_autotokenizer(loaded, sample_corpus, dic, algorithm):
    _, tokenizer, encoder = loaded(dic, algorithm)
    texts = sample_lines(sample_corpus) + EDGE_CASES + fuzz_texts(300, seed=COMBOS.index((dic, algorithm)))
    for add_special_tokens in (False, True):
        ours = encoder.encode_batch(texts, add_special_tokens=add_special_tokens)
        theirs = reference_ids(tokenizer, texts, add_special_tokens)
        assert first_difference(texts, ours, theirs) is None
    assert any(tokenizer.unk_token_id in ids for ids in theirs)  # the edge cases do reach [UNK]
    assert all(ids[0] == encoder.cls_token_id and ids[-1] == encoder.sep_token_id for ids in ours)


def test_edge_cases_do_what_they_claim(loaded):
    """The edge cases exercise transformers' rules, so equality above is not vacuous."""
    _, wordpiece, _ = loaded("ipadic", "wordpiece")
    assert wordpiece.subword_tokenizer.tokenize("x" * 101) == ["[UNK]"]  # (MeCab itself cuts unknown words at 24)
    assert wordpiece.tokenize("ＡＢＣ１２３") == wordpiece.tokenize("ABC123")  # NFKC
    assert wordpiece.tokenize("[MASK]と")[0] == "[MASK]" and "[MASK]" not in wordpiece.tokenize("［ＭＡＳＫ］")
    assert wordpiece.tokenize("NUL\x00の後は") == wordpiece.tokenize("NUL")  # MeCab's node API stops at NUL


@pytest.mark.parametrize("algorithm", ["wordpiece", "unigram"])
def test_mecab_option_reaches_both_tokenizers(tmp_path, sample_corpus, algorithm):
    """--mecab_option is recorded for AutoTokenizer; with longer unknown words the 100-character rule is reached."""
    spec = TokenizerSpec(mecab_dic_type="ipadic", mecab_option="--max-grouping-size=1000", tokenizer_type=algorithm,
                         vocab_size=2000, min_frequency=1, limit_alphabet=1000, num_unused_tokens=2)
    train_tokenizer([str(sample_corpus)], tmp_path / "tok", spec, num_workers=1)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert tokenizer.mecab_kwargs["mecab_option"] == "--max-grouping-size=1000"
    assert tokenizer.word_tokenizer.tokenize("x" * 101) == ["x" * 101]  # one MeCab word (24 characters without)
    texts = sample_lines(sample_corpus)[:50] + EDGE_CASES
    with FastEncoder.from_pretrained(tmp_path / "tok") as encoder:
        assert first_difference(texts, encoder.encode_batch(texts), reference_ids(tokenizer, texts, False)) is None


def test_sentencepiece_digit_comma_rule(tmp_path, tokenizer_factory):
    """MeCab never leaves "1," in one word, so build a model that has such pieces and compare word by word."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.bert_japanese.tokenization_bert_japanese import SentencepieceTokenizer

    from lmpretrain.tokenization.subword.spm_export import write_sentencepiece_model

    rust = Tokenizer(models.BPE(unk_token="[UNK]"))
    rust.pre_tokenizer = pre_tokenizers.Metaspace()
    rust.train_from_iterator(["1,400 12,000 3,5 1,400円 a1,b ``q''"] * 50, trainers.BpeTrainer(
        vocab_size=60, min_frequency=1, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False))
    write_sentencepiece_model(rust, "bpe", tmp_path / "spiece.model")
    reference = SentencepieceTokenizer(vocab=str(tmp_path / "spiece.model"), unk_token="[UNK]")
    words = ["1,400", "12,000", "3,5", "a1,b", "1,", "``q''", "1,400円"]
    assert any(len(p) > 1 and p[-1] == "," and p[-2].isdigit()  # the rule has something to do
               for w in words for p in reference.sp_model.encode(w, out_type=str))
    with FastEncoder.from_pretrained(tokenizer_factory("ipadic", "bpe")) as encoder:
        encoder._spm = reference.sp_model
        for word in words:
            assert list(encoder._spm_ids(word)) == reference.sp_model.piece_to_id(reference.tokenize(word)), word


# ---- word boundaries ----------------------------------------------------------------------------------------------

def reference_words_and_starts(tokenizer, text: str) -> tuple[list[int], list[bool]]:
    """MeCab words through transformers' own word and subword tokenizers; a word's first subword starts it."""
    ids, starts = [], []
    for surface in tokenizer.word_tokenizer.tokenize(text):
        for word in surface.split():  # both subword tokenizers split a surface on whitespace
            pieces = tokenizer.convert_tokens_to_ids(tokenizer.subword_tokenizer.tokenize(word))
            ids += pieces
            starts += [True] + [False] * (len(pieces) - 1)
    return ids, starts


@pytest.mark.parametrize("dic,algorithm", [c for c in COMBOS if c[0] != "none"])
def test_word_starts_are_mecab_words(loaded, sample_corpus, dic, algorithm):
    _, tokenizer, encoder = loaded(dic, algorithm)
    texts = [t for t in sample_lines(sample_corpus) + EDGE_CASES + fuzz_texts(200, seed=7) if "[" not in t]
    encoded = encoder.encode_batch_with_word_starts(texts)
    for text, (ids, starts) in zip(texts, encoded):
        expected_ids, expected_starts = reference_words_and_starts(tokenizer, text)
        assert (ids, starts) == (expected_ids, expected_starts), text
    ids, starts = encoder.encode_batch_with_word_starts(["東京都に住んでいます"])[0]
    words = tokenizer.word_tokenizer.tokenize("東京都に住んでいます")
    assert sum(starts) == len(words) > 3 and starts[0]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_word_starts_without_mecab_follow_the_pre_tokenizer(loaded, sample_corpus, algorithm):
    _, tokenizer, encoder = loaded("none", algorithm)
    backend = tokenizer.backend_tokenizer
    texts = [t for t in sample_lines(sample_corpus)[:100] + ["Hello, World! 東京 1,400"] if t.strip()]
    for text, (ids, starts) in zip(texts, encoder.encode_batch_with_word_starts(texts)):
        words = backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))
        assert len(ids) == len(starts) and starts[0] and sum(starts) == len(words), text


def test_special_tokens_in_text_are_their_own_words(loaded):
    _, tokenizer, encoder = loaded("ipadic", "wordpiece")
    (ids, starts), = encoder.encode_batch_with_word_starts(["東京[MASK]都"])
    assert ids == tokenizer("東京[MASK]都", add_special_tokens=False)["input_ids"]
    at = ids.index(encoder.mask_token_id)
    assert starts[0] and starts[at] and starts[at + 1]


# ---- the encoder as other modules use it --------------------------------------------------------------------------

@pytest.mark.parametrize("dic,algorithm", [("ipadic", "wordpiece"), ("unidic_lite", "unigram")])
def test_worker_pool_gives_the_same_result(tokenizer_factory, sample_corpus, dic, algorithm):
    directory = tokenizer_factory(dic, algorithm)
    texts = sample_lines(sample_corpus) * 2  # above the size where the pool is used
    assert len(texts) >= encoder_module._PARALLEL_MIN_TEXTS
    with FastEncoder.from_pretrained(directory, num_workers=1) as one, \
            FastEncoder.from_pretrained(directory, num_workers=2) as two:
        assert two.encode_batch(texts) == one.encode_batch(texts)
        assert two.encode_batch_with_word_starts(texts) == one.encode_batch_with_word_starts(texts)
        assert two._pool is not None  # the pool really ran
    assert two._pool is None  # and was closed


@pytest.mark.parametrize("algorithm", ["wordpiece", "bpe"])
def test_word_cache_is_bounded_and_exact(tokenizer_factory, sample_corpus, monkeypatch, algorithm):
    directory = tokenizer_factory("ipadic", algorithm)
    texts = sample_lines(sample_corpus)
    with FastEncoder.from_pretrained(directory) as unbounded:
        expected = unbounded.encode_batch_with_word_starts(texts)
        learned = len(unbounded._ids) - len(unbounded._known)
        assert learned > 100
    monkeypatch.setattr(encoder_module, "MAX_CACHED_WORDS", 16)
    with FastEncoder.from_pretrained(directory) as bounded:
        assert bounded.encode_batch_with_word_starts(texts) == expected
        assert len(bounded._ids) <= 16 + len(bounded._known) and len(bounded._starts) == len(bounded._ids)


def test_encoder_pickles_and_fingerprints(tokenizer_factory):
    wordpiece, bpe = tokenizer_factory("ipadic", "wordpiece"), tokenizer_factory("ipadic", "bpe")
    with FastEncoder.from_pretrained(wordpiece) as encoder:
        copy = pickle.loads(pickle.dumps(encoder))
        assert copy.encode_batch(["吾輩は猫である。"]) == encoder.encode_batch(["吾輩は猫である。"])
        assert copy.fingerprint == encoder.fingerprint == tokenizer_fingerprint(wordpiece)
    assert tokenizer_fingerprint(wordpiece) != tokenizer_fingerprint(bpe)


def test_from_pretrained_rejects_what_is_not_a_tokenizer_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        FastEncoder.from_pretrained(tmp_path / "missing")
    with pytest.raises(UserError, match="not a tokenizer dir"):
        FastEncoder.from_pretrained(tmp_path)


# ---- dictionaries -------------------------------------------------------------------------------------------------

def test_unidic_not_installed_is_one_clear_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "unidic", None)  # import unidic -> ModuleNotFoundError
    with pytest.raises(UserError) as error:
        mecab.dictionary_dir("unidic")
    message = str(error.value)
    assert "not installed" in message and "pip install unidic" in message and "python -m unidic download" in message
    assert "unidic_lite" in message


def test_unidic_not_downloaded_is_one_clear_message(monkeypatch, tmp_path, sample_corpus):
    fake = types.ModuleType("unidic")
    fake.DICDIR = str(tmp_path / "dicdir")  # what the unidic package points at before `python -m unidic download`
    monkeypatch.setitem(sys.modules, "unidic", fake)
    with pytest.raises(UserError) as error:
        mecab.dictionary_dir("unidic")
    message = str(error.value)
    assert "not been downloaded" in message and "python -m unidic download" in message and fake.DICDIR in message
    with pytest.raises(UserError, match="python -m unidic download"):
        train_tokenizer([str(sample_corpus)], tmp_path / "tok", TokenizerSpec(mecab_dic_type="unidic"), num_workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing started


def test_fast_nfkc_is_unicodedata_nfkc():
    """normalization.nfkc replaces characters one by one before the full algorithm: check it on what could go wrong
    (compatibility characters next to combining marks, half-width voiced marks, Hangul jamo, astral characters)."""
    import unicodedata

    changing = [chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF
                and unicodedata.normalize("NFKC", chr(c)) != chr(c)]
    combining = [chr(c) for c in range(0x300, 0x370)] + ["\u3099", "\u309a", "\uff9e", "\uff9f"]
    others = list("かカｶがe ａ1") + ["\u1100", "\u1161", "\u11a8", "\uac00", "\U0001d400", "\U0001f600", "\u2028"]
    rng = random.Random(11)
    pool = changing + combining * 20 + others * 20
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 12))) for _ in range(30000)] + changing
    assert [normalization.nfkc(t) for t in texts] == [unicodedata.normalize("NFKC", t) for t in texts]


def test_bad_mecab_option_is_one_line():
    with pytest.raises(UserError) as error:
        mecab.MecabSegmenter("ipadic", "--no-such-option")
    assert "--no-such-option" in str(error.value) and "\n" not in str(error.value)


def test_spec_validation_reports_every_problem():
    spec = TokenizerSpec(mecab_dic_type="jumandic", tokenizer_type="bytes", vocab_size=3, num_unused_tokens=-1)
    with pytest.raises(UserError) as error:
        spec.validate()
    for flag in ("--mecab_dic_type", "--tokenizer_type", "--num_unused_tokens", "--vocab_size"):
        assert flag in str(error.value)
    assert TokenizerSpec(tokenizer_type="sentencepiece").algorithm == "bpe"


# ---- a corpus we did not tune on ----------------------------------------------------------------------------------

@pytest.mark.shared_corpus
@pytest.mark.parametrize("dic,algorithm", COMBOS)
def test_real_corpus_every_line(shared_corpus, tmp_path_factory, dic, algorithm):
    """Aozora Bunko text (a corpus nothing here was tuned on): FastEncoder == AutoTokenizer on every line."""
    corpus = shared_corpus("ja_aozora_small")
    lines = [line for line in corpus.read_text(encoding="utf-8").split("\n") if line.strip()]
    training = corpus
    if (dic, algorithm) == ("none", "unigram"):  # Unigram on unsegmented sentences trains slowly (~20 s for all)
        training = tmp_path_factory.mktemp("aozora-part") / "part.txt"
        training.write_text("\n".join(lines[:1500]) + "\n", encoding="utf-8")
    directory = tmp_path_factory.mktemp(f"aozora-{dic}-{algorithm}") / "tokenizer"
    spec = TokenizerSpec(mecab_dic_type=dic, tokenizer_type=algorithm, vocab_size=8000)
    train_tokenizer([str(training)], directory, spec, num_workers=2)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    with FastEncoder.from_pretrained(directory) as encoder:
        ours = encoder.encode_batch(lines, add_special_tokens=True)
    theirs = reference_ids(tokenizer, lines, add_special_tokens=True)
    assert first_difference(lines, ours, theirs) is None
    assert sum(map(len, ours)) > sum(map(len, lines)) / 4  # real subwords, not a degenerate tokenizer
