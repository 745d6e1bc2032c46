"""From corpus files to this process's batches: dataset cache, eval split, instances, collators."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .data import build_or_load_dataset, make_instances, split_eval
from .distributed import Layout, store_has, store_set
from .errors import UserError
from .fsutil import atomic_write_text
from .log import get_logger
from .masking import CausalLMCollator, MaskingConfig, MLMCollator

if TYPE_CHECKING:
    from .run_description import DataSettings

logger = get_logger(__name__)

EVAL_SEED_OFFSET = 1_000_003  # eval masks are fixed (the same each evaluation), apart from the training stream
EPOCHS_FILE = "epochs.json"
"""Beside the cache's manifest: one epoch's tokens, instances and steps, per instance options and global batch."""


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


def epoch_stats(shards, doc_ids, instances: int, *, global_batch_size: int, sequence_length: int) -> dict:
    """One epoch of ``instances`` training instances built from the documents ``doc_ids`` (None: all): the
    documents' tokens (as tokenized, before the layout's special tokens), the instances, and the steps of
    ``global_batch_size`` that one epoch takes (``train-epochs 1``) with their token budget (``train-tokens``:
    steps x global batch x sequence-length)."""
    if doc_ids is None:
        tokens = shards.num_tokens
    else:
        sentence_offsets, doc_offsets = np.asarray(shards.sentence_offsets), np.asarray(shards.document_offsets)
        docs = np.asarray(doc_ids, dtype=np.int64)
        tokens = int((sentence_offsets[doc_offsets[docs + 1]] - sentence_offsets[doc_offsets[docs]]).sum())
    steps = instances // global_batch_size
    return {"tokens": int(tokens), "instances": int(instances), "global_batch_size": int(global_batch_size),
            "sequence_length": int(sequence_length), "steps_per_epoch": int(steps),
            "tokens_per_epoch": int(steps * global_batch_size * sequence_length),
            "instances_not_reached": int(instances - steps * global_batch_size)}


def describe_epoch(epoch: dict) -> str:
    text = (f"one epoch = {epoch['tokens']} corpus tokens in {epoch['instances']} instances = "
            f"{epoch['steps_per_epoch']} steps at global batch {epoch['global_batch_size']} (train-tokens "
            f"{epoch['tokens_per_epoch']} at sequence-length {epoch['sequence_length']})")
    if epoch["instances_not_reached"]:
        text += (f"; the last {epoch['instances_not_reached']} instances of an epoch's order are not reached "
                 f"in one epoch (the batch does not divide them)")
    return text


def record_epoch(shards, key: str, epoch: dict) -> None:
    """Add one epoch's figures to the cache's metadata (``epochs.json`` beside its manifest), under ``key`` (the
    options the instances depend on). A cache that cannot be written keeps its metadata as it is (logged)."""
    path = shards.directory / EPOCHS_FILE
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        recorded = {}
    if recorded.get(key) == epoch:
        return
    recorded[key] = epoch
    try:
        atomic_write_text(path, json.dumps(recorded, indent=1, sort_keys=True))
    except OSError as error:
        logger.warning("could not record the epoch's figures in %s (%s)", path, error.strerror)


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


def _say_built(shards, layout: Layout) -> None:
    if layout.rank == 0:
        store_set(f"cache_built/{shards.directory.name}", "1")


def build_run_data(run, layout: Layout) -> RunData:
    """This process's datasets and collators. ``run``: a ``prepare.Run`` placed on its process layout (its
    ``system.report_batch_size`` is the global batch the epoch's steps are counted at)."""
    description, encoder = run.description, run.encoder
    data, family = description.data, description.model.family
    if data.gather_masked is None:
        raise ValueError("build_run_data needs a run description placed on its process layout (prepare.place_run)")
    # rank 0 says in the job's store when a cache is complete; a rank that still does not see it --peer_timeout
    # seconds later (a node-local --cache_dir) stops with an error instead of waiting out the build timeout
    build = dict(num_workers=data.num_workers, overwrite=data.check_cache,
                 is_builder=layout.rank == 0, unseen_timeout_s=data.peer_timeout,
                 builder_done=lambda location: store_has(f"cache_built/{location.name}"))
    fingerprints = run.data_fingerprints()  # hashed once: the checkpoints record them, the cache reuses them
    shards = build_or_load_dataset(list(data.input_files), data.tokenizer_dir, data.cache_dir, **build,
                                   files_fingerprint=fingerprints["corpus"])
    _say_built(shards, layout)
    instance_options = dict(sequence_length=data.sequence_length, cls_id=encoder.cls_token_id,
                            sep_id=encoder.sep_token_id, short_seq_prob=data.short_seq_prob,
                            nsp_probability=data.nsp_probability)
    if data.eval_files:
        eval_shards = build_or_load_dataset(list(data.eval_files), data.tokenizer_dir, data.cache_dir, **build,
                                            files_fingerprint=fingerprints["eval"])
        _say_built(eval_shards, layout)
        train_docs, eval_docs = None, None
    else:
        eval_shards = shards
        train_docs, eval_docs = split_eval(shards, data.eval_share, data.seed)
    train_dataset = make_instances(shards, data.layout, seed=data.seed, doc_ids=train_docs, **instance_options)
    eval_dataset = None
    if eval_docs is None or len(eval_docs):
        eval_dataset = make_instances(eval_shards, data.layout, seed=data.seed + EVAL_SEED_OFFSET,
                                      doc_ids=eval_docs, **instance_options)
    if len(train_dataset) < layout.global_batch_size:
        raise UserError(f"the corpus {', '.join(data.input_files)} yields {len(train_dataset)} training instances, "
                        f"fewer than one global batch ({layout.global_batch_size}); add text or lower batch-size")
    global_batch = description.system.report_batch_size or layout.global_batch_size
    epoch = epoch_stats(shards, train_docs, len(train_dataset), global_batch_size=global_batch,
                        sequence_length=data.sequence_length)
    collator, eval_collator = (make_collator(family.collator, data, encoder, seed=data.seed + offset)
                               for offset in (0, EVAL_SEED_OFFSET))
    result = RunData(train_dataset=train_dataset, eval_dataset=eval_dataset, collator=collator,
                     eval_collator=eval_collator, epoch=epoch)
    if layout.rank == 0:
        held_out = "eval_file" if data.eval_files else f"eval-share {data.eval_share:g}"
        record_epoch(shards, f"{data.layout} sequence-length {data.sequence_length}, seed {data.seed}, {held_out}, "
                             f"short-seq-prob {data.short_seq_prob:g}, global batch {global_batch}", epoch)
    logger.info("dataset: %s", result.describe())
    return result
