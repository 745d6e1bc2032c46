"""The word segmenters, by name. Adding one is one module here (a ``base.WordSegmenter``) and one line in
``SEGMENTERS``; its library is imported only by that module, and only when the segmenter is used.

Recipe, e.g. Sudachi: ``sudachi.py`` with ``class SudachiSegmenter(WordSegmenter)``, ``name = "sudachi"``, its
options as keyword arguments (checked in ``__init__``, one ``UserError`` each), ``wakati_batch`` (NFKC, then the
words joined by spaces), ``dictionary_info`` and ``transformers_config`` (``word_tokenizer_type="sudachi"`` and
``sudachi_kwargs``); then ``"sudachi": ".sudachi:SudachiSegmenter"`` below. The encoder, training and the dataset's
word starts need nothing more; its flags are settled in ``TokenizerSpec.from_flags`` and ``word_segmenter``.

``None`` (written ``"none"`` by the ``--mecab_dic_type`` and ``--word_tokenizer`` flags) is no segmenter: the
`tokenizers` pipeline splits the words itself.
"""

from __future__ import annotations

import importlib

from ...errors import UserError
from .base import Unsegmented, Verbatim, WordSegmenter
from .mecab import DICTIONARIES as MECAB_DICTIONARIES

__all__ = ["MECAB_DIC_TYPES", "SEGMENTERS", "WORD_TOKENIZERS", "Unsegmented", "Verbatim", "WordSegmenter",
           "get_segmenter", "segmenter_from_flags", "segmenter_from_meta"]

SEGMENTERS = {  # name -> "module:class", imported on first use
    "mecab": ".mecab:MecabSegmenter",
    "sudachi": ".sudachi:SudachiSegmenter",
    "juman": ".juman:JumanSegmenter",
}
WORD_TOKENIZERS = ("mecab", "sudachi", "juman", "none")
"""The choices of ``--word_tokenizer`` (the original's flag): a segmenter's name, or ``none``."""
MECAB_DIC_TYPES = (*MECAB_DICTIONARIES, "none")
"""The choices of ``--mecab_dic_type``: a MeCab dictionary, or ``none`` for no segmenter."""


def get_segmenter(name: str | None, options: dict | None = None) -> WordSegmenter | None:
    """The segmenter ``name`` built with ``options`` (checked: a clear ``UserError`` if they cannot work); ``None``
    for no segmenter."""
    if name is None or name == "none":
        return None
    if name not in SEGMENTERS:
        raise UserError(f"unknown word segmenter {name!r}: not one of none, {', '.join(sorted(SEGMENTERS))}")
    module_name, class_name = SEGMENTERS[name].split(":")
    cls = getattr(importlib.import_module(module_name, __name__), class_name)
    try:
        return cls(**(options or {}))
    except TypeError as error:  # an option it does not have
        raise UserError(f"word segmenter {name}: bad options {options!r} ({error})") from None


def segmenter_from_flags(mecab_dic_type: str, mecab_option: str | None) -> tuple[str | None, dict]:
    """(name, options) of the segmenter the user-facing flags ``--mecab_dic_type --mecab_option`` ask for."""
    if mecab_dic_type == "none":
        return None, {}
    return "mecab", {"mecab_dic_type": mecab_dic_type, "mecab_option": mecab_option}


def segmenter_from_meta(meta: dict) -> tuple[str | None, dict]:
    """(name, options) of the segmenter recorded in a tokenizer dir's metadata; dirs written before segmenters were
    recorded (no ``word_segmenter``) name their MeCab dictionary in ``mecab_dic_type`` ("none": no segmenter)."""
    if "word_segmenter" in meta:
        recorded = meta["word_segmenter"]
        return (None, {}) if recorded is None else (recorded["name"], dict(recorded.get("options") or {}))
    return segmenter_from_flags(meta["mecab_dic_type"], meta.get("mecab_option"))
