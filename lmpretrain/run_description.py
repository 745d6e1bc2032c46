"""The run description: every setting of one run of run_pretraining.py, resolved once and then frozen.

:mod:`lmpretrain.prepare` builds it in two phases, as torchtitan builds every component from one job config and
litgpt's ``setup()`` hands typed groups to ``fit()``:

(a) :func:`describe` — before any long work: flag over preset over default, each checked, every problem an error.
(b) :meth:`RunDescription.settled` — once the process layout (and, for an epoch budget, the training instances) is
    known: the global batch, the train steps of a token or epoch budget, a warmup ratio's steps, the batch workers
    per process, the fixed-shape choices.

Grouped by concern: ``model`` (holding the :class:`~lmpretrain.models.Family` itself), ``optim``, ``data``,
``outputs``, ``system``. Everything after ``prepare`` reads only this object: no argparse namespace, no raw preset,
nothing replaced or mutated once it is settled. What a run opens (the encoder, the corpus fingerprints) is
``prepare.Resources``; what a resume changed is returned by ``run_dir.own_model_dir`` as a value.

:meth:`RunDescription.record` is what each checkpoint saves (``lmpretrain_config.json``, ``format`` 2) and what
``--do_continue`` compares (:mod:`lmpretrain.resume`, which also reads the flat ``params``/``args``/``resolved``
records of checkpoints written before it).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .data.instances import EVAL_SPLIT_TOKENS
from .data.layouts import INSTANCE_VERSION
from .data.loader import default_dataloader_workers
from .dataset_dir import read_dataset, resolve_whole_word_mask
from .distributed import preset_global_batch_size
from .downstream import read_task
from .errors import UserError
from .log import get_logger
from .run_config import TrainArgs, budget_from, budget_steps
from .trackers import resolve_report_to

if TYPE_CHECKING:
    from .config import ModelParams
    from .distributed import Layout
    from .models import Family, VocabPlan

logger = get_logger(__name__)
DEEPSPEED_MODE = "shard_grad_op"
"""What the original's ``--use_deepspeed`` (DeepSpeed ZeRO-2) means: gradients and optimizer states sharded."""

RECORD_FORMAT = 2
"""``lmpretrain_config.json`` written from a run description (format 1: the flat params/args/resolved record)."""


@dataclass(frozen=True)
class ModelSettings:
    """What is trained: the family, its validated preset, and where its weights start."""

    family: Family
    params: ModelParams
    """The validated preset: architecture, the family's options (``params.option``), masking and instance options;
    the groups below hold what a flag may override, resolved."""
    pretrained: str | None
    """The model to continue from: --pretrained_model_name_or_path, else the preset's key; None: from scratch (a
    resumed run takes its weights from the checkpoint instead)."""
    resize_embeddings: bool
    """--resize_embeddings or the preset's resize-embeddings."""
    loss_terms: tuple
    """The family's loss terms this preset trains (``Family.loss_terms_for``: a term whose label the preset's layout
    does not produce is not trained); the model must return every one of them."""
    loss_weights: dict
    """Loss term name -> weight (the family's declaration, options applied)."""
    compile: bool = False
    """--compile: torch.compile the model (batches then padded to one shape)."""
    vocab_plan: VocabPlan | None = None
    """The pretrained model's embeddings mapped by token to this tokenizer (None: same vocabulary, or no model)."""
    gradient_checkpointing: bool = False
    """--gradient_checkpointing or the preset's gradient-checkpointing: every part's blocks recompute their
    activations in the backward (transformers' activation checkpointing, non-reentrant)."""


