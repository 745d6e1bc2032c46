"""Sudachi (split modes A / B / C, sudachidict_core) against transformers' own BertJapaneseTokenizer
(word_tokenizer_type "sudachi"): the saved dir loads with AutoTokenizer, its ids equal FastEncoder's on the sample,
the edge cases, fuzzed text and a real corpus; whole-word masking pretrains on Sudachi words; bad input is one line.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

pytest.importorskip("sudachipy")
from transformers import AutoTokenizer, BertJapaneseTokenizer  # noqa: E402

from lmpretrain.run_config import TrainArgs  # noqa: E402
from lmpretrain.tokenization import META_FILE, FastEncoder, TokenizerSpec, train_tokenizer  # noqa: E402
from lmpretrain.tokenization.segmenters import get_segmenter  # noqa: E402
from lmpretrain.trainer import train  # noqa: E402
from tests.test_bad_input import check_one_clear_error, run_in_process  # noqa: E402
from tests.test_tokenization import (  # noqa: E402
    EDGE_CASES,
    assert_same_ids,
    first_difference,
    fuzz_texts,
    reference_ids,
    reference_words_and_starts,
    sample_lines,
)

MODES = ("A", "B", "C")
SMALL = {"vocab_size": 2000, "min_frequency": 1, "limit_alphabet": 1000, "num_unused_tokens": 5}


@pytest.fixture(scope="module")
def sudachi(tmp_path_factory, sample_corpus):
    """(mode, algorithm) -> (tokenizer dir, AutoTokenizer, FastEncoder), built once per module."""
    cache: dict = {}

    def get(mode: str, algorithm: str = "wordpiece"):
        if (mode, algorithm) not in cache:
            directory = tmp_path_factory.mktemp(f"sudachi-{mode}-{algorithm}") / "tokenizer"
            spec = TokenizerSpec.from_flags(word_tokenizer="sudachi", sudachi_split_mode=mode,
                                            tokenizer_type=algorithm, **SMALL)
            train_tokenizer([str(sample_corpus)], directory, spec, num_workers=1)
            cache[mode, algorithm] = (directory, AutoTokenizer.from_pretrained(str(directory)),
                                      FastEncoder.from_pretrained(directory))
        return cache[mode, algorithm]

    yield get
    for _, _, encoder in cache.values():
        encoder.close()


@pytest.mark.parametrize("mode", MODES)
def test_the_saved_dir_is_a_sudachi_bert_japanese_tokenizer(sudachi, mode):
    directory, tokenizer, _ = sudachi(mode)
    assert isinstance(tokenizer, BertJapaneseTokenizer) and tokenizer.word_tokenizer_type == "sudachi"
    assert tokenizer.sudachi_kwargs == {"sudachi_split_mode": mode, "sudachi_dict_type": "core"}
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    assert meta["word_tokenizer"] == "sudachi" and meta["mecab_dic_type"] == "sudachi"
    dictionary = meta["dictionary"]
    assert dictionary["name"] == "sudachi_core" and dictionary["package"] == "sudachidict_core"
    assert dictionary["package_version"] and dictionary["sudachipy_version"] and dictionary["split_mode"] == mode
    assert meta["word_segmenter"]["options"] == {"sudachi_split_mode": mode, "sudachi_dict_type": "core"}
    assert meta["spec"]["word_tokenizer"] == "sudachi" and meta["spec"]["mecab_dic_type"] is None


def test_split_modes_differ_as_sudachi_says():
    words = {mode: get_segmenter("sudachi", {"sudachi_split_mode": mode}).words("選挙管理委員会") for mode in MODES}
    assert words == {"A": ["選挙", "管理", "委員", "会"], "B": ["選挙", "管理", "委員会"], "C": ["選挙管理委員会"]}


@pytest.mark.parametrize("mode,algorithm", [("A", "wordpiece"), ("B", "wordpiece"), ("C", "wordpiece"),
                                            ("C", "unigram")])
def test_ids_equal_autotokenizer(sudachi, sample_corpus, mode, algorithm):
    _, tokenizer, encoder = sudachi(mode, algorithm)
    texts = sample_lines(sample_corpus) + EDGE_CASES + fuzz_texts(300, seed=100 + MODES.index(mode))
    assert_same_ids(encoder, tokenizer, texts)


@pytest.mark.parametrize("mode", MODES)
def test_word_starts_are_sudachi_words(sudachi, sample_corpus, mode):
    _, tokenizer, encoder = sudachi(mode)
    texts = [t for t in sample_lines(sample_corpus) + EDGE_CASES + fuzz_texts(100, seed=17) if "[" not in t]
    for text, (ids, starts) in zip(texts, encoder.encode_batch_with_word_starts(texts)):
        assert (ids, starts) == reference_words_and_starts(tokenizer, text), text


def test_worker_pool_gives_the_same_result(sudachi, sample_corpus):
    directory, _, encoder = sudachi("C")
    texts = sample_lines(sample_corpus) * 2
    with FastEncoder.from_pretrained(directory, num_workers=2) as pooled:
        assert pooled.encode_batch_with_word_starts(texts) == encoder.encode_batch_with_word_starts(texts)


def test_a_line_too_long_for_sudachi_is_cut_at_sentence_ends(sample_corpus):
    """sudachipy refuses more than 49,149 bytes at once (transformers' SudachiTokenizer raises there): a longer line
    is cut after sentence ends and its pieces segmented one by one, which gives the words of its sentences."""
    sentences = [line for line in sample_lines(sample_corpus) if line.endswith("。")]
    line = "".join(sentences * 3)
    assert len(line.encode("utf-8")) > 49149
    segmenter = get_segmenter("sudachi", {"sudachi_split_mode": "A"})
    assert segmenter.words(line) == [w for s in sentences * 3 for w in segmenter.words(s)]
    assert len(segmenter.words("あ" * 20000)) > 0  # 60,000 bytes without a break: cut at a bounded length


@pytest.mark.shared_corpus
@pytest.mark.parametrize("mode", MODES)
def test_real_corpus_every_line(shared_corpus, tmp_path_factory, mode):
    """Aozora Bunko text (nothing here was tuned on it): FastEncoder == AutoTokenizer on every line."""
    corpus = shared_corpus("ja_aozora_small")
    lines = [line for line in corpus.read_text(encoding="utf-8").split("\n") if line.strip()]
    directory = tmp_path_factory.mktemp(f"aozora-sudachi-{mode}") / "tokenizer"
    spec = TokenizerSpec.from_flags(word_tokenizer="sudachi", sudachi_split_mode=mode, vocab_size=8000)
    train_tokenizer([str(corpus)], directory, spec, num_workers=2)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    with FastEncoder.from_pretrained(directory) as encoder:
        ours = encoder.encode_batch(lines, add_special_tokens=True)
    assert first_difference(lines, ours, reference_ids(tokenizer, lines, add_special_tokens=True)) is None
    assert sum(map(len, ours)) > sum(map(len, lines)) / 4


def test_whole_word_masking_pretrains_on_sudachi_words(sudachi, sample_corpus, tmp_path):
    directory, _, _ = sudachi("C")
    preset = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
              "attention-heads": 2, "warmup-steps": 1, "learning-rate": 2e-3, "batch-size": {"-1": 8},
              "train-steps": 3, "save-steps": 3, "logging-steps": 1}
    parameter_file = tmp_path / "parameter.json"
    parameter_file.write_text(json.dumps({"bert-test": preset}))
    out = tmp_path / "out"
    train(TrainArgs(input_file=[str(sample_corpus)], tokenizer_dir=str(directory), model_dir=str(out),
                    model_type="bert-test", parameter_file=str(parameter_file), num_workers=1, max_eval_samples=8,
                    do_whole_word_mask=True, word_tokenizer="sudachi", tokenizer_type="wordpiece"))
    assert json.loads((out / "train_summary.json").read_text())["step"] == 3
    loaded = AutoTokenizer.from_pretrained(str(out))
    assert isinstance(loaded, BertJapaneseTokenizer) and loaded.sudachi_kwargs["sudachi_split_mode"] == "C"


# ---- bad input: one error: line each ------------------------------------------------------------------------------

def _tokenizer_argv(tmp_path, sample_corpus, *flags) -> list[str]:
    return ["--input_file", str(sample_corpus), "--model_dir", str(tmp_path / "tok"), "--vocab_size", "2000",
            "--min_frequency", "1", "--num_files", "1", *flags]


@pytest.mark.parametrize("flags,message", [
    (["--word_tokenizer", "sudachi", "--sudachi_split_mode", "D"], "--sudachi_split_mode 'D' is not one of A, B, C"),
    (["--word_tokenizer", "sudachi", "--sudachi_dict_type", "huge"], "--sudachi_dict_type 'huge' is not one of"),
    (["--word_tokenizer", "sudachi", "--sudachi_dict_type", "full"],
     "the dictionary package 'sudachidict_full' is not installed (pip install sudachidict_full)"),
    (["--word_tokenizer", "sudachi", "--mecab_dic_type", "ipadic"], "--mecab_dic_type is for MeCab"),
    (["--sudachi_split_mode", "C"], "--sudachi_split_mode needs --word_tokenizer sudachi"),
])
def test_bad_sudachi_flags_are_one_line(flags, message, tmp_path, sample_corpus, capsys):
    if "full" in flags and importlib.util.find_spec("sudachidict_full") is not None:
        pytest.skip("sudachidict_full is installed here")
    code, err = run_in_process("train_tokenizer.py", _tokenizer_argv(tmp_path, sample_corpus, *flags), capsys)
    check_one_clear_error(code, err, message)
    assert not (tmp_path / "tok").exists()


def test_sudachi_not_installed_is_one_line(tmp_path, sample_corpus, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sudachipy", None)  # import sudachipy now raises ModuleNotFoundError
    code, err = run_in_process("train_tokenizer.py", _tokenizer_argv(tmp_path, sample_corpus, "--word_tokenizer",
                                                                      "sudachi"), capsys)
    check_one_clear_error(code, err, "the Python package 'sudachipy' is not installed "
                                     "(pip install sudachipy sudachidict_core)")


@pytest.mark.parametrize("flags,message", [
    (["--mecab_dic_type", "ipadic"], "--mecab_dic_type ipadic does not match the tokenizer"),
    (["--mecab_dic_type", "none"], "--mecab_dic_type none does not match the tokenizer"),
    (["--word_tokenizer", "mecab"], "--word_tokenizer mecab does not match the tokenizer"),
])
def test_pretraining_flags_are_checked_against_a_sudachi_dir(sudachi, sample_corpus, tmp_path, capsys, flags,
                                                             message):
    directory, _, _ = sudachi("A")
    parameter_file = tmp_path / "parameter.json"
    parameter_file.write_text(json.dumps({"bert-t": {
        "number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
        "attention-heads": 2, "warmup-steps": 1, "learning-rate": 2e-3, "batch-size": {"-1": 8},
        "train-steps": 2}}))
    argv = ["--input_file", str(sample_corpus), "--tokenizer_dir", str(directory), "--model_dir",
            str(tmp_path / "out"), "--parameter_file", str(parameter_file), "--model_type", "bert-t",
            "--num_workers", "1", *flags]
    code, err = run_in_process("run_pretraining.py", argv, capsys)
    check_one_clear_error(code, err, message)
    assert "(mecab_dic_type sudachi recorded" in err or "(word_tokenizer sudachi recorded" in err
