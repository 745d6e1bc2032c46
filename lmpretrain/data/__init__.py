"""Data: corpus reading, the cached token shards, the instance layouts (declared in layouts.py), the sample order.

    shards = build_or_load_dataset(["corpus.txt"], "tokenizer/", "cache/", num_workers=8)
    train_docs, eval_docs = split_eval(shards, 0.01, seed)
    dataset = make_instances(shards, "sentence_pairs", sequence_length=512, cls_id=2, sep_id=3, seed=seed,
                             doc_ids=train_docs)
    dataset[position]  # {"input_ids", "word_starts", "position", ...} for any global sample position
"""

from .cache import build_or_load_dataset, cache_location
from .corpus import iter_sentences, resolve_corpus_files
from .instances import (
    EVAL_SPLIT_DOCUMENTS,
    EVAL_SPLIT_TOKENS,
    MIN_EVAL_INSTANCES,
    CausalBlockDataset,
    InstanceDataset,
    NextSentenceDataset,
    PackedSentenceDataset,
    PackedStreamDataset,
    SentenceOrderDataset,
    SentenceOrderPairDataset,
    SentencePairDataset,
    split_eval,
)
from .layouts import (
    INSTANCE_VERSION,
    LAYOUTS,
    InstanceLabel,
    InstanceLayout,
    get_layout,
    instance_labels,
    make_instances,
)
from .sampler import EpochOrder, epoch_permutation, positions_for_step
from .shards import TokenShards, ids_dtype

__all__ = [
    "EVAL_SPLIT_DOCUMENTS", "EVAL_SPLIT_TOKENS", "INSTANCE_VERSION", "MIN_EVAL_INSTANCES",
    "LAYOUTS", "CausalBlockDataset", "EpochOrder", "InstanceDataset", "InstanceLabel", "InstanceLayout",
    "NextSentenceDataset", "get_layout", "instance_labels",
    "PackedSentenceDataset", "PackedStreamDataset", "SentenceOrderDataset", "SentenceOrderPairDataset",
    "SentencePairDataset", "TokenShards", "build_or_load_dataset", "cache_location",
    "epoch_permutation", "ids_dtype", "iter_sentences", "make_instances", "positions_for_step", "resolve_corpus_files",
    "split_eval",
]
