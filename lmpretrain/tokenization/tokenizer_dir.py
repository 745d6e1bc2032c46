"""The tokenizer dir: its files, the settings that decide its tokens (``TokenizerSpec``), its metadata file
(``lmpretrain_tokenizer.json``), its fingerprint and its vocabulary as transformers reads it.

What a tokenizer dir holds, by (word segmenter, algorithm):

| segmenter | subword      | files                      | AutoTokenizer class                               |
|-----------|--------------|----------------------------|---------------------------------------------------|
| MeCab     | wordpiece    | vocab.txt                  | BertJapaneseTokenizer (mecab + wordpiece)         |
| MeCab     | bpe, unigram | spiece.model (+ vocab.txt) | BertJapaneseTokenizer (mecab + sentencepiece)     |
| Sudachi   | as MeCab     | as MeCab                   | BertJapaneseTokenizer (sudachi + ...)             |
| none      | any          | tokenizer.json             | PreTrainedTokenizerFast (tokenizer.json)          |

With ``--spm_model_type`` the subword model is trained by the SentencePiece library (``tokenizer_type``
"sentencepiece" in the metadata): the files are the same (its ``spiece.model``; without a segmenter also the
tokenizer.json converted from it, which AutoTokenizer loads).

``lmpretrain_tokenizer.json`` records the segmenter (``word_segmenter``: name, options, dictionary), the
dictionary (name, package and dictionary versions), MeCab options, the normalization applied before the subword model
(the segmenter's declared one; without a segmenter NFKC, or "none" for text kept as written) and the training settings.
The segmenter fields of ``TokenizerSpec`` are read and written through the segmenters' declarations
(:mod:`.segmenters`).
``word_tokenizer``, ``mecab_dic_type``, ``mecab_option`` and ``tokenizer_type`` stay at its top level (the run's flags
are checked against them; a Sudachi dir's ``mecab_dic_type`` is "sudachi", which no MeCab dictionary matches); dirs
written before ``word_segmenter`` was recorded are read through ``mecab_dic_type``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..fsutil import sha256_file
from .segmenters import (
    declaration,
    default_declaration,
    fields_from_flags,
    flag_fields,
    segmenter_from_fields,
    segmenter_from_meta,
    word_tokenizers,
)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
META_FILE = "lmpretrain_tokenizer.json"
SUBWORD_FILE = "lmpretrain_wordpiece.json"  # written by earlier versions; still part of their fingerprint
ALGORITHMS = {"wordpiece": "wordpiece", "bpe": "bpe", "sentencepiece": "bpe", "unigram": "unigram"}
MAX_INPUT_CHARS_PER_WORD = 100  # as transformers' WordpieceTokenizer
SPIECE_UNDERLINE = "\u2581"  # Metaspace's word marker
TOKENIZER_FILES = ("vocab.txt", "spiece.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", SUBWORD_FILE, META_FILE, "vocab.json", "merges.txt",
                   "sentencepiece.bpe.model", "added_tokens.json")


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything that decides the tokens; recorded in the dir and compared when a dir is reused."""

    mecab_dic_type: str | None = "ipadic"
    mecab_option: str | None = None
    tokenizer_type: str = "wordpiece"
    vocab_size: int = 32768
    min_frequency: int = 2
    limit_alphabet: int = 6129
    num_unused_tokens: int = 10
    word_tokenizer: str | None = None
    """None: the segmenter ``mecab_dic_type`` names (MeCab with that dictionary, or none), as dirs written before
    ``--word_tokenizer`` record it; otherwise another segmenter ("sudachi", "juman"), with ``mecab_dic_type`` None."""
    sudachi_split_mode: str | None = None
    sudachi_dict_type: str | None = None
    spm_model_type: str | None = None
    """None: ``tokenizer_type`` is trained by `tokenizers`; "unigram", "bpe" or "char": by the SentencePiece library
    (``tokenizer_type`` "sentencepiece"). The two ``spm_`` options below are None unless this is set."""
    spm_split_by_whitespace: bool | None = None
    spm_byte_fallback: bool | None = None
    spm_character_coverage: float | None = None
    """The share of the corpus's characters the SentencePiece library keeps as pieces (the rarer ones become
    [UNK], or bytes with byte fallback); None: its usual 0.9995 for Japanese and Chinese (1.0 suits a small
    alphabet). Recorded only when another value is given, so that earlier dirs keep their spec."""
    segmenter_options: dict | None = None
    """The options of a segmenter whose declared options have no field of their own above (any segmenter but MeCab
    and Sudachi, whose fields dirs recorded before segmenters were declared); None: none."""

    def __post_init__(self):  # one form per tokenizer: MeCab and none are word_tokenizer None, as in older dirs
        default = default_declaration()
        if self.word_tokenizer == "none":
            off = default.off_option
            object.__setattr__(self, off.name, off.off_value)
        elif self.word_tokenizer == default.name:
            for option in default.options:
                if option.spec_field and getattr(self, option.name) is None:
                    object.__setattr__(self, option.name, option.default)
        if self.word_tokenizer in ("none", default.name):
            object.__setattr__(self, "word_tokenizer", None)

    @classmethod
    def from_flags(cls, *, word_tokenizer: str | None = None, spm_model_type: str | None = None,
                   spm_split_by_whitespace: bool | None = None, spm_byte_fallback: bool | None = None,
                   spm_character_coverage: float | None = None, **flags) -> TokenizerSpec:
        """The spec train_tokenizer.py's flags ask for (an empty flag is an absent one): ``word_tokenizer`` and the
        declared segmenters' option flags (``mecab_dic_type``, ``sudachi_split_mode``, ...) by parsed name, the
        ``spm_`` flags and the other fields. In one form per tokenizer: MeCab and "none" keep ``word_tokenizer``
        None, so a dir written before ``--word_tokenizer`` existed has the same spec. A combination that contradicts
        itself is one ``UserError`` naming the flags."""
        names = flag_fields()
        segmenter_flags = {k: flags.pop(k) for k in list(flags) if k in names}
        fields, segmented, problems = fields_from_flags(word_tokenizer, segmenter_flags)
        spm, spm_problems = _spm_options(flags.get("tokenizer_type", "wordpiece"), segmented, spm_model_type or None,
                                         spm_split_by_whitespace, spm_byte_fallback, spm_character_coverage)
        problems += spm_problems
        if problems:
            raise UserError("; ".join(problems))
        return cls(**fields, **spm, **flags)

    @property
    def legacy_mecab_dic_type(self) -> str:
        """What the metadata's top-level ``mecab_dic_type`` holds: the MeCab dictionary or "none"; for another
        segmenter its name ("sudachi"), which no --mecab_dic_type value matches."""
        return self.mecab_dic_type if self.word_tokenizer is None else self.word_tokenizer

    def validate(self) -> None:
        problems = []
        name, options = self.word_segmenter()
        if name is not None and self.word_tokenizer not in (None, *word_tokenizers()):
            problems.append(f"--word_tokenizer {self.word_tokenizer!r} is not one of {', '.join(word_tokenizers())}")
        elif name is not None:
            problems += declaration(name).choice_problems(options)
        if self.spm_model_type is not None and self.spm_model_type not in SPM_MODEL_TYPES:
            problems.append(f"--spm_model_type {self.spm_model_type!r} is not one of {', '.join(SPM_MODEL_TYPES)}")
        if self.spm_model_type is not None and self.tokenizer_type != "sentencepiece":
            problems.append(f"--spm_model_type needs --tokenizer_type sentencepiece (got {self.tokenizer_type})")
        if self.tokenizer_type not in ALGORITHMS:
            problems.append(f"--tokenizer_type {self.tokenizer_type!r} is not one of {', '.join(ALGORITHMS)}")
        if self.num_unused_tokens < 0:
            problems.append(f"--num_unused_tokens must be >= 0 (got {self.num_unused_tokens})")
        if self.min_frequency < 1:
            problems.append(f"--min_frequency must be >= 1 (got {self.min_frequency})")
        if self.limit_alphabet < 1:
            problems.append(f"--limit_alphabet must be >= 1 (got {self.limit_alphabet})")
        reserved = len(SPECIAL_TOKENS) + self.num_unused_tokens
        if self.vocab_size <= reserved:
            problems.append(f"--vocab_size {self.vocab_size} leaves no room for subwords after {reserved} special "
                            f"and unused tokens")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def algorithm(self) -> str:
        """The subword algorithm recorded as the dir's ``tokenizer_type``: "sentencepiece" for the library's models."""
        return "sentencepiece" if self.spm_model_type is not None else ALGORITHMS[self.tokenizer_type]

    @property
    def subword_library(self) -> str:
        """The subword library that trains it (a key of ``subword.LIBRARIES``)."""
        return "sentencepiece" if self.spm_model_type is not None else "tokenizers"

    def word_segmenter(self) -> tuple[str | None, dict]:
        """(name, options) of the word segmenter the flags ask for, as its declaration reads them from the fields;
        (None, {}) for none."""
        return segmenter_from_fields(vars(self))

    def special_tokens(self) -> list[str]:
        return SPECIAL_TOKENS + [f"[unused{i}]" for i in range(self.num_unused_tokens)]


