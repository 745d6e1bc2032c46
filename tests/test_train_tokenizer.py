"""train_tokenizer.py in a subprocess: its flags, its artifacts, and one clear error for each kind of bad input."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.helpers import run_script

SMALL = ["--vocab_size", "3000", "--min_frequency", "1", "--limit_alphabet", "1000", "--num_unused_tokens", "3"]


def train(*args: str, env: dict | None = None):
    return run_script("train_tokenizer.py", *args, env={"LMP_NO_PROGRESS": "1", **(env or {})}, timeout=300)


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``directory`` (hidden ones too): its sha256 and mtime, to show nothing was touched."""
    return {str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_one_clean_error(result, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_corpus):
    """One run with every flag of the original tool, given verbatim."""
    root = tmp_path_factory.mktemp("script")
    result = train("--input_file", str(sample_corpus), "--model_dir", str(root / "tok"),
                   "--intermediate_dir", str(root / "intermediate"), "--num_files", "2", "--mecab_dic_type", "ipadic",
                   "--mecab_option", "", "--tokenizer_type", "sentencepiece", *SMALL)
    return root, result


def test_every_flag_of_the_original_and_the_artifacts(trained, sample_corpus):
    root, result = trained
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"tokenizer: bpe on MeCab ipadic, (\d+) tokens, trained on (\d+) lines \((\d+) characters\) "
                         r"in [\d.]+ s -> .*tok", summary)
    assert match, summary
    vocab_size, lines, characters = map(int, match.groups())
    tok = root / "tok"
    assert {p.name for p in tok.iterdir()} == {"spiece.model", "vocab.txt", "tokenizer_config.json",
                                               "special_tokens_map.json", "lmpretrain_tokenizer.json"}
    meta = json.loads((tok / "lmpretrain_tokenizer.json").read_text(encoding="utf-8"))
    assert meta["spec"]["tokenizer_type"] == "sentencepiece" and meta["tokenizer_type"] == "bpe"
    assert meta["spec"]["mecab_option"] is None  # --mecab_option "" is no option, as in transformers
    assert len((tok / "vocab.txt").read_text(encoding="utf-8").splitlines()) == vocab_size > 1000
    assert (lines, characters) == (meta["training"]["lines"], meta["training"]["characters"]) and lines > 300
    assert sorted(p.name for p in root.iterdir()) == ["intermediate", "tok"]  # no temp dirs left beside it
    # --intermediate_dir keeps the segmented text, as the original does: MeCab's words, one corpus line a line
    assert [p.name for p in (root / "intermediate").iterdir()] == ["segmented.txt"]
    segmented = (root / "intermediate" / "segmented.txt").read_text(encoding="utf-8").splitlines()
    assert len(segmented) == lines
    from lmpretrain.tokenization.segmenters import get_segmenter

    corpus = [line for line in sample_corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    words = get_segmenter("mecab", {"mecab_dic_type": "ipadic", "mecab_option": None}).wakati_batch(corpus[:20])
    assert segmented[:20] == words and all(" " in line for line in segmented[:20])


def test_output_loads_with_autotokenizer(trained, sample_corpus):
    from transformers import AutoTokenizer, BertJapaneseTokenizer

    from lmpretrain.tokenization import FastEncoder

    tokenizer = AutoTokenizer.from_pretrained(str(trained[0] / "tok"))
    assert isinstance(tokenizer, BertJapaneseTokenizer) and tokenizer.subword_tokenizer_type == "sentencepiece"
    assert [tokenizer.convert_tokens_to_ids(f"[unused{i}]") for i in range(3)] == [5, 6, 7]
    texts = sample_corpus.read_text(encoding="utf-8").splitlines()[:40]
    with FastEncoder.from_pretrained(trained[0] / "tok") as encoder:
        assert encoder.encode_batch(texts, add_special_tokens=True) == [tokenizer(t)["input_ids"] for t in texts]


@pytest.mark.parametrize("dic,algorithm", [("ipadic", "wordpiece"), ("unidic_lite", "unigram"), ("none", "bpe")])
def test_num_files_does_not_change_the_tokenizer(tmp_path, sample_corpus, dic, algorithm):
    outputs = []
    for workers in ("1", "2"):
        out = tmp_path / f"tok{workers}"
        result = train("--input_file", str(sample_corpus), "--model_dir", str(out), "--num_files", workers,
                       "--mecab_dic_type", dic, "--tokenizer_type", algorithm, *SMALL,
                       env={"TOKENIZERS_PARALLELISM": "true"})  # the Rust trainer's threads too
        assert result.returncode == 0, result.stderr
        outputs.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert outputs[0].keys() == outputs[1].keys() and len(outputs[0]) >= 4
    assert outputs[0] == outputs[1]


def test_same_settings_replace_the_dir_atomically(tmp_path, sample_corpus):
    args = ["--input_file", str(sample_corpus), "--model_dir", str(tmp_path / "tok"), "--num_files", "1", *SMALL]
    assert train(*args).returncode == 0
    # a tokenizer file of an earlier version (wordpiece dirs no longer have one): the dir is replaced, not merged
    (tmp_path / "tok" / "lmpretrain_wordpiece.json").write_text("{}", encoding="utf-8")
    before = (tmp_path / "tok" / "vocab.txt").read_bytes()
    result = train(*args)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "tok" / "lmpretrain_wordpiece.json").exists()
    assert (tmp_path / "tok" / "vocab.txt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]
    # anything that is not a tokenizer file (a user's notes, a model trained with it) makes the dir off limits
    (tmp_path / "tok" / "notes.txt").write_text("mine", encoding="utf-8")
    result = train(*args)
    assert result.returncode == 2 and "holds more than a tokenizer (notes.txt)" in result.stderr
    assert (tmp_path / "tok" / "notes.txt").read_text(encoding="utf-8") == "mine"


# ---- bad input: exit code 2, one "error:" line, no traceback, nothing half-written ------------------------------

def _write_bad_inputs(root: Path) -> None:
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.txt").write_bytes(b"\n  \n\n")
    (root / "no_text").mkdir()
    (root / "no_text" / "notes.md").write_text("not a corpus", encoding="utf-8")
    (root / "latin1.txt").write_bytes("ok line\nsecond line\ncaf\xe9 au lait\n".encode("latin-1"))


BAD_INPUTS = {
    # name: (extra args, fragments the one error line must contain)
    "missing input": (["--input_file", "{root}/missing.txt"], ["missing.txt", "does not exist"]),
    "empty input": (["--input_file", "{root}/empty.txt"], ["empty.txt", "empty"]),
    "only blank lines": (["--input_file", "{root}/blank.txt"], ["blank.txt", "no text"]),
    "dir without text files": (["--input_file", "{root}/no_text"], ["no_text", ".txt"]),
    "invalid UTF-8": (["--input_file", "{root}/latin1.txt"], ["latin1.txt:3:", "UTF-8"]),
    "vocab too small (wordpiece)": (["--vocab_size", "100"], ["--vocab_size 100 is too small"]),
    "vocab too small (unigram)": (["--vocab_size", "100", "--tokenizer_type", "unigram"],
                                  ["--vocab_size 100 is too small"]),
    "vocab below the specials": (["--vocab_size", "8"], ["--vocab_size 8", "special"]),
    "unknown dictionary": (["--mecab_dic_type", "jumandic"], ["--mecab_dic_type 'jumandic'", "ipadic"]),
    "unknown tokenizer type": (["--tokenizer_type", "bytelevel"], ["--tokenizer_type 'bytelevel'", "wordpiece"]),
    "bad MeCab option": (["--mecab_option=--no-such-option"], ["--no-such-option"]),
    "no workers": (["--num_files", "0"], ["--num_files"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_error(tmp_path, sample_corpus, case):
    _write_bad_inputs(tmp_path)
    extra, fragments = BAD_INPUTS[case]
    extra = [arg.replace("{root}", str(tmp_path)) for arg in extra]
    if "--input_file" not in extra:
        extra = ["--input_file", str(sample_corpus), *extra]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = train("--model_dir", str(tmp_path / "out" / "tok"), "--intermediate_dir", str(tmp_path / "work"),
                   "--num_files", "1", "--min_frequency", "1", *extra)  # later flags win
    assert_one_clean_error(result, *fragments)
    assert set(p.name for p in tmp_path.iterdir()) - set(before) <= {"out", "work"}
    for created in (tmp_path / "out", tmp_path / "work"):  # no model dir, no temp dir, no segmented text
        assert not created.exists() or list(created.iterdir()) == []


def test_existing_dir_with_a_different_tokenizer_is_left_untouched(tmp_path, sample_corpus):
    tok = tmp_path / "tok"
    result = train("--input_file", str(sample_corpus), "--model_dir", str(tok), "--num_files", "1", *SMALL)
    assert result.returncode == 0, result.stderr
    before = snapshot(tmp_path)
    result = train("--input_file", str(sample_corpus), "--model_dir", str(tok), "--num_files", "1", *SMALL,
                   "--tokenizer_type", "unigram")
    assert_one_clean_error(result, "holds a different tokenizer", "tokenizer_type 'wordpiece' -> 'unigram'")
    assert snapshot(tmp_path) == before  # byte for byte, and no temp dir beside it


def test_existing_dir_with_unrelated_files_is_left_untouched(tmp_path, sample_corpus):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "model.safetensors").write_bytes(b"\x00weights")
    (tok / "notes.txt").write_text("mine", encoding="utf-8")
    before = snapshot(tmp_path)
    result = train("--input_file", str(sample_corpus), "--model_dir", str(tok), *SMALL)
    assert_one_clean_error(result, str(tok), "not a tokenizer")
    assert snapshot(tmp_path) == before


def test_unidic_without_its_dictionary(tmp_path, sample_corpus):
    """Whether the unidic package is missing or installed without `python -m unidic download`: one clear line."""
    fake = tmp_path / "site" / "unidic"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import os\nDICDIR = os.path.join(os.path.dirname(__file__), 'dicdir')\n",
                                      encoding="utf-8")
    args = ["--input_file", str(sample_corpus), "--model_dir", str(tmp_path / "tok"), "--mecab_dic_type", "unidic"]
    line = assert_one_clean_error(train(*args, env={"PYTHONPATH": str(tmp_path / "site")}),
                                  "python -m unidic download", "unidic_lite")
    assert "not been downloaded" in line
    try:
        import unidic  # noqa: F401
    except ModuleNotFoundError:  # this machine: the package is not installed at all
        assert_one_clean_error(train(*args), "not installed", "pip install unidic", "python -m unidic download")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


@pytest.mark.parametrize("flags", [["--mecab_dic_type", "none"], ["--word_tokenizer", "none"]])
def test_no_segmenter_is_named_as_none(tmp_path, sample_corpus, flags):
    result = train("--input_file", str(sample_corpus), "--model_dir", str(tmp_path / "tok"), "--num_files", "1",
                   *flags, *SMALL)
    assert result.returncode == 0, result.stderr
    assert "tokenizer: wordpiece on no word segmenter," in result.stdout
    assert "MeCab" not in result.stdout + result.stderr


# --- one run per tokenizer dir, leftovers of killed runs, a stop by signal (issue 25) --------------------------

def start_stopped(tmp_path: Path, point: str, *args: str):
    """train_tokenizer.py started through tests/stop_at.py: it stops at ``point`` (writing tmp_path/ready) until
    signalled. Returns (process, its stderr file)."""
    import os
    import subprocess
    import sys

    from tests.helpers import REPO, wait_for

    ready, err_path = tmp_path / "ready", tmp_path / "stopped.err"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LMP_NO_PROGRESS": "1"}
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "stop_at.py"), point, str(ready),
                                 "train_tokenizer.py", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
    try:
        wait_for(ready.is_file, proc, what=f"the stop point {point}")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, err_path


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) if directory.is_dir() else []


