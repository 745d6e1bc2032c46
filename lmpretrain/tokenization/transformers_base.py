"""A tokenizer dir saved by transformers as an extension's base (``train_tokenizer.py --base_tokenizer_dir`` on a
published model's tokenizer): what this toolkit's metadata would record for it, read from its files, or one
``UserError`` naming the dir, the file and the key where it asks for a tokenizer the toolkit cannot reproduce.

- ``BertJapaneseTokenizer`` (tokenizer_config.json's ``word_tokenizer_type``): a declared segmenter's (MeCab's
  ``mecab_kwargs``: a dictionary of ``segmenters.mecab``, with its ``mecab_option``; Sudachi's ``sudachi_kwargs``:
  split mode and dictionary; Juman++), read back by its declaration (``Declaration.options_from_transformers``), then
  WordPiece (vocab.txt) or sentencepiece (spiece.model: unigram, bpe or char). Defaults are the installed
  transformers' (a config without ``mecab_dic`` gets its ``MecabTokenizer``'s, said in a warning).
  Refused, all problems in one error: ``do_lower_case`` true, ``do_word_tokenize``/``do_subword_tokenize`` false,
  ``word_tokenizer_type`` basic, ``subword_tokenizer_type`` character, ``mecab_dic`` null (a dictionary through
  ``mecab_option`` alone) or one the toolkit lacks, ``normalize_text`` false, Sudachi's ``sudachi_config_path``,
  ``sudachi_resource_dir``, ``sudachi_projection`` or ``trim_whitespace``, an unknown ``*_kwargs`` key, and special
  tokens other than ``[PAD] [UNK] [CLS] [SEP] [MASK]`` in their roles (the encoder splits just those off the text).
  ``never_split`` only exempts words from lowercasing, which is off: it changes nothing.
- A fast tokenizer (tokenizer.json) whose model is WordPiece (``##`` pieces) or Unigram, without a word segmenter:
  the special tokens recorded by role (:func:`.tokenizer_dir.foreign_meta`). transformers 5 applies
  tokenizer_config.json to its pipeline (BERT's ``do_lower_case``), so the pipeline AutoTokenizer runs is the one
  the new tokens are learnt behind (:func:`learn_in_base_pipeline`), the listed words are normalized by, and the
  extension's tokenizer.json holds. Refused: BPE (merges), another continuation prefix, added tokens past a Unigram
  model's pieces.

Either way ``AutoTokenizer`` must load the dir with the vocabulary its subword file holds (the extension appends
after that file's last id), and the written extension is loaded by it again and checked: every base token at its id.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..log import get_logger
from .segmenters import by_transformers_type, declarations, get_segmenter
from .tokenizer_dir import META_FILE, ROLES, SPECIAL_TOKENS, TokenizerSpec, foreign_meta

logger = get_logger(__name__)

_SPM_MODEL_TYPES = {1: "unigram", 2: "bpe", 4: "char"}  # sentencepiece's TrainerSpec.ModelType (3 is WORD)


def is_bert_japanese(config: dict) -> bool:
    return config.get("tokenizer_class") == "BertJapaneseTokenizer" or "word_tokenizer_type" in config


def transformers_base_meta(directory: Path, flag: str) -> dict:
    """The metadata (with ``spec``) this toolkit would have written for the transformers-saved tokenizer dir."""
    config_path = directory / "tokenizer_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    except ValueError as error:
        raise UserError(f"{flag}: {config_path} is not JSON ({error})") from None
    if is_bert_japanese(config):
        meta = bert_japanese_meta(directory, config, flag, config_path)
    elif (directory / "tokenizer.json").is_file():
        meta = _fast_meta(directory, flag)
    else:
        raise UserError(f"{flag} is neither a tokenizer dir of this toolkit ({directory / META_FILE} is missing) nor "
                        "one saved by transformers that it can extend: a BertJapaneseTokenizer (tokenizer_config.json "
                        "with word_tokenizer_type) or a fast tokenizer (tokenizer.json)")
    return meta


def bert_japanese_meta(directory: Path, config: dict, flag: str, config_path: Path) -> dict:
    """The metadata of a BertJapaneseTokenizer dir from its parsed ``tokenizer_config.json`` (``config``); one
    UserError listing every key the toolkit cannot reproduce."""
    problems: list[str] = []
    if config.get("do_lower_case"):
        problems.append("do_lower_case true (this toolkit never lowercases)")
    for key in ("do_word_tokenize", "do_subword_tokenize"):
        if config.get(key, True) is not True:
            problems.append(f"{key} {_json(config[key])} (this toolkit always runs both steps)")
    word = config.get("word_tokenizer_type", "basic")
    flags: dict = {}
    declared = by_transformers_type(word)
    if declared is None:
        titles = [d.title for d in declarations()]
        problems.append(f"word_tokenizer_type {_json(word)} (this toolkit's word segmenters are "
                        f"{', '.join(titles[:-1])} and {titles[-1]}: "
                        f"{', '.join(d.transformers_type for d in declarations())})")
    else:
        kwargs = config.get(declared.kwargs_key) or {}
        if not isinstance(kwargs, dict):
            problems.append(f"{declared.kwargs_key} {_json(kwargs)} (not an object)")
            kwargs = {}
        warnings: list[str] = []
        flags = {"word_tokenizer": declared.name, **declared.options_from_transformers(kwargs, problems, warnings)}
        for warning in warnings:
            logger.warning("%s: %s", config_path, warning)
    subword = config.get("subword_tokenizer_type", "wordpiece")
    model_file = {"wordpiece": "vocab.txt", "sentencepiece": "spiece.model"}.get(subword)
    if model_file is None:
        problems.append(f"subword_tokenizer_type {_json(subword)} (this toolkit's are wordpiece and sentencepiece)")
    for role, token in zip(ROLES, SPECIAL_TOKENS):
        if role in config and _content(config[role]) != token:
            problems.append(f"{role} {_json(_content(config[role]))} (this toolkit's {role} is {token})")
    if problems:
        raise UserError(f"{flag}: {config_path} asks for a tokenizer this toolkit cannot reproduce: "
                        f"{'; '.join(problems)}")
    if not (directory / model_file).is_file():
        raise UserError(f"{flag}: {directory / model_file} is missing (subword_tokenizer_type {subword} needs it)")
    vocab = _vocab_of_file(directory, model_file, flag)
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise UserError(f"{flag}: {directory / model_file} lacks the special tokens {' '.join(missing)}")
    if subword == "sentencepiece":
        flags.update(_spm_flags(directory, flag))
    else:
        flags["tokenizer_type"] = "wordpiece"
    spec = TokenizerSpec.from_flags(**flags, vocab_size=len(vocab), num_unused_tokens=_unused_count(vocab))
    try:
        segmenter = get_segmenter(*spec.word_segmenter())  # a dictionary that is not installed: one error now
    except UserError as error:
        raise UserError(f"{flag}: {config_path}: {error}") from None
    recorded = segmenter.record()
    return {"lmpretrain_version": __version__, "spec": asdict(spec), "word_tokenizer": segmenter.name,
            "mecab_dic_type": spec.legacy_mecab_dic_type, "tokenizer_type": spec.algorithm,
            "dictionary": recorded["dictionary"], "mecab_option": spec.mecab_option, "word_segmenter": recorded,
            "normalization": segmenter.normalization, "subword_library": spec.subword_library, "vocab_size": len(vocab),
            "training": None, "saved_by": "transformers", "tokenizer_class": "BertJapaneseTokenizer"}


def _json(value) -> str:
    """A value as tokenizer_config.json writes it (the errors quote the file)."""
    return json.dumps(value, ensure_ascii=False)


def _content(token) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken's dict."""
    return token.get("content") if isinstance(token, dict) else token


