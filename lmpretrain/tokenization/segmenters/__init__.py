"""The word segmenters, by name, and everything the toolkit does with their declarations. Adding one is one module
here (a ``base.WordSegmenter`` with its ``declaration``) and one entry in ``SEGMENTERS``; its library is imported only
by that module, and only when the segmenter is built.

Recipe, e.g. Sudachi: ``sudachi.py`` with ``class SudachiSegmenter(WordSegmenter)`` holding
``declaration = Declaration(name="sudachi", ..., options=(Option("sudachi_split_mode", "A", ...), ...))``, its options
as keyword arguments of ``__init__`` (checked there, one ``UserError`` each), ``wakati_batch`` (``self.normalize``,
then the words joined by spaces) and ``dictionary_info``; then ``SudachiSegmenter`` in ``SEGMENTERS`` below. The
flags (``--word_tokenizer sudachi --sudachi_split_mode C``), their checks, the tokenizer dir's spec and metadata, the
``BertJapaneseTokenizer`` config both ways, the encoder, training, extension and the dataset's word starts need
nothing more.

``None`` (written ``"none"`` by the ``--mecab_dic_type`` and ``--word_tokenizer`` flags) is no segmenter: the
`tokenizers` pipeline splits the words itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import UserError
from .base import Unsegmented, Verbatim, WordSegmenter
from .declaration import Declaration, Option
from .juman import JumanSegmenter
from .mecab import MecabSegmenter
from .sudachi import SudachiSegmenter

__all__ = ["SEGMENTERS", "Declaration", "Option", "Unsegmented", "Verbatim", "WordSegmenter", "add_flags",
           "by_transformers_type", "declaration", "declarations", "default_declaration", "fields_from_flags",
           "flag_fields", "get_segmenter", "segmenter_from_fields", "segmenter_from_meta", "spec_fields",
           "word_tokenizers"]

SEGMENTERS: dict[str, type[WordSegmenter]] = {cls.name: cls for cls in (
    MecabSegmenter,
    SudachiSegmenter,
    JumanSegmenter,
)}
"""name -> segmenter class, in the order the flags and messages list them."""

NONE = "none"
"""``--word_tokenizer none``: no segmenter."""


def declarations() -> list[Declaration]:
    """Every segmenter's declaration, in ``SEGMENTERS``' order."""
    return [cls.declaration for cls in SEGMENTERS.values()]


def default_declaration() -> Declaration:
    """The segmenter used when ``--word_tokenizer`` is not given (MeCab)."""
    return next(d for d in declarations() if d.default)


def declaration(name: str) -> Declaration:
    """The declaration of the segmenter ``name`` (a clear error for an unknown one)."""
    if name not in SEGMENTERS:
        raise UserError(f"unknown word segmenter {name!r}: not one of none, {', '.join(sorted(SEGMENTERS))}")
    return SEGMENTERS[name].declaration


def word_tokenizers() -> tuple[str, ...]:
    """The choices of ``--word_tokenizer`` (the original's flag): a segmenter's name, or ``none``."""
    return (*SEGMENTERS, NONE)


def by_transformers_type(word_tokenizer_type: str) -> Declaration | None:
    """The segmenter transformers' ``BertJapaneseTokenizer`` names ``word_tokenizer_type``; None: none of ours."""
    return next((d for d in declarations() if d.transformers_type == word_tokenizer_type), None)


def get_segmenter(name: str | None, options: dict | None = None) -> WordSegmenter | None:
    """The segmenter ``name`` built with ``options`` (checked: a clear ``UserError`` if they cannot work); ``None``
    for no segmenter."""
    if name is None or name == NONE:
        return None
    cls = SEGMENTERS[declaration(name).name]
    try:
        return cls(**(options or {}))
    except TypeError as error:  # an option it does not have
        raise UserError(f"word segmenter {name}: bad options {options!r} ({error})") from None


# ---- flags --------------------------------------------------------------------------------------------------------

def add_flags(parser) -> None:
    """train_tokenizer.py's ``--word_tokenizer`` and every declared option's flags (an absent one is None)."""
    default = default_declaration()
    others = [d.name for d in declarations() if d is not default]
    parser.add_argument("--word_tokenizer", default=None,
                        help=f"{default.name} (default), {', '.join(others)} or none (no word segmenter)")
    for d in declarations():
        for option in d.options:
            parser.add_argument(option.flag, default=None, type=option.type, help=option.help)
            for alias, help_text in option.aliases:
                parser.add_argument(alias, default=None, type=option.type, help=help_text)


def _dest(flag: str) -> str:
    return flag.removeprefix("--")


def flag_fields() -> dict[str, str]:
    """Parsed flag name -> the ``TokenizerSpec`` field it sets, for every declared option and alias."""
    fields = {}
    for d in declarations():
        for option in d.options:
            target = option.name if option.spec_field else "segmenter_options"
            fields[option.name] = target
            fields.update({_dest(alias): target for alias, _ in option.aliases})
    return fields


def fields_from_flags(word_tokenizer: str | None, values: Mapping[str, Any]) -> tuple[dict, bool, list[str]]:
    """The ``TokenizerSpec`` fields (:func:`spec_fields`) that ``--word_tokenizer`` and the option flags' ``values``
    (by parsed name; an empty one is absent) ask for, whether that is a segmenter, and the problems of flags that
    contradict each other or the segmenter (one sentence each)."""
    values = {k: None if v == "" else v for k, v in values.items()}
    word_tokenizer = word_tokenizer or None
    problems: list[str] = []
    given: dict[str, Any] = {}
    for d in declarations():
        for option in d.options:
            value = values.get(option.name)
            for alias, _ in option.aliases:
                other = values.get(_dest(alias))
                if other is not None and value is not None and other != value:
                    problems.append(f"{alias} {other} and {option.flag} {value} disagree ({alias} is the original's "
                                    f"name of {option.flag}: give one)")
                value = other if value is None else value
            given[option.name] = value
    default = default_declaration()
    off = default.off_option
    turned_off = off is not None and given[off.name] == off.off_value
    known = word_tokenizer is None or word_tokenizer in word_tokenizers()
    if not known:
        problems.append(f"--word_tokenizer {word_tokenizer!r} is not one of {', '.join(word_tokenizers())}")
    elif word_tokenizer == default.name and turned_off:
        problems.append(f"--word_tokenizer {default.name} and {off.flag} {off.off_value} contradict each other "
                        f"({off.off_value} is no word segmenter: give one of them)")
    if word_tokenizer == NONE or (word_tokenizer in (None, default.name) and turned_off):
        chosen = None
    else:
        chosen = default if word_tokenizer is None else SEGMENTERS[word_tokenizer].declaration if known else None
    for d in declarations():
        flags = [o.flag for o in d.options if given[o.name] is not None and given[o.name] != o.off_value]
        if not flags or d is chosen:
            continue
        verb = "are" if len(flags) > 1 else "is"
        if d is default and known and word_tokenizer not in (None, default.name):  # chosen without the flag: say so
            problems.append(f"{' and '.join(flags)} {verb} for {d.title}, not --word_tokenizer {word_tokenizer}")
        elif d is not default:
            problems.append(f"{' and '.join(flags)} need{'s' if len(flags) == 1 else ''} --word_tokenizer {d.name}")
    if chosen is None:
        fields = spec_fields(None, {})
        if word_tokenizer is None:  # as dirs have recorded --mecab_dic_type none with the default's other options
            fields.update({o.name: given[o.name] for o in default.options if o.spec_field and o is not off})
        return fields, False, problems
    return spec_fields(chosen.name, {o.name: given[o.name] for o in chosen.options}), True, problems


# ---- the tokenizer dir's spec and metadata ------------------------------------------------------------------------

def spec_fields(name: str | None, options: Mapping[str, Any]) -> dict:
    """The ``TokenizerSpec`` fields that record the segmenter ``name`` (None: none) with ``options`` (defaults for
    those absent): ``word_tokenizer`` (None for the default segmenter and for none, as dirs written before the flag
    record them), each ``spec_field`` option in its own field, the others in ``segmenter_options``."""
    fields: dict[str, Any] = {"word_tokenizer": None, "segmenter_options": None}
    fields.update({o.name: None for d in declarations() for o in d.options if o.spec_field})
    if name is None or name == NONE:
        off = default_declaration().off_option
        fields[off.name] = off.off_value
        return fields
    d = declaration(name)
    if not d.default:
        fields["word_tokenizer"] = d.name
    extra = {}
    for option_name, value in d.with_defaults(options).items():
        if next(o for o in d.options if o.name == option_name).spec_field:
            fields[option_name] = value
        else:
            extra[option_name] = value
    fields["segmenter_options"] = extra or None
    return fields


def segmenter_from_fields(fields: Mapping[str, Any]) -> tuple[str | None, dict]:
    """(name, options) of the segmenter that a spec's fields (or, for dirs written before the segmenter was recorded,
    the metadata's top level) record; the name as recorded when it is not a known segmenter."""
    word_tokenizer = fields.get("word_tokenizer")
    if word_tokenizer == NONE:
        return None, {}
    default = default_declaration()
    if word_tokenizer in (None, default.name):
        off = default.off_option
        if off is not None and fields.get(off.name) == off.off_value:
            return None, {}
        d = default
    elif word_tokenizer in SEGMENTERS:
        d = SEGMENTERS[word_tokenizer].declaration
    else:
        return word_tokenizer, {}
    extra = fields.get("segmenter_options") or {}
    return d.name, d.with_defaults({o.name: fields.get(o.name) if o.spec_field else extra.get(o.name)
                                    for o in d.options})


def segmenter_from_meta(meta: dict) -> tuple[str | None, dict]:
    """(name, options) of the segmenter recorded in a tokenizer dir's metadata; dirs written before segmenters were
    recorded (no ``word_segmenter``) name their MeCab dictionary in ``mecab_dic_type`` ("none": no segmenter)."""
    if "word_segmenter" in meta:
        recorded = meta["word_segmenter"]
        return (None, {}) if recorded is None else (recorded["name"], dict(recorded.get("options") or {}))
    # the top level's mecab_dic_type and mecab_option are the default segmenter's fields; its word_tokenizer (added
    # later, never without word_segmenter in a dir written by this toolkit) is left out, as it always was
    return segmenter_from_fields({k: v for k, v in meta.items() if k != "word_tokenizer"})
