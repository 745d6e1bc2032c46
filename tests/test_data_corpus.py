"""Corpus reading: .txt / .jsonl / directories / gzip, document boundaries, and bad input naming file and line."""

from __future__ import annotations

import gzip
import json

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
