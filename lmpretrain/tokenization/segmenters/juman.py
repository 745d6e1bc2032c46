"""Juman++ word segmentation through rhoknp, the code path of transformers' ``JumanppTokenizer``.

transformers' ``BertJapaneseTokenizer`` (word_tokenizer_type "jumanpp") NFKC-normalizes the text, strips it, runs
``rhoknp.Jumanpp().apply_to_sentence(text)`` and takes each morpheme's ``text``; ``trim_whitespace`` is off by default
and its subword step splits every word on whitespace again. We run the same calls and join the words by spaces.

Juman++ is a binary (``jumanpp``, https://github.com/ku-nlp/jumanpp) that pip cannot install; without it (or without
rhoknp) building this segmenter is one clear error saying what to install.
"""

from __future__ import annotations

import shutil
from importlib.metadata import version

from ...errors import UserError
from .base import WordSegmenter
from .declaration import Declaration

_INSTALL = ("Juman++ needs the jumanpp binary on PATH (build it from https://github.com/ku-nlp/jumanpp) and the "
            "Python package rhoknp (pip install rhoknp)")


class JumanSegmenter(WordSegmenter):
    """NFKC + Juman++ words of a line, as transformers' ``JumanppTokenizer`` splits them."""

    declaration = Declaration(name="juman", title="Juman++", summary="Juman++", transformers_type="jumanpp",
                              transformers_fixed={"trim_whitespace": False})

    def __init__(self):
        super().__init__()
        if shutil.which("jumanpp") is None:
            raise UserError(f"--word_tokenizer juman: the jumanpp binary is not installed; {_INSTALL}")
        try:
            import rhoknp
        except ModuleNotFoundError:
            raise UserError(f"--word_tokenizer juman: the Python package 'rhoknp' is not installed; {_INSTALL}") \
                from None
        self._juman = rhoknp.Jumanpp()

    def wakati_batch(self, texts: list[str]) -> list[str]:
        apply = self._juman.apply_to_sentence
        return [" ".join(m.text for m in apply(self.normalize(t).strip()).morphemes) for t in texts]

    def dictionary_info(self) -> dict:
        info = {"name": "jumandic"}
        try:
            info["rhoknp_version"] = version("rhoknp")
            info["jumanpp_version"] = self._juman.get_version()
        except Exception:  # informational only
            pass
        return info
