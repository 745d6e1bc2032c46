"""Command-line options of run_pretraining.py (the original tool's flags verbatim, plus ours) and the budget rules
they share with the preset; :mod:`lmpretrain.run_description` resolves flags and preset into the run's one
description."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import TYPE_CHECKING

from .cli import HelpFormatter
from .config import FSDP_MODES, preset_file
from .errors import UserError

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
    fsdp: str | None = None
    """Shard with FSDP2: no_shard, shard_grad_op, full_shard or hybrid_shard (None: the preset's fsdp, else DDP)."""
    use_deepspeed: bool = False
    """The original's flag (DeepSpeed ZeRO-2): accepted, and means --fsdp shard_grad_op."""
    gradient_checkpointing: bool = False
    """Recompute each block's activations in the backward instead of keeping them (less memory, ~1/3 more compute)."""
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
    report_to: list[str] | None = None
    """Trackers: tensorboard, wandb, mlflow, all or none, several allowed (None: tensorboard)."""
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
    peak_tflops: float | None = None
    """The device's dense bf16/fp16 peak in TFLOPS, for train/mfu where the built-in table has none (CPUs, GPUs it
    lacks); it overrides the table."""
    max_eval_samples: int = 1000
    train_steps: int | None = None
    """Train this many optimizer steps, whatever budget the preset gives (handy for smoke runs)."""
    train_epochs: float | None = None
    """Train this many passes over the training instances, whatever budget the preset gives."""
    train_tokens: int | None = None
    """Train on a budget of this many tokens (steps x global batch x sequence-length), whatever the preset gives."""
    lr_schedule: str | None = None
    """linear or cosine: overrides the preset's lr-schedule."""
    min_lr_ratio: float | None = None
    """Where the decay ends, as a share of the learning rate: overrides the preset's min-lr-ratio."""
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
    dataset_dir: str | None = None
    """A dataset dir written by create_datasets.py: trained on instead of --input_file (its shards, checked against
    the preset and the tokenizer)."""
    resume_from_checkpoint: str | None = None
    """The original's flag: a checkpoint-<step> dir in --model_dir, resumed as --do_continue does."""
    downstream_task: str | None = None
    """A task dir (evaluate_downstream.py's): saved checkpoints are fine-tuned on it in a background process."""
    downstream_every: int | None = None
    """Probe the checkpoints whose step is a multiple of this (a multiple of save-steps; None: every save)."""
    downstream_seeds: int = 1
    """Fine-tuning runs per probed checkpoint (seeds 0, 1, ...)."""
    downstream_epochs: int = 3
    """Passes over the task's train split per fine-tuning run."""
    downstream_device: str = "cpu"
    """Where the probe fine-tunes (cpu by default: the training keeps its GPU)."""
    extra: dict = field(default_factory=dict)


_BUDGET_FLAGS = {"train-steps": "train_steps", "train-epochs": "train_epochs", "train-tokens": "train_tokens"}


def budget_from(args: TrainArgs, params: ModelParams) -> tuple[str, float]:
    """A budget flag replaces the preset's budget, whichever key the preset uses (as --train_steps always has);
    two budget flags together are an error (the preset's keys are checked when it is parsed)."""
    flags = [(key, getattr(args, name)) for key, name in _BUDGET_FLAGS.items() if getattr(args, name) is not None]
    if len(flags) > 1:
        raise UserError(f"{' and '.join('--' + _BUDGET_FLAGS[key] for key, _ in flags)} are given together: "
                        f"exactly one of --train_steps, --train_epochs and --train_tokens decides how long the run "
                        f"trains")
    if flags:
        key, value = flags[0]
        if value <= 0:
            raise UserError(f"--{_BUDGET_FLAGS[key]} must be positive (got {value:g})")
        return key, value
    for key, name in _BUDGET_FLAGS.items():
        value = getattr(params, name)
        if value is not None:
            return key, value
    raise UserError(f"{params.model_type}: the preset gives none of train-steps, train-epochs, train-tokens")


def budget_steps(budget: tuple[str, float], *, global_batch_size: int, sequence_length: int,
                 instances: int | None = None) -> int:
    """Optimizer steps of a budget, rounded down: a run never trains past its budget.

    - ``train-tokens`` T: ``T // (global_batch_size * sequence_length)``, Megatron's meaning of a token budget
      (every instance counts ``sequence-length`` tokens, padded or not; the MLM families' masked tokens and the
      summary's ``tokens_seen``, which counts real tokens, are other units).
    - ``train-epochs`` E: ``floor(E * instances / global_batch_size)``. The sampler draws global positions
      0, 1, 2, ... with epoch ``position // instances`` (:mod:`lmpretrain.data.sampler`), so E epochs are the
      positions ``[0, E * instances)``: where the global batch divides the instances, every instance is seen exactly
      once per epoch; otherwise the last ``(E * instances) % global_batch_size`` instances of the final epoch's
      order are not reached. Nothing is dropped between epochs: a step may start in one epoch and end in the next.
    """
    kind, value = budget
    if kind == "train-steps":
        return int(value)
    if kind == "train-tokens":
        per_step = global_batch_size * sequence_length
        steps = int(value) // per_step
        if steps < 1:
            raise UserError(f"train-tokens {int(value)} is less than one step: a step trains {per_step} tokens "
                            f"(global batch {global_batch_size} x sequence-length {sequence_length})")
        return steps
    if instances is None:
        raise ValueError("an epoch budget needs the number of training instances")
    steps = int(Fraction(value).limit_denominator(10**9) * instances // global_batch_size)
    if steps < 1:
        raise UserError(f"train-epochs {value:g} is less than one step: an epoch is {instances} training instances, "
                        f"{instances // global_batch_size} steps of global batch {global_batch_size}")
    return steps


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Pretrain BERT / RoBERTa / ELECTRA / DeBERTa / ModernBERT / GPT-2 / Llama "
                                "models (see the README for launching with torchrun or accelerate).",
                                formatter_class=HelpFormatter)
    p.add_argument("--input_file", nargs="+", default=None,
                   help="corpus: .txt files (one sentence a line, a blank line between documents), directories of "
                        "them, .jsonl or .gz (this or --dataset_dir: required)")
    p.add_argument("--dataset_dir", default=None,
                   help="a dataset written by create_datasets.py, trained on instead of --input_file (checked against "
                        "the preset and the tokenizer; default: none)")
    p.add_argument("--tokenizer_dir", "--tokenizer_name_or_path", dest="tokenizer_dir", required=True,
                   help="a tokenizer dir written by train_tokenizer.py (or one saved by transformers), its vocab.txt "
                        "or spiece.model, or a hub name org/name[@rev] (its snapshot in the HF cache; "
                        "HF_HUB_OFFLINE=1: the cache only)")
    p.add_argument("--model_dir", required=True,
                   help="output: checkpoint-<step>/ folders, the final model, train_log.jsonl, TensorBoard runs")
    p.add_argument("--model_type", required=True,
                   help="a preset name in --parameter_file (bert-tiny, electra-small, ...)")
    p.add_argument("--parameter_file", default="parameter.json", help="the JSON file of model presets")
    p.add_argument("--list_presets", action="store_true",
                   help="list --parameter_file's presets (family, shape, parameters, budget) and exit; the flags "
                        "above are then not needed")
    p.add_argument("--fp16_type", type=int, default=None, choices=[0, 1, 2, 3],
                   help="0 fp32, 1 mixed precision, 2 'almost fp16', 3 pure fp16 (the Apex levels, served by "
                        "torch.amp); default: the preset's fp16-type, else 0")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (where the hardware has it)")
    p.add_argument("--fsdp", choices=list(FSDP_MODES), default=None,
                   help="shard parameters, gradients and optimizer states with PyTorch's FSDP2: no_shard, "
                        "shard_grad_op (ZeRO-2), full_shard (ZeRO-3), hybrid_shard (sharded in a node, replicated "
                        "across nodes); None: the preset's fsdp, else DDP")
    p.add_argument("--use_deepspeed", action="store_true",
                   help="the original's flag (DeepSpeed ZeRO-2): means --fsdp shard_grad_op")
    p.add_argument("--gradient_checkpointing", action="store_true",
                   help="activation checkpointing per block: recompute each block's activations in the backward "
                        "(less memory, about a third more compute); also the preset's gradient-checkpointing")
    p.add_argument("--tokenizer_type", "--subword_tokenizer_type", dest="tokenizer_type", default=None,
                   help="the original's flag: checked against the tokenizer dir's algorithm (default: not checked)")
    p.add_argument("--mecab_dic_type", "--mecab_dic", dest="mecab_dic_type", default=None,
                   help="the original's flag: checked against the tokenizer dir's MeCab dictionary (default: not "
                        "checked)")
    p.add_argument("--word_tokenizer_type", "--word_tokenizer", dest="word_tokenizer", default=None,
                   help="mecab, sudachi, juman or none: checked against the tokenizer dir (default: not checked)")
    p.add_argument("--do_whole_word_mask", action="store_true",
                   help="mask whole words (the segmenter's words, or the tokenizer's own word boundaries)")
    p.add_argument("--do_continue", action="store_true",
                   help="resume from the newest complete checkpoint-<step>/ in --model_dir")
    p.add_argument("--resume_from_checkpoint", default=None, metavar="DIR",
                   help="the original's flag: resume from DIR, the newest checkpoint-<step>/ in --model_dir "
                        "(--do_continue's meaning; default: none)")
    p.add_argument("--disable_overwrite_cache", action="store_true",
                   help="reuse the existing dataset cache as it is, without checking it against the corpus")
    p.add_argument("--node_rank", type=int, default=-1,
                   help="this node's rank (-1: from the launcher's environment, else 0)")
    p.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=-1,
                   help="set by python -m torch.distributed.launch (-1: from LOCAL_RANK, else 0)")
    p.add_argument("--run_name", default=None,
                   help="TensorBoard run name (events under --logging_dir/<run_name>/); default: --model_type")
    p.add_argument("--logging_dir", default=None,
                   help="where TensorBoard event files go, one folder per run name (default: <model_dir>/runs)")
    p.add_argument("--report_to", nargs="+", default=None, metavar="TRACKER",
                   help="where metrics go, transformers' meaning: tensorboard, wandb, mlflow (several, or comma-"
                        "separated), all (every installed one) or none; default: tensorboard. W&B: WANDB_PROJECT, "
                        "WANDB_MODE=offline; MLflow: MLFLOW_TRACKING_URI, else a file store <logging_dir>/mlruns")
    p.add_argument("--eval_file", nargs="+", default=None,
                   help="held-out corpus for evaluation (default: a share of the training documents)")
    p.add_argument("--cache_dir", default=None,
                   help="where the tokenized dataset cache lives (default: <model_dir>/cache)")
    p.add_argument("--seed", type=int, default=42, help="seeds the model's initialisation, the data order and masking")
    p.add_argument("--build_dataset_only", action="store_true", help="build and cache the dataset, then exit")
    p.add_argument("--pretrained_model_name_or_path", default=None,
                   help="continue pretraining from this Hugging Face model dir or hub name org/name[@rev] "
                        "(overrides the preset's key)")
    p.add_argument("--resize_embeddings", action="store_true",
                   help="continue a pretrained model with another tokenizer: embedding rows are mapped by token")
    p.add_argument("--compile", action="store_true", help="opt in to torch.compile")
    p.add_argument("--num_workers", type=int, default=None,
                   help="tokenization processes for the dataset build (default: the machine's cores)")
    p.add_argument("--dataloader_workers", type=int, default=None,
                   help="background processes building batches ahead of the loop (0: in the loop's process; default: "
                        "min(2, cores per local process - 1)); the batches are the same for any number")
    p.add_argument("--max_eval_samples", type=int, default=1000, help="evaluate on at most this many instances")
    p.add_argument("--peak_tflops", type=float, default=None,
                   help="the device's dense bf16/fp16 peak TFLOPS, for train/mfu (model FLOPs utilization) on a "
                        "device the built-in GPU table lacks, or a CPU; overrides the table")
    p.add_argument("--train_steps", type=int, default=None,
                   help="train this many optimizer steps (replaces the preset's train-steps/-epochs/-tokens)")
    p.add_argument("--train_epochs", type=float, default=None,
                   help="train this many passes over the training instances, rounded down to whole steps "
                        "(replaces the preset's budget)")
    p.add_argument("--train_tokens", type=_token_count, default=None,
                   help="train a budget of this many tokens: steps = tokens // (global batch x sequence-length), "
                        "Megatron's meaning (replaces the preset's budget)")
    p.add_argument("--lr_schedule", choices=["linear", "cosine"], default=None,
                   help="decay after warmup: linear (default: the preset's lr-schedule, else linear) or cosine, down "
                        "to --min_lr_ratio")
    p.add_argument("--min_lr_ratio", type=float, default=None,
                   help="the decay ends at this share of the learning rate, 0 to 1 (Megatron's min-lr / lr; default: "
                        "the preset's min-lr-ratio, else 0)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1 ... (default: cuda:<local_rank> when a GPU is present, else cpu)")
    p.add_argument("--peer_timeout", type=float, default=120.0,
                   help="seconds without a heartbeat from another process before this one stops, and how long a "
                        "process waits for a dataset cache that rank 0 has finished but it cannot see")
    p.add_argument("--max_nonfinite_steps", type=int, default=20,
                   help="stop with an error after this many consecutive steps whose loss is NaN/inf")
    p.add_argument("--overwrite_output_dir", action="store_true",
                   help="a fresh run into a --model_dir that holds an earlier run deletes that run's outputs first")
    p.add_argument("--downstream_task", default=None, metavar="TASK_DIR",
                   help="fine-tune saved checkpoints on this task dir (evaluate_downstream.py's train/dev/test) in a "
                        "background process on rank 0, and log downstream/<task>/<metric> at their steps (default: "
                        "none)")
    p.add_argument("--downstream_every", type=int, default=None, metavar="N",
                   help="probe the checkpoints whose step is a multiple of N, a multiple of save-steps, and the final "
                        "model (default: every saved checkpoint)")
    p.add_argument("--downstream_seeds", type=int, default=1, help="fine-tuning runs per probed checkpoint")
    p.add_argument("--downstream_epochs", type=int, default=3, help="the probe's passes over the task's train split")
    p.add_argument("--downstream_device", default="cpu",
                   help="where the probe fine-tunes: cpu (the training keeps its GPU), cuda, cuda:1, ...")
    p.add_argument("--accept_changed_run", action="store_true",
                   help="--do_continue: continue even though the seed, batch size, corpus or masking changed")
    return p


def _token_count(text: str) -> int:
    """An integer, also written as 2e9 (a whole number)."""
    try:
        return int(text)
    except ValueError:
        value = float(text)  # a ValueError here is argparse's "invalid _token_count value"
        if not value.is_integer():
            raise ValueError(text) from None
        return int(value)


def parse_args(argv=None) -> TrainArgs:
    parser = build_parser()
    namespace = parser.parse_args(argv)
    if (namespace.input_file is None) == (namespace.dataset_dir is None):
        parser.error("give the corpus as --input_file or a dataset from create_datasets.py as --dataset_dir (one "
                     "of them)")
    namespace.input_file = namespace.input_file or []
    namespace.parameter_file = preset_file(namespace.parameter_file)  # installed: its own presets by default
    names = {f.name for f in fields(TrainArgs)}
    return TrainArgs(**{k: v for k, v in vars(namespace).items() if k in names})
