"""Token shards and their cache: exact contents, reuse, invalidation on each input, damage, disk full, waiting."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time

import numpy as np
import pytest

from lmpretrain.data import TokenShards, build_or_load_dataset, cache_location
from lmpretrain.data import shards as shards_module
from lmpretrain.data.corpus import resolve_corpus_files
from lmpretrain.errors import UserError
from tests.test_data_fakes import FakeEncoder, fake_tokenizer_dir, make_documents, write_txt

FACTORY = FakeEncoder.from_pretrained


def build(corpus, tok, cache, **kw):
    kw.setdefault("num_workers", 1)
    kw.setdefault("min_bytes_per_worker", 0)  # these small corpora get the workers asked for
    return build_or_load_dataset([str(corpus)], str(tok), str(cache), encoder_factory=FACTORY, **kw)


@pytest.fixture()
def setup(tmp_path):
    docs = make_documents(30, seed=1)
    corpus = write_txt(tmp_path / "corpus.txt", docs)
    tok = fake_tokenizer_dir(tmp_path / "tok")
    return docs, corpus, tok, tmp_path / "cache"


def expected_sentences(docs, vocab_size=32000, salt=0):
    encoder = FakeEncoder(vocab_size, salt)
    return [[encoder._encode(s) for s in doc] for doc in docs]


def test_shards_hold_exactly_the_encoded_corpus(setup):
    docs, corpus, tok, cache = setup
    shards = build(corpus, tok, cache, chunk_chars=50)  # many small chunks: documents span chunks
    expected = expected_sentences(docs)
    assert shards.num_documents == len(docs)
    assert shards.num_sentences == sum(len(d) for d in docs)
    assert shards.ids.dtype == np.uint16
    i = 0
    for d, doc in enumerate(expected):
        assert shards.document_sentence_range(d) == (i, i + len(doc))
        for ids, starts in doc:
            assert shards.sentence(i).tolist() == ids
            assert shards.word_starts(i).tolist() == starts
            i += 1
    assert shards.num_tokens == sum(len(ids) for doc in expected for ids, _ in doc)


def test_large_vocabulary_uses_uint32_and_two_workers_match_one(setup, tmp_path):
    docs, corpus, _, _ = setup
    tok = fake_tokenizer_dir(tmp_path / "tok_big", vocab_size=70000)
    one = build(corpus, tok, tmp_path / "c1", chunk_chars=200)
    two = build(corpus, tok, tmp_path / "c2", chunk_chars=200, num_workers=2)
    assert one.ids.dtype == np.uint32
    assert np.array_equal(one.ids, two.ids)
    assert np.array_equal(one.sentence_offsets, two.sentence_offsets)
    assert np.array_equal(one.document_offsets, two.document_offsets)
    assert np.array_equal(one.token_word_starts(0, one.num_tokens), two.token_word_starts(0, two.num_tokens))


def test_matching_cache_is_reused_without_rebuilding(setup, caplog):
    _, corpus, tok, cache = setup
    first = build(corpus, tok, cache)
    manifest_mtime = (first.directory / "manifest.json").stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="lmpretrain")
    started = time.perf_counter()
    again = build(corpus, tok, cache)
    assert time.perf_counter() - started < 2.0
    assert (again.directory / "manifest.json").stat().st_mtime_ns == manifest_mtime
    assert "reusing the dataset cache" in caplog.text and "building" not in caplog.text


@pytest.mark.parametrize("change", ["corpus", "tokenizer", "option"])
def test_changed_input_rebuilds_and_says_what_changed(setup, caplog, change):
    docs, corpus, tok, cache = setup
    extra = {"lowercase": False}
    build(corpus, tok, cache, extra_fingerprint=extra)
    if change == "corpus":
        write_txt(corpus, docs[:-1])
    elif change == "tokenizer":
        fake_tokenizer_dir(tok, salt=7)
    else:
        extra = {"lowercase": True}
    caplog.set_level(logging.INFO, logger="lmpretrain")
    shards = build(corpus, tok, cache, extra_fingerprint=extra)
    message = {"corpus": "content of corpus file", "tokenizer": "the tokenizer changed",
               "option": "option lowercase changed"}[change]
    assert message in caplog.text
    if change == "corpus":
        assert shards.num_documents == len(docs) - 1
    if change == "tokenizer":
        assert shards.sentence(0).tolist() == FakeEncoder(salt=7)._encode(docs[0][0])[0]


def test_disable_overwrite_reuses_a_stale_cache(setup):
    docs, corpus, tok, cache = setup
    build(corpus, tok, cache)
    write_txt(corpus, docs[:5])
    shards = build(corpus, tok, cache, overwrite=False)
    assert shards.num_documents == len(docs)  # the old cache, as asked


def test_disable_overwrite_builds_when_there_is_no_cache(setup):
    docs, corpus, tok, cache = setup
    assert build(corpus, tok, cache, overwrite=False).num_documents == len(docs)


def test_truncated_cache_is_rebuilt_or_refused(setup, caplog):
    docs, corpus, tok, cache = setup
    shards = build(corpus, tok, cache)
    ids_path = shards.directory / "ids.bin"
    with open(ids_path, "r+b") as handle:
        handle.truncate(ids_path.stat().st_size - 4)
    del shards
    with pytest.raises(UserError, match="ids.bin has .* bytes"):
        build(corpus, tok, cache, overwrite=False)
    caplog.set_level(logging.INFO, logger="lmpretrain")
    rebuilt = build(corpus, tok, cache)
    assert "truncated" in caplog.text
    assert rebuilt.num_documents == len(docs)


def test_garbage_manifest_is_rebuilt(setup):
    docs, corpus, tok, cache = setup
    shards = build(corpus, tok, cache)
    (shards.directory / "manifest.json").write_text("{not json")
    assert build(corpus, tok, cache).num_documents == len(docs)


def test_interrupted_build_leaves_no_complete_cache(setup, monkeypatch):
    _, corpus, tok, cache = setup
    calls = {"n": 0}
    original = shards_module.ShardWriter.append

    def crash_on_third(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(shards_module.ShardWriter, "append", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        build(corpus, tok, cache, chunk_chars=50)
    location = cache_location(cache, resolve_corpus_files([str(corpus)]), tok)
    assert not location.exists()
    assert [p.name for p in cache.iterdir() if not p.name.endswith((".lock", ".failed"))] == []
    monkeypatch.undo()
    assert build(corpus, tok, cache).num_documents == 30


def test_full_disk_is_one_clear_error_and_cleans_up(setup, monkeypatch):
    _, corpus, tok, cache = setup

    def no_space(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards_module.ShardWriter, "append", no_space)
    with pytest.raises(UserError, match=f"no space left .*{cache}"):
        build(corpus, tok, cache)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".failed")] == []


def test_empty_corpus_is_an_error(tmp_path):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n\n  \n")
    tok = fake_tokenizer_dir(tmp_path / "tok")
    with pytest.raises(UserError, match="has no text"):
        build(corpus, tok, tmp_path / "cache")


def test_waiting_process_times_out_with_a_clear_message(setup):
    _, corpus, tok, cache = setup
    with pytest.raises(UserError, match=r"not complete after 0.3 s; did the building process .* die"):
        build(corpus, tok, cache, is_builder=False, wait_timeout_s=0.3, poll_interval_s=0.05)


def test_waiting_process_ignores_a_stale_cache_and_takes_the_new_one(setup):
    docs, corpus, tok, cache = setup
    build(corpus, tok, cache)
    write_txt(corpus, docs[:10])  # the old cache is stale now; a waiter must not take it
    result = {}

    def wait():
        result["shards"] = build(corpus, tok, cache, is_builder=False, wait_timeout_s=20, poll_interval_s=0.02)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    assert "shards" not in result
    build(corpus, tok, cache)
    waiter.join(20)
    assert result["shards"].num_documents == 10


def test_lock_of_a_dead_builder_is_taken_over(setup):
    docs, corpus, tok, cache = setup
    location = cache_location(cache, resolve_corpus_files([str(corpus)]), tok)
    cache.mkdir()
    import socket

    (cache / f".{location.name}.lock").write_text(f"{socket.gethostname()} 999999999")
    (cache / f".{location.name}.tmp-deadhost-1").mkdir()
    assert build(corpus, tok, cache, wait_timeout_s=5).num_documents == len(docs)
    assert sorted(p.name for p in cache.iterdir()) == [location.name]


def test_shards_pickle_as_their_path(setup):
    import pickle

    _, corpus, tok, cache = setup
    shards = build(corpus, tok, cache)
    clone = pickle.loads(pickle.dumps(shards))
    assert len(pickle.dumps(shards)) < 10_000
    assert np.array_equal(clone.ids, shards.ids)


def test_manifest_records_counts_and_sizes(setup):
    _, corpus, tok, cache = setup
    shards = build(corpus, tok, cache)
    manifest = json.loads((shards.directory / "manifest.json").read_text())
    assert manifest["num_tokens"] == shards.num_tokens == len(TokenShards(shards.directory).ids)
    assert manifest["file_sizes"]["ids.bin"] == shards.num_tokens * 2
    assert manifest["components"]["corpus"][0]["sha256"]


def test_corrupt_offsets_of_the_right_size_are_rebuilt(setup):
    docs, corpus, tok, cache = setup
    shards = build(corpus, tok, cache)
    path = shards.directory / "sentence_offsets.bin"
    offsets = np.fromfile(path, dtype=np.int64)
    offsets[3] = offsets[1]
    offsets.tofile(path)
    del shards
    with pytest.raises(UserError, match="not increasing"):
        build(corpus, tok, cache, overwrite=False)
    assert build(corpus, tok, cache).num_documents == len(docs)


CONCURRENT = """
import logging, sys
from lmpretrain.data import build_or_load_dataset
from tests.test_data_fakes import FakeEncoder
logging.basicConfig(level=logging.INFO)
corpus, tok, cache, builder = sys.argv[1:5]
shards = build_or_load_dataset([corpus], tok, cache, num_workers=1, chunk_chars=100, is_builder=builder == "1",
                               encoder_factory=FakeEncoder.from_pretrained, poll_interval_s=0.05, wait_timeout_s=60)