@dataclass(frozen=True)
class OptimSettings:
    """The optimizer, the schedule, precision, and how long the run trains."""

    learning_rate: float
    weight_decay: float
    adam_epsilon: float
    adam_betas: tuple[float, float]
    max_grad_norm: float
    gradient_accumulation_steps: int
    budget: tuple[str, float]
    """What decides the steps: ("train-steps" | "train-epochs" | "train-tokens", the number given)."""
    train_steps: int | None
    """Optimizer steps of the whole run (:func:`~lmpretrain.run_config.budget_steps`); None until a token or epoch
    budget is settled (:meth:`with_steps`)."""
    warmup_steps: int | None
    """The preset's warmup-steps, or ``ceil(warmup-ratio x train_steps)`` once the steps are known."""
    warmup_ratio: float | None
    lr_schedule: str
    """--lr_schedule, else the preset's lr-schedule (linear by default)."""
    min_lr_ratio: float
    """--min_lr_ratio, else the preset's min-lr-ratio: the decay ends at this share of the rate."""
    fp16_type: int
    """0 fp32, 1 mixed, 2 almost fp16, 3 pure fp16: --fp16_type when given, else the preset's fp16-type, else 0."""
    bf16: bool
    """bf16 autocast: --bf16 or the preset's bf16."""
    max_nonfinite_steps: int
    """Stop after this many consecutive non-finite steps."""

    def with_steps(self, *, global_batch_size: int, sequence_length: int, instances: int | None = None
                   ) -> OptimSettings:
        """This group with ``train_steps`` (and a warmup ratio's steps) resolved from the budget (``instances``:
        training instances per epoch, needed for an epoch budget only). UserError for a budget under one step."""
        if self.train_steps is not None:
            return self
        steps = budget_steps(self.budget, global_batch_size=global_batch_size, sequence_length=sequence_length,
                             instances=instances)
        warmup = self.warmup_steps if self.warmup_steps is not None else math.ceil(self.warmup_ratio * steps)
        return replace(self, train_steps=steps, warmup_steps=warmup)


@dataclass(frozen=True)
class DataSettings:
    """The corpus, the tokenizer, the cache, the instances, masking and the input pipeline."""

    input_files: tuple[str, ...]
    eval_files: tuple[str, ...] | None
    """--eval_file; None: a held-out share of the corpus's documents (``eval_share``)."""
    tokenizer_dir: str
    cache_dir: str
    """--cache_dir, else <model_dir>/cache."""
    num_workers: int
    """Tokenization processes of the dataset build: --num_workers, else the machine's cores."""
    check_cache: bool
    """False under --disable_overwrite_cache: an existing cache is reused as it is, unchecked."""
    layout: str
    """The instance layout the family (and its options) trains on."""
    sequence_length: int
    seed: int
    whole_word_mask: bool
    """--do_whole_word_mask or the preset's whole-word-mask."""
    mlm_probability: float
    mask_token_prob: float
    random_token_prob: float
    span_masking: bool
    short_seq_prob: float
    nsp_probability: float
    eval_share: float
    max_eval_samples: int
    peer_timeout: float
    """How long a process waits for a dataset cache that rank 0 finished but it cannot see (and for a peer)."""
    fixed_shapes: bool = False
    """Pad every batch to the sequence length (torch.compile)."""
    dataloader_workers: int | None = None
    """Background processes building batches per process: --dataloader_workers, else min(2, cores per local
    process - 1); None until settled."""
    gather_masked: bool | None = None
    """Give masked positions as an index list of a host-known size (on a GPU, and with compile); None until
    settled."""
    instance_version: int = INSTANCE_VERSION
    """The instance builders' version (``data.layouts.INSTANCE_VERSION``): a new run's is this code's; a resumed
    run's is its checkpoint's (a record without one: 1), so that it keeps the instances it trained on."""
    dataset_dir: str | None = None
    """--dataset_dir: a dataset from create_datasets.py whose token shards the run trains on (``input_files`` are
    then the corpus it records); None: the shards of --input_file, built or reused in ``cache_dir``."""
    eval_split: int = EVAL_SPLIT_TOKENS
    """How ``eval_share`` is drawn (``data.split_eval``): 2, documents until that share of the tokens (new runs);
    1, that share of the documents by count (a run resumed from a checkpoint recorded before version 2)."""


@dataclass(frozen=True)
class DownstreamSettings:
    """--downstream_task: the downstream probe (:mod:`lmpretrain.downstream`) over the run's checkpoints, run in a
    background process on rank 0 by :mod:`lmpretrain.downstream_watch`."""

    task_dir: str
    """The task dir, absolute; checked (``downstream.read_task``) before the run starts."""
    task: str
    """Its name (the dir's), in the metric names ``downstream/<task>/<metric>``."""
    every: int
    """Probe each checkpoint whose step is a multiple of this (--downstream_every, else save-steps; always a multiple
    of save-steps), and the final model."""
    seeds: int
    """Fine-tuning runs per checkpoint, seeds 0, 1, ... (evaluate_downstream.py's --seed 0 --seeds N)."""
    epochs: int
    device: str
    """Where the probe fine-tunes (--downstream_device, default cpu)."""


