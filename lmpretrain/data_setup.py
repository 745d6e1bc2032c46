"""From corpus files to this process's batches: dataset cache, eval split, instances, collators."""

from __future__ import annotations

from dataclasses import dataclass

from .data import build_or_load_dataset, make_instances, split_eval
from .distributed import Layout
from .errors import UserError
from .masking import CausalLMCollator, MaskingConfig, MLMCollator
from .models import get_family

EVAL_SEED_OFFSET = 1_000_003  # eval masks are fixed (the same each evaluation), apart from the training stream


@dataclass
class RunData:
    train_dataset: object
    eval_dataset: object | None
    collator: object
    eval_collator: object

    def describe(self) -> str:
        evals = len(self.eval_dataset) if self.eval_dataset is not None else 0
        return f"{len(self.train_dataset)} training and {evals} eval instances per epoch"


def make_collator(params, encoder, *, seed: int, whole_word: bool):
    """The collator the preset's family trains with (its registry declaration says which)."""
    if get_family(params.family).collator == "causal":
        return CausalLMCollator(pad_token_id=encoder.pad_token_id)
    config = MaskingConfig(mlm_probability=params.mlm_probability, mask_token_prob=params.mask_token_prob,
                           random_token_prob=params.random_token_prob,
                           whole_word=whole_word, span=params.span_masking)
    config.validate()
    return MLMCollator(config, vocab_size=encoder.vocab_size, pad_token_id=encoder.pad_token_id,
                       mask_token_id=encoder.mask_token_id,
                       special_token_ids=encoder.all_special_ids + encoder.unused_token_ids,
                       seed=seed)


def build_run_data(run, layout: Layout) -> RunData:
    args, config, params, encoder = run.args, run.config, run.params, run.encoder
    layout_name = get_family(params.family).instance_layout(params)
    cache_dir = config.cache_dir
    build = dict(num_workers=config.num_workers, overwrite=not args.disable_overwrite_cache,
                 is_builder=layout.rank == 0)
    fingerprints = run.data_fingerprints()  # hashed once: the checkpoints record them, the cache reuses them
    shards = build_or_load_dataset(args.input_file, args.tokenizer_dir, cache_dir, **build,
                                   files_fingerprint=fingerprints["corpus"])
    instance_options = dict(sequence_length=params.sequence_length, cls_id=encoder.cls_token_id,
                            sep_id=encoder.sep_token_id, short_seq_prob=params.short_seq_prob,
                            nsp_probability=params.nsp_probability)
    if args.eval_file:
        eval_shards = build_or_load_dataset(args.eval_file, args.tokenizer_dir, cache_dir, **build,
                                            files_fingerprint=fingerprints["eval"])
        train_docs, eval_docs = None, None
    else:
        eval_shards = shards
        train_docs, eval_docs = split_eval(shards, params.eval_share, args.seed)
    train_dataset = make_instances(shards, layout_name, seed=args.seed, doc_ids=train_docs, **instance_options)
    eval_dataset = None
    if eval_docs is None or len(eval_docs):
        eval_dataset = make_instances(eval_shards, layout_name, seed=args.seed + EVAL_SEED_OFFSET,
                                      doc_ids=eval_docs, **instance_options)
    if len(train_dataset) < layout.global_batch_size:
        raise UserError(f"the corpus {', '.join(args.input_file)} yields {len(train_dataset)} training instances, "
                        f"fewer than one global batch ({layout.global_batch_size}); add text or lower batch-size")
    whole_word = config.whole_word_mask
    return RunData(train_dataset=train_dataset, eval_dataset=eval_dataset,
                   collator=make_collator(params, encoder, seed=args.seed, whole_word=whole_word),
                   eval_collator=make_collator(params, encoder, seed=args.seed + EVAL_SEED_OFFSET,
                                               whole_word=whole_word))