def test_two_runs_into_one_dir_the_second_is_refused_and_sigterm_is_one_line(tmp_path, sample_corpus):
    import signal

    from tests.helpers import wait_for_exit

    tok = tmp_path / "out" / "tok"
    args = ["--input_file", str(sample_corpus), "--model_dir", str(tok), "--num_files", "1", *SMALL]
    first, first_err = start_stopped(tmp_path, "tokenizer-trained", *args)
    try:
        second = train(*args)
        error = assert_one_clean_error(second, f"--model_dir {tok} is in use by another run", f"pid {first.pid}")
        assert "wait for it to end" in error
        assert first.poll() is None  # the first run is untouched by the second
        assert hidden(tok.parent) and all(name.startswith((".tok.tmp-", ".tok.lock")) for name in hidden(tok.parent))
        first.send_signal(signal.SIGTERM)
        assert wait_for_exit(first, first_err) == 143
    finally:
        first.kill()
        first.wait()
    lines = first_err.read_text().strip().splitlines()
    assert lines == [f"error: stopped by SIGTERM: nothing was written to --model_dir {tok}; its temporary files "
                     f"were removed"], lines
    assert not tok.parent.exists() or not list(tok.parent.iterdir())  # no dir, no temp dir, no lock left
    assert train(*args).returncode == 0 and (tok / "vocab.txt").is_file()