def _spm_flags(directory: Path, flag: str) -> dict:
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = sp_pb2.ModelProto()
    proto.ParseFromString((directory / "spiece.model").read_bytes())
    model_type = _SPM_MODEL_TYPES.get(proto.trainer_spec.model_type)
    if model_type is None:
        raise UserError(f"{flag}: {directory / 'spiece.model'} is a SentencePiece word model, which this toolkit "
                        "cannot extend (unigram, bpe and char ones it can)")
    return {"tokenizer_type": "sentencepiece", "spm_model_type": model_type,
            "spm_byte_fallback": bool(proto.trainer_spec.byte_fallback)}


def _vocab_of_file(directory: Path, model_file: str, flag: str) -> dict[str, int]:
    from .tokenizer_dir import read_model_vocabulary

    try:
        return read_model_vocabulary(directory, model_file)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - any unreadable model file: one line naming it
        raise UserError(f"{flag}: cannot read {directory / model_file} ({error})") from None


def _unused_count(vocab: dict[str, int]) -> int:
    count = 0
    while f"[unused{count}]" in vocab:
        count += 1
    return count


def _fast_meta(directory: Path, flag: str) -> dict:
    tokenizer = load_auto_tokenizer(directory, flag)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"{flag}: AutoTokenizer loads {directory} as {type(tokenizer).__name__}, a Python tokenizer "
                        "without a tokenizers backend, which this toolkit cannot extend")
    meta = foreign_meta(tokenizer)
    model = json.loads(backend.to_str())["model"]
    algorithm = meta["tokenizer_type"]
    where = f"{flag}: {directory / 'tokenizer.json'}"
    if algorithm not in ("wordpiece", "unigram"):
        raise UserError(f"{where} is a {model['type']} model: extending one (its merges) is not supported; "
                        "WordPiece and Unigram tokenizer.json are")
    if algorithm == "wordpiece" and model.get("continuing_subword_prefix") != "##":
        raise UserError(f"{where}: its WordPiece continues words with {model.get('continuing_subword_prefix')!r}, "
                        "not '##' (what the toolkit's WordPiece learns)")
    vocab = backend.get_vocab(with_added_tokens=True)
    in_model = len(model["vocab"])
    if algorithm == "unigram" and in_model != len(vocab):
        raise UserError(f"{where}: {len(vocab) - in_model} added tokens beyond its Unigram model's {in_model} "
                        "pieces; the extension's pieces would take their ids")
    spec = TokenizerSpec(mecab_dic_type="none", tokenizer_type=algorithm, vocab_size=len(vocab),
                         num_unused_tokens=_unused_count(vocab))
    return {**meta, "lmpretrain_version": __version__, "spec": asdict(spec), "vocab_size": len(vocab),
            "training": None}