@dataclass(frozen=True)
class OutputSettings:
    """Where the run writes, how often, and what it does with a used model dir."""

    model_dir: str
    run_name: str
    """TensorBoard run name: --run_name, else --model_type."""
    logging_dir: str
    """--logging_dir, else <model_dir>/runs."""
    logging_steps: int
    eval_steps: int
    """The preset's eval-steps, else its logging-steps."""
    save_steps: int
    save_total_limit: int | None
    resume: bool
    """Continue from the newest checkpoint: --do_continue into a dir that has one (a used dir without one starts
    over, with a warning)."""
    overwrite_output_dir: bool
    accept_changed_run: bool
    report_to: tuple[str, ...] = ("tensorboard",)
    """--report_to resolved (:func:`~lmpretrain.trackers.resolve_report_to`): the trackers the metrics go to, rank 0
    only; a resume continues their runs (not compared on --do_continue: where metrics go does not change the run)."""
    downstream: DownstreamSettings | None = None
    """--downstream_task and its settings; None: no probe (not compared on --do_continue: the probe reads
    checkpoints, it does not change them)."""


@dataclass(frozen=True)
class SystemSettings:
    """The processes and devices: launcher values, per-node batches, and what this invocation does."""

    parameter_file: str
    model_type: str
    node_batch_sizes: dict
    """``batch-size``: node rank -> that node's batch per optimizer step (-1: unlisted nodes)."""
    node_rank: int
    local_rank: int
    device: str | None
    peak_tflops: float | None
    build_dataset_only: bool
    global_batch_size: int | None = None
    """The sum of every process's batch; None until settled on the process layout."""
    report_batch_size: int | None = None
    """The global batch an epoch's steps are counted at: this run's, or under --build_dataset_only the preset's
    over all its nodes, even when not all of them are launched for the build."""
    fsdp: str | None = None
    """How the model is spread over the processes: None, DDP (every process holds all of it); else FSDP2's mode
    (:mod:`lmpretrain.sharding`): --fsdp, else --use_deepspeed's shard_grad_op, else the preset's fsdp. Checkpoints
    are then written with torch.distributed.checkpoint, one shard per process."""

    @property
    def batch_key(self) -> str:
        """Where the per-node batch sizes come from, for messages."""
        return f"{self.parameter_file}: {self.model_type}.batch-size"


@dataclass(frozen=True)
class RunDescription:
    model: ModelSettings
    optim: OptimSettings
    data: DataSettings
    outputs: OutputSettings
    system: SystemSettings

    @property
    def is_settled(self) -> bool:
        return self.system.global_batch_size is not None and self.optim.train_steps is not None

    def placed(self, layout: Layout) -> RunDescription:
        """Phase (b), on the process layout: the global batch (and, for --build_dataset_only, the preset's global
        batch over all its nodes, which the epoch's figures are counted at), the batch workers per process
        (--dataloader_workers, else :func:`~lmpretrain.data.loader.default_dataloader_workers` of this process's
        share of the cores), the fixed-shape choices, and the train steps of a step or token budget."""
        optim = self.optim
        if optim.budget[0] != "train-epochs":
            optim = optim.with_steps(global_batch_size=layout.global_batch_size,
                                     sequence_length=self.data.sequence_length)
        workers = self.data.dataloader_workers
        data = replace(self.data, gather_masked=self.model.compile or layout.device.type == "cuda",
                       dataloader_workers=workers if workers is not None else
                       default_dataloader_workers(layout.local_world_size))
        report = layout.global_batch_size
        if self.system.build_dataset_only:
            report = preset_global_batch_size(self.system.node_batch_sizes, layout.num_nodes)
        system = replace(self.system, global_batch_size=layout.global_batch_size, report_batch_size=report)
        return replace(self, data=data, optim=optim, system=system)

    def settled(self, *, instances: int | None = None) -> RunDescription:
        """Phase (b), done: a placed description with an epoch budget's steps (``instances``: training instances
        per epoch)."""
        if self.system.global_batch_size is None:
            raise ValueError("settle a run description on its process layout first (placed)")
        return replace(self, optim=self.optim.with_steps(global_batch_size=self.system.global_batch_size,
                                                         sequence_length=self.data.sequence_length,
                                                         instances=instances))

    def record(self) -> dict:
        """JSON-ready: what each checkpoint saves of its run (the family by name, the preset flat as
        ``ModelParams.to_dict``, no vocabulary plan: it is derived from the tokenizer and model files)."""
        model = {"family": self.model.family.name, "params": self.model.params.to_dict(),
                 "pretrained": self.model.pretrained, "resize_embeddings": self.model.resize_embeddings,
                 "loss_terms": [term.name for term in self.model.loss_terms],
                 "loss_weights": dict(self.model.loss_weights), "compile": self.model.compile,
                 "gradient_checkpointing": self.model.gradient_checkpointing}
        optim = asdict(self.optim)
        optim["budget"], optim["adam_betas"] = list(self.optim.budget), list(self.optim.adam_betas)
        data = asdict(self.data)
        data["input_files"] = list(self.data.input_files)
        data["eval_files"] = list(self.data.eval_files) if self.data.eval_files else None
        system = asdict(self.system)
        system["node_batch_sizes"] = {str(k): v for k, v in self.system.node_batch_sizes.items()}
        return {"format": RECORD_FORMAT, "model": model, "optim": optim, "data": data,
                "outputs": asdict(self.outputs), "system": system}


