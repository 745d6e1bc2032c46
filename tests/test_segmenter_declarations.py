"""Every word segmenter is one declaration that the rest reads: its flags are in train_tokenizer.py --help and build
its spec; its BertJapaneseTokenizer config maps back to the same options, with keys transformers' own word tokenizer
has; the normalization the metadata records is the one it applies. A segmenter declared here, in a test module alone,
gets all of that with no other file touched."""

from __future__ import annotations

import inspect
import json
import unicodedata
from dataclasses import asdict, fields

import pytest
from transformers.models.bert_japanese import tokenization_bert_japanese

from lmpretrain.errors import UserError
from lmpretrain.tokenization import META_FILE, FastEncoder, TokenizerSpec, read_meta, train_tokenizer
from lmpretrain.tokenization.segmenters import (
    SEGMENTERS,
    Declaration,
    Option,
    WordSegmenter,
    by_transformers_type,
    declarations,
    get_segmenter,
)
from tests.test_bad_input import _main, check_one_clear_error, run_in_process

SMALL = {"vocab_size": 3000, "min_frequency": 1, "limit_alphabet": 1000, "num_unused_tokens": 5}
TEXT = "ＡＢＣ１２３の ｶﾀｶﾅ ㈱東京、①番…"  # full-width and compatibility characters: NFKC changes each


