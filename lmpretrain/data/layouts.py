"""Instance layouts, declared: one :class:`InstanceLayout` each, registered by name in :data:`LAYOUTS`.

A family names the layout it trains on (``Family.layout``, or ``layout_of`` for a preset's choice); everything
else reads the declaration: :func:`make_instances` builds its dataset and refuses a sequence length below its
minimum, the collators pass on every label it declares (``masking.pad_instances``), and a loss term computed from a
label names it (``LossTerm.label``), so that the trainer knows the term must be there exactly when the layout
produces the label.

A new layout: an :class:`~.instances.InstanceDataset` subclass in ``instances.py`` and one declaration here.

**Versions.** Which instances a seed gives is part of a run: :data:`INSTANCE_VERSION` names the builders of this
code, and a run records the version it trains on (the run description's ``data.instance_version``), so that a resumed
run keeps the instances its checkpoint trained on. Version 1: session 21's builders (a line longer than a segment
truncated in pairs, the B a random next sentence replaced lost, whole lines packed); version 2 (issue 29): every
token counts (long lines cut at sentence ends into pieces, Google's put-back, MLM text packed to the sequence
length). A declaration keeps the builders of earlier versions in ``earlier``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ..errors import UserError
from .instances import (
    CausalBlockDataset,
    InstanceDataset,
    NextSentenceDataset,
    PackedSentenceDataset,
    PackedStreamDataset,
    SentenceOrderDataset,
    SentenceOrderPairDataset,
    SentencePairDataset,
)
from .shards import TokenShards

INSTANCE_VERSION = 2
"""The version of the instance builders a new run trains on (see the module docstring); 1: a record without one."""


@dataclass(frozen=True)
class InstanceLabel:
    """A per-instance field (one class id per instance) that a layout produces, for a loss term to train on."""

    name: str
    classes: int
    meaning: str


@dataclass(frozen=True)
class InstanceLayout:
    """One layout: what a family's ``layout`` names, and everything the data side reads about it."""

    name: str
    dataset: Callable[..., InstanceDataset]
    """(shards, doc_ids, *, sequence_length, cls_id, sep_id, seed, shuffle, and the ``options`` named) -> dataset."""
    minimum_length: int
    """The shortest sequence length an instance fits in (its special tokens and one token per segment)."""
    description: str
    labels: tuple[InstanceLabel, ...] = ()
    """The per-instance labels every instance carries; the collators pass each on as an int64 [batch] tensor."""
    token_types: bool = False
    """Whether instances carry ``token_type_ids`` (segment A 0, segment B 1)."""
    options: tuple[str, ...] = ()
    """The instance options (beyond the common ones) the dataset takes: ``short_seq_prob``, ``nsp_probability``,
    ``sentence_marks`` (``FastEncoder.sentence_marks()``: where a long line may be cut)."""
    earlier: dict[int, Callable[..., InstanceDataset]] = field(default_factory=dict)
    """The builders of earlier :data:`INSTANCE_VERSION` s (a version not here builds as ``dataset``); they take the
    ``options`` but ``sentence_marks``."""

    def builder(self, version: int) -> tuple[Callable[..., InstanceDataset], tuple[str, ...]]:
        """(the dataset class of ``version``, the options it takes)."""
        if not 1 <= version <= INSTANCE_VERSION:
            raise UserError(f"instance layout version {version} is not one this code builds (1 to "
                            f"{INSTANCE_VERSION}); a newer lmpretrain wrote it")
        if version in self.earlier:
            return self.earlier[version], tuple(o for o in self.options if o != "sentence_marks")
        return self.dataset, self.options

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)


LAYOUTS: dict[str, InstanceLayout] = {}


def register_layout(layout: InstanceLayout) -> InstanceLayout:
    if layout.name in LAYOUTS:
        raise AssertionError(f"instance layout {layout.name} registered twice")
    LAYOUTS[layout.name] = layout
    return layout


def get_layout(name: str) -> InstanceLayout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise UserError(f"unknown instance layout {name!r} (expected one of {', '.join(LAYOUTS)})") from None