SPM_MODEL_TYPES = ("unigram", "bpe", "char")
SPM_FLAGS = ("--spm_model_type", "--spm_split_by_whitespace", "--spm_byte_fallback", "--spm_character_coverage")
SPM_CHARACTER_COVERAGE = 0.9995  # the library's own default, as its docs recommend for Japanese and Chinese


def _spm_options(tokenizer_type: str, segmented: bool, model_type: str | None, split_by_whitespace: bool | None,
                 byte_fallback: bool | None, character_coverage: float | None = None) -> tuple[dict, list[str]]:
    """The SentencePiece-library fields of a spec, and the problems of the flags that ask for them.

    ``--spm_model_type`` is the switch: given (with ``--tokenizer_type sentencepiece``), the library trains; the
    other two options mean nothing without it. With a word segmenter pieces never cross a word (transformers applies
    the model to each word), so ``--spm_split_by_whitespace false`` contradicts it."""
    given = [flag for flag, value in zip(SPM_FLAGS, (model_type, split_by_whitespace, byte_fallback,
                                                      character_coverage)) if value is not None]
    if not given:
        return {}, []
    if tokenizer_type != "sentencepiece":
        return {}, [f"{' and '.join(given)} {'are' if len(given) > 1 else 'is'} for the SentencePiece library "
                    f"(--tokenizer_type sentencepiece --spm_model_type unigram|bpe|char), not --tokenizer_type "
                    f"{tokenizer_type}, which ignores {'them' if len(given) > 1 else 'it'}"]
    if model_type is None:
        return {}, [f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} --spm_model_type (unigram, bpe or "
                    "char): without it --tokenizer_type sentencepiece is the `tokenizers` BPE, which ignores "
                    f"{'them' if len(given) > 1 else 'it'}"]
    if model_type not in SPM_MODEL_TYPES:
        return {}, [f"--spm_model_type {model_type!r} is not one of {', '.join(SPM_MODEL_TYPES)}"]
    if segmented and split_by_whitespace is False:
        return {}, ["--spm_split_by_whitespace false contradicts the word segmenter: its pieces never cross a word "
                    "(transformers applies the model to each word); give --word_tokenizer none to let pieces span "
                    "spaces"]
    if character_coverage is not None and not 0.0 < character_coverage <= 1.0:
        return {}, [f"--spm_character_coverage {character_coverage} is not a share of the characters: give a value "
                    f"above 0 and at most 1 (the library's default {SPM_CHARACTER_COVERAGE}; 1.0 keeps them all)"]
    options = {"spm_model_type": model_type, "spm_split_by_whitespace": True if split_by_whitespace is None
               else split_by_whitespace, "spm_byte_fallback": bool(byte_fallback)}
    if character_coverage is not None and character_coverage != SPM_CHARACTER_COVERAGE:
        options["spm_character_coverage"] = float(character_coverage)
    return options, []


