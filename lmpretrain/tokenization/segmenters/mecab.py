"""MeCab word segmentation through fugashi, exactly as transformers' ``MecabTokenizer`` does it.

transformers' ``BertJapaneseTokenizer`` (word_tokenizer_type "mecab") NFKC-normalizes the text, runs
``fugashi.GenericTagger('-d <dicdir> -r <dicdir>/mecabrc <mecab_option>')`` and takes each node's
surface; its subword step then splits every surface on whitespace again. We build the tagger from the
same arguments, so the words are identical, but ask MeCab for its ``-Owakati`` output (surfaces joined
by spaces) in one call per line and ``str.split()`` it, which gives exactly those pieces without a
Python object per MeCab node.

A line longer than ``max_input_bytes`` (1 MiB) is cut by ``base.split_long_text`` (at sentence ends) and its
pieces parsed one by one: fugashi 1.x / MeCab 0.996 crash the process (SIGSEGV) on one parse of about 8 MB
(measured: 8.67 MB of Japanese with punctuation parses, 8.72 MB does not; 8.1 MB without punctuation does not), and
transformers' tokenizer, which passes the whole text to MeCab, crashes there too.

One difference between the two fugashi calls is compensated: the node API reads the text as a C string
(it ends at the first NUL character) while ``parse`` reads it whole, so the text is cut at a NUL first.

Everything that knows MeCab lives here: its dictionaries and their packages, the tagger arguments, the option
checks and their messages, and its declaration (``MecabSegmenter.declaration``): the flags ``--mecab_dic_type``
(``none``: no segmenter; ``--mecab_dic`` the original's newer name) and ``--mecab_option``, and the
``tokenizer_config.json`` entries (``word_tokenizer_type="mecab"``, ``mecab_kwargs``) that make
``BertJapaneseTokenizer`` run the same tagger. MeCab is the segmenter used when ``--word_tokenizer`` is not given.
"""

from __future__ import annotations

import os

from ...errors import UserError
from .base import WordSegmenter, split_long_text
from .declaration import Declaration, Option

DICTIONARIES = ("ipadic", "unidic_lite", "unidic")
_PACKAGES = {"ipadic": "ipadic", "unidic_lite": "unidic-lite", "unidic": "unidic"}  # distribution names
_UNIDIC_HINT = "python -m unidic download (about 770 MB), or use --mecab_dic_type unidic_lite"
_CHOICES = ", ".join((*DICTIONARIES, "none"))  # as the --mecab_dic_type flag offers them


def dictionary_dir(name: str) -> str:
    """The installed directory of a MeCab dictionary package; a clear error if it is missing."""
    if name not in _PACKAGES:
        raise UserError(f"--mecab_dic_type {name!r} is not one of {_CHOICES}")
    try:
        module = __import__(name)
    except ModuleNotFoundError:
        if name == "unidic":
            raise UserError(f"--mecab_dic_type unidic: the Python package 'unidic' is not installed; install it and "
                            f"download the dictionary (pip install unidic && {_UNIDIC_HINT})") from None
        raise UserError(f"--mecab_dic_type {name}: the Python package {_PACKAGES[name]!r} is not installed "
                        f"(pip install {_PACKAGES[name]})") from None
    directory = getattr(module, "DICDIR", None)
    if not directory or not os.path.isfile(os.path.join(directory, "sys.dic")):
        if name == "unidic":
            raise UserError(f"--mecab_dic_type unidic: the unidic package is installed but its dictionary has not "
                            f"been downloaded (no sys.dic in {directory}); run {_UNIDIC_HINT}")
        raise UserError(f"--mecab_dic_type {name}: the dictionary files are not in {directory}; reinstall "
                        f"{_PACKAGES[name]}")
    return directory


def mecab_arguments(dic: str, mecab_option: str | None) -> str:
    """The tagger arguments transformers' MecabTokenizer builds for (mecab_dic, mecab_option)."""
    directory = dictionary_dir(dic)
    return f'-d "{directory}" -r "{os.path.join(directory, "mecabrc")}" ' + (mecab_option or "")


