"""One epoch of a training split, in figures: its corpus tokens, instances, steps at a global batch and token budget,
described in the log and recorded beside the dataset cache's manifest (``epochs.json``), per instance options."""

from __future__ import annotations

import json

import numpy as np

from ..fsutil import atomic_write_text
from ..log import get_logger

logger = get_logger(__name__)

EPOCHS_FILE = "epochs.json"
"""Beside the cache's manifest: one epoch's tokens, instances and steps, per instance options and global batch."""


def epoch_stats(shards, doc_ids, instances: int, *, global_batch_size: int, sequence_length: int,
                epoch_tokens: tuple[int, int, bool] | None = None) -> dict:
    """One epoch of ``instances`` training instances built from the documents ``doc_ids`` (None: all): the
    documents' tokens (as tokenized, before the layout's special tokens), the instances, and the steps of
    ``global_batch_size`` that one epoch takes (``train-epochs 1``) with their token budget (``train-tokens``:
    steps x global batch x sequence-length). ``epoch_tokens``: the dataset's ``epoch_tokens()`` (real tokens,
    covered corpus tokens, exact), which adds the epoch's ``coverage`` (covered / corpus tokens) and ``fill`` (real
    tokens / instances x sequence-length)."""
    if doc_ids is None:
        tokens = shards.num_tokens
    else:
        sentence_offsets, doc_offsets = np.asarray(shards.sentence_offsets), np.asarray(shards.document_offsets)
        docs = np.asarray(doc_ids, dtype=np.int64)
        tokens = int((sentence_offsets[doc_offsets[docs + 1]] - sentence_offsets[doc_offsets[docs]]).sum())
    steps = instances // global_batch_size
    epoch = {"tokens": int(tokens), "instances": int(instances), "global_batch_size": int(global_batch_size),
            "sequence_length": int(sequence_length), "steps_per_epoch": int(steps),
            "tokens_per_epoch": int(steps * global_batch_size * sequence_length),
            "instances_not_reached": int(instances - steps * global_batch_size)}
    if epoch_tokens is not None:
        real, covered, exact = epoch_tokens
        epoch.update(real_tokens=int(real), covered_tokens=int(covered), figures_exact=bool(exact),
                     coverage=round(covered / max(tokens, 1), 4),
                     fill=round(real / max(instances * sequence_length, 1), 4))
    return epoch


def describe_epoch(epoch: dict) -> str:
    text = (f"one epoch = {epoch['tokens']} corpus tokens in {epoch['instances']} instances = "
            f"{epoch['steps_per_epoch']} steps at global batch {epoch['global_batch_size']} (train-tokens "
            f"{epoch['tokens_per_epoch']} at sequence-length {epoch['sequence_length']})")
    if "coverage" in epoch:
        about = "" if epoch["figures_exact"] else "about "
        text += (f"; coverage {about}{100 * epoch['coverage']:.1f}% ({epoch['covered_tokens']} of the corpus tokens "
                 f"an epoch), fill {about}{100 * epoch['fill']:.1f}% ({epoch['real_tokens']} real tokens in "
                 f"{epoch['instances'] * epoch['sequence_length']} slots)")
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
