"""Extending a tokenizer (``train_tokenizer.py --base_tokenizer_dir``): every token of a base tokenizer dir keeps its
id, and new tokens are appended after them, learnt from a domain corpus or read from a word list (``--add_words``).

A model trained with the base then continues with the extended tokenizer: its rows are kept by token, the new rows
start from their pieces or the mean (:mod:`lmpretrain.models.vocab_adapt`, ``--resize_embeddings``).

- **Size.** ``--vocab_size`` is the extended vocabulary's *total* size (base + new), as for a tokenizer trained from
  scratch; below the base's size is an error. Without it, ``--add_words`` alone adds all its words.
- **Settings.** The extension keeps the base's word segmenter, dictionary, MeCab options, normalization and
  subword algorithm (the base's ids depend on them): segmenter flags that ask for others are said to be ignored.
- **Learnt tokens.** A tokenizer of the base's settings and ``--vocab_size`` tokens is trained on the corpus (the
  same pipeline as training from scratch, with ``--min_frequency`` and ``--limit_alphabet``); the corpus is encoded
  with it, and its tokens the base lacks are appended by how often that encoding uses them, most frequent first (ties
  by its ids), never-used ones left out. WordPiece gains word-initial and ``##`` pieces; Unigram pieces keep the
  domain model's score; a BPE piece comes after the pieces it is merged from, scored below every base piece (its
  merges come after the base's).
- **Bases.** Dirs of this toolkit (or a run's model dir, which carries its tokenizer): with a word segmenter every
  kind (vocab.txt, spiece.model of `tokenizers` or of the SentencePiece library); without one WordPiece and
  Unigram tokenizer.json (not BPE's merges, nor the tokenizer.json converted from a SentencePiece-library model).
  And dirs saved by transformers alone (no ``lmpretrain_tokenizer.json``; :mod:`.transformers_base`): a
  ``BertJapaneseTokenizer`` with MeCab (ipadic, unidic_lite, unidic), Sudachi or Juman++ and WordPiece (vocab.txt) or
  sentencepiece (spiece.model), its tokenizer_config.json mapped to this toolkit's settings (one that asks for what
  the toolkit cannot reproduce, such as ``do_lower_case``, is one error naming the file and key); and a fast
  WordPiece or Unigram tokenizer.json, whose new tokens are learnt behind the normalizer and pre-tokenizer
  AutoTokenizer runs for it. The extension is written as this toolkit's dir and checked to load in AutoTokenizer
  with every base token at its id.
- **Word list.** One word per line, NFKC-normalized as all text here (for a fast tokenizer saved by transformers:
  by its own normalizer); blank lines, duplicates and words the base has are skipped. WordPiece: the word as a
  word-initial token (a ``##piece`` line as a continuation piece); sentencepiece: a user-defined ``▁word`` piece
  (sentencepiece always takes it whole). Either applies where a word of the segmenter begins with it: a listed word
  the segmenter splits is added with a warning.

Where the new tokens apply, the ids of a text change (greedy longest match takes a new, longer piece; Viterbi a new
piece that scores better); a text whose ids changed always uses a new token, since a path of base tokens only is
the base's own. The metadata records ``extension``: the base dir, its fingerprint (sha256 of its tokenizer files),
its size and training record, the counts added, and for an extension of an extension the base's own record
(``base_extension``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..fsutil import replace_dir, sha256_file
from ..log import get_logger, progress
from .segmenters import flag_fields, get_segmenter, segmenter_from_meta
from .tokenizer_dir import META_FILE, SPIECE_UNDERLINE, TokenizerSpec, read_vocabulary, tokenizer_fingerprint
from .training import sweep_stale_temp_dirs, temp_prefix
from .transformers_base import (
    check_auto_vocabulary,
    learn_in_base_pipeline,
    load_auto_tokenizer,
    transformers_base_meta,
)

logger = get_logger(__name__)


def _segmenter_fields() -> tuple[str, ...]:
    """The spec fields that record the segmenter: ``word_tokenizer`` and those the declared options are held in."""
    return ("word_tokenizer", *dict.fromkeys(flag_fields().values()))


SUBWORD_FIELDS = ("tokenizer_type", "spm_model_type", "spm_split_by_whitespace", "spm_byte_fallback")


@dataclass(frozen=True)
class BaseTokenizer:
    directory: Path
    meta: dict
    spec: TokenizerSpec
    model_file: str
    """The file that holds the subword model: vocab.txt, spiece.model or tokenizer.json."""
    tokens: list[str]
    """The base's tokens by id."""

    @property
    def segmented(self) -> bool:
        return self.model_file != "tokenizer.json"

    @property
    def saved_by_transformers(self) -> bool:
        """A dir of transformers alone (its metadata derived by :mod:`.transformers_base`), or an extension of one:
        AutoTokenizer's reading of its tokenizer_config.json, not ours, decides its pipeline."""
        return self.meta.get("saved_by") == "transformers"


