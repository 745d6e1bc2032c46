"""SentencePiece-library tokenizers (``--tokenizer_type sentencepiece --spm_model_type unigram|bpe|char``): the
saved dir loads with AutoTokenizer, its ids equal FastEncoder's and the library's own (raw text) or transformers'
BertJapaneseTokenizer's (MeCab words) on the sample, edge cases and fuzzed text; pieces never cross a word; byte
fallback round-trips held-out Japanese exactly and a causal model trained with it generates; bad input is one line.
"""

from __future__ import annotations

import sys
import unicodedata

import pytest

pytest.importorskip("sentencepiece")
import sentencepiece  # noqa: E402
from transformers import AutoTokenizer, BertJapaneseTokenizer  # noqa: E402

from lmpretrain.errors import UserError  # noqa: E402
from lmpretrain.tokenization import META_FILE, FastEncoder, TokenizerSpec, read_meta, train_tokenizer  # noqa: E402
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

MODEL_TYPES = ("unigram", "bpe", "char")
SMALL = {"vocab_size": 2000, "num_unused_tokens": 5}
COMBOS = [(dic, model_type) for dic in ("none", "ipadic") for model_type in MODEL_TYPES]


def spm_spec(dic: str = "none", model_type: str = "unigram", **spm) -> TokenizerSpec:
    """``dic``: a --mecab_dic_type, or "sudachi" (split mode C)."""
    segmenter = ({"word_tokenizer": "sudachi", "sudachi_split_mode": "C"} if dic == "sudachi"
                 else {"mecab_dic_type": dic})
    return TokenizerSpec.from_flags(**segmenter, tokenizer_type="sentencepiece", spm_model_type=model_type,
                                    **spm, **SMALL)


@pytest.fixture(scope="module")
def spm_dirs(tmp_path_factory, sample_corpus):
    """(dic, model type, byte fallback) -> (tokenizer dir, AutoTokenizer, FastEncoder), built once per module."""
    cache: dict = {}

    def get(dic: str, model_type: str, byte_fallback: bool = False):
        key = (dic, model_type, byte_fallback)
        if key not in cache:
            directory = tmp_path_factory.mktemp(f"spm-{dic}-{model_type}-{byte_fallback}") / "tokenizer"
            spec = spm_spec(dic, model_type, spm_byte_fallback=byte_fallback or None)
            train_tokenizer([str(sample_corpus)], directory, spec, num_workers=1)
            cache[key] = (directory, AutoTokenizer.from_pretrained(str(directory)),
                          FastEncoder.from_pretrained(directory))
        return cache[key]

    yield get
    for _, _, encoder in cache.values():
        encoder.close()


def library(directory) -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(directory / "spiece.model"))


@pytest.mark.parametrize("dic,model_type", COMBOS)
def test_the_saved_dir_is_the_librarys_model(spm_dirs, dic, model_type):
    directory, tokenizer, encoder = spm_dirs(dic, model_type)
    processor = library(directory)
    assert processor.id_to_piece(list(range(5))) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert processor.piece_to_id("[unused4]") == 9 and processor.is_control(2)
    assert len(tokenizer) == processor.get_piece_size() == encoder.vocab_size
    meta = read_meta(directory)
    assert meta["tokenizer_type"] == "sentencepiece" and meta["subword_library"] == "sentencepiece"
    assert meta["spec"]["spm_model_type"] == model_type and meta["spec"]["spm_split_by_whitespace"] is True
    if dic == "none":
        assert not isinstance(tokenizer, BertJapaneseTokenizer) and (directory / "tokenizer.json").is_file()
        assert meta["normalization"] == "NFKC"
    else:
        assert isinstance(tokenizer, BertJapaneseTokenizer) and tokenizer.subword_tokenizer_type == "sentencepiece"
    if model_type == "char":
        pieces = [processor.id_to_piece(i) for i in range(5 + 5, processor.get_piece_size())]
        assert all(len(piece) == 1 for piece in pieces)


