"""The original's newest README commands run here (issue 26, item 1's "done when").

The command lines below are copied as an interface from the README of retarfi/language-pretraining at its newest
commit (ebf6b40, 2023-05-19; the README as of af22c12 "docs: fix typos"), sections "Train Tokenizer", "Create
Dataset", "Training" and "For ELECTRA" (the "$ " prompts left out; the optional "(--flag \\)" lines listed apart).
They run in a fresh directory holding `corpus.txt` (the bundled sample) and a `parameter.json` whose presets of the
README's names (`bert-small`, `bert-small-additional`, `electra-small`) are tiny. What is substituted, and only there:
the dataset dirs of run_pretraining.py (the README's `./datasets/nsp_128_wiki-ja/` and `nsp_128_fin-ja/` are not what
its own create_datasets.py lines write: they write `./dataset/<dataset_type>_512_wiki-ja_<mask_style>`), the ELECTRA
checkpoint path (`checkpoint-1000000`: the tiny run's last step), and the hub model `izumi-lab/bert-small-japanese`,
served offline from a local hub cache in a temporary HF_HOME (a tiny BertForMaskedLM with a MeCab tokenizer).
The multi-node command is checked against the parser (it needs two nodes).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_CORPUS
from tests.test_cli_help import parser_of

ROOT = Path(__file__).resolve().parents[1]

TRAIN_TOKENIZER = r"""python train_tokenizer.py \
--word_tokenizer mecab \
--input_file corpus.txt \
--model_dir tokenizer/ \
--intermediate_dir ./data/corpus_split/ \
--mecab_dic ipadic \
--tokenizer_type wordpiece \
--vocab_size 32768 \
--min_frequency 2 \
--limit_alphabet 2900 \
--num_unused_tokens 10"""

CREATE_WITH_OWN_TOKENIZER = r"""python create_datasets.py \
--input_corpus wiki-ja \
--max_length 512 \
--input_file corpus.txt \
--mask_style bert \
--tokenizer_name_or_path tokenizer/vocab.txt \
--word_tokenizer_type mecab \
--subword_tokenizer_type wordpiece \
--mecab_dic ipadic"""

CREATE_WITH_HUB_TOKENIZER = r"""python create_datasets.py \
--input_corpus wiki-ja \
--max_length 512 \
--input_file corpus.txt \
--mask_style roberta-wwm \
--tokenizer_name_or_path izumi-lab/bert-small-japanese \
--load_from_hub"""

TRAIN = r"""python run_pretraining.py \
--dataset_dir ./datasets/nsp_128_wiki-ja/ \
--model_dir ./model/bert/ \
--parameter_file parameter.json \
--model_type bert-small \
--tokenizer_name_or_path tokenizer/vocab.txt \
--word_tokenizer_type mecab \
--subword_tokenizer_type wordpiece \
--mecab_dic ipadic"""
TRAIN_OPTIONS = ("--use_deepspeed", "--do_whole_word_mask", "--do_continue")

TRAIN_MULTI_NODE = r"""NCCL_SOCKET_IFNAME=eno1 CUDA_VISIBLE_DEVICES=0,1 python -m torch.distributed.launch \
--nproc_per_node=2 --nnodes=2 --node_rank=0 --master_addr="10.0.0.1" \
--master_port=50916 run_pretraining.py \
--dataset_dir ./datasets/nsp_128_wiki-ja/ \
--model_dir ./model/bert/ \
--parameter_file parameter.json \
--model_type bert-small \
--tokenizer_name_or_path tokenizer/vocab.txt \
--word_tokenizer_type mecab \
--subword_tokenizer_type wordpiece \
--mecab_dic ipadic"""

TRAIN_ADDITIONAL = r"""python run_pretraining.py \
--tokenizer_name_or_path izumi-lab/bert-small-japanese \
--dataset_dir ./datasets/nsp_128_fin-ja/ \
--model_dir ./model/bert/ \
--parameter_file parameter.json \
--model_type bert-small-additional"""

EXTRACT = r"""python extract_electra_model.py \
--input_dir ./model/electra/checkpoint-1000000 \
--output_dir ./model/electra/extracted-1000000 \
--parameter_file parameter.json \
--model_type electra-small \
--generator \
--discriminator"""

HUB_NAME = "izumi-lab/bert-small-japanese"
TINY = {"number-of-layers": 2, "hidden-size": 32, "sequence-length": 512, "ffn-inner-hidden-size": 64,
        "attention-heads": 2, "warmup-steps": 1, "learning-rate": 1e-3, "batch-size": {"-1": 4}, "train-steps": 2,
        "save-steps": 2, "logging-steps": 1, "fp16-type": 0, "bf16": False}
PRESETS = {
    "bert-small": TINY,
    # the README's bert-small-additional, its flozen-layers 6 of 12 as 1 of the tiny model's 2
    "bert-small-additional": {"pretrained_model_name_or_path": HUB_NAME, "flozen-layers": 1, "warmup-steps": 1,
                              "learning-rate": 5e-4, "batch-size": {"-1": 4}, "train-steps": 2, "save-steps": 2,
                              "fp16-type": 0, "bf16": False},
    "electra-small": {**TINY, "sequence-length": 128, "embedding-size": 16, "generator-size": "1/2",
                      "mask-percent": 15},
}


def words(command: str) -> list[str]:
    """The command's words, the script's path made this checkout's and run by this interpreter."""
    out = shlex.split(command.replace("\\\n", " "))
    at = next(i for i, word in enumerate(out) if word.endswith(".py"))
    return [sys.executable, str(ROOT / out[at]), *out[at + 1:]]


