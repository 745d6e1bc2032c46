"""Tokenizer dirs and ``FastEncoder``, the toolkit's fast, exact encoder (training: :mod:`.tokenizer_training`).

What a tokenizer dir holds, by (dictionary, algorithm):

| MeCab | subword      | files                      | AutoTokenizer class                           |
|-------|--------------|----------------------------|-----------------------------------------------|
| a dic | wordpiece    | vocab.txt                  | BertJapaneseTokenizer (mecab + wordpiece)     |
| a dic | bpe, unigram | spiece.model (+ vocab.txt) | BertJapaneseTokenizer (mecab + sentencepiece) |
| none  | any          | tokenizer.json             | PreTrainedTokenizerFast (tokenizer.json)      |

All three algorithms are trained with the `tokenizers` library, made deterministic here (its trainers break
ties in hash order): the same corpus and settings give byte-identical files, whatever ``num_workers``.

For MeCab + BPE/Unigram the subword model is trained with the `tokenizers` library and written as a
sentencepiece model (``spiece.model``), which is the subword format transformers' BertJapaneseTokenizer
reads. ``lmpretrain_tokenizer.json`` records the dictionary (name, package and dictionary versions), MeCab
options, normalization (NFKC) and the training settings.

``FastEncoder`` gives the ids AutoTokenizer gives. Without MeCab it runs the same tokenizer.json. With MeCab
it runs the same fugashi tagger once per line (``pretokenize.WordSegmenter``) and looks each word's subword
ids up in a cache filled by transformers' own per-word algorithm: greedy longest match over vocab.txt, or
spiece.model through the sentencepiece library with transformers' digit-comma rule.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .fsutil import sha256_file
from .log import get_logger
from .pretokenize import DICTIONARIES, WordSegmenter, pool_context

logger = get_logger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
META_FILE = "lmpretrain_tokenizer.json"
SUBWORD_FILE = "lmpretrain_wordpiece.json"  # written by earlier versions; still part of their fingerprint
ALGORITHMS = {"wordpiece": "wordpiece", "bpe": "bpe", "sentencepiece": "bpe", "unigram": "unigram"}
MAX_INPUT_CHARS_PER_WORD = 100  # as transformers' WordpieceTokenizer
SPIECE_UNDERLINE = "\u2581"  # Metaspace's word marker
TOKENIZER_FILES = ("vocab.txt", "spiece.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", SUBWORD_FILE, META_FILE)


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything that decides the tokens; recorded in the dir and compared when a dir is reused."""

    mecab_dic_type: str = "ipadic"
    mecab_option: str | None = None
    tokenizer_type: str = "wordpiece"
    vocab_size: int = 32768
    min_frequency: int = 2
    limit_alphabet: int = 6129
    num_unused_tokens: int = 10

    def validate(self) -> None:
        problems = []
        if self.mecab_dic_type not in DICTIONARIES:
            problems.append(f"--mecab_dic_type {self.mecab_dic_type!r} is not one of {', '.join(DICTIONARIES)}")
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
        return ALGORITHMS[self.tokenizer_type]

    def special_tokens(self) -> list[str]:
        return SPECIAL_TOKENS + [f"[unused{i}]" for i in range(self.num_unused_tokens)]