def _model_file(meta: dict) -> str:
    if segmenter_from_meta(meta)[0] is None:
        return "tokenizer.json"
    return "vocab.txt" if meta["tokenizer_type"] == "wordpiece" else "spiece.model"


def read_base(directory: str | Path) -> BaseTokenizer:
    """The base tokenizer dir, checked: every file the extension copies or extends is there and readable."""
    directory = Path(directory)
    flag = f"--base_tokenizer_dir {directory}"
    if not directory.is_dir():
        raise UserError(f"{flag} does not exist or is not a directory")
    meta_path = directory / META_FILE
    # a dir saved by transformers alone (a published model's): the metadata this toolkit would have written for it
    foreign = None if meta_path.is_file() else transformers_base_meta(directory, flag)
    try:
        meta = foreign or json.loads(meta_path.read_text(encoding="utf-8"))
        recorded = meta["spec"]
        model_file = _model_file(meta)
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{meta_path} is corrupt ({error.__class__.__name__}: {error})") from None
    known = {f.name for f in fields(TokenizerSpec)}
    spec = TokenizerSpec(**{k: v for k, v in recorded.items() if k in known})
    for name in (model_file, "tokenizer_config.json"):
        if not (directory / name).is_file():
            raise UserError(f"{flag}: {directory / name} is missing (a {spec.algorithm} tokenizer "
                            f"{'with' if model_file != 'tokenizer.json' else 'without'} a word segmenter needs it)")
    if model_file == "tokenizer.json" and spec.algorithm not in ("wordpiece", "unigram"):
        raise UserError(f"{flag}: extending a {spec.algorithm} tokenizer without a word segmenter (tokenizer.json "
                        f"{'with merges' if spec.algorithm == 'bpe' else 'converted from spiece.model'}) is not "
                        "supported; WordPiece and Unigram ones are, and every kind with a word segmenter")
    try:
        vocab = read_vocabulary(directory, meta)
    except Exception as error:  # noqa: BLE001 - any unreadable model file: one line naming it
        raise UserError(f"{flag}: cannot read {directory / model_file} ({error})") from None
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    if sorted(vocab.values()) != list(range(len(tokens))):
        raise UserError(f"{flag}: the ids in {directory / model_file} are not 0..{len(tokens) - 1}")
    if foreign is not None:  # the ids the extension keeps are the ones transformers gives
        check_auto_vocabulary(directory, tokens, flag, f"the base {directory}")
    return BaseTokenizer(directory, meta, spec, model_file, tokens)


_FLAG_FIELDS = {"word_tokenizer": "word_tokenizer", "tokenizer_type": "tokenizer_type",
                "spm_model_type": "spm_model_type", "spm_split_by_whitespace": "spm_split_by_whitespace",
                "spm_byte_fallback": "spm_byte_fallback", "num_unused_tokens": "num_unused_tokens"}
"""Flags that are not a segmenter's option -> the spec field they set (the segmenters' come from their declarations)."""


