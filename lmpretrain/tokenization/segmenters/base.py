"""The word-segmenter interface: what the encoder, tokenizer training and the dataset's word boundaries may ask of a
segmenter. Nothing outside ``segmenters/`` knows which segmenter it talks to: what differs between them (options,
flags, normalization, the transformers mapping) is each one's ``declaration`` (:mod:`.declaration`).

A segmenter is built from its name and its options (``get_segmenter(name, options)``); building it checks them and
raises one clear ``UserError`` for a missing dictionary or a bad option. It is rebuilt from (class, options) when it
is pickled into a worker process, so a worker never receives a library's handle.
"""

from __future__ import annotations

import re
import unicodedata
from abc import ABC, abstractmethod
from typing import ClassVar

from ..normalization import nfkc
from .declaration import Declaration

SENTENCE_ENDS = "。！？!?."
_SENTENCE_END = re.compile(r"[。！？!?]|\.(?!\d)")  # a full stop, not a decimal point (12.5)
_SPACES = " \t\u3000"
_SCRIPT_LOOKBACK = 256  # characters searched back for a change of script before a hard cut


def split_long_text(text: str, max_bytes: int) -> list[str]:
    """``text`` cut into pieces of at most ``max_bytes`` UTF-8 bytes that concatenate back to it: after the last
    sentence end (``。！？!?``, or ``.`` not followed by a digit) of each window, else before its last whitespace,
    else at its last change of script (kana / kanji / Latin and digits / other) near the window's end, else at the
    window's end. A window is ``max_bytes // 4`` characters, which no UTF-8 text exceeds in bytes. A text within
    the limit is one piece."""
    if len(text) * 4 <= max_bytes or len(text.encode("utf-8")) <= max_bytes:
        return [text]
    window = max(1, max_bytes // 4)
    pieces, start = [], 0
    while len(text) - start > window:
        end = start + window
        part = text[start:end]
        cut = 0
        for match in _SENTENCE_END.finditer(text, start, end + 1):  # one character more: what follows a "."
            if match.start() < end:
                cut = match.end() - start  # after the sentence end
        if cut <= 0:
            cut = max(part.rfind(c) for c in _SPACES)  # before the whitespace (it belongs to no word)
        if cut <= 0:
            cut = _script_change(part)
        if cut <= 0:
            cut = window
        pieces.append(text[start:start + cut])
        start += cut
    pieces.append(text[start:])
    return pieces


def _script(char: str) -> str:
    if "\u3040" <= char <= "\u309f":
        return "hiragana"
    if "\u30a0" <= char <= "\u30ff":
        return "katakana"
    if char.isalnum():
        return "latin" if char.isascii() else unicodedata.name(char, "?").split(" ")[0]
    return "other"


def _script_change(part: str) -> int:
    """The last index ``i`` near the end of ``part`` where ``part[i - 1]`` and ``part[i]`` are of different scripts."""
    for i in range(len(part) - 1, max(0, len(part) - _SCRIPT_LOOKBACK), -1):
        if _script(part[i - 1]) != _script(part[i]):
            return i
    return 0


def _unchanged(text: str) -> str:
    return text


class WordSegmenter(ABC):
    """Text normalized as declared (NFKC) and cut into words, exactly as the transformers tokenizer recorded for it
    does."""

    declaration: ClassVar[Declaration]
    """Everything the rest of the toolkit knows about it (set by each segmenter; ``name`` and ``normalization``
    follow from it)."""
    name: ClassVar[str]
    """The registry name, recorded in the tokenizer dir."""
    normalization: ClassVar[str] = "NFKC"
    """What ``normalize`` applies, recorded in the tokenizer dir's metadata."""
    max_input_bytes: ClassVar[int | None] = None
    """The longest text (UTF-8 bytes, after NFKC) the library segments safely; longer ones are cut by
    :func:`split_long_text` and their words joined (None: no limit)."""
    ends_at_nul: ClassVar[bool] = False
    """Whether a text ends at its first NUL character for this segmenter (and its transformers tokenizer): the rest
    is not tokenized. The corpus reader warns about such lines."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "declaration" in cls.__dict__:
            cls.name, cls.normalization = cls.declaration.name, cls.declaration.normalization
            cls.normalize = staticmethod(nfkc if cls.normalization == "NFKC" else _unchanged)

    @staticmethod
    def normalize(text: str) -> str:
        """The normalization it declares, applied to a text before it is cut (NFKC unless declared otherwise)."""
        return nfkc(text)

    def __init__(self, **options):
        self.options = options
        """The options it was built with (JSON values): recorded in the tokenizer dir, enough to rebuild it."""

    def __reduce__(self):  # rebuilt in worker processes rather than pickled
        return (_rebuild, (type(self), self.options))

    @abstractmethod
    def wakati_batch(self, texts: list[str]) -> list[str]:
        """Each text normalized (``normalize``) with its words separated by whitespace (``.split()`` gives the
        words)."""

    @abstractmethod
    def dictionary_info(self) -> dict:
        """Name and versions of the dictionary (and library) it segments with, recorded in the tokenizer dir."""

    def transformers_config(self) -> dict:
        """``tokenizer_config.json`` entries that make transformers' tokenizer segment the same words
        (``tokenizer_class``, ``word_tokenizer_type`` and its kwargs), as declared."""
        return self.declaration.transformers_config(self.options)

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

    normalization = "none"

    def wakati_batch(self, texts: list[str]) -> list[str]:
        return list(texts)

    def lines_batch(self, texts: list[str]) -> list[str]:
        return list(texts)