def word_tokenizer_of(meta: dict) -> str | None:
    """The ``--word_tokenizer`` a tokenizer dir's metadata records ("mecab", "sudachi", ..., or "none"), also for
    dirs written before it was recorded; None for metadata that records no segmenter at all (not ours)."""
    if "word_tokenizer" in meta:
        return meta["word_tokenizer"]
    if "word_segmenter" not in meta and "mecab_dic_type" not in meta:
        return None
    return segmenter_from_meta(meta)[0] or "none"


def tokenizer_fingerprint(tokenizer_dir: str | Path) -> str:
    """sha256 over the tokenizer files' contents: changes whenever the tokens could."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = Path(tokenizer_dir) / name
        if path.is_file():
            digest.update(f"{name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
"""The special tokens' roles, in the order of ``SPECIAL_TOKENS`` (this toolkit's names for them)."""
_ALGORITHM_OF_MODEL = {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "unigram"}


def foreign_meta(tokenizer) -> dict:
    """What ``lmpretrain_tokenizer.json`` would record, for a tokenizer dir saved by transformers (no metadata of
    ours), from ``AutoTokenizer``'s ``tokenizer`` with a tokenizers backend: no word segmenter, the backend's subword
    model, and the special tokens by role (cls/sep fall back to bos/eos, as GPT-2 and RoBERTa-style ones have)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model_type = type(backend.model).__name__ if backend is not None else \
        {"sentencepiece": "Unigram"}.get(getattr(tokenizer, "subword_tokenizer_type", None), "WordPiece")
    roles = {role: getattr(tokenizer, role, None) for role in ROLES}
    roles["cls_token"] = roles["cls_token"] or tokenizer.bos_token
    roles["sep_token"] = roles["sep_token"] or tokenizer.eos_token
    return {"word_tokenizer": "none", "mecab_dic_type": "none",
            "tokenizer_type": _ALGORITHM_OF_MODEL.get(model_type, model_type.lower()),
            "saved_by": "transformers", "tokenizer_class": type(tokenizer).__name__, "special_tokens": roles}