def given_flags(flags: dict) -> frozenset[str]:
    """The spec fields whose flags were given (not None) in train_tokenizer.py's parsed ``flags``."""
    return frozenset(field for flag, field in {**_FLAG_FIELDS, **flag_fields()}.items()
                     if flags.get(flag) not in (None, ""))


def adopt_base_settings(base: BaseTokenizer, asked: TokenizerSpec | None, given: set[str]) -> None:
    """Say which of the given flags the base overrides: the extension always keeps the base's settings."""
    if asked is None:
        return

    def value(spec: TokenizerSpec, name: str):
        return spec.algorithm if name == "tokenizer_type" else getattr(spec, name)

    ignored = [f"{name} {getattr(asked, name)!r}"
               for name in (*_segmenter_fields(), *SUBWORD_FIELDS, "num_unused_tokens")
               if name in given and value(asked, name) != value(base.spec, name)]
    if ignored:
        kept = ", ".join(f"{name} {getattr(base.spec, name)!r}" for name in (*_segmenter_fields(), *SUBWORD_FIELDS)
                         if getattr(base.spec, name) is not None)
        logger.warning("--base_tokenizer_dir %s was trained with %s; the extension keeps them (the base's ids depend "
                       "on them) and ignores the flags asking for %s", base.directory, kept, "; ".join(ignored))