def _mecab_error(error: Exception) -> str:
    """fugashi's start-up error is a page of advice; the line that says what went wrong is near its end."""
    lines = [line.strip() for line in str(error).splitlines()]
    details = [line for line in lines if line and not line.startswith(("arguments:", "---"))]
    return details[-1] if details else "unknown error"


def dictionary_info(dic: str) -> dict:
    """Name and version of a dictionary, recorded in the tokenizer dir."""
    if dic == "none":  # the metadata's "dictionary" of a tokenizer without a segmenter
        return {"name": "none"}
    from importlib.metadata import PackageNotFoundError, version

    package = _PACKAGES[dic]
    try:
        package_version = version(package)
    except PackageNotFoundError:
        package_version = None
    info = {"name": dic, "package": package, "package_version": package_version}
    try:
        import fugashi

        directory = dictionary_dir(dic)
        version_file = os.path.join(directory, "version")
        if os.path.isfile(version_file):
            with open(version_file, encoding="utf-8", errors="replace") as f:
                info["dictionary_release"] = f.read().strip()
        tagger = fugashi.GenericTagger(mecab_arguments(dic, None))
        info["dictionary_version"] = [d.get("version") for d in tagger.dictionary_info]
        info["fugashi_version"] = version("fugashi")
    except Exception:  # informational only
        pass
    return info


def _transformers_default_dictionary() -> str | None:
    """The dictionary transformers' ``MecabTokenizer`` uses when its config names none."""
    import inspect

    from transformers.models.bert_japanese.tokenization_bert_japanese import MecabTokenizer

    return inspect.signature(MecabTokenizer.__init__).parameters["mecab_dic"].default


class MecabSegmenter(WordSegmenter):
    """NFKC + MeCab words of a line, through the tagger transformers' ``MecabTokenizer`` builds."""

    declaration = Declaration(
        name="mecab", title="MeCab", summary="MeCab {mecab_dic_type}", transformers_type="mecab", default=True,
        options=(
            Option("mecab_dic_type", "ipadic", "ipadic (default), unidic_lite, unidic or none", label="dictionary",
                   choices=DICTIONARIES, off_value="none", spec_field=True, transformers_key="mecab_dic",
                   aliases=(("--mecab_dic", "the original's newer name of --mecab_dic_type"),),
                   transformers_default=_transformers_default_dictionary),
            Option("mecab_option", None, "extra MeCab arguments (e.g. '-u user.dic'), recorded for AutoTokenizer",
                   label="options", spec_field=True, transformers_key="mecab_option"),
        ))
    max_input_bytes = 1 << 20
    ends_at_nul = True  # the node API transformers uses reads a C string

    def __init__(self, mecab_dic_type: str = "ipadic", mecab_option: str | None = None):
        super().__init__(mecab_dic_type=mecab_dic_type, mecab_option=mecab_option)
        self.dic = mecab_dic_type
        self.mecab_option = mecab_option
        import fugashi

        arguments = mecab_arguments(mecab_dic_type, mecab_option)  # a clear error for a missing dictionary
        try:
            self._parse = fugashi.GenericTagger(arguments + " -Owakati").parse
        except RuntimeError as error:
            raise UserError(f"MeCab could not start with --mecab_option {mecab_option!r}: "
                            f"{_mecab_error(error)}") from None

    def wakati(self, text: str) -> str:
        return self.wakati_batch([text])[0]

    def wakati_batch(self, texts: list[str]) -> list[str]:
        """``wakati`` of each text, in one tight loop (the encoder's hot path)."""
        parse, limit = self._parse, self.max_input_bytes // 4  # no text of fewer characters can be too long
        normalize = self.normalize
        normalized = [normalize(t) for t in texts]
        return [parse(t) if len(t) <= limit and "\x00" not in t else self._parse_long(t) for t in normalized]

    def _parse_long(self, text: str) -> str:
        if "\x00" in text:
            text = text[:text.index("\x00")]
        return " ".join(self._parse(piece) for piece in split_long_text(text, self.max_input_bytes))

    def dictionary_info(self) -> dict:
        return dictionary_info(self.dic)
