"""The word-segmenter interface: what the encoder, tokenizer training and the dataset's word boundaries may ask of a
segmenter (MeCab today). Nothing outside ``segmenters/`` knows which segmenter it talks to.

A segmenter is built from its name and its options (``get_segmenter(name, options)``); building it checks them and
raises one clear ``UserError`` for a missing dictionary or a bad option. It is rebuilt from (class, options) when it
is pickled into a worker process, so a worker never receives a library's handle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from ..normalization import nfkc


class WordSegmenter(ABC):
    """NFKC-normalized text cut into words, exactly as the transformers tokenizer recorded for it does."""

    name: ClassVar[str]
    """The registry name, recorded in the tokenizer dir."""

    def __init__(self, **options):
        self.options = options
        """The options it was built with (JSON values): recorded in the tokenizer dir, enough to rebuild it."""

    def __reduce__(self):  # rebuilt in worker processes rather than pickled
        return (_rebuild, (type(self), self.options))

    @abstractmethod
    def wakati_batch(self, texts: list[str]) -> list[str]:
        """Each text NFKC-normalized with its words separated by whitespace (``.split()`` gives the words)."""

    @abstractmethod
    def dictionary_info(self) -> dict:
        """Name and versions of the dictionary (and library) it segments with, recorded in the tokenizer dir."""

    @abstractmethod
    def transformers_config(self) -> dict:
        """``tokenizer_config.json`` entries that make transformers' tokenizer segment the same words
        (``tokenizer_class``, ``word_tokenizer_type`` and its kwargs)."""

    def record(self) -> dict:
        """The ``word_segmenter`` entry of the tokenizer dir's metadata."""
        return {"name": self.name, "options": dict(self.options), "dictionary": self.dictionary_info()}

    def wakati(self, text: str) -> str:
        return self.wakati_batch([text])[0]

    def words(self, text: str) -> list[str]:
        return self.wakati(text).split()

    def lines_batch(self, texts: list[str]) -> list[str]:
        """Each text as its words joined by single spaces (the pre-tokenized training text)."""
        return [" ".join(line.split()) for line in self.wakati_batch(texts)]


class Unsegmented(WordSegmenter):
    """No word segmenter: the NFKC text as it is (its whitespace separates the words). Used to write the training
    text when the `tokenizers` pipeline itself splits words; never recorded as a segmenter."""

    name = "none"

    def wakati_batch(self, texts: list[str]) -> list[str]:
        return [nfkc(t) for t in texts]

    def dictionary_info(self) -> dict:
        return {"name": "none"}

    def transformers_config(self) -> dict:
        return {}


def _rebuild(cls: type[WordSegmenter], options: dict) -> WordSegmenter:
    return cls(**options)


class Verbatim(Unsegmented):
    """No word segmenter and no normalization: the text as written, whitespace and all (the training text of a
    tokenizer whose decode(encode(text)) is the text)."""

    def wakati_batch(self, texts: list[str]) -> list[str]:
        return list(texts)

    def lines_batch(self, texts: list[str]) -> list[str]:
        return list(texts)