@pytest.mark.parametrize("dic,model_type,byte_fallback", [(*combo, False) for combo in COMBOS] + [
    ("ipadic", "unigram", True), ("sudachi", "unigram", False), ("sudachi", "bpe", True)])
def test_ids_equal_autotokenizer(spm_dirs, sample_corpus, dic, model_type, byte_fallback):
    if dic == "sudachi":
        pytest.importorskip("sudachipy")
    _, tokenizer, encoder = spm_dirs(dic, model_type, byte_fallback)
    texts = sample_lines(sample_corpus) + EDGE_CASES + fuzz_texts(300, seed=7 + MODEL_TYPES.index(model_type))
    assert_same_ids(encoder, tokenizer, texts)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_raw_text_ids_are_the_librarys_own(spm_dirs, sample_corpus, model_type):
    """The tokenizer.json converted from the model encodes as SentencePieceProcessor does (after NFKC)."""
    directory, tokenizer, _ = spm_dirs("none", model_type)
    processor = library(directory)
    texts = [t for t in sample_lines(sample_corpus) + EDGE_CASES + fuzz_texts(500, seed=11)
             if "[" not in unicodedata.normalize("NFKC", t)]  # the library does not know special tokens
    for text in texts:
        theirs = processor.encode(unicodedata.normalize("NFKC", text))
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == theirs, text


@pytest.mark.parametrize("model_type", ("unigram", "bpe"))
def test_with_a_segmenter_pieces_never_cross_a_word(spm_dirs, sample_corpus, model_type):
    directory, tokenizer, encoder = spm_dirs("ipadic", model_type)
    processor = library(directory)
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    assert not [p for p in pieces if "\u2581" in p[1:]]  # trained on the space-joined words, split by whitespace
    words = tokenizer.word_tokenizer.tokenize(sample_lines(sample_corpus)[0])
    per_word = [piece for word in words for piece in processor.encode(word, out_type=str)]
    assert words and tokenizer.tokenize(" ".join(words)) == per_word
    for text in sample_lines(sample_corpus)[:50] + EDGE_CASES:  # whole-word masking sees MeCab's words
        if "[" not in text:
            ids, starts = encoder.encode_batch_with_word_starts([text])[0]
            assert (ids, starts) == reference_words_and_starts(tokenizer, text), text


def test_split_by_whitespace_false_lets_pieces_span_spaces(tmp_path):
    corpus = tmp_path / "en.txt"
    corpus.write_text("".join(f"one of the {w} of the best in the world {i}\n" for i, w in
                              enumerate(["cats", "dogs", "birds", "fish"] * 50)), encoding="utf-8")
    made = {}
    for split in (True, False):
        out = tmp_path / f"split-{split}"
        train_tokenizer([str(corpus)], out, TokenizerSpec.from_flags(
            mecab_dic_type="none", tokenizer_type="sentencepiece", spm_model_type="bpe", vocab_size=120,
            spm_split_by_whitespace=split, num_unused_tokens=0), num_workers=1)
        pieces = [library(out).id_to_piece(i) for i in range(library(out).get_piece_size())]
        made[split] = (AutoTokenizer.from_pretrained(str(out)), [p for p in pieces if "\u2581" in p[1:]])
        text = "one of the cats in the world"
        assert made[split][0](text, add_special_tokens=False)["input_ids"] == library(out).encode(text)
        with FastEncoder.from_pretrained(out) as encoder:  # whole-word masking: a word starts at each "\u2581"
            (ids, starts), = encoder.encode_batch_with_word_starts([text + "[MASK]x"])
        pieces = library(out).id_to_piece(ids)
        assert starts == [p.startswith("\u2581") or p in ("[MASK]", "x") for p in pieces] and sum(starts) >= 4
    assert made[True][1] == [] and any(p.startswith("\u2581of\u2581the") for p in made[False][1]), made[False][1]