def describe(args: TrainArgs, params: ModelParams, family: Family, *, resume: bool | None = None,
             vocab_plan: VocabPlan | None = None) -> RunDescription:
    """Phase (a): the flags over the preset over the defaults, each decided here once. ``resume``: whether this run
    continues from a checkpoint (default --do_continue; ``prepare`` turns it off for a used dir without one)."""
    budget = budget_from(args, params)
    train_steps = int(budget[1]) if budget[0] == "train-steps" else None
    warmup_steps = params.warmup_steps if params.warmup_ratio is None else \
        (math.ceil(params.warmup_ratio * train_steps) if train_steps is not None else None)
    if args.min_lr_ratio is not None and not 0.0 <= args.min_lr_ratio <= 1.0:
        raise UserError(f"--min_lr_ratio {args.min_lr_ratio}: a share of the learning rate, from 0 to 1")
    if args.peak_tflops is not None and not (args.peak_tflops > 0 and math.isfinite(args.peak_tflops)):
        raise UserError(f"--peak_tflops must be a positive number of TFLOPS (got {args.peak_tflops})")
    if args.dataloader_workers is not None and args.dataloader_workers < 0:
        raise UserError(f"--dataloader_workers must be 0 (batches built in the loop's process) or more "
                        f"(got {args.dataloader_workers})")
    whole_word_mask, input_files = args.do_whole_word_mask or params.whole_word_mask, tuple(args.input_file)
    if args.dataset_dir:  # its settings checked against the preset's; a mask style's -wwm decides whole-word masking
        dataset = read_dataset(args.dataset_dir)
        whole_word_mask = resolve_whole_word_mask(
            args.dataset_dir, dataset, layout=family.instance_layout(params), sequence_length=params.sequence_length,
            whole_word_mask=whole_word_mask, mlm_probability=params.mlm_probability,
            preset=f"{args.parameter_file}: {args.model_type}")
        input_files = tuple(dataset["corpus"])
    model = ModelSettings(
        family=family, params=params,
        pretrained=args.pretrained_model_name_or_path or params.pretrained_model_name_or_path,
        resize_embeddings=args.resize_embeddings or params.resize_embeddings,
        loss_terms=family.loss_terms_for(params), loss_weights=family.loss_weights(params), compile=args.compile,
        vocab_plan=vocab_plan, gradient_checkpointing=args.gradient_checkpointing or params.gradient_checkpointing)
    optim = OptimSettings(
        learning_rate=params.learning_rate, weight_decay=params.weight_decay, adam_epsilon=params.adam_epsilon,
        adam_betas=tuple(params.adam_betas), max_grad_norm=params.max_grad_norm,
        gradient_accumulation_steps=params.gradient_accumulation_steps, budget=budget, train_steps=train_steps,
        warmup_steps=warmup_steps, warmup_ratio=params.warmup_ratio,
        lr_schedule=args.lr_schedule or params.lr_schedule,
        min_lr_ratio=params.min_lr_ratio if args.min_lr_ratio is None else args.min_lr_ratio,
        fp16_type=args.fp16_type if args.fp16_type is not None else params.fp16_type, bf16=args.bf16 or params.bf16,
        max_nonfinite_steps=args.max_nonfinite_steps)
    data = DataSettings(
        input_files=input_files, eval_files=tuple(args.eval_file) if args.eval_file else None,
        tokenizer_dir=args.tokenizer_dir, cache_dir=args.cache_dir or str(Path(args.model_dir) / "cache"),
        num_workers=args.num_workers or os.cpu_count() or 1, check_cache=not args.disable_overwrite_cache,
        layout=family.instance_layout(params), sequence_length=params.sequence_length, seed=args.seed,
        whole_word_mask=whole_word_mask,
        mlm_probability=params.mlm_probability, mask_token_prob=params.mask_token_prob,
        random_token_prob=params.random_token_prob, span_masking=params.span_masking,
        short_seq_prob=params.short_seq_prob, nsp_probability=params.nsp_probability, eval_share=params.eval_share,
        max_eval_samples=args.max_eval_samples, peer_timeout=args.peer_timeout, fixed_shapes=args.compile,
        dataloader_workers=args.dataloader_workers, dataset_dir=args.dataset_dir)
    outputs = OutputSettings(
        model_dir=args.model_dir, run_name=args.run_name or args.model_type,
        logging_dir=args.logging_dir or str(Path(args.model_dir) / "runs"), logging_steps=params.logging_steps,
        eval_steps=params.eval_steps or params.logging_steps, save_steps=params.save_steps,
        save_total_limit=params.save_total_limit, resume=args.do_continue if resume is None else resume,
        overwrite_output_dir=args.overwrite_output_dir, accept_changed_run=args.accept_changed_run,
        report_to=resolve_report_to(args.report_to))
    system = SystemSettings(
        parameter_file=args.parameter_file, model_type=args.model_type, node_batch_sizes=params.node_batch_sizes,
        node_rank=args.node_rank, local_rank=args.local_rank, device=args.device, peak_tflops=args.peak_tflops,
        build_dataset_only=args.build_dataset_only, fsdp=_sharding(args, params))
    outputs = replace(outputs, downstream=_downstream(args, params, system.fsdp))
    return RunDescription(model=model, optim=optim, data=data, outputs=outputs, system=system)


