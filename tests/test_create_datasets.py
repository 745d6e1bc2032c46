"""create_datasets.py (the original's newest first step) and run_pretraining.py --dataset_dir: the dataset is this
toolkit's own token shards plus lmpretrain_dataset.json, named as the original names it, checked against the preset
and the tokenizer; a run from it trains as a run from --input_file does."""

import json
import shutil

import pytest

from lmpretrain.errors import UserError
from tests.conftest import SAMPLE_CORPUS
from tests.helpers import run_script

BASE = {"number-of-layers": 1, "hidden-size": 32, "sequence-length": 64, "ffn-inner-hidden-size": 64,
        "attention-heads": 2, "warmup-steps": 1, "learning-rate": 2e-3, "batch-size": {"-1": 4},
        "train-steps": 2, "save-steps": 2, "logging-steps": 1, "eval-steps": 2, "dropout": 0.0,
        "attention-dropout": 0.0, "eval-share": 0.1}
PRESETS = {"bert-test": BASE, "roberta-test": BASE,
           "electra-test": {**BASE, "embedding-size": 16, "generator-size": "1/2", "mask-percent": 15}}


@pytest.fixture(scope="module")
def parameter_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("params") / "parameter.json"
    path.write_text(json.dumps(PRESETS))
    return path


def create(tokenizer, dataset_dir, **kw):
    from lmpretrain.create_dataset import create_dataset

    options = dict(input_corpus="sample", max_length=64, input_files=[str(SAMPLE_CORPUS)], dataset_type=None,
                   mask_style=None, tokenizer_name_or_path=str(tokenizer), dataset_dir=str(dataset_dir),
                   num_workers=1)
    return create_dataset(**{**options, **kw})


def train_args(dataset, tokenizer, model_dir, parameter_file, model_type="bert-test", *extra):
    from lmpretrain.run_config import parse_args

    return parse_args(["--dataset_dir", str(dataset), "--tokenizer_name_or_path", str(tokenizer), "--model_dir",
                       str(model_dir), "--parameter_file", str(parameter_file), "--model_type", model_type,
                       "--num_workers", "1", *extra])


