"""The subword-library interface: what tokenizer training asks of the library that learns the subword vocabulary
(`tokenizers`, or the SentencePiece library)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from ..tokenizer_dir import TokenizerSpec


class SubwordTrainer(ABC):
    """Learns ``spec``'s subword model from the pre-tokenized corpus and writes its files.

    ``word_segmented``: the corpus lines are a segmenter's words separated by spaces (then transformers'
    ``BertJapaneseTokenizer`` applies the subword model to each word); otherwise they are NFKC text and the saved
    tokenizer must split words itself (tokenizer.json).
    """

    verbatim: bool = False
    """Without a word segmenter: train on the text as written (no NFKC, whitespace kept), for a tokenizer whose
    decode(encode(text)) is the text; otherwise the corpus is NFKC-normalized first, as every other tokenizer."""

    def __init__(self, spec: TokenizerSpec, word_segmented: bool):
        self.spec = spec
        self.word_segmented = word_segmented

    def observe(self, lines: list[str]) -> None:  # noqa: B027 - a hook most libraries do not need
        """Each chunk of pre-tokenized lines, in corpus order, as it is written (statistics gathered on the way)."""

    def vocab_floor(self, final: bool = False) -> tuple[int, str] | None:
        """The fewest tokens the vocabulary can have given the lines observed so far, and what they are in words
        ("15 special and unused tokens + 1000 characters ..."), or None where the library does not say. It never
        falls as more lines come, so a floor above ``--vocab_size`` stops training before the rest is read;
        ``final``: the full corpus has been observed (the floor may then count what only the whole text settles)."""
        return None

    @abstractmethod
    def train(self, segmented: Path, num_lines: int) -> int:
        """Train on the pre-tokenized file (one line per corpus line); returns the vocabulary size."""

    @abstractmethod
    def save(self, out: Path) -> dict:
        """Write the subword model files into ``out``; returns their ``tokenizer_config.json`` entries."""
