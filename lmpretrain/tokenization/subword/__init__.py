"""Subword libraries, one module each, behind ``base.SubwordTrainer``: ``hf_tokenizers`` (the `tokenizers` Rust
trainers: WordPiece, BPE, Unigram; ``spm_export`` writes its BPE/Unigram models as sentencepiece models) and
``sentencepiece_lib`` (the SentencePiece library's own trainer: unigram, bpe, char; ``--spm_model_type``)."""

from __future__ import annotations

import importlib

from ..tokenizer_dir import TokenizerSpec
from .base import SubwordTrainer

__all__ = ["LIBRARIES", "SubwordTrainer", "subword_trainer"]

LIBRARIES = {  # library -> "module:class", imported on first use
    "tokenizers": ".hf_tokenizers:TokenizersTrainer",
    "sentencepiece": ".sentencepiece_lib:SentencePieceLibraryTrainer",
}


def subword_trainer(spec: TokenizerSpec, *, word_segmented: bool, library: str | None = None) -> SubwordTrainer:
    """The trainer of ``spec``'s algorithm in ``library`` (default: the one the spec asks for)."""
    library = library or spec.subword_library
    module_name, class_name = LIBRARIES[library].split(":")
    return getattr(importlib.import_module(module_name, __name__), class_name)(spec, word_segmented)