def special_tokens_of(meta: dict) -> list[str | None]:
    """The special tokens in the order of ``SPECIAL_TOKENS``: ours, or those a foreign dir declares (None: none)."""
    roles = meta.get("special_tokens")
    return SPECIAL_TOKENS if roles is None else [roles.get(role) for role in ROLES]


def read_meta(directory: Path) -> dict | None:
    """The metadata of a tokenizer dir written by this toolkit, or None when the dir has none."""
    meta_path = Path(directory) / META_FILE
    return json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else None


def read_vocabulary(directory: Path, meta: dict | None) -> dict[str, int] | None:
    """token -> id as AutoTokenizer reads a tokenizer dir. With our ``meta``: tokenizer.json without MeCab,
    spiece.model's pieces for MeCab + BPE/Unigram, vocab.txt for MeCab + WordPiece. Without (a model from
    elsewhere): its vocab.txt, else its tokenizer.json, else None."""
    if meta is not None:
        kind = "tokenizer.json" if segmenter_from_meta(meta)[0] is None else \
            "vocab.txt" if meta["tokenizer_type"] == "wordpiece" else "spiece.model"
    else:
        kind = next((name for name in ("vocab.txt", "tokenizer.json") if (directory / name).is_file()), None)
        if kind is None:
            return None
    return read_model_vocabulary(directory, kind)


def read_model_vocabulary(directory: Path, kind: str) -> dict[str, int]:
    """token -> id of the subword file ``kind`` (tokenizer.json, spiece.model or vocab.txt), as transformers reads
    it."""
    if kind == "tokenizer.json":
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(directory / kind)).get_vocab()
    if kind == "spiece.model":
        try:
            import sentencepiece
        except ImportError:
            raise UserError(f"{directory}: its subword model (spiece.model) needs the SentencePiece library, which is "
                            "not installed: pip install sentencepiece (the version requirements.txt pins)") from None

        spm = sentencepiece.SentencePieceProcessor(model_file=str(directory / kind))
        return {spm.id_to_piece(i): i for i in range(spm.get_piece_size())}
    with open(directory / kind, encoding="utf-8") as f:  # split on "\n" only, as transformers' load_vocab
        return {line.rstrip("\n"): i for i, line in enumerate(f)}


def check_tokenizer_matches(pretrained: str, tokenizer_dir: str, *, allow_different: bool) -> None:
    """A model continued with a tokenizer other than its own sees wrong embeddings for every id that moved; that
    is an error unless the user asked to resize (then rows are mapped by token: models.vocab_adapt)."""

    def tokens(directory: Path) -> list[str] | None:
        vocab = read_vocabulary(directory, read_meta(directory))
        return None if vocab is None else [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]

    ours, theirs = tokens(Path(tokenizer_dir)), tokens(Path(pretrained))
    if ours is None or theirs is None or ours == theirs or allow_different:
        return
    if len(ours) > len(theirs) and ours[:len(theirs)] == theirs:  # train_tokenizer.py --base_tokenizer_dir
        raise UserError(f"the tokenizer in {tokenizer_dir} extends the one the model at {pretrained} was trained with "
                        f"({len(ours) - len(theirs)} tokens after its {len(theirs)}); pass --resize_embeddings "
                        "(resize-embeddings: true) to continue with it: the model's rows are kept, the new ones added")
    moved = sum(a != b for a, b in zip(ours, theirs)) + abs(len(ours) - len(theirs))
    raise UserError(f"the tokenizer in {tokenizer_dir} ({len(ours)} tokens) is not the one the model at {pretrained} "
                    f"was trained with ({len(theirs)} tokens, {moved} ids differ); use the model's own tokenizer, or "
                    "pass --resize_embeddings (resize-embeddings: true) to continue with this one")
