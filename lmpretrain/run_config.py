"""Command-line options of run_pretraining.py (the original tool's flags verbatim, plus ours), and the run config
they resolve to together with the preset: flag over preset over default, settled once."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from .cli import HelpFormatter

if TYPE_CHECKING:
    from .config import ModelParams


@dataclass
class TrainArgs:
    """One run of run_pretraining.py. Model sizes and step counts come from parameter.json, not from here."""

    input_file: list[str]
    """Corpus: .txt (one sentence per line, blank line between documents), a directory of them, .jsonl, .gz."""
    tokenizer_dir: str
    """A tokenizer dir written by train_tokenizer.py (or any dir AutoTokenizer loads that FastEncoder supports)."""
    model_dir: str
    """Output: checkpoint-<step>/ folders, the final model, runs/<run_name>/ TensorBoard logs."""
    model_type: str
    """A preset name in parameter.json (bert-tiny, bert-base, electra-small, roberta-base, gpt-tiny, ...)."""
    parameter_file: str = "parameter.json"
    fp16_type: int | None = None
    """0 fp32, 1 mixed precision, 2 'almost fp16', 3 pure fp16 (the Apex levels, served by torch.amp)."""
    bf16: bool = False
    tokenizer_type: str | None = None
    """Accepted for the original's command lines; checked against what the tokenizer dir records."""
    mecab_dic_type: str | None = None
    """Accepted for the original's command lines; checked against what the tokenizer dir records."""
    word_tokenizer: str | None = None
    """--word_tokenizer_type (the original's run_pretraining flag) or --word_tokenizer (train_tokenizer.py's name):
    checked against what the tokenizer dir records (mecab, sudachi, juman or none)."""
    do_whole_word_mask: bool = False
    do_continue: bool = False
    """Resume from the newest complete checkpoint-<step>/ in --model_dir."""
    disable_overwrite_cache: bool = False
    """Reuse the existing dataset cache as it is, without checking it against the corpus (the original's flag)."""
    node_rank: int = -1
    local_rank: int = -1
    run_name: str | None = None
    logging_dir: str | None = None
    """TensorBoard event files go under <logging_dir>/<run_name>/ (default: <model_dir>/runs)."""
    eval_file: list[str] | None = None
    cache_dir: str | None = None
    """Where the tokenized dataset cache lives (default: <model_dir>/cache)."""
    seed: int = 42
    build_dataset_only: bool = False
    pretrained_model_name_or_path: str | None = None
    """Continue pretraining from this HF model dir (overrides the preset's key)."""
    resize_embeddings: bool = False
    compile: bool = False
    """Opt in to torch.compile."""
    num_workers: int | None = None
    """Tokenization processes for the dataset build (default: the machine's cores)."""
    dataloader_workers: int | None = None
    """Background processes building the training batches ahead of the loop (0: in the loop's process). Default:
    min(2, cores per local process - 1), at least 0. The batches are the same for any number."""
    max_eval_samples: int = 1000
    train_steps: int | None = None
    """Override the preset's train-steps (handy for smoke runs)."""
    device: str | None = None
    """cpu, cuda, cuda:1 ... (default: cuda:<local_rank> when a GPU is present, else cpu)."""
    peer_timeout: float = 120.0
    """Seconds without a heartbeat from another process before this one stops (multi-process runs)."""
    max_nonfinite_steps: int = 20
    """Stop with an error after this many consecutive steps whose loss is NaN/inf."""
    overwrite_output_dir: bool = False
    """A run without --do_continue into a --model_dir that holds an earlier run: delete that run's outputs first
    (without it such a run is refused)."""
    accept_changed_run: bool = False
    """--do_continue: continue even though the seed, batch size, corpus or masking changed (logged)."""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    """The settings that a flag and the preset both decide, or that have a computed default. ``prepare_run``
    resolves them once; every module reads them from here (never ``args.x or params.x``). Saved with each
    checkpoint (the ``resolved`` key of its config file)."""

    train_steps: int
    """Optimizer steps of the whole run: --train_steps, else the preset's train-steps."""
    eval_steps: int
    """Steps between evaluations: the preset's eval-steps, else its logging-steps."""
    pretrained_model_name_or_path: str | None
    """The model to continue pretraining from: --pretrained_model_name_or_path, else the preset's key; None: a
    model initialised from scratch. (A --do_continue run takes its weights from the checkpoint instead.)"""
    resize_embeddings: bool
    """Resize a pretrained model's embeddings to this tokenizer: --resize_embeddings or the preset's key."""
    whole_word_mask: bool
    """Mask whole words: --do_whole_word_mask or the preset's whole-word-mask."""
    cache_dir: str
    """The tokenized dataset cache: --cache_dir, else <model_dir>/cache."""
    num_workers: int
    """Tokenization processes: --num_workers, else the machine's cores."""
    run_name: str
    """TensorBoard run name (events under <logging_dir>/<run_name>/): --run_name, else --model_type."""
    logging_dir: str = ""
    """Where TensorBoard runs go: --logging_dir, else <model_dir>/runs."""
    fp16_type: int = 0
    """0 fp32, 1 mixed, 2 almost fp16, 3 pure fp16: --fp16_type when given, else the preset's fp16-type, else 0."""
    bf16: bool = False
    """bf16 autocast: --bf16 or the preset's bf16."""

    @classmethod
    def resolve(cls, args: TrainArgs, params: ModelParams) -> RunConfig:
        return cls(
            train_steps=args.train_steps if args.train_steps is not None else params.train_steps,
            eval_steps=params.eval_steps or params.logging_steps,
            pretrained_model_name_or_path=args.pretrained_model_name_or_path or params.pretrained_model_name_or_path,
            resize_embeddings=args.resize_embeddings or params.resize_embeddings,
            whole_word_mask=args.do_whole_word_mask or params.whole_word_mask,
            cache_dir=args.cache_dir or str(Path(args.model_dir) / "cache"),
            num_workers=args.num_workers or os.cpu_count() or 1,
            run_name=args.run_name or args.model_type,
            logging_dir=args.logging_dir or str(Path(args.model_dir) / "runs"),
            fp16_type=args.fp16_type if args.fp16_type is not None else params.fp16_type,
            bf16=args.bf16 or params.bf16,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Pretrain BERT / RoBERTa / ELECTRA / DeBERTa / ModernBERT / GPT-2 / Llama "
                                "models (see the README for launching with torchrun or accelerate).",
                                formatter_class=HelpFormatter)
    p.add_argument("--input_file", nargs="+", required=True,
                   help="corpus: .txt files (one sentence a line, a blank line between documents), directories of "
                        "them, .jsonl or .gz")
    p.add_argument("--tokenizer_dir", required=True,
                   help="a tokenizer dir written by train_tokenizer.py (or one saved by transformers)")
    p.add_argument("--model_dir", required=True,
                   help="output: checkpoint-<step>/ folders, the final model, train_log.jsonl, TensorBoard runs")
    p.add_argument("--model_type", required=True,
                   help="a preset name in --parameter_file (bert-tiny, electra-small, ...)")
    p.add_argument("--parameter_file", default="parameter.json", help="the JSON file of model presets")
    p.add_argument("--fp16_type", type=int, default=None, choices=[0, 1, 2, 3],
                   help="0 fp32, 1 mixed precision, 2 'almost fp16', 3 pure fp16 (the Apex levels, served by "
                        "torch.amp); None: the preset's fp16-type, else 0")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (where the hardware has it)")
    p.add_argument("--tokenizer_type", default=None,
                   help="the original's flag: checked against the tokenizer dir's algorithm (None: not checked)")
    p.add_argument("--mecab_dic_type", default=None,
                   help="the original's flag: checked against the tokenizer dir's MeCab dictionary (None: not checked)")
    p.add_argument("--word_tokenizer_type", "--word_tokenizer", dest="word_tokenizer", default=None,
                   help="mecab, sudachi, juman or none: checked against the tokenizer dir (None: not checked)")
    p.add_argument("--do_whole_word_mask", action="store_true",
                   help="mask whole words (the segmenter's words, or the tokenizer's own word boundaries)")
    p.add_argument("--do_continue", action="store_true",
                   help="resume from the newest complete checkpoint-<step>/ in --model_dir")
    p.add_argument("--disable_overwrite_cache", action="store_true",
                   help="reuse the existing dataset cache as it is, without checking it against the corpus")
    p.add_argument("--node_rank", type=int, default=-1,
                   help="this node's rank (-1: from the launcher's environment, else 0)")
    p.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=-1,
                   help="set by python -m torch.distributed.launch (-1: from LOCAL_RANK, else 0)")
    p.add_argument("--run_name", default=None,
                   help="TensorBoard run name (events under --logging_dir/<run_name>/); None: --model_type")
    p.add_argument("--logging_dir", default=None,
                   help="where TensorBoard event files go, one folder per run name (None: <model_dir>/runs)")
    p.add_argument("--eval_file", nargs="+", default=None,
                   help="held-out corpus for evaluation (None: a share of the training documents)")
    p.add_argument("--cache_dir", default=None,
                   help="where the tokenized dataset cache lives (None: <model_dir>/cache)")
    p.add_argument("--seed", type=int, default=42, help="seeds the model's initialisation, the data order and masking")
    p.add_argument("--build_dataset_only", action="store_true", help="build and cache the dataset, then exit")
    p.add_argument("--pretrained_model_name_or_path", default=None,
                   help="continue pretraining from this Hugging Face model dir (overrides the preset's key)")
    p.add_argument("--resize_embeddings", action="store_true",
                   help="continue a pretrained model with another tokenizer: embedding rows are mapped by token")
    p.add_argument("--compile", action="store_true", help="opt in to torch.compile")
    p.add_argument("--num_workers", type=int, default=None,
                   help="tokenization processes for the dataset build (None: the machine's cores)")
    p.add_argument("--dataloader_workers", type=int, default=None,
                   help="background processes building batches ahead of the loop (0: in the loop's process; None: "
                        "min(2, cores per local process - 1)); the batches are the same for any number")
    p.add_argument("--max_eval_samples", type=int, default=1000, help="evaluate on at most this many instances")
    p.add_argument("--train_steps", type=int, default=None, help="override the preset's train-steps")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1 ... (None: cuda:<local_rank> when a GPU is present, else cpu)")
    p.add_argument("--peer_timeout", type=float, default=120.0,
                   help="seconds without a heartbeat from another process before this one stops")
    p.add_argument("--max_nonfinite_steps", type=int, default=20,
                   help="stop with an error after this many consecutive steps whose loss is NaN/inf")
    p.add_argument("--overwrite_output_dir", action="store_true",
                   help="a fresh run into a --model_dir that holds an earlier run deletes that run's outputs first")
    p.add_argument("--accept_changed_run", action="store_true",
                   help="--do_continue: continue even though the seed, batch size, corpus or masking changed")
    return p


def parse_args(argv=None) -> TrainArgs:
    namespace = build_parser().parse_args(argv)
    names = {f.name for f in fields(TrainArgs)}
    return TrainArgs(**{k: v for k, v in vars(namespace).items() if k in names})
