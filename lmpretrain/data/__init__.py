"""Data: corpus reading, the cached token shards, instance builders for each layout, and the sample order.

    shards = build_or_load_dataset(["corpus.txt"], "tokenizer/", "cache/", num_workers=8)
    train_docs, eval_docs = split_eval(shards, 0.01, seed)
    dataset = make_instances(shards, "sentence_pairs", sequence_length=512, cls_id=2, sep_id=3, seed=seed,
                             doc_ids=train_docs)
    dataset[position]  # {"input_ids", "word_starts", "position", ...} for any global sample position
"""

from .cache import build_or_load_dataset, cache_location
from .corpus import iter_sentences, resolve_corpus_files
from .instances import (
    LAYOUTS,
    CausalBlockDataset,
    InstanceDataset,
    NextSentenceDataset,
    PackedSentenceDataset,
    SentenceOrderDataset,
    make_instances,
    split_eval,
)
from .sampler import EpochOrder, epoch_permutation, positions_for_step
from .shards import TokenShards, ids_dtype

__all__ = [
    "LAYOUTS", "CausalBlockDataset", "EpochOrder", "InstanceDataset", "NextSentenceDataset",
    "PackedSentenceDataset", "SentenceOrderDataset", "TokenShards", "build_or_load_dataset", "cache_location",
    "epoch_permutation", "ids_dtype", "iter_sentences", "make_instances", "positions_for_step", "resolve_corpus_files",
    "split_eval",
]