def _sharding(args: TrainArgs, params: ModelParams) -> str | None:
    """--fsdp, else --use_deepspeed (the original's ZeRO-2: shard_grad_op, said once), else the preset's fsdp."""
    if args.use_deepspeed:
        if args.fsdp not in (None, DEEPSPEED_MODE):
            raise UserError(f"--use_deepspeed means --fsdp {DEEPSPEED_MODE} (DeepSpeed ZeRO-2); it contradicts "
                            f"--fsdp {args.fsdp}: give one of them")
        logger.info("--use_deepspeed: training with PyTorch's FSDP2 in %s mode, DeepSpeed ZeRO-2's equivalent "
                    "(gradients and optimizer states sharded); DeepSpeed itself is not used", DEEPSPEED_MODE)
        return DEEPSPEED_MODE
    return args.fsdp or params.fsdp


def _downstream(args: TrainArgs, params: ModelParams, fsdp: str | None) -> DownstreamSettings | None:
    """--downstream_* resolved and checked (the task's files read here, so that a bad task stops the run before any
    long work), or None without --downstream_task."""
    if args.downstream_task is None:
        if args.downstream_every is not None:
            raise UserError("--downstream_every needs --downstream_task TASK_DIR (the task the checkpoints are "
                            "fine-tuned on)")
        return None
    every = params.save_steps if args.downstream_every is None else args.downstream_every
    if every < 1 or every % params.save_steps:
        raise UserError(f"--downstream_every {every}: the probe fine-tunes saved checkpoints, so it must be a "
                        f"positive multiple of save-steps {params.save_steps} ({args.parameter_file}: "
                        f"{args.model_type}.save-steps), e.g. {params.save_steps} or {2 * params.save_steps}")
    for name in ("downstream_seeds", "downstream_epochs"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1 (got {getattr(args, name)})")
    if fsdp is not None:
        raise UserError(f"--downstream_task with --fsdp {fsdp}: its checkpoints hold sharded weights, not a model "
                        f"the probe loads; probe the final model with evaluate_downstream.py after the run")
    task = read_task(args.downstream_task)  # UserError naming the file and line of a bad task
    return DownstreamSettings(task_dir=str(Path(args.downstream_task).resolve()), task=task.name, every=every,
                              seeds=args.downstream_seeds, epochs=args.downstream_epochs,
                              device=args.downstream_device)