print("DOCS", shards.num_documents)
"""


def test_concurrent_processes_build_once_and_the_others_wait(setup):
    import subprocess
    import sys

    from tests.helpers import REPO

    docs, corpus, _, cache = setup
    tok = fake_tokenizer_dir(corpus.parent / "slow_tok", delay=0.02)  # ~60 chunks: a build of about a second
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(corpus), str(tok), str(cache), builder],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={"LMP_NO_PROGRESS": "1", "PATH": ""})
             for builder in ("1", "1", "0", "0")]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err[-2000:] for _, err in outputs]
    assert all(f"DOCS {len(docs)}" in out for out, _ in outputs)
    logs = "".join(err for _, err in outputs)
    assert logs.count("building the dataset cache") == 1
    assert logs.count("reusing the dataset cache") == 1  # the second builder found the first one's cache
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []


def test_waiters_stop_at_once_when_the_builder_fails(tmp_path):
    corpus = tmp_path / "bad.txt"
    corpus.write_bytes(b"ok\n\xff\n")
    tok = fake_tokenizer_dir(tmp_path / "tok")
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="invalid UTF-8"):
        build(corpus, tok, cache)
    started = time.perf_counter()
    with pytest.raises(UserError, match=r"building the dataset cache .* failed: .*bad\.txt:2: invalid UTF-8"):
        build(corpus, tok, cache, is_builder=False, wait_timeout_s=30, poll_interval_s=0.05)
    assert time.perf_counter() - started < 5


def test_unreadable_cache_file_is_refused_or_rebuilt(setup, monkeypatch, caplog):
    docs, corpus, tok, cache = setup
    build(corpus, tok, cache)
    real_memmap = np.memmap
    failures = {"left": 2}

    def unreadable(path, *args, **kw):  # as a file left with mode 000 by another user (we may run as root)
        if str(path).endswith("ids.bin") and failures["left"]:
            failures["left"] -= 1
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_memmap(path, *args, **kw)

    monkeypatch.setattr(shards_module.np, "memmap", unreadable)
    with pytest.raises(UserError, match="dataset cache .* is unusable .*Permission denied"):
        build(corpus, tok, cache, overwrite=False)
    caplog.set_level(logging.INFO, logger="lmpretrain")
    assert build(corpus, tok, cache).num_documents == len(docs)
    assert "Permission denied" in caplog.text and "building the dataset cache" in caplog.text


def test_zero_byte_corpus_is_an_error_and_leaves_no_cache(tmp_path):
    corpus = tmp_path / "empty.txt"
    corpus.write_bytes(b"")
    tok = fake_tokenizer_dir(tmp_path / "tok")
    with pytest.raises(UserError, match="empty.txt has no text"):
        build(corpus, tok, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".failed")] == []


def test_file_added_to_or_removed_from_a_corpus_directory_rebuilds_the_same_cache(tmp_path, caplog):
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    docs = make_documents(6, seed=2)
    write_txt(corpus_dir / "a.txt", docs[:3])
    tok = fake_tokenizer_dir(tmp_path / "tok")
    cache = tmp_path / "cache"
    first = build(corpus_dir, tok, cache)
    caplog.set_level(logging.INFO, logger="lmpretrain")
    write_txt(corpus_dir / "b.txt", docs[3:])
    second = build(corpus_dir, tok, cache)
    assert second.directory == first.directory and second.num_documents == 6
    assert f"corpus file {(corpus_dir / 'b.txt').resolve()} was added" in caplog.text
    (corpus_dir / "a.txt").unlink()
    assert build(corpus_dir, tok, cache).num_documents == 3
    assert f"corpus file {(corpus_dir / 'a.txt').resolve()} was removed" in caplog.text
    assert [p.name for p in cache.iterdir()] == [first.directory.name]  # no stale cache left behind


def test_a_tokenizing_worker_that_dies_is_one_clear_error_not_a_hang(setup, tmp_path):
    docs, corpus, _, cache = setup
    tok = fake_tokenizer_dir(tmp_path / "dying_tok", exit_on=docs[20][0])  # the parent must not die: only workers
    started = time.perf_counter()
    # the message names the file and about where reading had got to (a few chunks ahead of the worker)
    named = rf"process tokenizing .*{os.path.basename(corpus)} near line \d+ died unexpectedly .*--num_workers"
    with pytest.raises(UserError, match=named):
        build(corpus, tok, cache, num_workers=2, chunk_chars=200)
    assert time.perf_counter() - started < 30
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".failed")] == []


def test_a_cache_of_another_format_version_is_rebuilt(setup, caplog):
    docs, corpus, tok, cache = setup
    shards = build(corpus, tok, cache)
    manifest = json.loads((shards.directory / "manifest.json").read_text())
    manifest["format_version"] = 0
    (shards.directory / "manifest.json").write_text(json.dumps(manifest))
    caplog.set_level(logging.INFO, logger="lmpretrain")
    assert build(corpus, tok, cache).num_documents == len(docs)
    assert "written in another cache format (version 0" in caplog.text


def test_a_small_corpus_is_tokenized_in_process_whatever_the_workers_asked(setup, monkeypatch):
    docs, corpus, tok, cache = setup

    def no_pool(*args, **kw):
        raise AssertionError("a pool of workers was started for a small corpus")

    monkeypatch.setattr(shards_module, "worker_pool", no_pool)
    assert build(corpus, tok, cache, num_workers=8, min_bytes_per_worker=4 << 20).num_documents == len(docs)


def test_sentences_without_tokens_are_dropped_and_their_document_starts_kept(tmp_path):
    writer = shards_module.ShardWriter(tmp_path, np.dtype(np.uint16))
    chunks = [([2, 0, 3], [True, False, True]),  # a tokenless sentence inside document 0
              ([0], [True]),  # document 2 starts with a tokenless sentence, at the end of a chunk...
              ([0, 1], [False, False]),  # ...so it begins at the next sentence with tokens, a chunk later
              ([1, 0], [True, True])]  # a last document with no tokens at all: no document
    for lengths, starts in chunks:
        lengths = np.array(lengths)
        writer.append(np.arange(lengths.sum()) + 10, np.ones(lengths.sum(), bool), lengths, np.array(starts))
    writer.close()
    sentence_offsets = np.fromfile(tmp_path / "sentence_offsets.bin", dtype=np.int64).tolist()
    document_offsets = np.fromfile(tmp_path / "document_offsets.bin", dtype=np.int64).tolist()
    assert sentence_offsets == [0, 2, 5, 6, 7]
    assert document_offsets == [0, 1, 2, 3, 4]
    assert (writer.num_documents, writer.num_sentences, writer.num_tokens) == (4, 4, 7)


def rewrite_ids(directory, share: float, new_ids, seed: int = 0) -> int:
    """Rewrite ``share`` of the cache's ids in place (same size) to ``new_ids(old) -> ids``; returns how many."""
    path = directory / "ids.bin"
    dtype = np.dtype(json.loads((directory / "manifest.json").read_text())["dtype"])
    ids = np.fromfile(path, dtype=dtype)
    where = np.random.default_rng(seed).choice(len(ids), size=max(1, int(len(ids) * share)), replace=False)
    ids[where] = new_ids(ids[where])
    ids.tofile(path)
    return len(where)


