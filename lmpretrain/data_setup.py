"""From corpus files to this process's batches: dataset cache, eval split, instances, collators."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .data import EVAL_SPLIT_TOKENS, MIN_EVAL_INSTANCES, build_or_load_dataset, make_instances, split_eval
from .data.epochs import describe_epoch, epoch_stats, record_epoch
from .dataset_dir import open_dataset_shards, read_dataset
from .distributed import Layout, dir_shared_by_nodes, store_has, store_set
from .errors import UserError
from .log import get_logger
from .masking import CausalLMCollator, MaskingConfig, MLMCollator

if TYPE_CHECKING:
    from .run_description import DataSettings

logger = get_logger(__name__)

EVAL_SEED_OFFSET = 1_000_003  # eval masks are fixed (the same each evaluation), apart from the training stream


@dataclass
class RunData:
    train_dataset: object
    eval_dataset: object | None
    collator: object
    eval_collator: object
    epoch: dict = field(default_factory=dict)
    """One epoch of the training split (:func:`epoch_stats`)."""

    def describe(self) -> str:
        evals = len(self.eval_dataset) if self.eval_dataset is not None else 0
        text = f"{len(self.train_dataset)} training and {evals} eval instances per epoch"
        return f"{text}; {describe_epoch(self.epoch)}" if self.epoch else text


MASKED_INDEX_BUCKET = 64  # masked_index grows in steps of this: a few shapes per run under torch.compile


def make_collator(kind: str, data: DataSettings, encoder, *, seed: int):
    """The collator of ``kind`` (the family's declaration: ``mlm`` or ``causal``) with the run's masking settings.
    ``data.fixed_shapes``: pad every batch to the sequence length (torch.compile); ``data.gather_masked``: give the
    masked positions as an index list of a host-known size (see ``MaskingConfig.masked_index_bucket``; on a GPU,
    and with compile)."""
    pad_to_length = data.sequence_length if data.fixed_shapes else None
    bucket = MASKED_INDEX_BUCKET if data.gather_masked else None
    if kind == "causal":
        return CausalLMCollator(pad_token_id=encoder.pad_token_id, pad_to_length=pad_to_length,
                                predicted_index_bucket=bucket)
    config = MaskingConfig(mlm_probability=data.mlm_probability, mask_token_prob=data.mask_token_prob,
                           random_token_prob=data.random_token_prob, whole_word=data.whole_word_mask,
                           span=data.span_masking, pad_to_length=pad_to_length, masked_index_bucket=bucket)
    config.validate()
    return MLMCollator(config, vocab_size=encoder.vocab_size, pad_token_id=encoder.pad_token_id,
                       mask_token_id=encoder.mask_token_id,
                       special_token_ids=encoder.all_special_ids + encoder.unused_token_ids,
                       seed=seed)


def _cache_builders(cache_dir: str, layout: Layout) -> tuple[bool, str]:
    """Whether this process builds the dataset cache, and the store key prefix its builder says "built" under. One
    builder for the job (global rank 0) when every node sees ``cache_dir``; one per node (each node's local rank 0,
    its other processes waiting on it) when the dir is node-local (:func:`dir_shared_by_nodes`). Nodes that do share
    it while others do not each build too: the build lock makes one of them wait and reuse the other's cache."""
    if dir_shared_by_nodes(cache_dir, layout, "cache"):
        return layout.rank == 0, "cache_built"
    if layout.rank == 0:
        logger.info("--cache_dir %s is not shared by the job's %d nodes (node-local disks): each node's local rank 0 "
                    "builds the dataset cache on its own node, and that node's other processes wait for it",
                    cache_dir, layout.num_nodes)
    return layout.local_rank == 0, f"cache_built/node{layout.node_rank}"


def _say_built(shards, is_builder: bool, key: str) -> None:
    if is_builder:
        store_set(f"{key}/{shards.directory.name}", "1")


def _warn_if_few(eval_dataset, data: DataSettings) -> None:
    """A warning when the eval split is too small for its loss and perplexity to mean much."""
    count = len(eval_dataset) if eval_dataset is not None else 0
    if count >= MIN_EVAL_INSTANCES or (not data.eval_files and data.eval_share == 0):
        return
    source = (f"--eval_file {', '.join(data.eval_files)}" if data.eval_files else
              f"eval-share {data.eval_share:g} of the corpus")
    logger.warning("the eval split has %d instance(s) (%s), fewer than %d: its loss and perplexity mean little; "
                   "raise eval-share in the preset or give a larger --eval_file", count, source, MIN_EVAL_INSTANCES)


def instance_options(data: DataSettings, encoder) -> dict:
    """What ``make_instances`` builds the run's instances with, besides the shards, layout, seed and documents
    (evaluate_perplexity.py builds its eval instances with them too)."""
    return dict(sequence_length=data.sequence_length, cls_id=encoder.cls_token_id, sep_id=encoder.sep_token_id,
                short_seq_prob=data.short_seq_prob, nsp_probability=data.nsp_probability,
                version=data.instance_version, sentence_marks=encoder.sentence_marks())


def build_run_data(run, layout: Layout) -> RunData:
    """This process's datasets and collators. ``run``: a ``prepare.Run`` placed on its process layout (its
    ``system.report_batch_size`` is the global batch the epoch's steps are counted at)."""
    description, encoder = run.description, run.encoder
    data, family = description.data, description.model.family
    if data.gather_masked is None:
        raise ValueError("build_run_data needs a run description placed on its process layout (prepare.place_run)")
    # the builder says in the job's store when a cache is complete; a rank that still does not see it --peer_timeout
    # seconds later stops with an error instead of waiting out the build timeout
    is_builder, built_key = (layout.rank == 0, "cache_built") if data.dataset_dir else \
        _cache_builders(data.cache_dir, layout)
    build = dict(num_workers=data.num_workers, overwrite=data.check_cache,
                 is_builder=is_builder, unseen_timeout_s=data.peer_timeout,
                 builder_done=lambda location: store_has(f"{built_key}/{location.name}"))
    fingerprints = run.data_fingerprints()  # hashed once: the checkpoints record them, the cache reuses them
    if data.dataset_dir:  # create_datasets.py built them: read as they are, contents verified
        dataset = read_dataset(data.dataset_dir)  # its metadata first: what it holds, then the shards
        shards = open_dataset_shards(data.dataset_dir, dataset, encoder.vocab_size)
    else:
        shards = build_or_load_dataset(list(data.input_files), data.tokenizer_dir, data.cache_dir, **build,
                                       files_fingerprint=fingerprints["corpus"])
        _say_built(shards, is_builder, built_key)
    options = instance_options(data, encoder)
    if data.eval_files:
        eval_shards = build_or_load_dataset(list(data.eval_files), data.tokenizer_dir, data.cache_dir, **build,
                                            files_fingerprint=fingerprints["eval"])
        _say_built(eval_shards, is_builder, built_key)
        train_docs, eval_docs = None, None
    else:
        eval_shards = shards
        train_docs, eval_docs = split_eval(shards, data.eval_share, data.seed, data.eval_split)
    train_dataset = make_instances(shards, data.layout, seed=data.seed, doc_ids=train_docs, **options)
    eval_dataset = None
    if eval_docs is None or len(eval_docs):
        eval_dataset = make_instances(eval_shards, data.layout, seed=data.seed + EVAL_SEED_OFFSET,
                                      doc_ids=eval_docs, **options)
    _warn_if_few(eval_dataset, data)
    if len(train_dataset) < layout.global_batch_size:
        raise UserError(f"the corpus {', '.join(data.input_files)} yields {len(train_dataset)} training instances, "
                        f"fewer than one global batch ({layout.global_batch_size}); add text or lower batch-size")
    collator, eval_collator = (make_collator(family.collator, data, encoder, seed=data.seed + offset)
                               for offset in (0, EVAL_SEED_OFFSET))
    global_batch = description.system.report_batch_size or layout.global_batch_size
    epoch = epoch_stats(shards, train_docs, len(train_dataset), global_batch_size=global_batch,
                        sequence_length=data.sequence_length, epoch_tokens=train_dataset.epoch_tokens())
    result = RunData(train_dataset=train_dataset, eval_dataset=eval_dataset, collator=collator,
                     eval_collator=eval_collator, epoch=epoch)
    if layout.rank == 0:
        held_out = "eval_file" if data.eval_files else f"eval-share {data.eval_share:g}" + \
            (" of the tokens" if data.eval_split == EVAL_SPLIT_TOKENS else "")
        record_epoch(shards, f"{data.layout} version {data.instance_version} sequence-length {data.sequence_length}, "
                             f"seed {data.seed}, {held_out}, "
                             f"short-seq-prob {data.short_seq_prob:g}, global batch {global_batch}", epoch)
    logger.info("dataset: %s", result.describe())
    return result