def test_a_killed_runs_leftovers_are_swept_by_the_next_run(tmp_path, sample_corpus):
    import os
    import signal
    import socket

    tok, intermediate = tmp_path / "out" / "tok", tmp_path / "intermediate"
    args = ["--input_file", str(sample_corpus), "--model_dir", str(tok), "--intermediate_dir", str(intermediate),
            "--num_files", "1", *SMALL]
    killed, _ = start_stopped(tmp_path, "tokenizer-trained", *args)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    left = hidden(tok.parent) + hidden(intermediate)
    owner = f"{socket.gethostname()}-{killed.pid}-"
    assert any(name.startswith(f".tok.tmp-{owner}") for name in left), left
    assert any(name.startswith(f".pretokenized-{owner}") for name in left), left
    assert (intermediate / hidden(intermediate)[0] / "segmented.txt").stat().st_size > 0  # what the issue saw stay
    live = tok.parent / f".tok.tmp-{socket.gethostname()}-{os.getpid()}-abc"  # a live owner's: never swept
    live.mkdir()

    again = train(*args)
    assert again.returncode == 0, again.stderr
    assert "left by tokenizer runs into" in again.stderr and "taking over the lock" in again.stderr
    assert hidden(tok.parent) == [live.name] and hidden(intermediate) == []
    assert (intermediate / "segmented.txt").is_file() and (tok / "vocab.txt").is_file()
