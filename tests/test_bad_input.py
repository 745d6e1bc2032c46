"""Bad input to every script: each row exits non-zero with exactly one ``error:`` line naming the problem, and no
Python traceback. Rows run each script's ``main`` under ``run_cli`` in this process (as ``python script.py`` does, but
without paying the interpreter start-up per row); a few rows also run as real processes."""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from lmpretrain.errors import run_cli
from lmpretrain.run_config import TrainArgs
from lmpretrain.trainer import train
from tests.helpers import run_script

REPO = Path(__file__).resolve().parent.parent
TINY = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
        "attention-heads": 2, "warmup-steps": 1, "learning-rate": 2e-3, "batch-size": {"-1": 8},
        "train-steps": 2, "save-steps": 2, "logging-steps": 1}
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def f(tmp_path_factory, sample_corpus, tiny_tokenizer_dir):
    """Every bad (and good) input the rows refer to, by name."""
    root = tmp_path_factory.mktemp("bad")
    files = {"root": root, "corpus": sample_corpus, "tokenizer": tiny_tokenizer_dir, "missing": root / "missing.txt"}

    def write(name: str, data: bytes | str) -> Path:
        path = root / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        files[name.split(".")[0]] = path
        return path

    write("empty.txt", b"")
    write("invalid_utf8.txt", "一行目は正しい。\n".encode() + b"\x82\xa0\x82\xa2 Shift_JIS\n")
    write("binary.bin", bytes(range(256)) * 64)
    write("regular_file", b"x")
    (root / "no_corpus_dir").mkdir()
    (root / "no_corpus_dir" / "notes.md").write_text("not a corpus")
    files["no_corpus_dir"] = root / "no_corpus_dir"
    (root / "empty_dir").mkdir()
    files["empty_dir"] = root / "empty_dir"
    (root / "locked").mkdir(mode=0o500)
    files["locked"] = root / "locked"

    presets = {"bert-t": TINY, "bert-wide": {**TINY, "hidden-size": 64}}
    write("parameter.json", json.dumps(presets))
    # issue 25: damaged and odd inputs, keys given twice
    data = bytearray(gzip.compress(sample_corpus.read_bytes()))
    data[200] ^= 0x55  # inside the deflate stream: zlib fails there
    write("damaged.txt.gz", bytes(data))
    os.mkfifo(root / "pipe.txt")
    files["pipe"] = root / "pipe.txt"
    write("zstd.txt.zst", b"\x28\xb5\x2f\xfd")
    write("text_twice.jsonl", '{"text": "一文目", "text": "二文目"}\n')
    write("key_twice.json", '{\n  "bert-t": {"hidden-size": 32,\n    "hidden-size": 64}\n}\n')
    write("preset_twice.json", '{\n  "bert-t": {},\n  "bert-t": {}\n}\n')
    write("eval_all.json", json.dumps({"bert-t": {**TINY, "eval-share": 1.0}}))
    write("invalid_json.json", '{\n  "bert-t": {\n    "hidden-size": 32,,\n  }\n}\n')  # line 3, column 23
    write("not_utf8.json", b'{"bert-t": {"hidden-size": "\xff"}}')
    write("not_object.json", "[1, 2, 3]")
    bad_values = {"negative_size": {"hidden-size": -32}, "zero_steps": {"train-steps": 0},
                  "zero_batch": {"batch-size": {"-1": 0}}, "negative_lr": {"learning-rate": -1e-3},
                  "zero_heads": {"attention-heads": 0}, "unknown_key": {"hiden-size": 32},
                  "steps_and_tokens": {"train-tokens": 5000}, "zero_epochs": {"train-epochs": 0},
                  "multi_node": {"batch-size": {"0": 4, "1": 4}}}
    for name, change in bad_values.items():
        write(f"{name}.json", json.dumps({"bert-t": {**TINY, **change}}))

    # a finished tiny run, and a tokenizer that differs from its own by one swapped vocabulary entry
    train(TrainArgs(input_file=[str(sample_corpus)], tokenizer_dir=str(tiny_tokenizer_dir),
                    model_dir=str(root / "run"), model_type="bert-t", parameter_file=str(files["parameter"]),
                    num_workers=1, max_eval_samples=8, cache_dir=str(root / "cache")))
    files["run"] = root / "run"
    other = root / "other_tokenizer"
    shutil.copytree(tiny_tokenizer_dir, other)
    vocab = (other / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab[100], vocab[101] = vocab[101], vocab[100]
    (other / "vocab.txt").write_text("".join(v + "\n" for v in vocab), encoding="utf-8")
    files["other_tokenizer"] = other
    return files


def tokenizer_args(f, *, input_file=None, model_dir=None, **flags) -> list[str]:
    args = ["--input_file", str(input_file or f["corpus"]), "--model_dir", str(model_dir or f["root"] / "tok_out"),
            "--vocab_size", "2000", "--min_frequency", "1", "--limit_alphabet", "1000", "--num_unused_tokens", "5",
            "--num_files", "1"]
    for flag, value in flags.items():
        args += [f"--{flag}", str(value)]
    return args


def pretraining_args(f, *, input_file=None, model_dir=None, parameter_file=None, model_type="bert-t",
                     tokenizer_dir=None, extra=()) -> list[str]:
    return ["--input_file", str(input_file or f["corpus"]), "--tokenizer_dir", str(tokenizer_dir or f["tokenizer"]),
            "--model_dir", str(model_dir or f["root"] / "model_out"), "--parameter_file",
            str(parameter_file or f["parameter"]), "--model_type", model_type, "--num_workers", "1",
            "--cache_dir", str(f["root"] / "cache"), *extra]


def extract_args(f, *, input_dir=None, output_dir=None, extra=("--generator", "--discriminator")) -> list[str]:
    return ["--input_dir", str(input_dir or f["run"] / "checkpoint-2"), "--output_dir",
            str(output_dir or f["root"] / "extract_out"), *extra]


TT, RP, EX = "train_tokenizer.py", "run_pretraining.py", "extract_electra_model.py"
ROWS = [
    # --- train_tokenizer.py ---------------------------------------------------------------------------------------
    ("tok: missing file", TT, lambda f: tokenizer_args(f, input_file=f["missing"]), "missing.txt does not exist"),
    ("tok: empty file", TT, lambda f: tokenizer_args(f, input_file=f["empty"]), "empty.txt is empty"),
    ("tok: invalid UTF-8", TT, lambda f: tokenizer_args(f, input_file=f["invalid_utf8"]),
     "invalid_utf8.txt:2: invalid UTF-8"),
    ("tok: binary file", TT, lambda f: tokenizer_args(f, input_file=f["binary"]), "binary.bin:2: invalid UTF-8"),
    ("tok: directory without corpus files", TT, lambda f: tokenizer_args(f, input_file=f["no_corpus_dir"]),
     "no_corpus_dir holds no .txt"),
    ("tok: unknown dictionary", TT, lambda f: tokenizer_args(f, mecab_dic_type="jumandic"),
     "--mecab_dic_type 'jumandic' is not one of"),
    ("tok: unknown algorithm", TT, lambda f: tokenizer_args(f, tokenizer_type="charpiece"),
     "--tokenizer_type 'charpiece' is not one of"),
    ("tok: zero vocabulary", TT, lambda f: tokenizer_args(f, vocab_size=0), "--vocab_size 0 leaves no room"),
    ("tok: negative unused tokens", TT, lambda f: tokenizer_args(f, num_unused_tokens=-1),
     "--num_unused_tokens must be >= 0"),
    ("tok: zero workers", TT, lambda f: tokenizer_args(f, num_files=0), "--num_files must be at least 1"),
    ("tok: output is a file", TT, lambda f: tokenizer_args(f, model_dir=f["regular_file"]),
     "regular_file exists and is not a directory"),
    ("tok: output under a file", TT, lambda f: tokenizer_args(f, model_dir=f["regular_file"] / "sub"),
     "regular_file"),
    ("tok: output dir holds other files", TT, lambda f: tokenizer_args(f, model_dir=f["no_corpus_dir"]),
     "already holds files that are not a tokenizer"),
    ("tok: unwritable output dir", TT, lambda f: tokenizer_args(f, model_dir=f["locked"] / "tok"), "locked"),
    ("tok: damaged gzip", TT, lambda f: tokenizer_args(f, input_file=f["damaged"]),
     "damaged.txt.gz: not a valid gzip file: its compressed data are damaged or cut short"),
    ("tok: FIFO", TT, lambda f: tokenizer_args(f, input_file=f["pipe"]),
     "pipe.txt is a FIFO (named pipe): a corpus is read more than once"),
    ("tok: vocabulary below the alphabet", TT, lambda f: tokenizer_args(f, vocab_size=500),
     "make wordpiece keep 10 special and unused tokens + 1000 characters (the --limit_alphabet 1000 most frequent of "
     "its 1080) = 1010 tokens before any subword"),
    # --- run_pretraining.py ---------------------------------------------------------------------------------------
    ("run: missing file", RP, lambda f: pretraining_args(f, input_file=f["missing"]), "missing.txt does not exist"),
    ("run: empty file", RP, lambda f: pretraining_args(f, input_file=f["empty"]), "empty.txt has no text"),
    ("run: invalid UTF-8", RP, lambda f: pretraining_args(f, input_file=f["invalid_utf8"]),
     "invalid_utf8.txt:2: invalid UTF-8"),
    ("run: binary file", RP, lambda f: pretraining_args(f, input_file=f["binary"]), "binary.bin:2: invalid UTF-8"),
    ("run: directory without corpus files", RP, lambda f: pretraining_args(f, input_file=f["no_corpus_dir"]),
     "no_corpus_dir holds no .txt"),
    ("run: missing parameter file", RP, lambda f: pretraining_args(f, parameter_file=f["missing"]),
     "--parameter_file"),
    ("run: parameter file is a directory", RP, lambda f: pretraining_args(f, parameter_file=f["empty_dir"]),
     "--parameter_file"),
    ("run: unknown model type", RP, lambda f: pretraining_args(f, model_type="bert-nope"),
     "--model_type 'bert-nope' is not in"),
    ("run: malformed parameter.json", RP, lambda f: pretraining_args(f, parameter_file=f["invalid_json"]),
     "invalid_json.json:3:23: invalid JSON"),
    ("run: parameter.json not UTF-8", RP, lambda f: pretraining_args(f, parameter_file=f["not_utf8"]),
     "not_utf8.json is not UTF-8 text"),
    ("run: parameter.json not an object", RP, lambda f: pretraining_args(f, parameter_file=f["not_object"]),
     "expected a JSON object of presets"),
    ("run: negative size", RP, lambda f: pretraining_args(f, parameter_file=f["negative_size"]),
     "bert-t.hidden-size: must be positive, got -32"),
    ("run: zero train steps", RP, lambda f: pretraining_args(f, parameter_file=f["zero_steps"]),
     "bert-t.train-steps: must be positive, got 0"),
    ("run: zero batch size", RP, lambda f: pretraining_args(f, parameter_file=f["zero_batch"]),
     "batch size must be a positive integer, got 0"),
    ("run: negative learning rate", RP, lambda f: pretraining_args(f, parameter_file=f["negative_lr"]),
     "bert-t.learning-rate: must be positive"),
    ("run: zero heads", RP, lambda f: pretraining_args(f, parameter_file=f["zero_heads"]),
     "bert-t.attention-heads: must be positive, got 0"),
    ("run: misspelt key", RP, lambda f: pretraining_args(f, parameter_file=f["unknown_key"]),
     "bert-t.hiden-size: unknown key (did you mean 'hidden-size'?)"),
    ("run: multi-node batch in one process", RP, lambda f: pretraining_args(f, parameter_file=f["multi_node"]),
     "multi_node.json: bert-t.batch-size gives batches for nodes 0, 1"),
    ("run: zero --train_steps", RP, lambda f: pretraining_args(f, extra=["--train_steps", "0"]),
     "--train_steps must be positive"),
    ("run: train-steps and train-tokens", RP, lambda f: pretraining_args(f, parameter_file=f["steps_and_tokens"]),
     "bert-t.train-steps: given together with train-tokens"),
    ("run: zero train-epochs", RP, lambda f: pretraining_args(f, parameter_file=f["zero_epochs"]),
     "bert-t.train-epochs: must be positive, got 0"),
    ("run: two budget flags", RP, lambda f: pretraining_args(f, extra=["--train_steps", "2", "--train_tokens", "9"]),
     "--train_steps and --train_tokens are given together"),
    ("run: zero --train_epochs", RP, lambda f: pretraining_args(f, extra=["--train_epochs", "0"]),
     "--train_epochs must be positive"),
    ("run: token budget below one step", RP, lambda f: pretraining_args(f, extra=["--train_tokens", "100"]),
     "train-tokens 100 is less than one step: a step trains 512 tokens (global batch 8 x sequence-length 64)"),
    ("run: missing tokenizer dir", RP, lambda f: pretraining_args(f, tokenizer_dir=f["missing"]),
     "missing.txt is not a directory"),
    ("run: tokenizer dir is a file", RP, lambda f: pretraining_args(f, tokenizer_dir=f["regular_file"]),
     "regular_file is not a directory"),
    ("run: tokenizer dir that is not one", RP, lambda f: pretraining_args(f, tokenizer_dir=f["empty_dir"]),
     "is not a tokenizer dir: no lmpretrain_tokenizer.json (train_tokenizer.py's) and no tokenizer files saved by "
     "transformers"),
    ("run: checkpoint of another tokenizer", RP,
     lambda f: pretraining_args(f, model_dir=f["run"], tokenizer_dir=f["other_tokenizer"], extra=["--do_continue"]),
     "checkpoint-2 cannot be continued by this run: the tokenizer differs"),
    ("run: checkpoint of another shape", RP,
     lambda f: pretraining_args(f, model_dir=f["run"], model_type="bert-wide", extra=["--do_continue"]),
     "checkpoint-2 cannot be continued by this run: hidden-size 32 -> 64"),
    ("run: output is a file", RP, lambda f: pretraining_args(f, model_dir=f["regular_file"]),
     "--model_dir " + "{root}/regular_file exists and is not a directory"),
    ("run: output under a file", RP, lambda f: pretraining_args(f, model_dir=f["regular_file"] / "sub"),
     "regular_file is a file, not a directory"),
    ("run: unwritable output dir", RP, lambda f: pretraining_args(f, model_dir=f["locked"] / "out"),
     "locked is not writable"),
    ("run: damaged gzip", RP, lambda f: pretraining_args(f, input_file=f["damaged"]),
     "damaged.txt.gz: not a valid gzip file: its compressed data are damaged or cut short"),
    ("run: FIFO", RP, lambda f: pretraining_args(f, input_file=f["pipe"]),
     "pipe.txt is a FIFO (named pipe): a corpus is read more than once"),
    ("run: zstd corpus", RP, lambda f: pretraining_args(f, input_file=f["zstd"]), "is compressed with zstd"),
    ("run: jsonl text field given twice", RP, lambda f: pretraining_args(f, input_file=f["text_twice"]),
     "text_twice.jsonl:1: field 'text' is given twice"),
    ("run: key given twice", RP, lambda f: pretraining_args(f, parameter_file=f["key_twice"]),
     "key_twice.json:3: key bert-t.hidden-size is given twice"),
    ("run: preset given twice", RP, lambda f: pretraining_args(f, parameter_file=f["preset_twice"]),
     "preset_twice.json:3: preset 'bert-t' is given twice"),
    ("run: eval-share 1", RP, lambda f: pretraining_args(f, parameter_file=f["eval_all"]),
     "bert-t.eval-share: expected a share in [0, 1), got 1: 1 would leave nothing for the rest"),
    # --- extract_electra_model.py ---------------------------------------------------------------------------------
    ("extract: missing input dir", EX, lambda f: extract_args(f, input_dir=f["missing"]),
     "missing.txt is not a directory"),
    ("extract: input is a file", EX, lambda f: extract_args(f, input_dir=f["regular_file"]),
     "regular_file is not a directory"),
    ("extract: input is not a checkpoint", EX, lambda f: extract_args(f, input_dir=f["empty_dir"]),
     "holds no config.json"),
    ("extract: not an ELECTRA checkpoint", EX, lambda f: extract_args(f), "is not an ELECTRA or DeBERTa-v3 checkpoint"),
    ("extract: neither part", EX, lambda f: extract_args(f, extra=()), "nothing to extract"),
    ("extract: malformed parameter.json", EX,
     lambda f: extract_args(f, extra=["--generator", "--parameter_file", str(f["invalid_json"]), "--model_type",
                                      "bert-t"]), "invalid_json.json:3:23: invalid JSON"),
    ("extract: parameter file without model type", EX,
     lambda f: extract_args(f, extra=["--generator", "--parameter_file", str(f["parameter"])]),
     "--parameter_file and --model_type go together"),
]
NEEDS_NON_ROOT = {"tok: unwritable output dir", "run: unwritable output dir"}


def _main(script: str):
    spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_in_process(script: str, argv: list[str], capsys) -> tuple[int, str]:
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        try:
            code = run_cli(_main(script), argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    finally:  # the script's setup_logging pointed the root logger at the captured stderr
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    return code, capsys.readouterr().err


def check_one_clear_error(code: int, err: str, message: str) -> None:
    assert code not in (0, None), err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert message in errors[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("row", ROWS, ids=[row[0] for row in ROWS])
def test_bad_input_row(row, f, capsys):
    name, script, make_argv, message = row
    if name in NEEDS_NON_ROOT and AS_ROOT:
        pytest.skip("root ignores directory permissions; the 'output under a file' rows cover this for root")
    code, err = run_in_process(script, make_argv(f), capsys)
    check_one_clear_error(code, err, message.format(root=f["root"]))
    assert code == 2


@pytest.mark.parametrize("name", ["tok: binary file", "run: malformed parameter.json", "extract: missing input dir",
                                  "tok: damaged gzip", "run: damaged gzip", "run: key given twice",
                                  "run: preset given twice", "tok: vocabulary below the alphabet"])
def test_bad_input_in_a_real_process(name, f):
    _, script, make_argv, message = next(row for row in ROWS if row[0] == name)
    result = run_script(script, *make_argv(f))
    check_one_clear_error(result.returncode, result.stderr, message)
    assert result.returncode == 2


def test_tokenizer_training_never_replaces_a_model_dir(f, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(f["run"], model_dir, ignore=shutil.ignore_patterns("cache"))
    code, err = run_in_process(TT, tokenizer_args(f, model_dir=model_dir), capsys)
    assert (model_dir / "checkpoint-2").is_dir(), "the trained model's checkpoints were deleted"
    check_one_clear_error(code, err, "model")


@pytest.mark.parametrize("script", [TT, RP])
def test_a_fifo_as_input_is_named_and_leaves_no_dir_behind(script, f, tmp_path):
    model_dir = tmp_path / "out"
    make = tokenizer_args if script == TT else pretraining_args
    result = run_script(script, *make(f, input_file=f["pipe"], model_dir=model_dir))
    check_one_clear_error(result.returncode, result.stderr, "pipe.txt is a FIFO (named pipe)")
    assert result.returncode == 2 and not model_dir.exists() and sorted(os.listdir(tmp_path)) == []
