"""What a word segmenter declares: one :class:`Declaration`, the ``declaration`` class attribute of its
``WordSegmenter`` subclass, which everything outside its module reads: train_tokenizer.py's flags and their help, the
checks of those flags, the tokenizer dir's spec and metadata, the summary line, the normalization recorded, and
transformers' ``BertJapaneseTokenizer`` both ways (the ``tokenizer_config.json`` entries written for it, and a
transformers-saved config read back as the segmenter and its options).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

NORMALIZATIONS = ("NFKC", "none")
"""What a segmenter may apply to a text before cutting it: NFKC (transformers' ``normalize_text=True``) or nothing."""


@dataclass(frozen=True)
class Option:
    """One option of a segmenter: a keyword of its ``__init__``, the flag ``--<name>`` that sets it, and its key in the
    metadata's ``word_segmenter.options``."""

    name: str
    default: Any
    help: str
    """The flag's help, as ``train_tokenizer.py --help`` shows it."""
    label: str
    """What it is, in a few words ("dictionary", "split mode"), for messages."""
    choices: tuple | None = None
    """The values it takes (checked with the spec: ``--<name> 'x' is not one of ...``); None: any (the segmenter
    checks it when built)."""
    type: Callable[[str], Any] = str
    aliases: tuple[tuple[str, str], ...] = ()
    """Other flags that set it, with their help (MeCab's ``--mecab_dic``, the original's newer name of
    ``--mecab_dic_type``); two of them given with different values are an error."""
    spec_field: bool = False
    """True: held in a ``TokenizerSpec`` field of its name (MeCab's and Sudachi's options, which tokenizer dirs
    recorded as such before segmenters were declared); False, as for any new segmenter: in
    ``TokenizerSpec.segmenter_options``."""
    off_value: str | None = None
    """A value of the flag that asks for no segmenter at all (``--mecab_dic_type none``; the default segmenter's
    only)."""
    transformers_key: str | None = None
    """Its key in ``BertJapaneseTokenizer``'s ``<word_tokenizer_type>_kwargs``; None: transformers has no such
    option."""
    transformers_null_is_default: bool = False
    """Whether a null there means the default (Sudachi's); otherwise null is a value the choices must allow."""
    transformers_default: Callable[[], Any] | None = None
    """The value transformers uses when its config lacks the key, where that is not ``default`` (MeCab's dictionary,
    read from the installed transformers); taking it is said in a warning."""

    @property
    def flag(self) -> str:
        return f"--{self.name}"


@dataclass(frozen=True)
class Declaration:
    """A word segmenter: its name, options and flags, its normalization and its ``BertJapaneseTokenizer`` mapping."""

    name: str
    """The ``--word_tokenizer`` value, and the name recorded in the tokenizer dir."""
    title: str
    """Its name in messages ("MeCab")."""
    summary: str
    """The summary line's words for it, a format over its options ("MeCab {mecab_dic_type}")."""
    transformers_type: str
    """``BertJapaneseTokenizer``'s ``word_tokenizer_type`` that segments the same words."""
    options: tuple[Option, ...] = ()
    normalization: str = "NFKC"
    """What it applies to the text before cutting it (one of ``NORMALIZATIONS``), recorded in the metadata and
    applied by the segmenter's ``normalize``."""
    transformers_fixed: Mapping[str, Any] = field(default_factory=dict)
    """Other keys of ``<word_tokenizer_type>_kwargs`` transformers knows, with the one value this toolkit reproduces
    (``normalize_text`` follows ``normalization`` and need not be listed)."""
    default: bool = False
    """The segmenter train_tokenizer.py uses when ``--word_tokenizer`` is not given (MeCab; one only)."""

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"segmenter {self.name}: normalization {self.normalization!r} is not one of "
                             f"{', '.join(NORMALIZATIONS)} (transformers' word tokenizers apply NFKC or nothing)")
        if any(o.off_value is not None for o in self.options) and not self.default:
            raise ValueError(f"segmenter {self.name}: only the default segmenter has an option that turns it off")

    @property
    def kwargs_key(self) -> str:
        return f"{self.transformers_type}_kwargs"

    @property
    def off_option(self) -> Option | None:
        return next((o for o in self.options if o.off_value is not None), None)

    def with_defaults(self, options: Mapping[str, Any]) -> dict:
        """Every option's value: ``options``' where given (not None), else the default."""
        return {o.name: o.default if options.get(o.name) is None else options[o.name] for o in self.options}

    def choice_problems(self, options: Mapping[str, Any]) -> list[str]:
        """``--<name> 'x' is not one of ...`` for each option outside its choices."""
        problems = []
        for o in self.options:
            allowed = (*o.choices, *([o.off_value] if o.off_value is not None else [])) if o.choices else None
            if allowed is not None and options.get(o.name) not in allowed:
                problems.append(f"{o.flag} {options.get(o.name)!r} is not one of {', '.join(allowed)}")
        return problems

    def describe(self, options: Mapping[str, Any]) -> str:
        return self.summary.format(**self.with_defaults(options))

    def transformers_config(self, options: Mapping[str, Any]) -> dict:
        """``tokenizer_config.json`` entries that make ``BertJapaneseTokenizer`` segment the same words."""
        kwargs = {o.transformers_key: options.get(o.name, o.default) for o in self.options if o.transformers_key}
        if self.normalization != "NFKC":  # transformers' normalize_text is true unless told
            kwargs["normalize_text"] = False
        return {"tokenizer_class": "BertJapaneseTokenizer", "word_tokenizer_type": self.transformers_type,
                self.kwargs_key: kwargs}

    def options_from_transformers(self, kwargs: Mapping[str, Any], problems: list[str],
                                  warnings: list[str]) -> dict:
        """The options of a ``BertJapaneseTokenizer``'s ``<word_tokenizer_type>_kwargs``: what the toolkit cannot
        reproduce is appended to ``problems`` (quoting the key and value), a default taken from transformers to
        ``warnings``."""
        key = self.kwargs_key
        fixed = {"normalize_text": self.normalization == "NFKC", **self.transformers_fixed}
        known = {o.transformers_key for o in self.options if o.transformers_key}
        for name, value in kwargs.items():
            if name in fixed and value != fixed[name]:
                problems.append(f"{key}.{name} {_json(value)} (the toolkit needs {_json(fixed[name])})")
            elif name not in fixed and name not in known:
                problems.append(f"{key}.{name} {_json(value)} (not an option this toolkit reproduces)")
        options = {}
        for o in self.options:
            if o.transformers_key is None:
                value = o.default
            elif o.transformers_key in kwargs:
                value = kwargs[o.transformers_key]
                if value is None and o.transformers_null_is_default:
                    value = o.default
            elif o.transformers_default is not None:
                value = o.transformers_default()
                warnings.append(f"{key} name no {o.transformers_key}: AutoTokenizer runs {self.title} with "
                                f"transformers' default {o.label}, {value}, and so does the extension")
            else:
                value = o.default
            if o.choices is not None and value not in o.choices:
                problems.append(f"{key}.{o.transformers_key} {_json(value)} (not one of {', '.join(o.choices)})")
            options[o.name] = value
        return options


def _json(value) -> str:
    """A value as tokenizer_config.json writes it (the errors quote the file)."""
    return json.dumps(value, ensure_ascii=False)
