"""Inputs and the dataset cache in real runs of the scripts (issue 25): nothing silently wrong.

- A damaged cache (ids rewritten on disk to other in-range ids, or beyond the vocabulary) is found on the next run:
  rebuilt with a warning (the same data as a clean build, and training runs) or refused with one error under
  --disable_overwrite_cache; never trained on.
- A corpus directory with upper-case suffixes, bzip2 and xz files is read whole (the same data as its plain .txt
  copy), and files that are not corpus files are named in a warning.
- NUL characters: MeCab's cut kept (parity with transformers), with a warning naming the line and the loss.
- A build waiting on another host's cache lock says who holds it and how to clear it, and goes on once it is gone.
- --vocab_size below what the alphabet needs stops during pre-tokenizing, not after it."""

from __future__ import annotations

import bz2
import json
import lzma
import queue
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO, run_script

PRESET = {"bert-c": {"number-of-layers": 1, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
                     "attention-heads": 2, "warmup-steps": 1, "learning-rate": 2e-3, "batch-size": {"-1": 4},
                     "train-steps": 1, "save-steps": 1, "logging-steps": 1}}
SILENCE_S = 300  # a process that prints nothing for this long while it should be saying it waits: a failure
DATA_FILES = ("ids.bin", "word_starts.bin", "sentence_offsets.bin", "document_offsets.bin")