def other_in_range(old, vocab_size=32000):
    return (old.astype(np.int64) - 5 + 1) % (vocab_size - 5) + 5  # another id the fake could produce


@pytest.mark.parametrize("damage", ["other in-range ids", "out-of-range ids", "word starts"])
def test_damaged_contents_are_rebuilt_with_a_warning_or_refused(setup, tmp_path, caplog, damage):
    docs, corpus, tok, cache = setup
    clean = build(corpus, tok, tmp_path / "clean")
    shards = build(corpus, tok, cache)
    if damage == "word starts":
        path = shards.directory / "word_starts.bin"
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    else:
        rewrite_ids(shards.directory, 0.1, other_in_range if damage == "other in-range ids" else lambda old: 40000)
    del shards
    expected = "beyond the tokenizer's vocabulary of 32000" if damage == "out-of-range ids" else "differs from"
    with pytest.raises(UserError, match=f"--disable_overwrite_cache: the dataset cache .* is unusable .*{expected}"):
        build(corpus, tok, cache, overwrite=False)
    caplog.set_level(logging.INFO, logger="lmpretrain")
    rebuilt = build(corpus, tok, cache)
    assert "contents are damaged and it is rebuilt from the corpus" in caplog.text and expected in caplog.text
    assert any(r.levelno == logging.WARNING and "damaged" in r.getMessage() for r in caplog.records)
    for name in ("ids.bin", "word_starts.bin", "sentence_offsets.bin", "document_offsets.bin"):
        assert (rebuilt.directory / name).read_bytes() == (clean.directory / name).read_bytes(), name