def losses(model_dir):
    lines = [json.loads(x) for x in (model_dir / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in lines if "train/loss" in r}


def test_the_two_steps_run_as_the_original_writes_them(tiny_tokenizer_dir, parameter_file, tmp_path):
    """create_datasets.py with the original's flags (the tokenizer as its vocab.txt), then run_pretraining.py
    --dataset_dir for 2 steps: the same losses as a run from --input_file, and no dataset built in the model dir."""
    from lmpretrain.data import build_or_load_dataset
    from lmpretrain.tokenization import FastEncoder

    made = run_script("create_datasets.py", "--input_corpus", "sample", "--max_length", "64", "--input_file",
                      str(SAMPLE_CORPUS), "--dataset_type", "nsp", "--tokenizer_name_or_path",
                      str(tiny_tokenizer_dir / "vocab.txt"), "--word_tokenizer_type", "mecab",
                      "--subword_tokenizer_type", "wordpiece", "--mecab_dic", "ipadic", "--dataset_dir",
                      str(tmp_path / "dataset"), "--num_workers", "1")
    assert made.returncode == 0, made.stderr
    dataset = tmp_path / "dataset" / "nsp_64_sample"
    meta = json.loads((dataset / "lmpretrain_dataset.json").read_text())
    encoder = FastEncoder.from_pretrained(tiny_tokenizer_dir)
    assert meta["tokenizer"]["fingerprint"] == encoder.fingerprint
    encoder.close()
    assert (meta["layout"], meta["sequence_length"], meta["whole_word_mask"]) == ("sentence_pairs", 64, None)
    assert meta["tokenizer"]["word_tokenizer"] == "mecab" and meta["tokenizer"]["mecab_dic_type"] == "ipadic"
    assert meta["original"] == {"input_corpus": "sample", "max_length": 64, "dataset_type": "nsp",
                                "mask_style": None, "tokenizer_name_or_path": str(tiny_tokenizer_dir / "vocab.txt")}
    # the shards are the dataset cache's own format: the same fingerprint as the run's cache builds
    reference = build_or_load_dataset([str(SAMPLE_CORPUS)], tiny_tokenizer_dir, tmp_path / "reference", num_workers=1)
    shards = json.loads((dataset / meta["shards"] / "manifest.json").read_text())
    assert shards["fingerprint"] == reference.fingerprint
    assert shards["num_tokens"] == meta["num_tokens"] == reference.num_tokens

    common = ["--tokenizer_name_or_path", str(tiny_tokenizer_dir), "--parameter_file", str(parameter_file),
              "--model_type", "bert-test", "--num_workers", "1", "--train_steps", "2"]
    from_dataset = run_script("run_pretraining.py", "--dataset_dir", str(dataset), "--model_dir",
                              str(tmp_path / "a"), *common)
    assert from_dataset.returncode == 0, from_dataset.stderr
    from lmpretrain.run_config import parse_args
    from lmpretrain.trainer import train

    train(parse_args(["--input_file", str(SAMPLE_CORPUS), "--model_dir", str(tmp_path / "b"), *common]))
    assert losses(tmp_path / "a") == losses(tmp_path / "b") and len(losses(tmp_path / "a")) == 2
    assert not (tmp_path / "a" / "cache").exists() and (tmp_path / "b" / "cache").is_dir()
    record = json.loads((tmp_path / "a" / "checkpoint-2" / "lmpretrain_config.json").read_text())
    assert record["data"]["dataset_dir"] == str(dataset)
    assert record["fingerprints"]["corpus"] == shards["components"]["corpus"]


def test_output_names_follow_the_original(tiny_tokenizer_dir, tmp_path):
    """<dataset_type>_<max_length>_<input_corpus>[_<mask_style>]; a mask style's type is linebyline, and its -wwm is
    recorded as whole-word masking. A second corpus into the same name replaces the first's shards."""
    nsp = create(tiny_tokenizer_dir, tmp_path, dataset_type="nsp")
    lines = create(tiny_tokenizer_dir, tmp_path, dataset_type="linebyline")
    masked = create(tiny_tokenizer_dir, tmp_path, mask_style="electra-wwm", dataset_type="nsp")
    plain = create(tiny_tokenizer_dir, tmp_path, mask_style="roberta", max_length=32)
    assert [p.name for p in (nsp, lines, masked, plain)] == [
        "nsp_64_sample", "linebyline_64_sample", "linebyline_64_sample_electra-wwm", "linebyline_32_sample_roberta"]
    settings = {p.name: json.loads((p / "lmpretrain_dataset.json").read_text()) for p in (nsp, lines, masked, plain)}
    assert [(m["layout"], m["whole_word_mask"]) for m in settings.values()] == [
        ("sentence_pairs", None), ("packed_sentences", None), ("whole_lines", True), ("packed_sentences", False)]
    other = tmp_path / "other.txt"
    shutil.copy(SAMPLE_CORPUS, other)
    again = create(tiny_tokenizer_dir, tmp_path, dataset_type="nsp", input_files=[str(other)])
    meta = json.loads((again / "lmpretrain_dataset.json").read_text())
    assert [p.name for p in again.iterdir() if p.is_dir()] == [meta["shards"]] != [settings[again.name]["shards"]]


def test_mask_style_bert_is_an_nsp_dataset_masked_while_training(tiny_tokenizer_dir, tmp_path):
    """The original's README's --mask_style bert (its parser refuses it): the nsp layout, whole-word masking as the run
    says (bert) or on (bert-wwm), no stored mask probability."""
    bert = create(tiny_tokenizer_dir, tmp_path, mask_style="bert", dataset_type="linebyline")
    wwm = create(tiny_tokenizer_dir, tmp_path, mask_style="bert-wwm")
    metas = [json.loads((d / "lmpretrain_dataset.json").read_text()) for d in (bert, wwm)]
    assert [d.name for d in (bert, wwm)] == ["nsp_64_sample_bert", "nsp_64_sample_bert-wwm"]
    assert [(m["layout"], m["whole_word_mask"], m["mlm_probability"], m["original"]["dataset_type"])
            for m in metas] == [("sentence_pairs", None, None, "nsp"), ("sentence_pairs", True, None, "nsp")]


def test_bad_create_input_is_one_error(tiny_tokenizer_dir, tmp_path):
    with pytest.raises(UserError, match="--mecab_dic unidic does not match"):
        create(tiny_tokenizer_dir, tmp_path, dataset_type="nsp", mecab_dic="unidic")
    with pytest.raises(UserError, match="--subword_tokenizer_type sentencepiece does not match"):
        create(tiny_tokenizer_dir, tmp_path, dataset_type="nsp", subword_tokenizer_type="sentencepiece")
    with pytest.raises(UserError, match="--mask_style albert: expected one of"):
        create(tiny_tokenizer_dir, tmp_path, mask_style="albert")
    with pytest.raises(UserError, match="--dataset_type .* or --mask_style"):
        create(tiny_tokenizer_dir, tmp_path)
    with pytest.raises(UserError, match="--tokenizer_name_or_path .* neither a tokenizer dir"):
        create(tmp_path / "missing", tmp_path, dataset_type="nsp")
    assert not list(tmp_path.iterdir())  # nothing written before the checks


def test_mismatches_are_one_error_naming_the_metadata_key(tiny_tokenizer_dir, parameter_file, tmp_path):
    from lmpretrain.prepare import prepare_run

    nsp = create(tiny_tokenizer_dir, tmp_path / "d", dataset_type="nsp")
    short = create(tiny_tokenizer_dir, tmp_path / "d", dataset_type="nsp", max_length=32)
    roberta = create(tiny_tokenizer_dir, tmp_path / "d", mask_style="roberta")
    meta = "lmpretrain_dataset.json"
    with pytest.raises(UserError, match=rf"nsp_32_sample/{meta}: sequence_length 32 does not match .*bert-test"
                                        r"\.sequence-length 64; create the dataset with --max_length 64"):
        prepare_run(train_args(short, tiny_tokenizer_dir, tmp_path / "m", parameter_file))
    with pytest.raises(UserError, match=rf"{meta}: layout sentence_pairs \(nsp\) does not match the packed_sentences "
                                        r"instances .*roberta-test trains; create the dataset with --dataset_type "
                                        r"linebyline or --mask_style roberta"):
        prepare_run(train_args(nsp, tiny_tokenizer_dir, tmp_path / "m", parameter_file, "roberta-test"))
    with pytest.raises(UserError, match=rf"{meta}: whole_word_mask false \(--mask_style roberta\)"):
        prepare_run(train_args(roberta, tiny_tokenizer_dir, tmp_path / "m", parameter_file, "roberta-test",
                               "--do_whole_word_mask"))
    other = tmp_path / "other-tokenizer"
    shutil.copytree(tiny_tokenizer_dir, other)
    special = other / "special_tokens_map.json"
    special.write_text(json.dumps(json.loads(special.read_text()), indent=4))  # the same tokens, other bytes
    with pytest.raises(UserError, match=rf"{meta}: tokenizer.fingerprint .* does not match the tokenizer in "):
        prepare_run(train_args(nsp, other, tmp_path / "m", parameter_file))
    assert not (tmp_path / "m").exists()
    # through the script: one "error:" line, exit 2
    result = run_script("run_pretraining.py", "--dataset_dir", str(short), "--tokenizer_name_or_path",
                        str(tiny_tokenizer_dir), "--model_dir", str(tmp_path / "m"), "--parameter_file",
                        str(parameter_file), "--model_type", "bert-test")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert f"{meta}: sequence_length 32" in result.stderr and "Traceback" not in result.stderr
    neither = run_script("run_pretraining.py", "--tokenizer_dir", str(tiny_tokenizer_dir), "--model_dir",
                         str(tmp_path / "m"), "--model_type", "bert-test")
    assert neither.returncode == 2 and "--input_file or a dataset from create_datasets.py" in neither.stderr
    with pytest.raises(UserError, match="has no lmpretrain_dataset.json: not a dataset written by create_datasets"):
        prepare_run(train_args(tmp_path, tiny_tokenizer_dir, tmp_path / "m", parameter_file))


def test_a_mask_style_decides_whole_word_masking(tiny_tokenizer_dir, parameter_file, tmp_path):
    from lmpretrain.prepare import prepare_run

    for style, family, expected in (("electra-wwm", "electra-test", True), ("electra", "electra-test", False),
                                    ("debertav2-wwm", "roberta-test", True)):
        dataset = create(tiny_tokenizer_dir, tmp_path / "d", mask_style=style)
        run = prepare_run(train_args(dataset, tiny_tokenizer_dir, tmp_path / "m", parameter_file, family))
        run.encoder.close()
        assert run.description.data.whole_word_mask is expected, style
        assert run.description.data.input_files == (str(SAMPLE_CORPUS.resolve()),)


def test_resume_from_checkpoint_is_do_continue_in_the_model_dir(tiny_tokenizer_dir, parameter_file, tmp_path):
    """--resume_from_checkpoint <model_dir>/checkpoint-N resumes as --do_continue does (the same losses as a run
    that did not stop); a checkpoint elsewhere, or not the newest, is one error."""
    from lmpretrain.prepare import prepare_run
    from lmpretrain.trainer import train

    dataset = create(tiny_tokenizer_dir, tmp_path / "d", dataset_type="nsp")
    straight = tmp_path / "straight"
    train(train_args(dataset, tiny_tokenizer_dir, straight, parameter_file, "bert-test", "--train_steps", "4"))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-2", resumed / "checkpoint-2")  # as if the run had died after step 2
    train(train_args(dataset, tiny_tokenizer_dir, resumed, parameter_file, "bert-test", "--train_steps", "4",
                     "--resume_from_checkpoint", str(resumed / "checkpoint-2")))
    a, b = losses(straight), losses(resumed)
    assert sorted(a) == [1, 2, 3, 4] and sorted(b) == [3, 4]
    for step in b:
        assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-6), (step, a[step], b[step])
    with pytest.raises(UserError, match="is not in --model_dir .*: a run resumes in its own model dir"):
        prepare_run(train_args(dataset, tiny_tokenizer_dir, tmp_path / "elsewhere", parameter_file, "bert-test",
                               "--resume_from_checkpoint", str(straight / "checkpoint-2")))
    with pytest.raises(UserError, match="its newest complete checkpoint is checkpoint-4; move the newer ones out"):
        prepare_run(train_args(dataset, tiny_tokenizer_dir, straight, parameter_file, "bert-test",
                               "--resume_from_checkpoint", str(straight / "checkpoint-2")))


def test_help_and_the_readme_commands_use_its_flags():
    """Every flag has help text, and every create_datasets.py flag the README or docs/ give exists
    (run_pretraining.py's are checked by tests/test_readme_commands.py)."""
    import argparse
    import shlex

    from tests.test_cli_help import ROOT, parser_of
    from tests.test_readme_commands import shell_commands

    parser = parser_of("create_datasets.py")
    assert all((a.help or "").strip() for a in parser._actions if not isinstance(a, argparse._HelpAction))
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # the command is in docs/migrating.md
    commands = [shlex.split(c) for document in documents
                for _, c in shell_commands(document.read_text(encoding="utf-8")) if "create_datasets.py" in c]
    flags = [w for words in commands for w in words if w.startswith("--")]
    assert commands and flags and all(flag in parser._option_string_actions for flag in flags), flags
