"""Corpus reading: .txt / .jsonl / directories / gzip, document boundaries, and bad input naming file and line."""

from __future__ import annotations

import gzip
import json
import logging
import os

import pytest

from lmpretrain.data import build_or_load_dataset, iter_sentences, resolve_corpus_files
from lmpretrain.errors import UserError
from tests.test_data_fakes import FakeEncoder, fake_tokenizer_dir

TEXT = "一文目 です\n二文目\n\n\n次の 文書\r\n\n最後\n"
EXPECTED = [("一文目 です", True), ("二文目", False), ("次の 文書", True), ("最後", True)]


def read(*paths):
    return list(iter_sentences(resolve_corpus_files([str(p) for p in paths])))


def test_txt_blank_lines_separate_documents(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("\ufeff" + TEXT, encoding="utf-8")
    assert read(path) == EXPECTED


def test_gzip_and_jsonl_read_the_same(tmp_path):
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write(TEXT)
    docs = [{"text": "一文目 です\n二文目"}, {"text": "次の 文書", "id": 2}, {"text": "\n最後\n"}]
    lines = "\n".join(json.dumps(d, ensure_ascii=False) for d in docs) + "\n\n"
    (tmp_path / "b.jsonl").write_text(lines, encoding="utf-8")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(lines)
    assert read(tmp_path / "a.txt.gz") == EXPECTED
    assert read(tmp_path / "b.jsonl") == EXPECTED
    assert read(tmp_path / "c.jsonl.gz") == EXPECTED


def test_directory_is_read_recursively_in_order_and_each_file_starts_a_document(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "2.txt").write_text("二\n", encoding="utf-8")
    (tmp_path / "1.txt").write_text("一\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored\n", encoding="utf-8")
    assert read(tmp_path) == [("一", True), ("二", True)]


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("よい行\n".encode() + b"\xff\xfe broken\n")
    with pytest.raises(UserError, match=r"bad\.txt:2: invalid UTF-8"):
        read(path)


def test_bad_jsonl_and_gzip_and_missing_files_are_user_errors(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"x\.jsonl:2: no 'text' field"):
        read(tmp_path / "x.jsonl")
    (tmp_path / "y.jsonl").write_text("not json\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"y\.jsonl:1: not a JSON object"):
        read(tmp_path / "y.jsonl")
    (tmp_path / "z.txt.gz").write_bytes(b"plain text, not gzip\n")
    with pytest.raises(UserError, match="not a valid gzip file"):
        read(tmp_path / "z.txt.gz")
    with pytest.raises(UserError, match="does not exist"):
        read(tmp_path / "missing.txt")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match="holds no"):
        read(tmp_path / "empty_dir")


def test_invalid_utf8_during_build_is_a_user_error_and_leaves_no_cache(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok\n\n" * 100 + b"\xc3\x28\n")
    tok = fake_tokenizer_dir(tmp_path / "tok")
    with pytest.raises(UserError, match=r"bad\.txt:201: invalid UTF-8"):
        build_or_load_dataset([str(path)], str(tok), str(tmp_path / "cache"), num_workers=1,
                              encoder_factory=FakeEncoder.from_pretrained, chunk_chars=10)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith((".lock", ".failed"))] == []


def test_jsonl_text_field_is_part_of_the_fingerprint(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "あ い", "body": "う え お"}\n', encoding="utf-8")
    tok = fake_tokenizer_dir(tmp_path / "tok")
    common = dict(num_workers=1, encoder_factory=FakeEncoder.from_pretrained)
    a = build_or_load_dataset(str(path), str(tok), str(tmp_path / "cache"), **common)
    assert a.num_tokens == 2
    b = build_or_load_dataset(str(path), str(tok), str(tmp_path / "cache"), text_field="body", **common)
    assert b.num_tokens == 3


def damaged_gzip(path, text: str, at: int = 200) -> None:
    """A gzip file whose deflate stream has one byte changed (header intact): zlib fails inside the stream."""
    data = bytearray(gzip.compress(text.encode("utf-8")))
    data[at] ^= 0x55
    path.write_bytes(bytes(data))


def test_a_damaged_deflate_stream_or_cut_short_file_is_one_error_naming_it(tmp_path, sample_corpus):
    text = sample_corpus.read_text(encoding="utf-8")
    damaged_gzip(tmp_path / "d.txt.gz", text)
    with pytest.raises(UserError, match=r"d\.txt\.gz: not a valid gzip file: its compressed data are damaged or cut "
                                        r"short at its start \(Error -3 while decompressing"):
        read(tmp_path / "d.txt.gz")
    whole = gzip.compress(text.encode("utf-8"))
    (tmp_path / "cut.txt.gz").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(UserError, match=r"cut\.txt\.gz: not a valid gzip file: .* cut short after line \d+"):
        read(tmp_path / "cut.txt.gz")
    import bz2
    import lzma

    for name, compress in (("x.txt.bz2", bz2.compress), ("x.txt.xz", lzma.compress)):
        (tmp_path / name).write_bytes(compress(text.encode("utf-8"))[:-40])
        with pytest.raises(UserError, match=rf"{name}: not a valid .* file: its compressed data are damaged or cut"):
            read(tmp_path / name)


def test_bzip2_xz_and_upper_case_suffixes_read_as_plain_text(tmp_path):
    import bz2
    import lzma

    (tmp_path / "a.TXT").write_text(TEXT, encoding="utf-8")
    (tmp_path / "b.txt.bz2").write_bytes(bz2.compress(TEXT.encode("utf-8")))
    (tmp_path / "c.Txt.XZ").write_bytes(lzma.compress(TEXT.encode("utf-8")))
    (tmp_path / "d.JSONL.gz").write_bytes(gzip.compress(json.dumps({"text": "一文目\n二文目"}).encode("utf-8")))
    for name in ("a.TXT", "b.txt.bz2", "c.Txt.XZ"):
        assert read(tmp_path / name) == EXPECTED, name
    assert read(tmp_path / "d.JSONL.gz") == [("一文目", True), ("二文目", False)]
    assert [p.name for p in resolve_corpus_files(tmp_path)] == ["a.TXT", "b.txt.bz2", "c.Txt.XZ", "d.JSONL.gz"]


def test_other_files_of_a_corpus_dir_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text(TEXT, encoding="utf-8")
    (corpus / "b.text").write_text(TEXT, encoding="utf-8")
    (corpus / "sub" / "notes.md").write_text("notes", encoding="utf-8")
    caplog.set_level(logging.WARNING, logger="lmpretrain")
    assert [p.name for p in resolve_corpus_files(corpus)] == ["a.txt"]
    warnings = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(warnings) == 1 and f"corpus directory {corpus}: skipping 2 files" in warnings[0]
    assert warnings[0].endswith(": b.text, sub/notes.md")
    resolve_corpus_files(corpus)  # every step resolves the corpus again: said once
    assert len([r for r in caplog.records if "skipping" in r.getMessage()]) == 1


def test_a_compression_that_cannot_be_read_is_an_error_not_a_skip(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "b.txt.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(UserError, match=r"b\.txt\.zst is compressed with zstd, which is not read here; decompress"):
        resolve_corpus_files(tmp_path)
    with pytest.raises(UserError, match=r"b\.txt\.zst is compressed with zstd"):
        resolve_corpus_files(tmp_path / "b.txt.zst")


def test_a_fifo_is_named_as_such_not_missing(tmp_path):
    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(UserError, match=r"pipe\.txt is a FIFO \(named pipe\): a corpus is read more than once"):
        resolve_corpus_files(tmp_path / "pipe.txt")


def test_nul_characters_warn_once_per_file_naming_the_line_and_the_characters_dropped(tmp_path, caplog):
    path = tmp_path / "nul.txt"
    path.write_text("前の行\n途中\x00から先は消える\n普通\nもう\x00一つ\n", encoding="utf-8")
    caplog.set_level(logging.WARNING, logger="lmpretrain")
    sentences = [s for s, _ in iter_sentences([path])]
    assert "途中\x00から先は消える" in sentences and not caplog.records  # read as written; the segmenter decides
    list(iter_sentences([path], nul_ends_line=True))
    (record,) = caplog.records
    assert record.getMessage().startswith(f"{path}:2: a NUL character: the word segmenter (MeCab) ends a line at its "
                                          f"first NUL")
    assert "11 characters dropped from 2 lines of this file" in record.getMessage()  # 8 + 3, NULs included


def test_a_jsonl_line_giving_the_text_field_twice_is_an_error(tmp_path):
    path = tmp_path / "twice.jsonl"
    path.write_text('{"text": "一", "id": 1, "id": 2}\n{"text": "一", "text": "二"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"twice\.jsonl:2: field 'text' is given twice in this JSON line"):
        read(path)