def instance_labels() -> tuple[str, ...]:
    """Every label some layout declares, in declaration order (what a collator passes on)."""
    return tuple(dict.fromkeys(name for layout in LAYOUTS.values() for name in layout.label_names))


def make_instances(shards: TokenShards, layout: str, *, sequence_length: int, cls_id: int, sep_id: int, seed: int,
                   doc_ids=None, short_seq_prob: float = 0.1, nsp_probability: float = 0.5,
                   shuffle: bool = True, version: int = INSTANCE_VERSION,
                   sentence_marks: np.ndarray | None = None) -> InstanceDataset:
    """The instance dataset of ``layout`` (a name in :data:`LAYOUTS`) over the documents ``doc_ids`` (all when None),
    built as layout ``version`` does (see the module docstring). ``sentence_marks``: the encoder's
    ``sentence_marks()``, where a long line may be cut (None: at word starts only)."""
    declared = get_layout(layout)
    if sequence_length < declared.minimum_length:
        raise UserError(f"sequence-length {sequence_length} is too short for {layout} instances "
                        f"(at least {declared.minimum_length})")
    docs = np.arange(shards.num_documents, dtype=np.int64) if doc_ids is None else np.asarray(doc_ids, np.int64)
    if len(docs) == 0:
        raise UserError("no documents to build instances from")
    if docs.min() < 0 or docs.max() >= shards.num_documents:
        raise UserError(f"document ids outside the corpus's {shards.num_documents} documents")
    options = dict(short_seq_prob=short_seq_prob, nsp_probability=nsp_probability, sentence_marks=sentence_marks)
    dataset, names = declared.builder(version)
    return dataset(shards, docs, sequence_length=sequence_length, cls_id=cls_id, sep_id=sep_id, seed=seed,
                   shuffle=shuffle, **{name: options[name] for name in names})


_PAIR_OPTIONS = ("short_seq_prob", "nsp_probability", "sentence_marks")

register_layout(InstanceLayout(
    "sentence_pairs", SentencePairDataset, minimum_length=5, token_types=True, options=_PAIR_OPTIONS,
    earlier={1: NextSentenceDataset},
    labels=(InstanceLabel("next_sentence_label", 2, "0: B follows A; 1: B comes from a random document"),),
    description="[CLS] A [SEP] B [SEP] for next-sentence prediction, as Google's create_pretraining_data.py (BERT); "
                "long lines cut at sentence ends, the pieces a random B replaces put back"))
register_layout(InstanceLayout(
    "sentence_order", SentenceOrderPairDataset, minimum_length=5, token_types=True, options=_PAIR_OPTIONS,
    earlier={1: SentenceOrderDataset},
    labels=(InstanceLabel("sentence_order_label", 2, "0: A and B in order; 1: swapped"),),
    description="the same pairs for sentence-order prediction: the negative is A and B swapped (ALBERT)"))
register_layout(InstanceLayout(
    "packed_sentences", partial(PackedStreamDataset, layout="packed_sentences"), minimum_length=3,
    earlier={1: partial(PackedSentenceDataset, cross_documents=True)},
    description="[CLS] text [SEP] packed to the sequence length across documents, a [SEP] between them, cut at word "
                "starts (RoBERTa's FULL-SENTENCES, filled; MLM-only BERT, DeBERTa, ModernBERT); version 1: whole "
                "sentences"))
register_layout(InstanceLayout(
    "whole_lines", partial(PackedStreamDataset, layout="whole_lines"), minimum_length=3,
    earlier={1: partial(PackedSentenceDataset, cross_documents=False)},
    description="ELECTRA's text, packed to the sequence length as packed_sentences (ELECTRA's "
                "build_pretraining_dataset.py fills each example); version 1: as many whole lines of one document "
                "as fit (the original's line-by-line)"))
register_layout(InstanceLayout(
    "causal_blocks", CausalBlockDataset, minimum_length=2, earlier={1: CausalBlockDataset},
    description="contiguous blocks of the token stream, [SEP] ending each document, no [CLS] (causal LMs)"))
