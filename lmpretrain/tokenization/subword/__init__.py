"""Subword libraries, one module each, behind ``base.SubwordTrainer``: ``hf_tokenizers`` (the `tokenizers` Rust
trainers, for every algorithm today) and ``spm_export`` (its BPE/Unigram models written as sentencepiece models)."""

from __future__ import annotations

import importlib

from ..tokenizer_dir import TokenizerSpec
from .base import SubwordTrainer

__all__ = ["LIBRARIES", "SubwordTrainer", "subword_trainer"]

LIBRARIES = {  # library -> "module:class", imported on first use
    "tokenizers": ".hf_tokenizers:TokenizersTrainer",
}


def subword_trainer(spec: TokenizerSpec, *, word_segmented: bool, library: str = "tokenizers") -> SubwordTrainer:
    """The trainer of ``spec``'s algorithm in ``library``."""
    module_name, class_name = LIBRARIES[library].split(":")
    return getattr(importlib.import_module(module_name, __name__), class_name)(spec, word_segmented)