def load_auto_tokenizer(directory: Path, flag: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as error:  # noqa: BLE001 - whatever transformers raises: one line naming the dir
        reason = " ".join(str(error).split())
        raise UserError(f"{flag}: AutoTokenizer cannot load {directory}: {reason}") from None


def check_auto_vocabulary(directory: Path, tokens: list[str], flag: str, what: str) -> None:
    """``AutoTokenizer`` on ``directory`` has exactly ``tokens`` at their ids, and for a BertJapaneseTokenizer no
    special token beyond this toolkit's (the encoder splits those off the text); ``what`` names the dir in errors."""
    tokenizer = load_auto_tokenizer(directory, flag)
    vocab = tokenizer.get_vocab()
    moved = [t for i, t in enumerate(tokens) if vocab.get(t) != i]
    extra = sorted(set(vocab) - set(tokens))
    if moved or extra:
        raise UserError(f"{flag}: AutoTokenizer gives {what} another vocabulary than its subword file "
                        f"({len(moved)} tokens at other ids, {len(extra)} more: {(moved + extra)[:3]})")
    if type(tokenizer).__name__ == "BertJapaneseTokenizer":
        specials = sorted(set(tokenizer.all_special_tokens) | set(tokenizer.added_tokens_encoder))
        others = [t for t in specials if t not in SPECIAL_TOKENS]
        if others:
            raise UserError(f"{flag}: {what} has special tokens beyond {' '.join(SPECIAL_TOKENS)} "
                            f"({', '.join(others[:5])}), which this toolkit's encoder would not split off the text")


def learn_in_base_pipeline(files: list[Path], base, algorithm: str, *, vocab_size: int,
                           min_frequency: int, limit_alphabet: int) -> tuple[list[str], dict[str, float], dict]:
    """For a fast tokenizer saved by transformers (``base``: the `tokenizers` pipeline AutoTokenizer runs): a model
    of its kind trained on ``files`` behind the base's own normalizer and pre-tokenizer (the toolkit's NFKC +
    BertPreTokenizer or Metaspace would learn pieces that pipeline never asks for), then encoding ``files``.
    Returns (its tokens, most used first (ties by id), never-used ones left out; Unigram pieces' scores; training
    stats)."""
    from tokenizers import Tokenizer, models, trainers

    from ..data.corpus import iter_chunks

    recorded = json.loads(base.to_str())["model"]
    specials = [token.content for _, token in sorted(base.get_added_tokens_decoder().items())]
    if algorithm == "wordpiece":
        domain = Tokenizer(models.WordPiece(unk_token=recorded.get("unk_token", "[UNK]"),
                                            continuing_subword_prefix="##",
                                            max_input_chars_per_word=recorded.get("max_input_chars_per_word", 100)))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            limit_alphabet=limit_alphabet, special_tokens=specials,
                                            continuing_subword_prefix="##", show_progress=False)
    else:
        unk = base.id_to_token(recorded["unk_id"]) if recorded.get("unk_id") is not None else None
        domain = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=unk,
                                          show_progress=False)
    domain.normalizer, domain.pre_tokenizer = base.normalizer, base.pre_tokenizer

    def lines():
        for sentences, _ in iter_chunks(files, chunk_chars=1 << 18):
            yield from sentences

    domain.train_from_iterator(lines(), trainer)
    counts: Counter = Counter()
    stats = {"lines": 0, "characters": 0, "files": [str(f) for f in files]}
    for sentences, _ in iter_chunks(files, chunk_chars=1 << 18):
        stats["lines"] += len(sentences)
        stats["characters"] += sum(map(len, sentences))
        for encoding in domain.encode_batch(sentences, add_special_tokens=False):
            counts.update(encoding.ids)
    stats["domain_vocab_size"] = domain.get_vocab_size()
    ranked = [t for _, _, t in sorted((-counts[i], i, t) for t, i in domain.get_vocab().items() if counts[i])]
    model = json.loads(domain.to_str())["model"]
    scores = {piece: score for piece, score in model["vocab"]} if algorithm == "unigram" else {}
    return ranked, scores, stats