def read_words(path: str | Path, base: BaseTokenizer) -> list[str]:
    """The new tokens of the word list, in its order: NFKC, blank lines, duplicates and base tokens skipped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--add_words {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise UserError(f"--add_words {path} is not UTF-8 text ({error})") from None
    known, words, normalize = set(base.tokens), [], _word_normalizer(base)
    for number, line in enumerate(lines, 1):
        if any(c.isspace() for c in unicodedata.normalize("NFKC", line.strip())):
            raise UserError(f"--add_words {path}, line {number}: {line.strip()!r} holds a space; one word per line")
        word = normalize(line.strip())
        if not word:
            continue
        if word.startswith("##") and base.spec.algorithm != "wordpiece":
            raise UserError(f"--add_words {path}, line {number}: {word!r} is a WordPiece continuation piece, but the "
                            f"base is {base.spec.algorithm}: give whole words")
        token = _word_token(base, word)
        if token not in known:
            known.add(token)
            words.append(token)
    return words


def _word_normalizer(base: BaseTokenizer):
    """A listed word as the base's subword model sees text: NFKC (the segmenters and the toolkit's tokenizer.json),
    or the normalizer of a tokenizer.json saved by transformers (BERT's keeps full-width letters and spaces out CJK
    ideographs: the spaces are dropped, and the word is then said to be more than one word)."""
    if base.segmented or not base.saved_by_transformers:
        return lambda word: unicodedata.normalize("NFKC", word)
    normalizer = _pipeline(base).normalizer
    return lambda word: "".join((normalizer.normalize_str(word) if normalizer is not None else word).split())


def _pipeline(base: BaseTokenizer):
    """The `tokenizers` pipeline of a base without a word segmenter, as AutoTokenizer runs it: for a dir saved by
    transformers its backend (transformers 5 applies tokenizer_config.json to it: BERT's ``do_lower_case``), which
    the extension's tokenizer.json then holds, so that the toolkit's encoder runs it too."""
    from tokenizers import Tokenizer

    if not base.saved_by_transformers:
        return Tokenizer.from_file(str(base.directory / "tokenizer.json"))
    backend = load_auto_tokenizer(base.directory, f"--base_tokenizer_dir {base.directory}").backend_tokenizer
    return Tokenizer.from_str(backend.to_str())


def _word_token(base: BaseTokenizer, word: str) -> str:
    if base.spec.algorithm == "wordpiece" or word.startswith(SPIECE_UNDERLINE):
        return word
    return SPIECE_UNDERLINE + word


def _warn_split_words(base: BaseTokenizer, words: list[str]) -> None:
    texts = [w.removeprefix("##").removeprefix(SPIECE_UNDERLINE) for w in words]
    segmenter = get_segmenter(*base.spec.word_segmenter()) if base.segmented else None
    if segmenter is not None:
        split = [w for w, line in zip(texts, segmenter.wakati_batch(texts)) if len(line.split()) > 1]
    else:

        tokenizer = _pipeline(base)
        pre, normalizer = tokenizer.pre_tokenizer, tokenizer.normalizer
        split = [w for w in texts if pre is not None
                 and len(pre.pre_tokenize_str(normalizer.normalize_str(w) if normalizer is not None else w)) > 1]
    if split:
        logger.warning("%d of the --add_words words are more than one word for the word segmenter (%s%s): like "
                       "every word-initial token they apply only where one of its words begins with them",
                       len(split), ", ".join(split[:5]), ", ..." if len(split) > 5 else "")


def _learn(files: list[Path], base: BaseTokenizer, spec: TokenizerSpec, work: Path, *, num_workers: int,
           intermediate_dir: str | None) -> tuple[list[str], dict, dict]:
    """(tokens of a tokenizer of ``spec`` trained on ``files`` that the base lacks, most used in encoding the files
    first; their scores where the model has them; training stats)."""
    from ..data.corpus import iter_chunks
    from .encoder import FastEncoder
    from .training import train_tokenizer

    if base.saved_by_transformers and not base.segmented:  # learnt behind its own normalizer and pre-tokenizer
        ranked, scores, stats = learn_in_base_pipeline(files, _pipeline(base), base.spec.algorithm,
                                                       vocab_size=spec.vocab_size, min_frequency=spec.min_frequency,
                                                       limit_alphabet=spec.limit_alphabet)
        known = set(base.tokens)
        return [t for t in ranked if t not in known], scores, stats
    summary = train_tokenizer([str(f) for f in files], work / "domain", spec, num_workers=num_workers,
                              intermediate_dir=intermediate_dir)
    counts: Counter = Counter()
    with FastEncoder.from_pretrained(work / "domain", num_workers=num_workers) as encoder, \
            progress(desc="count domain tokens", unit=" lines") as bar:
        for sentences, _ in iter_chunks(files, chunk_chars=1 << 18):
            for ids in encoder.encode_batch(sentences):
                counts.update(ids)
            bar.update(len(sentences))
    domain = read_vocabulary(work / "domain", json.loads((work / "domain" / META_FILE).read_text(encoding="utf-8")))
    known = set(base.tokens)
    ranked = [t for _, _, t in sorted((-counts[i], i, t) for t, i in domain.items() if t not in known and counts[i])]
    if _is_bpe(base):
        ranked = _with_merge_parts(ranked, domain, known)
    scores = _scores(work / "domain", base)
    stats = {"lines": summary["lines"], "characters": summary["characters"], "files": [str(f) for f in files],
             "domain_vocab_size": summary["vocab_size"]}
    return ranked, scores, stats


def _is_bpe(base: BaseTokenizer) -> bool:
    """A BPE model (`tokenizers`' or the SentencePiece library's): its pieces come from merges."""
    if base.model_file != "spiece.model":
        return base.spec.algorithm == "bpe"
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = sp_pb2.ModelProto()
    proto.ParseFromString((base.directory / "spiece.model").read_bytes())
    return proto.trainer_spec.model_type == sp_pb2.TrainerSpec.BPE


def _with_merge_parts(ranked: list[str], domain: dict[str, int], known: set[str]) -> list[str]:
    """BPE forms a piece only by merging two pieces it has: before each piece, the pieces it is merged from (the
    earliest-made split into two domain pieces, recursively) that neither the base nor an earlier one has."""
    order: dict[str, None] = {}

    def add(token: str) -> None:
        if token in known or token in order:
            return
        splits = [(max(domain[token[:k]], domain[token[k:]]), token[:k], token[k:]) for k in range(1, len(token))
                  if token[:k] in domain and token[k:] in domain
                  and max(domain[token[:k]], domain[token[k:]]) < domain[token]]
        if splits:
            _, left, right = min(splits)
            add(left)
            add(right)
        order[token] = None

    for token in ranked:
        add(token)
    return list(order)


def _scores(directory: Path, base: BaseTokenizer) -> dict[str, float]:
    """Unigram and BPE pieces' scores of a model (empty for WordPiece)."""
    if base.model_file == "spiece.model":
        from sentencepiece import sentencepiece_model_pb2 as sp_pb2

        proto = sp_pb2.ModelProto()
        proto.ParseFromString((directory / "spiece.model").read_bytes())
        return {p.piece: p.score for p in proto.pieces}
    if base.model_file == "tokenizer.json" and base.spec.algorithm == "unigram":
        model = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        return {piece: score for piece, score in model["vocab"]}
    return {}


def _write_vocab_txt(path: Path, tokens: list[str]) -> None:
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")


def _write_extended(base: BaseTokenizer, out: Path, words: list[str], learnt: list[str],
                    scores: dict[str, float]) -> None:
    """The base's files into ``out`` with ``words`` then ``learnt`` appended to its subword model."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (base.directory / name).is_file():
            shutil.copyfile(base.directory / name, out / name)
    new = words + learnt
    if base.model_file == "vocab.txt":
        _write_vocab_txt(out / "vocab.txt", base.tokens + new)
    elif base.model_file == "spiece.model":
        from sentencepiece import sentencepiece_model_pb2 as sp_pb2

        proto = sp_pb2.ModelProto()
        proto.ParseFromString((base.directory / "spiece.model").read_bytes())
        bpe = proto.trainer_spec.model_type == sp_pb2.TrainerSpec.BPE
        lowest = min(p.score for p in proto.pieces)
        for k, token in enumerate(new):
            piece = proto.pieces.add()
            piece.piece = token
            if bpe and token not in words:  # merged after every merge of the base, in the domain model's order
                piece.type, piece.score = sp_pb2.ModelProto.SentencePiece.NORMAL, lowest - 1.0 - k
            elif token in scores and token not in words:
                piece.type, piece.score = sp_pb2.ModelProto.SentencePiece.NORMAL, scores[token]
            else:  # a word of the list: always taken whole where it occurs (its score is not used)
                piece.type, piece.score = sp_pb2.ModelProto.SentencePiece.USER_DEFINED, 0.0
        proto.trainer_spec.vocab_size = len(proto.pieces)
        (out / "spiece.model").write_bytes(proto.SerializeToString())
        _write_vocab_txt(out / "vocab.txt", base.tokens + new)
    else:
        tokenizer = json.loads(_pipeline(base).to_str())
        model = tokenizer["model"]
        if base.spec.algorithm == "wordpiece":
            model["vocab"].update({t: len(base.tokens) + k for k, t in enumerate(new)})
            _write_vocab_txt(out / "vocab.txt", base.tokens + new)
        else:
            # a listed word scores 0 (log-probability 1): Viterbi takes it wherever it fits, as a user-defined piece
            model["vocab"].extend([t, 0.0 if t in words else scores[t]] for t in new)
        (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")


def extend_tokenizer(base_dir: str | Path, model_dir: str | Path, *, input_file: list[str] | None,
                     vocab_size: int | None, add_words: str | None = None, min_frequency: int = 2,
                     limit_alphabet: int = 6129, num_workers: int = 1, intermediate_dir: str | None = None,
                     asked: TokenizerSpec | None = None, given: frozenset[str] = frozenset()) -> dict:
    """Extend the tokenizer in ``base_dir`` into ``model_dir`` (see the module's docstring); returns a summary.
    ``asked``/``given``: the spec the flags describe and the flags given, to say which the base overrides."""
    from ..data.corpus import resolve_corpus_files
    from .training import _check_model_dir, _write_json

    started = time.perf_counter()
    base = read_base(base_dir)
    model_dir = Path(model_dir)
    if model_dir.resolve() == base.directory.resolve():
        raise UserError(f"--model_dir {model_dir} is --base_tokenizer_dir: write the extension to another dir")
    if not input_file and not add_words:
        raise UserError("--base_tokenizer_dir needs --input_file (a corpus to learn new tokens from) or --add_words")
    words = read_words(add_words, base) if add_words else []
    base_size = len(base.tokens)
    if vocab_size is None:
        if input_file:
            raise UserError(f"--base_tokenizer_dir with --input_file needs --vocab_size: the extended vocabulary's "
                            f"total size (the base has {base_size} tokens)")
        vocab_size = base_size + len(words)
    if vocab_size < base_size or (vocab_size == base_size and input_file):
        raise UserError(f"--vocab_size {vocab_size} is the extended vocabulary's total size and must be above the "
                        f"base's {base_size} tokens ({base.directory})")
    if len(words) > vocab_size - base_size:
        raise UserError(f"--add_words {add_words} has {len(words)} words the base lacks, but --vocab_size "
                        f"{vocab_size} leaves room for {vocab_size - base_size} beyond the base's {base_size} tokens")
    files = resolve_corpus_files(input_file) if input_file else []
    for file in files:
        if file.stat().st_size == 0:
            raise UserError(f"--input_file {file} is empty")
    spec = replace(base.spec, vocab_size=vocab_size, min_frequency=min_frequency, limit_alphabet=limit_alphabet)
    _check_model_dir(model_dir, spec)
    adopt_base_settings(base, asked, given)
    if words:
        _warn_split_words(base, words)

    model_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temp_dirs(model_dir, intermediate_dir)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(model_dir), dir=model_dir.parent))
    try:
        learnt, scores, stats = [], {}, {"lines": 0, "characters": 0, "files": []}
        if files:
            work = tmp / "work"
            work.mkdir()
            learnt, scores, stats = _learn(files, base, spec, work, num_workers=num_workers,
                                           intermediate_dir=intermediate_dir)
            shutil.rmtree(work)
            listed = set(words)
            learnt = [t for t in learnt if t not in listed][:vocab_size - base_size - len(words)]
        _write_extended(base, tmp, words, learnt, scores)
        if base.saved_by_transformers:  # its tokenizer_config.json is not ours: the extension must load as the base
            check_auto_vocabulary(tmp, base.tokens + words + learnt, f"--model_dir {model_dir}",
                                  f"the extension of {base.directory}")
        size = base_size + len(words) + len(learnt)
        extension = {"base_tokenizer_dir": str(base.directory.resolve()),
                     "base_fingerprint": tokenizer_fingerprint(base.directory), "base_vocab_size": base_size,
                     "added": len(words) + len(learnt), "learnt": len(learnt), "from_words": len(words),
                     "add_words": None if not add_words else {"file": str(add_words),
                                                              "sha256": sha256_file(Path(add_words))}}
        if "extension" in base.meta:  # an extension of an extension: the chain back to the first base
            extension["base_extension"] = base.meta["extension"]
        extension["base_training"] = base.meta.get("training")
        meta = {**base.meta, "lmpretrain_version": __version__, "spec": asdict(spec), "vocab_size": size,
                "training": stats, "extension": extension}
        _write_json(tmp / META_FILE, meta)
        replace_dir(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"model_dir": str(model_dir), "base_tokenizer_dir": str(base.directory), "base_vocab_size": base_size,
            "vocab_size": size, "room": vocab_size - base_size, "learnt": len(learnt), "from_words": len(words),
            "lines": stats["lines"], "tokenizer_type": base.spec.algorithm,
            "seconds": round(time.perf_counter() - started, 1)}


def describe(summary: dict) -> str:
    """train_tokenizer.py's one-line summary of an extension."""
    s = summary
    return (f"tokenizer: extended {s['base_tokenizer_dir']} ({s['base_vocab_size']} tokens) by "
            f"{s['vocab_size'] - s['base_vocab_size']} of up to {s['room']} ({s['learnt']} learnt from {s['lines']} "
            f"lines, {s['from_words']} from --add_words), {s['vocab_size']} tokens, in {s['seconds']} s -> "
            f"{s['model_dir']}")
