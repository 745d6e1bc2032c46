"""Sudachi word segmentation through sudachipy, exactly as transformers' ``SudachiTokenizer`` does it.

transformers' ``BertJapaneseTokenizer`` (word_tokenizer_type "sudachi") NFKC-normalizes the text, builds
``sudachipy.dictionary.Dictionary(config_path, resource_dir, dict=<sudachi_dict_type>)``, creates its tokenizer with
the split mode (and ``projection``, None: the dictionary's configured surface) and takes each morpheme's
``surface()``; ``trim_whitespace`` is off by default, and its subword step splits every surface on whitespace again.
We build the same dictionary and tokenizer from the same arguments and join the surfaces by spaces, so ``str.split()``
gives exactly those pieces. Sudachi's own input normalization only guides its analysis: surfaces are the input's
characters. Subsetting the dictionary's fields (``fields=``) would be faster but changes the segmentation (numbers
are joined by a plugin that reads them), so it is not used. A line over sudachipy's 49,149-byte limit is cut by
``base.split_long_text`` and its pieces segmented one by one.

Everything that knows Sudachi lives here: its split modes, dictionaries and their packages, the option checks and
their messages, and its declaration (``SudachiSegmenter.declaration``): the flags ``--sudachi_split_mode`` and
``--sudachi_dict_type`` and the ``tokenizer_config.json`` entries (``word_tokenizer_type="sudachi"``,
``sudachi_kwargs``).
"""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec

from ...errors import UserError
from .base import WordSegmenter, split_long_text
from .declaration import Declaration, Option

SPLIT_MODES = ("A", "B", "C")
DICTIONARIES = ("core", "small", "full")  # sudachipy's dict names; each is the package sudachidict_<name>
MAX_INPUT_BYTES = 49149  # sudachipy refuses longer input (transformers then raises too)
_INSTALL = "pip install sudachipy sudachidict_core"


def _package(dict_type: str) -> str:
    return f"sudachidict_{dict_type}"


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


class SudachiSegmenter(WordSegmenter):
    """NFKC + Sudachi words of a line, through the tokenizer transformers' ``SudachiTokenizer`` creates."""

    declaration = Declaration(
        name="sudachi", title="Sudachi", summary="Sudachi {sudachi_dict_type} (split mode {sudachi_split_mode})",
        transformers_type="sudachi",
        options=(
            Option("sudachi_split_mode", "A", "A (default, shortest words), B or C (longest)", label="split mode",
                   choices=SPLIT_MODES, spec_field=True, transformers_key="sudachi_split_mode",
                   transformers_null_is_default=True),
            Option("sudachi_dict_type", "core", "core (default), small or full (sudachidict_<type>)",
                   label="dictionary", choices=DICTIONARIES, spec_field=True, transformers_key="sudachi_dict_type",
                   transformers_null_is_default=True),
        ),
        transformers_fixed={"trim_whitespace": False, "sudachi_config_path": None, "sudachi_resource_dir": None,
                            "sudachi_projection": None})
    max_input_bytes = MAX_INPUT_BYTES

    def __init__(self, sudachi_split_mode: str = "A", sudachi_dict_type: str = "core"):
        super().__init__(sudachi_split_mode=sudachi_split_mode, sudachi_dict_type=sudachi_dict_type)
        if sudachi_split_mode not in SPLIT_MODES:
            raise UserError(f"--sudachi_split_mode {sudachi_split_mode!r} is not one of {', '.join(SPLIT_MODES)}")
        if sudachi_dict_type not in DICTIONARIES:
            raise UserError(f"--sudachi_dict_type {sudachi_dict_type!r} is not one of {', '.join(DICTIONARIES)}")
        try:
            from sudachipy import dictionary, tokenizer
        except ModuleNotFoundError:
            raise UserError(f"--word_tokenizer sudachi: the Python package 'sudachipy' is not installed "
                            f"({_INSTALL})") from None
        package = _package(sudachi_dict_type)
        if find_spec(package) is None:
            raise UserError(f"--sudachi_dict_type {sudachi_dict_type}: the dictionary package {package!r} is not "
                            f"installed (pip install {package})")
        self.split_mode, self.dict_type = sudachi_split_mode, sudachi_dict_type
        mode = getattr(tokenizer.Tokenizer.SplitMode, sudachi_split_mode)
        try:
            sudachi_dictionary = dictionary.Dictionary(config_path=None, resource_dir=None, dict=sudachi_dict_type)
            with warnings.catch_warnings():  # create() is what transformers calls; newer sudachipy deprecates it
                warnings.simplefilter("ignore", DeprecationWarning)
                self._tokenizer = sudachi_dictionary.create(mode, projection=None)
        except Exception as error:  # sudachipy's errors carry the reason on one line
            raise UserError(f"Sudachi could not load the {sudachi_dict_type} dictionary: {error}") from None
        self._out = self._tokenizer.tokenize("")  # one MorphemeList, refilled by every call (same morphemes)

    def _surfaces(self, text: str) -> str:
        try:
            morphemes = self._tokenizer.tokenize(text, out=self._out)
        except Exception as error:
            size = len(text.encode("utf-8"))
            if size > MAX_INPUT_BYTES:
                raise UserError(f"Sudachi cannot segment a line of {size} bytes (at most {MAX_INPUT_BYTES}, as in "
                                f"transformers too); split the corpus's long lines: {text[:40]!r}...") from None
            raise UserError(f"Sudachi failed on the line {text[:40]!r}: {error}") from None
        return " ".join([m.surface() for m in morphemes])

    def wakati_batch(self, texts: list[str]) -> list[str]:
        surfaces, limit, normalize = self._surfaces, MAX_INPUT_BYTES // 4, self.normalize
        normalized = [normalize(t) for t in texts]
        return [surfaces(t) if len(t) <= limit else
                " ".join(surfaces(piece) for piece in split_long_text(t, MAX_INPUT_BYTES)) for t in normalized]

    def dictionary_info(self) -> dict:
        package = _package(self.dict_type)
        return {"name": f"sudachi_{self.dict_type}", "package": package, "package_version": _version(package),
                "sudachipy_version": _version("sudachipy"), "split_mode": self.split_mode}