def substitute(args: list[str], **values: str) -> list[str]:
    """The command with the value of each ``--flag`` given (as flag=value) replaced; the flag must be there."""
    args = list(args)
    for flag, value in values.items():
        at = args.index(f"--{flag}")
        args[at + 1] = value
    return args


def run(args: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{shlex.join(args)}\nexit {result.returncode}\n{result.stderr[-4000:]}"
    return result.stderr


def hub_cache(home: Path, tokenizer_dir: Path) -> None:
    """HF_HOME's hub cache holding HUB_NAME: the README's tokenizer saved by transformers (a BertJapaneseTokenizer,
    as the published model's) and a tiny BertForMaskedLM."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    revision = "0" * 40
    repo = home / "hub" / f"models--{HUB_NAME.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.save_pretrained(snapshot)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=512)).save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def test_the_multi_node_command_parses():
    args = words(TRAIN_MULTI_NODE)[2:]
    parsed = parser_of("run_pretraining.py").parse_args([*args, *TRAIN_OPTIONS, "--local_rank", "0"])
    assert (parsed.model_type, parsed.tokenizer_dir, parsed.use_deepspeed) == (
        "bert-small", "tokenizer/vocab.txt", True)


@pytest.mark.slow
def test_the_readme_commands_run(tmp_path):
    shutil.copy(SAMPLE_CORPUS, tmp_path / "corpus.txt")
    (tmp_path / "parameter.json").write_text(json.dumps(PRESETS), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "LMP_NO_PROGRESS": "1",
           "TOKENIZERS_PARALLELISM": "false"}

    # Train Tokenizer, then Create Dataset with it
    run(words(TRAIN_TOKENIZER), tmp_path, env)
    assert (tmp_path / "tokenizer" / "vocab.txt").is_file()
    log = run(words(CREATE_WITH_OWN_TOKENIZER), tmp_path, env)
    nsp = tmp_path / "dataset" / "nsp_512_wiki-ja_bert"
    meta = json.loads((nsp / "lmpretrain_dataset.json").read_text())
    assert (meta["layout"], meta["whole_word_mask"], meta["sequence_length"]) == ("sentence_pairs", None, 512)
    assert "--mask_style bert (the original's README; its parser refuses it): an nsp dataset" in log

    # Training, with every optional flag; then --do_continue to a longer budget
    train = substitute(words(TRAIN), dataset_dir=f"./dataset/{nsp.name}/")
    log = run([*train, "--use_deepspeed", "--do_whole_word_mask"], tmp_path, env)
    assert "--use_deepspeed: training with PyTorch's FSDP2 in shard_grad_op mode" in log
    summary = json.loads((tmp_path / "model/bert/train_summary.json").read_text())
    assert summary["step"] == 2 and "train/nsp_loss" in (tmp_path / "model/bert/train_log.jsonl").read_text()
    PRESETS["bert-small"] = {**TINY, "train-steps": 3, "save-steps": 3}
    (tmp_path / "parameter.json").write_text(json.dumps(PRESETS), encoding="utf-8")
    run([*train, *TRAIN_OPTIONS], tmp_path, env)
    assert json.loads((tmp_path / "model/bert/train_summary.json").read_text())["step"] == 3

    # Create Dataset with a hub tokenizer, then Additional Pre-training from the hub model (a BertForMaskedLM:
    # MLM-only, on the roberta-wwm dataset's packed sentences)
    hub_cache(tmp_path / "hf_home", tmp_path / "tokenizer")
    run(words(CREATE_WITH_HUB_TOKENIZER), tmp_path, env)
    packed = tmp_path / "dataset" / "linebyline_512_wiki-ja_roberta-wwm"
    meta = json.loads((packed / "lmpretrain_dataset.json").read_text())
    assert (meta["layout"], meta["whole_word_mask"]) == ("packed_sentences", True)
    shutil.rmtree(tmp_path / "model" / "bert")  # the README's additional run writes into the same ./model/bert/
    run(substitute(words(TRAIN_ADDITIONAL), dataset_dir=f"./dataset/{packed.name}/"), tmp_path, env)
    config = json.loads((tmp_path / "model/bert/config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]

    # For ELECTRA: a tiny electra-small run (not a README command), then the README's extraction of its checkpoint
    run([sys.executable, str(ROOT / "run_pretraining.py"), "--input_file", "corpus.txt", "--tokenizer_dir",
         "tokenizer", "--model_dir", "./model/electra/", "--parameter_file", "parameter.json", "--model_type",
         "electra-small"], tmp_path, env)
    run(substitute(words(EXTRACT), input_dir="./model/electra/checkpoint-2",
                   output_dir="./model/electra/extracted-2"), tmp_path, env)
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    extracted = tmp_path / "model/electra/extracted-2"
    assert type(AutoModelForMaskedLM.from_pretrained(extracted / "generator")).__name__ == "ElectraForMaskedLM"
    assert type(AutoModelForPreTraining.from_pretrained(extracted / "discriminator")).__name__ == \
        "ElectraForPreTraining"