@pytest.fixture(scope="module")
def clean(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    """A clean build of the sample corpus's cache (in its own cache dir), and the parameter file."""
    root = tmp_path_factory.mktemp("integrity")
    (root / "parameter.json").write_text(json.dumps(PRESET))
    setup = {"root": root, "corpus": sample_corpus, "tokenizer": tiny_tokenizer_dir}
    result = run_script("run_pretraining.py", *args(setup, root / "clean_cache", root / "clean_model"),
                        "--build_dataset_only")
    assert result.returncode == 0, result.stderr
    setup["clean"] = cache_of(root / "clean_cache")
    return setup


def args(setup, cache_dir: Path, model_dir: Path) -> list[str]:
    return ["--input_file", str(setup["corpus"]), "--tokenizer_dir", str(setup["tokenizer"]), "--model_dir",
            str(model_dir), "--parameter_file", str(setup["root"] / "parameter.json"), "--model_type", "bert-c",
            "--cache_dir", str(cache_dir), "--num_workers", "1", "--max_eval_samples", "4"]


def cache_of(cache_dir: Path) -> Path:
    (directory,) = [p for p in cache_dir.iterdir() if (p / "manifest.json").is_file()]
    return directory


def damage(directory: Path, out_of_range: bool) -> None:
    """Rewrite 10% of the ids (file size unchanged) to other in-range ids, or to ids beyond the vocabulary."""
    manifest = json.loads((directory / "manifest.json").read_text())
    vocab_size = manifest["vocab_size"]
    ids = np.fromfile(directory / "ids.bin", dtype=manifest["dtype"])
    where = np.random.default_rng(0).choice(len(ids), size=len(ids) // 10, replace=False)
    ids[where] = vocab_size + 7 if out_of_range else (ids[where].astype(np.int64) + 1) % vocab_size
    ids.tofile(directory / "ids.bin")


def one_error(result) -> str:
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


@pytest.mark.parametrize("out_of_range", [False, True], ids=["other-in-range-ids", "out-of-range-ids"])
def test_a_damaged_cache_is_refused_or_rebuilt_to_the_clean_builds_data(clean, tmp_path, out_of_range):
    cache_dir = tmp_path / "cache"
    built = run_script("run_pretraining.py", *args(clean, cache_dir, tmp_path / "m0"), "--build_dataset_only")
    assert built.returncode == 0, built.stderr
    directory = cache_of(cache_dir)
    damage(directory, out_of_range)

    refused = run_script("run_pretraining.py", *args(clean, cache_dir, tmp_path / "m1"), "--build_dataset_only",
                         "--disable_overwrite_cache")
    error = one_error(refused)
    assert f"--disable_overwrite_cache: the dataset cache {directory} is unusable" in error
    assert ("beyond the tokenizer's vocabulary" if out_of_range else "the content of ids.bin differs") in error

    # rebuilt, then trained on (one step): no IndexError, and the data are the clean build's
    rerun = run_script("run_pretraining.py", *args(clean, cache_dir, tmp_path / "m2"), "--train_steps", "1",
                       *(() if out_of_range else ("--build_dataset_only",)))
    assert rerun.returncode == 0, rerun.stderr
    warnings = [line for line in rerun.stderr.splitlines() if "contents are damaged and it is rebuilt" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], rerun.stderr
    assert "unchanged" not in rerun.stderr
    for name in DATA_FILES:
        assert (directory / name).read_bytes() == (clean["clean"] / name).read_bytes(), name
    if out_of_range:
        assert (tmp_path / "m2" / "model.safetensors").is_file() or (tmp_path / "m2" / "checkpoint-1").is_dir()


def split_documents(corpus: Path, parts: int) -> list[str]:
    """The corpus cut at document boundaries (blank lines) into ``parts`` texts."""
    documents = corpus.read_text(encoding="utf-8").split("\n\n")
    size = -(-len(documents) // parts)
    return ["\n\n".join(documents[i:i + size]).strip("\n") + "\n" for i in range(0, len(documents), size)]


def test_a_corpus_dir_of_odd_suffixes_and_compressions_is_read_whole_and_other_files_named(clean, tmp_path):
    texts = split_documents(clean["corpus"], 3)
    plain, odd = tmp_path / "plain", tmp_path / "odd"
    plain.mkdir()
    odd.mkdir()
    for i, text in enumerate(texts):
        (plain / f"{i}.txt").write_text(text, encoding="utf-8")
    (odd / "0.TXT").write_text(texts[0], encoding="utf-8")
    (odd / "1.txt.bz2").write_bytes(bz2.compress(texts[1].encode("utf-8")))
    (odd / "2.txt.xz").write_bytes(lzma.compress(texts[2].encode("utf-8")))
    (odd / "3.text").write_text(texts[0], encoding="utf-8")
    (odd / "README.md").write_text("about this corpus", encoding="utf-8")
    caches = {}
    for name, corpus in (("plain", plain), ("odd", odd)):
        result = run_script("run_pretraining.py", *args({**clean, "corpus": corpus}, tmp_path / f"c-{name}",
                                                        tmp_path / f"m-{name}"), "--build_dataset_only")
        assert result.returncode == 0, result.stderr
        caches[name] = cache_of(tmp_path / f"c-{name}")
        skipped = [line for line in result.stderr.splitlines() if "skipping" in line]
        if name == "odd":
            assert len(skipped) == 1 and "WARNING" in skipped[0], result.stderr
            assert skipped[0].endswith(f"corpus directory {odd}: skipping 2 files that are not .txt or .jsonl "
                                       f"(optionally compressed: .gz, .bz2, .xz, .lzma): 3.text, README.md")
        else:
            assert not skipped
    for name in DATA_FILES:
        assert (caches["odd"] / name).read_bytes() == (caches["plain"] / name).read_bytes(), name
    tokenizers = {}
    for name, corpus in (("plain", plain), ("odd", odd)):
        result = run_script("train_tokenizer.py", "--input_file", str(corpus), "--model_dir",
                            str(tmp_path / f"tok-{name}"), "--vocab_size", "2000", "--limit_alphabet", "1000",
                            "--min_frequency", "1", "--num_files", "1")
        assert result.returncode == 0, result.stderr
        assert ("3.text, README.md" in result.stderr) == (name == "odd")
        tokenizers[name] = (tmp_path / f"tok-{name}" / "vocab.txt").read_text(encoding="utf-8")
    assert tokenizers["odd"] == tokenizers["plain"]


def test_nul_characters_are_cut_as_mecab_cuts_them_with_a_warning_naming_the_line(clean, tmp_path):
    lines = clean["corpus"].read_text(encoding="utf-8").splitlines()
    with_nul, cut = list(lines), list(lines)
    for i in (3, 10):  # two lines of text with a NUL in the middle
        assert lines[i]
        middle = len(lines[i]) // 2
        with_nul[i] = lines[i][:middle] + "\x00" + lines[i][middle:]
        cut[i] = lines[i][:middle]
    dropped = sum(len(with_nul[i]) - len(cut[i]) for i in (3, 10))
    (tmp_path / "nul").mkdir()
    (tmp_path / "cut").mkdir()
    (tmp_path / "nul" / "corpus.txt").write_text("\n".join(with_nul) + "\n", encoding="utf-8")
    (tmp_path / "cut" / "corpus.txt").write_text("\n".join(cut) + "\n", encoding="utf-8")
    caches = {}
    for name in ("nul", "cut"):
        corpus = tmp_path / name / "corpus.txt"
        result = run_script("run_pretraining.py", *args({**clean, "corpus": corpus}, tmp_path / f"c-{name}",
                                                        tmp_path / f"m-{name}"), "--build_dataset_only")
        assert result.returncode == 0, result.stderr
        caches[name] = cache_of(tmp_path / f"c-{name}")
        warnings = [line for line in result.stderr.splitlines() if "NUL" in line]
        if name == "nul":
            assert len(warnings) == 1 and "WARNING" in warnings[0], result.stderr
            assert f"{corpus}:4: a NUL character: the word segmenter (MeCab) ends a line at its first" in warnings[0]
            assert f"{dropped} characters dropped from 2 lines of this file" in warnings[0]
        else:
            assert not warnings
    for name in DATA_FILES:  # parity: the text after a NUL is not tokenized, as BertJapaneseTokenizer does
        assert (caches["nul"] / name).read_bytes() == (caches["cut"] / name).read_bytes(), name
    result = run_script("train_tokenizer.py", "--input_file", str(tmp_path / "nul" / "corpus.txt"), "--model_dir",
                        str(tmp_path / "tok"), "--vocab_size", "2000", "--limit_alphabet", "1000", "--num_files", "1")
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stderr.splitlines() if f"{dropped} characters dropped" in line]) == 1


def test_a_build_waiting_on_another_hosts_lock_says_so_and_goes_on_once_it_is_cleared(clean, tmp_path):
    from lmpretrain.data import cache_location

    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    location = cache_location(cache_dir, [str(clean["corpus"])], clean["tokenizer"])
    lock = cache_dir / f".{location.name}.lock"
    lock.write_text("otherhost 4242")
    command = [sys.executable, str(REPO / "run_pretraining.py"), *args(clean, cache_dir, tmp_path / "m"),
               "--build_dataset_only"]
    env = {"LMP_NO_PROGRESS": "1", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)
    reader.start()
    try:
        seen = []
        while not seen or "holds its lock" not in seen[-1]:
            try:  # the line comes when the build starts waiting; a build that waits without a word fails here
                seen.append(lines.get(timeout=SILENCE_S))
            except queue.Empty:
                pytest.fail(f"the build said nothing for {SILENCE_S} s while waiting on the lock:\n{''.join(seen)}")
        assert (f"waiting to build the dataset cache {location}: another build holds its lock {lock}" in seen[-1]
                and "process 4242 on host otherhost, which this host cannot check: if that build is not running "
                    f"any more (the job was killed), delete {lock}" in seen[-1])
        lock.unlink()
        assert proc.wait(timeout=600) == 0, "".join(seen)
        reader.join()  # to the end of its output
        rest = "".join(lines.queue)
        assert "built the dataset cache" in rest, rest
    finally:
        proc.kill()
        proc.wait()


def test_a_vocabulary_below_the_alphabet_stops_during_pre_tokenizing(tmp_path):
    import random

    rng = random.Random(0)
    characters = [chr(0x4E00 + i) for i in range(3000)]
    corpus = tmp_path / "many.txt"  # 12000 lines of 60 characters: three chunks of pre-tokenizing
    corpus.write_text("".join("".join(rng.choice(characters) for _ in range(60)) + "\n" for _ in range(12000)),
                      encoding="utf-8")
    result = run_script("train_tokenizer.py", "--input_file", str(corpus), "--model_dir", str(tmp_path / "tok"),
                        "--vocab_size", "2000", "--limit_alphabet", "2500", "--mecab_dic_type", "none",
                        "--num_files", "1")
    error = one_error(result)
    lines = int(error.split("the first ")[1].split(" lines")[0])
    assert lines < 12000, error  # before the whole pass
    assert ("make wordpiece keep 15 special and unused tokens + 2500 characters (the --limit_alphabet 2500 most "
            "frequent of its 3000) = 2515 tokens before any subword; raise --vocab_size well above 2515") in error
    assert not (tmp_path / "tok").exists()


def test_a_corpus_renamed_with_the_same_bytes_does_not_block_do_continue(clean, tmp_path):
    first, renamed = tmp_path / "first.txt", tmp_path / "renamed" / "corpus-v2.txt"
    first.write_bytes(clean["corpus"].read_bytes())
    model_dir = tmp_path / "run"
    started = run_script("run_pretraining.py", *args({**clean, "corpus": first}, tmp_path / "cache", model_dir),
                         "--train_steps", "1")
    assert started.returncode == 0, started.stderr
    renamed.parent.mkdir()
    first.rename(renamed)
    resumed = run_script("run_pretraining.py", *args({**clean, "corpus": renamed}, tmp_path / "cache", model_dir),
                         "--train_steps", "2", "--do_continue")
    assert resumed.returncode == 0, resumed.stderr
    assert (f"corpus paths <{first}> -> <{renamed}> (the same content: noted only)" in resumed.stderr)
    assert "another run" not in resumed.stderr and "corpus <" not in resumed.stderr
    assert (model_dir / "checkpoint-2").is_dir()