def test_character_coverage_decides_which_rare_characters_are_pieces(tmp_path):
    """--spm_character_coverage: at the default 0.9995 a character seen a few times in a corpus of many is left out
    (it encodes as [UNK]); at 1.0 it is a piece. The default is not recorded (earlier dirs keep their spec); another
    value is, and a value outside (0, 1] is one error naming the flag."""
    corpus = tmp_path / "en.txt"
    lines = [f"the cat and the dog number {i} are in the house" for i in range(2000)] + ["Ωmega"] * 2
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    pieces = {}
    for coverage in (None, 1.0):
        out = tmp_path / f"coverage-{coverage}"
        spec = TokenizerSpec.from_flags(mecab_dic_type="none", tokenizer_type="sentencepiece", spm_model_type="unigram",
                                        vocab_size=200, num_unused_tokens=0, spm_character_coverage=coverage)
        train_tokenizer([str(corpus)], out, spec, num_workers=1)
        pieces[coverage] = {library(out).id_to_piece(i) for i in range(library(out).get_piece_size())}
        recorded = read_meta(out)["spec"]
        assert recorded["spm_character_coverage"] == coverage
        tokenizer = AutoTokenizer.from_pretrained(str(out))
        assert (tokenizer.unk_token_id in tokenizer("Ωmega", add_special_tokens=False)["input_ids"]) == \
            (coverage is None)
    assert not any("Ω" in p for p in pieces[None]) and any("Ω" in p for p in pieces[1.0])
    assert TokenizerSpec.from_flags(mecab_dic_type="none", tokenizer_type="sentencepiece", spm_model_type="bpe",
                                    spm_character_coverage=0.9995).spm_character_coverage is None
    for bad in (0.0, 1.5):
        with pytest.raises(UserError, match=rf"--spm_character_coverage {bad} is not a share of the characters"):
            TokenizerSpec.from_flags(mecab_dic_type="none", tokenizer_type="sentencepiece", spm_model_type="bpe",
                                     spm_character_coverage=bad)
    with pytest.raises(UserError, match="--spm_character_coverage is for the SentencePiece library"):
        TokenizerSpec.from_flags(tokenizer_type="wordpiece", spm_character_coverage=1.0)


def test_jsonl_documents_train_the_same_tokenizer_as_text(tmp_path, sample_corpus):
    """The Megatron-style recipe's corpus is jsonl (one document per line, its sentences in "text")."""
    import json

    documents = [d for d in sample_corpus.read_text(encoding="utf-8").split("\n\n") if d.strip()]
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in documents),
                      encoding="utf-8")
    for name, source in (("jsonl", corpus), ("txt", sample_corpus)):
        train_tokenizer([str(source)], tmp_path / name, spm_spec("none", "bpe"), num_workers=1)
    assert (tmp_path / "jsonl" / "tokenizer.json").read_bytes() == (tmp_path / "txt" / "tokenizer.json").read_bytes()


@pytest.mark.parametrize("byte_fallback", [None, True])
def test_training_is_deterministic_for_any_number_of_workers(tmp_path, sample_corpus, byte_fallback):
    spec = spm_spec("none", "unigram", spm_byte_fallback=byte_fallback)
    for name, workers in (("a", 1), ("b", 2)):
        train_tokenizer([str(sample_corpus)], tmp_path / name, spec, num_workers=workers)
    assert (tmp_path / "a" / "spiece.model").read_bytes() == (tmp_path / "b" / "spiece.model").read_bytes()
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


# ---- byte fallback -------------------------------------------------------------------------------------------

