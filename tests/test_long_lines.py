"""Huge lines never crash or hang (issue 13, item 3). MeCab (fugashi 1.x) crashes the process on one parse of about
8 MB (measured: 8.67 MB of Japanese parses, 8.72 MB does not; transformers' tokenizer, which passes the whole line to
MeCab, crashes there too): a line longer than the segmenter takes at once (MeCab 1 MiB, Sudachi 49,149 bytes) is cut
at sentence ends, else at whitespace or a change of script, with one warning naming the file and line; the same rule
in tokenizer training, dataset builds and FastEncoder, since all three segment through the segmenter."""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmpretrain.tokenization import FastEncoder
from lmpretrain.tokenization.normalization import nfkc
from lmpretrain.tokenization.segmenters import get_segmenter, mecab
from lmpretrain.tokenization.segmenters.base import SENTENCE_ENDS, _script, split_long_text
from tests.helpers import run_script


def _check_pieces(text: str, pieces: list[str], max_bytes: int) -> None:
    assert "".join(pieces) == text
    assert all(0 < len(p.encode("utf-8")) <= max_bytes for p in pieces)


def test_split_rules():
    assert split_long_text("吾輩は猫である。", 100) == ["吾輩は猫である。"]
    sentences = "吾輩は猫である。名前はまだ無い！どこで生れたか?頓と見当がつかぬ.気温は12.5度." * 50
    pieces = split_long_text(sentences, 400)
    _check_pieces(sentences, pieces, 400)
    assert len(pieces) > 1 and all(p[-1] in SENTENCE_ENDS for p in pieces)  # after a sentence end, never inside one
    assert not any(p.endswith("12.") for p in pieces)  # a decimal point is no sentence end
    spaced = "lorem ipsum dolor sit amet " * 100  # no sentence end: before whitespace
    pieces = split_long_text(spaced, 200)
    _check_pieces(spaced, pieces, 200)
    assert all(p[0] == " " for p in pieces[1:])
    scripts = "ひらがなカタカナ漢字" * 200  # no break at all: where the script changes, never inside a run
    pieces = split_long_text(scripts, 400)
    _check_pieces(scripts, pieces, 400)
    assert all(_script(a[-1]) != _script(b[0]) for a, b in zip(pieces, pieces[1:]))
    same = "あ" * 1000  # one script, nothing else: a bounded length
    pieces = split_long_text(same, 400)
    _check_pieces(same, pieces, 400)
    assert [len(p) for p in pieces] == [100] * 10


def _one_line(sample_corpus: Path, chars: int) -> str:
    text = "".join(line.strip() for line in sample_corpus.read_text(encoding="utf-8").splitlines())
    return (text * (chars // len(text) + 1))[:chars]


def test_ids_equal_autotokenizer_below_the_limit_and_nearly_above(sample_corpus, tiny_tokenizer_dir, monkeypatch):
    """A 200,000-character line (600 kB, under MeCab's 1 MiB) is not cut: the ids equal AutoTokenizer's. Cut (the
    limit lowered to 4,000 bytes for the test), MeCab sees each piece's start as a sentence start: a word right after
    a cut may be segmented differently, nothing else (the difference the README states)."""
    line = _one_line(sample_corpus, 200_000)
    auto = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    reference = auto(line, add_special_tokens=False)["input_ids"]
    with FastEncoder.from_pretrained(tiny_tokenizer_dir) as encoder:
        assert encoder.encode_batch([line])[0] == reference
    monkeypatch.setattr(mecab.MecabSegmenter, "max_input_bytes", 4000)
    segmenter = get_segmenter("mecab", {"mecab_dic_type": "ipadic"})
    line = nfkc(line[:50_000])
    whole, cut = segmenter._parse(line).split(), segmenter.words(line)
    cuts = len(split_long_text(line, 4000)) - 1
    changed = [op for op in difflib.SequenceMatcher(None, whole, cut, autojunk=False).get_opcodes() if op[0] != "equal"]
    assert cuts > 40 and len(changed) <= cuts // 10, (cuts, changed[:5])
    assert all(a2 - a1 <= 4 and b2 - b1 <= 4 for _, a1, a2, b1, b2 in changed)  # a word or two at a cut


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the crash measured is Linux's")
def test_scripts_on_a_corpus_with_a_9_mb_line(sample_corpus, tiny_tokenizer_dir, tmp_path):
    """One 9 MB line among ordinary ones (one parse of it crashes MeCab): train_tokenizer.py (one process, where the
    crash took the script down with exit 139) and a dataset build (two processes, where it was 'killed for lack of
    memory?') finish, warn once naming the file and line, and leave no temporary folder or lock."""
    corpus = tmp_path / "huge.txt"
    ordinary = sample_corpus.read_text(encoding="utf-8").splitlines()[:20]
    huge = _one_line(sample_corpus, 3_000_000)
    assert len(huge.encode("utf-8")) > 8_800_000
    corpus.write_text("\n".join([*ordinary, huge, *ordinary]) + "\n", encoding="utf-8")
    where = f"{corpus}:{len(ordinary) + 1}: a line of {len(huge.encode('utf-8'))} bytes"
    env = {"LMP_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}

    tok = run_script("train_tokenizer.py", "--input_file", str(corpus), "--model_dir", str(tmp_path / "tok"),
                     "--vocab_size", "2000", "--min_frequency", "1", "--limit_alphabet", "1000", "--num_files", "1",
                     env=env, timeout=600)
    assert tok.returncode == 0, tok.stderr[-3000:]
    assert tok.stderr.count(where) == 1, tok.stderr[-3000:]
    assert (tmp_path / "tok" / "vocab.txt").is_file()

    params = tmp_path / "parameter.json"
    params.write_text('{"bert-h": {"number-of-layers": 1, "hidden-size": 32, "sequence-length": 64, '
                      '"ffn-inner-hidden-size": 64, "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, '
                      '"batch-size": {"-1": 4}, "train-steps": 2, "save-steps": 2, "logging-steps": 1}}')
    build = run_script("run_pretraining.py", "--input_file", str(corpus), "--tokenizer_dir", str(tiny_tokenizer_dir),
                       "--model_dir", str(tmp_path / "model"), "--parameter_file", str(params), "--model_type",
                       "bert-h", "--num_workers", "2", "--build_dataset_only", env=env, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    assert build.stderr.count(where) == 1, build.stderr[-3000:]
    leftovers = [p for p in (tmp_path / "model" / "cache").iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not [p for p in tmp_path.iterdir() if p.name.startswith(".")], leftovers
    assert os.path.isdir(tmp_path / "model" / "cache")
