"""The original tool's dataset names (its newest ``create_datasets.py``) as this toolkit's instance layouts.

The original wrote one dataset per model kind: ``--dataset_type nsp`` (BERT's sentence pairs) or ``linebyline``
(lines, masked while training), or ``--mask_style roberta|electra|debertav2`` with ``-wwm`` for whole-word masking, its
masks drawn once and stored. Here a dataset holds token shards only; the layout is built from them and masks are drawn
while training (dynamic masking, as every run of run_pretraining.py does), so a name chooses a layout and, for a mask
style, whether masking is whole-word.
"""

from __future__ import annotations

DATASET_TYPES = {"nsp": "sentence_pairs", "linebyline": "packed_sentences"}
"""``--dataset_type`` -> the layout it trains (``linebyline``: the original's MLM-only BERT, packed here)."""
MASK_STYLES = {"roberta": "packed_sentences", "electra": "whole_lines", "debertav2": "packed_sentences",
               "bert": "sentence_pairs"}
"""``--mask_style`` (less ``-wwm``) -> the layout of the family it was written for."""
WHOLE_WORD_SUFFIX = "-wwm"
NSP_STYLE = "bert"
"""The original's README writes ``--mask_style bert`` (its parser refuses it: it stored no masks for BERT, which it
masked while training). Here it means what the original's code maps it to: an ``nsp`` dataset, masked while training
as every dataset is; ``bert-wwm`` with whole-word masking, plain ``bert`` as the run's --do_whole_word_mask says."""


def mask_style_names() -> list[str]:
    """Every ``--mask_style`` value: the original's parser's, and ``bert[-wwm]`` (:data:`NSP_STYLE`)."""
    return [f"{name}{suffix}" for name in MASK_STYLES for suffix in ("", WHOLE_WORD_SUFFIX)]


def dataset_type_of(mask_style: str) -> str:
    """The original's ``--dataset_type`` of a mask style (its create_datasets.py: nsp for bert, else linebyline)."""
    return "nsp" if mask_style.removesuffix(WHOLE_WORD_SUFFIX) == NSP_STYLE else "linebyline"


def dataset_settings(dataset_type: str | None, mask_style: str | None) -> tuple[str, bool | None]:
    """(the layout, whole-word masking) of one of the original's dataset names; whole-word masking is None for a
    dataset type and for plain ``bert`` (the run's --do_whole_word_mask decides), a bool for a mask style. KeyError
    for an unknown name."""
    if mask_style is not None:
        base = mask_style.removesuffix(WHOLE_WORD_SUFFIX)
        whole_word = mask_style.endswith(WHOLE_WORD_SUFFIX)
        return MASK_STYLES[base], None if base == NSP_STYLE and not whole_word else whole_word
    return DATASET_TYPES[dataset_type], None


def names_for(layout: str) -> list[str]:
    """The original's names that give ``layout`` (for messages)."""
    return ([f"--dataset_type {name}" for name, value in DATASET_TYPES.items() if value == layout] +
            [f"--mask_style {name}[{WHOLE_WORD_SUFFIX}]" for name, value in MASK_STYLES.items() if value == layout])