def _round_trips(tokenizer, lines):
    return [line for line in lines if tokenizer.decode(tokenizer(line, add_special_tokens=False)["input_ids"]) != line]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_byte_fallback_decodes_any_text_exactly(spm_dirs, sample_corpus, model_type):
    directory, tokenizer, encoder = spm_dirs("none", model_type, True)
    assert read_meta(directory)["normalization"] == "none"
    texts = [t for t in EDGE_CASES + fuzz_texts(300, seed=5) if "[" not in t] + ["全角ＡＢＣと半角ｶﾅ、２つ  の空白"]
    assert _round_trips(tokenizer, texts) == []
    assert all(tokenizer.unk_token_id not in ids for ids in encoder.encode_batch(texts))
    ours = encoder.encode_batch(texts + sample_lines(sample_corpus))
    assert first_difference(texts, ours, reference_ids(tokenizer, texts + sample_lines(sample_corpus), False)) is None
    processor = library(directory)
    assert all(tokenizer(t, add_special_tokens=False)["input_ids"] == processor.encode(t) for t in texts)
    _, plain, _ = spm_dirs("none", model_type)  # the test can fail: without byte fallback many lines do not
    assert len(_round_trips(plain, texts)) > len(texts) // 4


@pytest.mark.shared_corpus
def test_byte_fallback_round_trips_held_out_aozora(shared_corpus, tmp_path):
    lines = [line for line in shared_corpus("ja_aozora_small").read_text(encoding="utf-8").splitlines() if line]
    train, held_out = lines[:-300], lines[-300:]
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    results = {}
    for fallback in (True, None):
        out = tmp_path / f"tok-{fallback}"
        spec = TokenizerSpec.from_flags(mecab_dic_type="none", tokenizer_type="sentencepiece",
                                        spm_model_type="unigram", spm_byte_fallback=fallback, vocab_size=8000)
        train_tokenizer([str(tmp_path / "train.txt")], out, spec, num_workers=1)
        results[fallback] = _round_trips(AutoTokenizer.from_pretrained(str(out)), held_out)
    assert results[True] == [] and len(results[None]) > 10, len(results[None])


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["gpt-x", "llama-x"])
def test_causal_lm_pretrains_and_its_export_generates(model_type, spm_dirs, sample_corpus, tmp_path):
    from transformers import AutoModelForCausalLM, pipeline

    from tests.test_modern import _train

    directory, _, _ = spm_dirs("none", "unigram", True)
    out = _train(sample_corpus, directory, tmp_path, model_type,
                 **({"num-key-value-heads": 1} if model_type == "llama-x" else {}))
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "[SEP]" and model.config.eos_token_id == tokenizer.eos_token_id
    prompt = "私たちの小さな町では、"
    assert tokenizer(prompt)["input_ids"] == library(directory).encode(prompt)  # nothing added around a text
    text = pipeline("text-generation", model=model, tokenizer=tokenizer)(prompt, max_new_tokens=8,
                                                                         do_sample=False)[0]["generated_text"]
    assert text.startswith(prompt) and len(text) > len(prompt)


@pytest.mark.slow
def test_bert_pretrains_with_whole_word_masking_on_mecab_pieces(spm_dirs, sample_corpus, tmp_path):
    """run_pretraining's --tokenizer_type sentencepiece matches the dir; its export fills a mask."""
    import json

    from transformers import AutoModelForMaskedLM, pipeline

    from lmpretrain.trainer import train
    from tests.test_modern import E2E
    from tests.test_run_pretraining import losses, make_args

    directory, _, _ = spm_dirs("ipadic", "unigram")
    (tmp_path / "parameter.json").write_text(json.dumps({"bert-x": E2E}))
    out = tmp_path / "out"
    train(make_args(sample_corpus, directory, out, tmp_path / "parameter.json", "bert-x", do_whole_word_mask=True,
                    tokenizer_type="sentencepiece"))
    curve = losses(out)
    assert sum(curve[s] for s in (14, 15, 16)) < sum(curve[s] for s in (1, 2, 3)), curve
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert isinstance(tokenizer, BertJapaneseTokenizer) and tokenizer.subword_tokenizer_type == "sentencepiece"
    fill = pipeline("fill-mask", model=AutoModelForMaskedLM.from_pretrained(out), tokenizer=tokenizer)
    assert len(fill(f"私たちの小さな{tokenizer.mask_token}では")) == 5