def test_out_of_range_ids_name_the_id_and_its_position(setup):
    _, corpus, tok, cache = setup
    shards = build(corpus, tok, cache)
    rewrite_ids(shards.directory, 0.0, lambda old: 32000)
    at = int(np.flatnonzero(np.fromfile(shards.directory / "ids.bin", dtype=np.uint16) == 32000)[0])
    with pytest.raises(shards_module.CacheInvalid, match=rf"holds id 32000 \(token {at}, sentence \d+\), beyond"):
        TokenShards(shards.directory).verify(32000)


def test_the_manifest_records_each_files_checksum_of_what_was_written(setup):
    import zlib

    _, corpus, tok, cache = setup
    shards = build(corpus, tok, cache, chunk_chars=50)  # many appends: the running CRC must equal the whole file's
    manifest = json.loads((shards.directory / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["checksum"] == "crc32"
    for name in ("ids.bin", "word_starts.bin", "sentence_offsets.bin", "document_offsets.bin"):
        assert manifest["checksums"][name] == f"{zlib.crc32((shards.directory / name).read_bytes()):08x}"


def make_format_1(directory) -> None:
    """Turn a cache into one as the version before checksums wrote it (format 1, no checksums)."""
    from lmpretrain.data.cache import fingerprint_of

    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["format_version"] = manifest["components"]["format_version"] = 1
    manifest.pop("checksum")
    manifest.pop("checksums")
    manifest["fingerprint"] = fingerprint_of(manifest["components"])
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_a_cache_without_checksums_is_rebuilt_once_saying_so(setup, caplog):
    docs, corpus, tok, cache = setup
    shards = build(corpus, tok, cache)
    make_format_1(shards.directory)
    caplog.set_level(logging.INFO, logger="lmpretrain")
    rebuilt = build(corpus, tok, cache)
    assert "built by an earlier version, without content checksums (cache format 1 -> 2): it is rebuilt once" \
        in caplog.text
    assert rebuilt.has_checksums and rebuilt.num_documents == len(docs)
    caplog.clear()
    build(corpus, tok, cache)
    assert "reusing the dataset cache" in caplog.text and "rebuilt" not in caplog.text


def test_a_cache_without_checksums_under_disable_overwrite_is_range_checked_and_used_with_a_warning(setup, caplog):
    docs, corpus, tok, cache = setup
    shards = build(corpus, tok, cache)
    make_format_1(shards.directory)
    caplog.set_level(logging.INFO, logger="lmpretrain")
    assert build(corpus, tok, cache, overwrite=False).num_documents == len(docs)
    assert "without content checksums, so only its sizes, offsets and id range were checked" in caplog.text
    rewrite_ids(shards.directory, 0.1, lambda old: 40000)
    with pytest.raises(UserError, match="holds id 40000 .* beyond the tokenizer's vocabulary of 32000"):
        build(corpus, tok, cache, overwrite=False)


def test_a_waiter_does_not_take_a_damaged_cache_and_takes_the_rebuilt_one(setup, tmp_path):
    docs, corpus, tok, cache = setup
    clean = build(corpus, tok, tmp_path / "clean")
    shards = build(corpus, tok, cache)
    rewrite_ids(shards.directory, 0.1, other_in_range)
    del shards
    result = {}

    def wait():
        result["shards"] = build(corpus, tok, cache, is_builder=False, wait_timeout_s=20, poll_interval_s=0.02)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    assert "shards" not in result  # it saw a cache of the right fingerprint, damaged: not taken
    build(corpus, tok, cache)
    waiter.join(20)
    assert np.array_equal(result["shards"].ids, clean.ids)


def test_waiting_on_another_hosts_lock_says_who_holds_it_and_how_to_clear_it_periodically(setup, monkeypatch,
                                                                                            caplog):
    from lmpretrain.data import cache as cache_module

    _, corpus, tok, cache = setup
    location = cache_location(cache, resolve_corpus_files([str(corpus)]), tok)
    cache.mkdir()
    lock = cache / f".{location.name}.lock"
    lock.write_text("otherhost 4242")
    monkeypatch.setattr(cache_module, "LOCK_LOG_EVERY_S", 0.1)
    caplog.set_level(logging.INFO, logger="lmpretrain")
    with pytest.raises(UserError, match="is locked by another build"):
        build(corpus, tok, cache, wait_timeout_s=0.5, poll_interval_s=0.02)
    lines = [r.getMessage() for r in caplog.records if "holds its lock" in r.getMessage()]
    assert len(lines) >= 2 and lines[0].startswith(f"waiting to build the dataset cache {location}")
    assert lines[1].startswith("still waiting to build")
    assert all(f"process 4242 on host otherhost, which this host cannot check: if that build is not running any more "
               f"(the job was killed), delete {lock}" in line for line in lines)


def test_the_blockwise_offset_check_finds_each_decrease_the_whole_array_check_finds(setup, monkeypatch):
    """The open reads the offsets in blocks (not through the maps): a repeated offset anywhere, across a block
    boundary too, is found as a diff over the whole array finds it; the clean cache opens."""
    _, corpus, tok, cache = setup
    directory = build(corpus, tok, cache).directory
    monkeypatch.setattr(shards_module, "CHECK_BLOCK_ITEMS", 4)
    TokenShards(directory)
    for name in ("sentence_offsets.bin", "document_offsets.bin"):
        path = directory / name
        clean = path.read_bytes()
        offsets = np.frombuffer(clean, dtype=np.int64)
        assert len(offsets) > 12
        for at in range(1, len(offsets) - 1):  # the first and last are checked against the manifest
            damaged = offsets.copy()
            damaged[at] = damaged[at - 1] if at % 2 else damaged[at + 1]
            assert np.any(np.diff(damaged) <= 0)
            path.write_bytes(damaged.tobytes())
            with pytest.raises(shards_module.CacheInvalid, match="not increasing"):
                TokenShards(directory)
        path.write_bytes(clean)
    TokenShards(directory)


def test_verify_in_blocks_that_do_not_divide_the_files_checks_every_byte(setup):
    _, corpus, tok, cache = setup
    shards = build(corpus, tok, cache)
    for name, itemsize in (("ids.bin", 2), ("word_starts.bin", 1), ("sentence_offsets.bin", 8),
                           ("document_offsets.bin", 8)):
        path = shards.directory / name
        clean = path.read_bytes()
        items = len(clean) // itemsize
        step = next(k for k in range(2, items) if items % k)  # a partial last block
        TokenShards(shards.directory).verify(32000, chunk_bytes=step * itemsize)
        opened = TokenShards(shards.directory)  # opened first: a damaged last offset would fail the open's check
        path.write_bytes(clean[:-1] + bytes([clean[-1] ^ 1]))  # the last byte, in the partial block
        with pytest.raises(shards_module.CacheInvalid, match=f"content of {name} differs"):
            opened.verify(32000, chunk_bytes=step * itemsize)
        path.write_bytes(clean)