def _help_text(capsys) -> str:
    with pytest.raises(SystemExit):
        _main("train_tokenizer.py")(["--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps the help: compare words


def _non_default_values(declared: Declaration) -> dict:
    """A value other than the default for each option (the last choice, or a made-up string)."""
    return {o.name: (o.choices[-1] if o.choices else f"-x {o.name}") for o in declared.options}


def _transformers_word_tokenizer(declared: Declaration):
    """transformers' own word tokenizer class for ``word_tokenizer_type`` (MecabTokenizer, SudachiTokenizer, ...)."""
    return next(cls for name, cls in vars(tokenization_bert_japanese).items()
                if name.lower() == f"{declared.transformers_type}tokenizer")


@pytest.mark.parametrize("declared", declarations(), ids=lambda d: d.name)
def test_every_declared_flag_is_in_the_help(declared, capsys):
    text = _help_text(capsys)
    assert declared.name in text.rsplit("--word_tokenizer WORD_TOKENIZER", 1)[1].split("--", 1)[0]
    for option in declared.options:
        assert f"{option.flag} {option.name.upper()} {' '.join(option.help.split())}" in text
        for alias, help_text in option.aliases:
            assert f"{alias} {alias[2:].upper()} {' '.join(help_text.split())}" in text


@pytest.mark.parametrize("declared", declarations(), ids=lambda d: d.name)
def test_flags_spec_metadata_and_bert_japanese_config_map_back(declared):
    values = _non_default_values(declared)
    spec = TokenizerSpec.from_flags(word_tokenizer=declared.name, **values)
    assert spec.word_segmenter() == (declared.name, values)
    recorded = json.loads(json.dumps(asdict(spec)))  # as the metadata holds it
    assert TokenizerSpec(**recorded) == spec and TokenizerSpec(**recorded).word_segmenter() == (declared.name, values)
    spec_fields = {f.name for f in fields(TokenizerSpec)}
    assert all(o.name in spec_fields for o in declared.options if o.spec_field)

    config = declared.transformers_config(values)
    assert config["tokenizer_class"] == "BertJapaneseTokenizer"
    assert by_transformers_type(config["word_tokenizer_type"]) is declared
    problems, warnings = [], []
    assert declared.options_from_transformers(config[declared.kwargs_key], problems, warnings) == values
    assert problems == [] and warnings == []

    # the keys are transformers' own, and the values the toolkit needs are that word tokenizer's defaults
    parameters = inspect.signature(_transformers_word_tokenizer(declared).__init__).parameters
    assert set(config[declared.kwargs_key]) <= set(parameters)
    fixed = {"normalize_text": declared.normalization == "NFKC", **declared.transformers_fixed}
    assert {key: parameters[key].default for key in fixed} == fixed
    assert f'"{declared.transformers_type}"' in inspect.getsource(tokenization_bert_japanese.BertJapaneseTokenizer)


def _buildable():
    for name in SEGMENTERS:
        try:
            yield get_segmenter(name, {})
        except UserError:  # its library or binary is not installed here (Juman++)
            continue


def test_the_declared_normalization_is_what_the_segmenter_applies():
    built = list(_buildable())
    assert {s.name for s in built} >= {"mecab", "sudachi"}
    for segmenter in built:
        expected = unicodedata.normalize("NFKC", TEXT) if segmenter.normalization == "NFKC" else TEXT
        assert "".join(segmenter.wakati(TEXT).split()) == "".join(expected.split()), segmenter.name
        assert segmenter.normalize(TEXT) == expected


# ---- a segmenter declared here: one class, one registry entry, nothing else -------------------------------------

class PlainSegmenter(WordSegmenter):
    """Words are what whitespace or ``plain_split_on`` separate; no normalization at all."""

    declaration = Declaration(
        name="plain", title="Plain", summary="Plain (split on {plain_split_on})", transformers_type="plain",
        normalization="none",
        options=(Option("plain_split_on", "・", "a character that also separates words", label="separator",
                        transformers_key="split_on"),))

    def __init__(self, plain_split_on: str = "・"):
        super().__init__(plain_split_on=plain_split_on)
        if len(plain_split_on) != 1:
            raise UserError(f"--plain_split_on {plain_split_on!r} is not one character")
        self.split_on = plain_split_on

    def wakati_batch(self, texts: list[str]) -> list[str]:
        return [self.normalize(t).replace(self.split_on, " ") for t in texts]

    def dictionary_info(self) -> dict:
        return {"name": "none"}


@pytest.fixture
def plain(monkeypatch):
    monkeypatch.setitem(SEGMENTERS, "plain", PlainSegmenter)
    return PlainSegmenter.declaration


def test_a_new_segmenters_flags_checks_and_options(plain, capsys, tmp_path, sample_corpus):
    assert "--plain_split_on PLAIN_SPLIT_ON a character that also separates words" in _help_text(capsys)
    assert "mecab (default), sudachi, juman, plain or none" in _help_text(capsys)
    spec = TokenizerSpec.from_flags(word_tokenizer="plain", plain_split_on="|")
    assert (spec.word_tokenizer, spec.segmenter_options, spec.mecab_dic_type) == ("plain", {"plain_split_on": "|"},
                                                                                 None)
    assert TokenizerSpec.from_flags(word_tokenizer="plain").segmenter_options == {"plain_split_on": "・"}
    with pytest.raises(UserError, match="--plain_split_on needs --word_tokenizer plain"):
        TokenizerSpec.from_flags(plain_split_on="|")
    with pytest.raises(UserError, match="--mecab_option is for MeCab, not --word_tokenizer plain"):
        TokenizerSpec.from_flags(word_tokenizer="plain", mecab_option="-N1")
    code, err = run_in_process("train_tokenizer.py", ["--input_file", str(sample_corpus), "--model_dir",
                                                      str(tmp_path / "tok"), "--word_tokenizer", "plain",
                                                      "--plain_split_on", "ab", "--num_files", "1"], capsys)
    check_one_clear_error(code, err, "--plain_split_on 'ab' is not one character")


def test_a_segmenter_without_normalization_records_none_and_encodes_unnormalized(plain, tmp_path, sample_corpus):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(sample_corpus.read_text(encoding="utf-8") + "ＡＢＣ・ABC 全角・半角\n" * 20, encoding="utf-8")
    spec = TokenizerSpec.from_flags(word_tokenizer="plain", **SMALL)
    summary = train_tokenizer([str(corpus)], tmp_path / "tok", spec, num_workers=2)
    assert summary["word_segmenter"] == "Plain (split on ・)"
    meta = read_meta(tmp_path / "tok")
    assert meta["normalization"] == "none" and meta["word_tokenizer"] == "plain"
    assert meta["word_segmenter"] == {"name": "plain", "options": {"plain_split_on": "・"},
                                      "dictionary": {"name": "none"}}
    assert meta["spec"]["segmenter_options"] == {"plain_split_on": "・"}
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert (config["word_tokenizer_type"], config["plain_kwargs"]) == ("plain", {"split_on": "・", "normalize_text":
                                                                                 False})
    train_tokenizer([str(corpus)], tmp_path / "tok", spec, num_workers=1)  # the same settings, read back: replaced
    with FastEncoder.from_pretrained(tmp_path / "tok") as encoder:
        (wide, wide_starts), (narrow, _) = encoder.encode_batch_with_word_starts(["ＡＢＣ・全角", "ABC・全角"])
    assert wide != narrow and sum(wide_starts) == 2  # not NFKC-normalized; split on ・


def test_the_metadata_records_what_each_segmenter_applies(tokenizer_factory):
    assert read_meta(tokenizer_factory("ipadic", "wordpiece"))["normalization"] == "NFKC"
    assert read_meta(tokenizer_factory("none", "wordpiece"))["normalization"] == "NFKC"  # tokenizer.json's NFKC
    meta = json.loads((tokenizer_factory("ipadic", "wordpiece") / META_FILE).read_text(encoding="utf-8"))
    assert get_segmenter(meta["word_segmenter"]["name"], meta["word_segmenter"]["options"]).normalization == "NFKC"