def test_run_pretraining_flags_are_checked_against_a_sentencepiece_dir(spm_dirs, sample_corpus, tmp_path, capsys):
    import json

    from tests.test_modern import E2E

    directory, _, _ = spm_dirs("none", "unigram")
    (tmp_path / "parameter.json").write_text(json.dumps({"bert-t": E2E}))
    code, err = run_in_process("run_pretraining.py", [
        "--input_file", str(sample_corpus), "--tokenizer_dir", str(directory), "--model_dir", str(tmp_path / "run"),
        "--parameter_file", str(tmp_path / "parameter.json"), "--model_type", "bert-t", "--tokenizer_type",
        "wordpiece"], capsys)
    check_one_clear_error(code, err, "--tokenizer_type wordpiece does not match the tokenizer in")
    assert "tokenizer_type sentencepiece recorded" in err


# ---- bad input -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,message", [
    (["--tokenizer_type", "wordpiece", "--spm_model_type", "unigram"],
     "--spm_model_type is for the SentencePiece library (--tokenizer_type sentencepiece --spm_model_type"),
    (["--tokenizer_type", "unigram", "--spm_byte_fallback"], "not --tokenizer_type unigram, which ignores it"),
    (["--tokenizer_type", "sentencepiece", "--spm_split_by_whitespace", "false"], "needs --spm_model_type"),
    (["--tokenizer_type", "sentencepiece", "--spm_model_type", "word"], "--spm_model_type 'word' is not one of"),
    (["--tokenizer_type", "sentencepiece", "--spm_model_type", "bpe", "--mecab_dic_type", "ipadic",
      "--spm_split_by_whitespace", "false"], "contradicts the word segmenter"),
    (["--tokenizer_type", "sentencepiece", "--spm_model_type", "unigram", "--vocab_size", "100"],
     "--vocab_size 100 is too small: SentencePiece keeps the characters"),
])
def test_bad_spm_flags_are_one_clear_error(extra, message, tmp_path, sample_corpus, capsys):
    argv = ["--input_file", str(sample_corpus), "--model_dir", str(tmp_path / "tok"), "--num_files", "1",
            "--mecab_dic_type", "none", *extra]
    if "ipadic" in extra:
        argv.remove("none"), argv.remove("--mecab_dic_type")
    code, err = run_in_process("train_tokenizer.py", argv, capsys)
    check_one_clear_error(code, err, message)
    assert not (tmp_path / "tok").exists() and not list(tmp_path.glob(".tok*"))


def test_sentencepiece_not_installed_is_one_clear_error(monkeypatch, tmp_path, sample_corpus):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import sentencepiece now raises ImportError
    with pytest.raises(UserError, match="not installed: pip install sentencepiece"):
        train_tokenizer([str(sample_corpus)], tmp_path / "tok", spm_spec(), num_workers=1)
    assert not (tmp_path / "tok").exists()


def test_reading_a_sentencepiece_dir_without_the_library_is_one_clear_error(spm_dirs, monkeypatch):
    directory, _, _ = spm_dirs("ipadic", "unigram")
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(UserError, match="needs the SentencePiece library, which is not installed: pip install"):
        FastEncoder.from_pretrained(directory)


def test_a_recorded_dir_is_reused_only_with_the_same_spm_options(tmp_path, sample_corpus):
    train_tokenizer([str(sample_corpus)], tmp_path / "tok", spm_spec(), num_workers=1)
    with pytest.raises(UserError, match="spm_model_type 'unigram' -> 'bpe'"):
        train_tokenizer([str(sample_corpus)], tmp_path / "tok", spm_spec(model_type="bpe"), num_workers=1)
    assert (tmp_path / "tok" / META_FILE).is_file()