def tokenizer_fingerprint(tokenizer_dir: str | Path) -> str:
    """sha256 over the tokenizer files' contents: changes whenever the tokens could."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = Path(tokenizer_dir) / name
        if path.is_file():
            digest.update(f"{name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# encoding
# ----------------------------------------------------------------------------------------------------------------

MAX_CACHED_WORDS = 1 << 17  # learned words per process (~20 MB); word frequencies are Zipfian: > 95% hits
_PARALLEL_MIN_TEXTS = 256
_STARTS = [(True,) + (False,) * (n - 1) if n else () for n in range(64)]  # word starts of an n-token word
_worker_encoder: FastEncoder | None = None


def _init_encoder_worker(encoder: FastEncoder) -> None:
    """A forked worker starts from the parent's encoder (its tagger, its warm word cache); a spawned one unpickles
    it, which loads it from its dir."""
    global _worker_encoder
    gc.freeze()  # the collector would touch every object inherited from the parent, copying its memory pages
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    encoder.num_workers, encoder._pool = 1, None
    _worker_encoder = encoder


def _encode_in_worker(task: tuple[list[str], bool]):
    texts, with_starts = task
    return _worker_encoder._encode(texts, with_starts)


def _word_starts(word_ids: list[int | None]) -> list[bool]:
    starts, previous = [], None
    for word in word_ids:
        starts.append(word != previous)
        previous = word
    return starts


def read_vocabulary(directory: Path, meta: dict | None) -> dict[str, int] | None:
    """token -> id as AutoTokenizer reads a tokenizer dir. With our ``meta``: tokenizer.json without MeCab,
    spiece.model's pieces for MeCab + BPE/Unigram, vocab.txt for MeCab + WordPiece. Without (a model from
    elsewhere): its vocab.txt, else its tokenizer.json, else None."""
    if meta is not None:
        kind = "tokenizer.json" if meta["mecab_dic_type"] == "none" else \
            "vocab.txt" if meta["tokenizer_type"] == "wordpiece" else "spiece.model"
    else:
        kind = next((name for name in ("vocab.txt", "tokenizer.json") if (directory / name).is_file()), None)
        if kind is None:
            return None
    if kind == "tokenizer.json":
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(directory / kind)).get_vocab()
    if kind == "spiece.model":
        import sentencepiece

        spm = sentencepiece.SentencePieceProcessor(model_file=str(directory / kind))
        return {spm.id_to_piece(i): i for i in range(spm.get_piece_size())}
    with open(directory / kind, encoding="utf-8") as f:  # split on "\n" only, as transformers' load_vocab
        return {line.rstrip("\n"): i for i, line in enumerate(f)}


def check_tokenizer_matches(pretrained: str, tokenizer_dir: str, *, allow_different: bool) -> None:
    """A model continued with a tokenizer other than its own sees wrong embeddings for every id that moved; that
    is an error unless the user asked to resize (new rows are learnt, rows are kept by id)."""

    def tokens(directory: Path) -> list[str] | None:
        meta_path = directory / META_FILE
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else None
        vocab = read_vocabulary(directory, meta)
        return None if vocab is None else [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]

    ours, theirs = tokens(Path(tokenizer_dir)), tokens(Path(pretrained))
    if ours is None or theirs is None or ours == theirs or allow_different:
        return
    moved = sum(a != b for a, b in zip(ours, theirs)) + abs(len(ours) - len(theirs))
    raise UserError(f"the tokenizer in {tokenizer_dir} ({len(ours)} tokens) is not the one the model at {pretrained} "
                    f"was trained with ({len(theirs)} tokens, {moved} ids differ); use the model's own tokenizer, or "
                    "pass --resize_embeddings (resize-embeddings: true) to continue with this one")


class FastEncoder:
    """Encode text to ids exactly as ``AutoTokenizer.from_pretrained(tokenizer_dir)`` does, but fast, in batches.

    With MeCab, a line is NFKC + MeCab words (one fugashi call), and each word's subword ids come from a
    per-process cache, filled by transformers' own per-word algorithms (greedy longest match over ``vocab.txt``,
    or sentencepiece over ``spiece.model`` with the digit-comma rule). Special tokens written in the text
    (``[MASK]``) are split off first, as transformers does. ``num_workers > 1`` encodes large batches in a pool
    of processes, started on first use and stopped by ``close()``.
    """

    def __init__(self, tokenizer_dir: Path, meta: dict, vocab: dict[str, int], num_workers: int):
        self.tokenizer_dir = Path(tokenizer_dir)
        self.meta = meta
        self.num_workers = max(1, num_workers)
        self.mecab_dic_type = meta["mecab_dic_type"]
        self.algorithm = meta["tokenizer_type"]
        self.vocab_size = len(vocab)
        self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id = (
            vocab[t] for t in SPECIAL_TOKENS)
        self.all_special_ids = sorted(vocab[t] for t in SPECIAL_TOKENS)
        self.unused_token_ids = sorted(i for t, i in vocab.items() if re.fullmatch(r"\[unused\d+\]", t))
        """``[unused0]``... : reserved for users, never masked nor drawn as random replacements."""
        self.fingerprint = tokenizer_fingerprint(self.tokenizer_dir)
        self._pool = None
        self._rust = None  # the whole tokenizer.json pipeline (no MeCab)
        self._segmenter = None
        self._ids: dict[str, tuple[int, ...]] = {}  # MeCab word -> subword ids
        self._known: dict[str, tuple[int, ...]] = {}  # words the cache always holds
        self._starts: dict[str, tuple[bool, ...]] = {}  # MeCab word -> (True, False, ...)
        from tokenizers import Tokenizer

        if self.mecab_dic_type == "none":
            self._rust = Tokenizer.from_file(str(self.tokenizer_dir / "tokenizer.json"))
            return
        self._segmenter = WordSegmenter(self.mecab_dic_type, meta.get("mecab_option"))
        longest_first = sorted(SPECIAL_TOKENS, key=len, reverse=True)
        self._special = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")
        self._special_ids = {t: vocab[t] for t in SPECIAL_TOKENS}
        if self.algorithm == "wordpiece":
            self._vocab = vocab
            # a word that is a vocabulary token is that token (greedy longest match takes it whole): the cache
            # starts with them, which spares learning about half the distinct words of a corpus
            self._known = {t: (i,) for t, i in vocab.items() if len(t) <= MAX_INPUT_CHARS_PER_WORD}
            self._ids.update(self._known)
            self._starts.update(dict.fromkeys(self._known, (True,)))
            self._subword_ids = self._wordpiece_ids
        else:
            import sentencepiece

            self._spm = sentencepiece.SentencePieceProcessor(model_file=str(self.tokenizer_dir / "spiece.model"))
            self._subword_ids = self._spm_ids

    @classmethod
    def from_pretrained(cls, tokenizer_dir: str | Path, num_workers: int = 1) -> FastEncoder:
        directory = Path(tokenizer_dir)
        meta_path = directory / META_FILE
        if not directory.is_dir():
            raise UserError(f"tokenizer dir {directory} does not exist")
        if not meta_path.is_file():
            raise UserError(f"{directory} is not a tokenizer dir written by train_tokenizer.py (no {META_FILE})")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            vocab = read_vocabulary(directory, meta)
            missing = [t for t in SPECIAL_TOKENS if t not in vocab]
            if missing:
                raise UserError(f"{directory}: the vocabulary lacks the special tokens {missing}")
        except (OSError, ValueError, KeyError) as error:
            raise UserError(f"{directory}: cannot read the tokenizer files ({error})") from None
        return cls(directory, meta, vocab, num_workers)

    def __reduce__(self):
        return (FastEncoder.from_pretrained, (str(self.tokenizer_dir), 1))

    def __enter__(self) -> FastEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    # -- subword ids of one MeCab word, as transformers' subword tokenizers compute them ----------------------

    def _wordpiece_ids(self, word: str) -> tuple[int, ...]:
        """transformers' WordpieceTokenizer on one word (greedy longest match over vocab.txt), as ids."""
        vocab = self._vocab
        if len(word) > MAX_INPUT_CHARS_PER_WORD:
            return (self.unk_token_id,)
        ids = []
        start = 0
        while start < len(word):
            end = len(word)
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    ids.append(vocab[piece])
                    break
                end -= 1
            else:  # no piece of the vocabulary starts here
                return (self.unk_token_id,)
            start = end
        return tuple(ids)

    def _spm_ids(self, word: str) -> tuple[int, ...]:
        """transformers' SentencepieceTokenizer.tokenize(word), with its `` '' and digit-comma rules, as ids."""
        word = word.replace("``", '"').replace("''", '"')
        pieces = []
        for piece in self._spm.encode(word, out_type=str):
            if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
                sub = self._spm.encode(piece[:-1].replace(SPIECE_UNDERLINE, ""), out_type=str)
                if piece[0] != SPIECE_UNDERLINE and sub[0][0] == SPIECE_UNDERLINE:
                    sub = sub[1:] if len(sub[0]) == 1 else [sub[0][1:], *sub[1:]]
                pieces.extend([*sub, piece[-1]])
            else:
                pieces.append(piece)
        return tuple(self._spm.piece_to_id(pieces))

    def _learn(self, word: str) -> tuple[int, ...]:
        """Subword ids of a word missing from the cache, now cached (the cache is emptied first when full)."""
        if len(self._ids) >= MAX_CACHED_WORDS + len(self._known):
            self._ids.clear()
            self._starts.clear()
            if self.algorithm == "wordpiece":
                self._ids.update(self._known)
                self._starts.update(dict.fromkeys(self._known, (True,)))
        ids = self._subword_ids(word)
        self._ids[word] = ids
        self._starts[word] = _STARTS[len(ids)] if len(ids) < len(_STARTS) else (True,) + (False,) * (len(ids) - 1)
        return ids

    # -- lines --------------------------------------------------------------------------------------------------

    def _encode_mecab(self, texts: list[str], with_starts: bool) -> tuple[list[list[int]], list[list[bool]] | None]:
        """Ids (and word starts) per text: MeCab words, then cached subword ids; no special tokens here."""
        ids_of, starts_of, learn = self._ids, self._starts, self._learn
        all_ids: list[list[int]] = []
        if not with_starts:  # the hot loop of dataset builds and benchmarks: keep it minimal
            for line in self._segmenter.wakati_batch(texts):
                ids: list[int] = []
                for word in line.split():
                    try:
                        ids += ids_of[word]
                    except KeyError:
                        ids += learn(word)
                all_ids.append(ids)
            return all_ids, None
        all_starts: list[list[bool]] = []
        for line in self._segmenter.wakati_batch(texts):
            ids, starts = [], []
            for word in line.split():
                try:
                    ids += ids_of[word]
                except KeyError:
                    ids += learn(word)
                starts += starts_of[word]
            all_ids.append(ids)
            all_starts.append(starts)
        return all_ids, all_starts

    def _encode(self, texts: list[str], with_starts: bool) -> tuple[list[list[int]], list[list[bool]] | None]:
        if self._rust is not None:
            encodings = self._rust.encode_batch(texts, add_special_tokens=False)
            return [e.ids for e in encodings], [_word_starts(e.word_ids) for e in encodings] if with_starts else None
        special = self._special
        if not any("[" in text and special.search(text) for text in texts):
            return self._encode_mecab(texts, with_starts)
        # transformers cuts the raw text at special tokens and tokenizes each piece between them on its own
        pieces, layout = [], []
        for text in texts:
            items = []
            for k, part in enumerate(special.split(text) if "[" in text else [text]):
                if k % 2:
                    items.append(self._special_ids[part])
                elif part:
                    items.append(-1 - len(pieces))
                    pieces.append(part)
            layout.append(items)
        piece_ids, piece_starts = self._encode_mecab(pieces, True)
        all_ids, all_starts = [], []
        for items in layout:
            ids: list[int] = []
            starts: list[bool] = []
            for item in items:
                if item >= 0:
                    ids.append(item)
                    starts.append(True)
                else:
                    ids += piece_ids[-1 - item]
                    starts += piece_starts[-1 - item]
            all_ids.append(ids)
            all_starts.append(starts)
        return all_ids, all_starts if with_starts else None

    def _encode_parallel(self, texts: list[str], with_starts: bool):
        if self.num_workers == 1 or len(texts) < _PARALLEL_MIN_TEXTS:
            return self._encode(texts, with_starts)
        if self._pool is None:
            self._pool = pool_context().Pool(self.num_workers, initializer=_init_encoder_worker, initargs=(self,))
        size = -(-len(texts) // (self.num_workers * 4))
        tasks = [(texts[i:i + size], with_starts) for i in range(0, len(texts), size)]
        all_ids: list[list[int]] = []
        all_starts: list[list[bool]] | None = [] if with_starts else None
        for ids, starts in self._pool.imap(_encode_in_worker, tasks):
            all_ids += ids
            if with_starts:
                all_starts += starts
        return all_ids, all_starts

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
        """Token ids of each text; with ``add_special_tokens``, ``[CLS] ... [SEP]`` as ``tokenizer(text)``."""
        encoded, _ = self._encode_parallel(texts, False)
        if add_special_tokens:
            return [[self.cls_token_id, *ids, self.sep_token_id] for ids in encoded]
        return encoded

    def encode_batch_with_word_starts(self, texts: list[str]) -> list[tuple[list[int], list[bool]]]:
        """(ids, starts) per text: ``starts[i]`` is True where token i begins a MeCab word (whole-word masking)."""
        return list(zip(*self._encode_parallel(texts, True)))

    def word_starts_batch(self, texts: list[str]) -> list[list[bool]]:
        return self._encode_parallel(texts, True)[1]


def train_tokenizer(*args, **kwargs) -> dict:
    """Train and save a tokenizer: see :func:`lmpretrain.tokenizer_training.train_tokenizer` (kept here for the
    stable import path ``lmpretrain.tokenization.train_tokenizer``)."""
    from .tokenizer_training import train_tokenizer as train

    return train(*args, **kwargs)
