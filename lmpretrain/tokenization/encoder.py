"""``FastEncoder``, the toolkit's fast, exact encoder: the ids ``AutoTokenizer.from_pretrained(tokenizer_dir)``
gives, for every kind of tokenizer dir (see :mod:`.tokenizer_dir`).

Without a word segmenter it runs the same tokenizer.json. With one (MeCab) it runs the same segmentation once per
line, through the segmenter interface (:mod:`.segmenters`), and looks each word's subword ids up in a cache filled
by transformers' own per-word algorithm: greedy longest match over vocab.txt, or spiece.model through the
sentencepiece library with transformers' digit-comma rule (a model converted from `tokenizers` or trained by the
library itself: the same code).
"""

from __future__ import annotations

import gc
import json
import os
import re
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..log import get_logger
from ..workers import BrokenProcessPool, ordered_map, worker_died, worker_pool
from .causal import adds_nothing
from .segmenters import get_segmenter, segmenter_from_meta
from .segmenters.base import SENTENCE_ENDS
from .tokenizer_dir import (
    MAX_INPUT_CHARS_PER_WORD,
    META_FILE,
    ROLES,
    SPECIAL_TOKENS,
    SPIECE_UNDERLINE,
    TOKENIZER_FILES,
    foreign_meta,
    read_meta,
    read_vocabulary,
    special_tokens_of,
    tokenizer_fingerprint,
)

logger = get_logger(__name__)

MAX_CACHED_WORDS = 1 << 17  # learned words per process (~20 MB); word frequencies are Zipfian: > 95% hits
_PARALLEL_MIN_TEXTS = 256
REQUIRED_ROLES = ("cls_token", "sep_token")  # what every layout needs (a masked LM needs mask_token too: prepare)
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


def _transformers_backend(directory: Path):
    """(tokenizers pipeline, metadata) of a tokenizer dir saved by transformers: ``AutoTokenizer``'s own backend
    (transformers 5 builds it from tokenizer.json or converts a slow tokenizer's files, with the normalizer its
    tokenizer_config.json asks for), so the ids are transformers' whatever the files. A tokenizer without one (a
    Python tokenizer such as BertJapaneseTokenizer) is one UserError."""
    from transformers import AutoTokenizer

    if not any((directory / name).is_file() for name in TOKENIZER_FILES if name != META_FILE):
        raise UserError(f"{directory} is not a tokenizer dir: no {META_FILE} (train_tokenizer.py's) and no tokenizer "
                        "files saved by transformers (tokenizer.json, tokenizer_config.json, vocab files)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = " ".join(str(error).split())
        raise UserError(f"{directory} has no {META_FILE} (not a dir of train_tokenizer.py) and AutoTokenizer cannot "
                        f"load it: {reason}") from None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    meta = foreign_meta(tokenizer)
    if backend is None:
        logger.warning("%s: %s is a Python tokenizer (no tokenizers backend): the dataset is encoded through "
                       "transformers itself, slower than the toolkit's encoder (no word cache, no fast path); "
                       "train_tokenizer.py with the same segmenter and algorithm gives a dir it encodes fast",
                       directory, meta["tokenizer_class"])
        return tokenizer, meta
    logger.info("%s: a tokenizer saved by transformers (%s, %s), encoded through the tokenizers pipeline "
                "AutoTokenizer builds for it", directory, meta["tokenizer_class"], meta["tokenizer_type"])
    return backend, meta


def _bert_japanese_meta(directory: Path) -> dict | None:
    """A BertJapaneseTokenizer dir saved by transformers (a hub model's, e.g. cl-tohoku's) whose settings this
    toolkit reproduces (MeCab or Sudachi, WordPiece or sentencepiece, no lowercasing; see
    :mod:`.transformers_base`): its metadata, so that it is encoded fast, as the toolkit's own dirs are (the same
    ids: they are BertJapaneseTokenizer dirs too). None for any other dir; one it cannot reproduce is encoded
    through transformers itself, with a warning saying why."""
    from .transformers_base import bert_japanese_meta, is_bert_japanese

    config_path = directory / "tokenizer_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    except ValueError:
        return None  # AutoTokenizer's own error names the file
    if not isinstance(config, dict) or not is_bert_japanese(config):
        return None
    try:
        meta = bert_japanese_meta(directory, config, str(directory), config_path)
    except UserError as error:
        logger.warning("%s: not encoded by the toolkit's fast encoder: %s", directory, error)
        return None
    logger.info("%s: a BertJapaneseTokenizer saved by transformers (%s + %s), encoded by the toolkit's fast encoder",
                directory, meta["word_tokenizer"], meta["tokenizer_type"])
    return meta


def _word_starts(word_ids: list[int | None]) -> list[bool]:
    starts, previous = [], None
    for word in word_ids:
        starts.append(word != previous)
        previous = word
    return starts


def _space_starts(tokens: list[str], word_ids: list[int | None]) -> list[bool]:
    """Word starts of a text whose pieces may span spaces: a piece that begins with a space, or the first piece
    after a special token (word_ids change there)."""
    starts, previous = [], None
    for token, word in zip(tokens, word_ids):
        starts.append(word != previous or token.startswith(SPIECE_UNDERLINE))
        previous = word
    return starts


class FastEncoder:
    """Encode text to ids exactly as ``AutoTokenizer.from_pretrained(tokenizer_dir)`` does, but fast, in batches.

    With a word segmenter, a line is NFKC + its words (one segmenter call), and each word's subword ids come from a
    per-process cache, filled by transformers' own per-word algorithms (greedy longest match over ``vocab.txt``,
    or sentencepiece over ``spiece.model`` with the digit-comma rule). Special tokens written in the text
    (``[MASK]``) are split off first, as transformers does. ``num_workers > 1`` encodes large batches in a pool
    of processes, started on first use and stopped by ``close()``.
    """

    def __init__(self, tokenizer_dir: Path, meta: dict, vocab: dict[str, int], num_workers: int, backend=None):
        self.tokenizer_dir = Path(tokenizer_dir)
        self.meta = meta
        self.num_workers = max(1, num_workers)
        self.algorithm = meta["tokenizer_type"]
        self.vocab_size = len(vocab)
        specials = special_tokens_of(meta)
        self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id = (
            vocab.get(t) if t is not None else None for t in specials)
        self.all_special_ids = sorted(vocab[t] for t in specials if t is not None and t in vocab)
        if self.pad_token_id is None:  # a GPT-2 tokenizer declares no padding: pad with its end of text, as is usual
            self.pad_token_id = self.sep_token_id
        self.unused_token_ids = sorted(i for t, i in vocab.items() if re.fullmatch(r"\[unused\d+\]", t))
        """``[unused0]``... : reserved for users, never masked nor drawn as random replacements."""
        self.fingerprint = tokenizer_fingerprint(self.tokenizer_dir)
        self._token_texts = vocab
        self._pool = None
        self._rust = None  # the whole tokenizer.json pipeline (no word segmenter)
        self._ids: dict[str, tuple[int, ...]] = {}  # word -> subword ids
        self._known: dict[str, tuple[int, ...]] = {}  # words the cache always holds
        self._starts: dict[str, tuple[bool, ...]] = {}  # word -> (True, False, ...)
        self.has_word_boundaries = True
        """False for a tokenizer.json without a pre-tokenizer: whole-word masking then sees each text as one word."""
        self._python = None  # a Python tokenizer of transformers (BertJapaneseTokenizer), run as it is
        if backend is not None and not hasattr(backend, "encode_batch"):
            self._python, self._segmenter = backend, None
            return
        self._segmenter = get_segmenter(*segmenter_from_meta(meta))
        if self._segmenter is None:
            from tokenizers import Tokenizer

            self._rust = backend or Tokenizer.from_file(str(self.tokenizer_dir / "tokenizer.json"))
            self.has_word_boundaries = self._rust.pre_tokenizer is not None
            # a SentencePiece model whose pieces may span spaces is not split into words before it: a word then
            # starts at each piece that starts with a space (its "▁"), not once per text
            self._starts_at_spaces = (meta.get("spec") or {}).get("spm_split_by_whitespace") is False
            return
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

    def sentence_marks(self) -> np.ndarray:
        """One ``uint8`` per id: bit 1 where the token's text ends in a sentence end of the long-line rule
        (``SENTENCE_ENDS``: ``。！？!?`` or a full stop), bit 2 where it starts with a digit, bit 4 where it ends in a
        full stop (before a digit: a decimal point, not a sentence end). Where instances cut a long line
        (``data.instances.split_long_lines``)."""
        marks = np.zeros(self.vocab_size, dtype=np.uint8)
        for token, i in self._token_texts.items():
            text = token[2:] if token.startswith("##") else token.lstrip("\u2581")
            if text and text not in SPECIAL_TOKENS:
                marks[i] = ((1 if text[-1] in SENTENCE_ENDS else 0) | (2 if text[0].isdigit() else 0)
                            | (4 if text[-1] == "." else 0))
        return marks

    @classmethod
    def from_pretrained(cls, tokenizer_dir: str | Path, num_workers: int = 1) -> FastEncoder:
        directory = Path(tokenizer_dir)
        if not directory.is_dir():
            raise UserError(f"tokenizer dir {directory} does not exist")
        try:
            meta, backend = read_meta(directory), None
            if meta is None:
                meta = _bert_japanese_meta(directory)
            if meta is None:  # saved by transformers: encoded by the tokenizers pipeline transformers itself runs
                backend, meta = _transformers_backend(directory)
                vocab = backend.get_vocab(with_added_tokens=True) if hasattr(backend, "encode_batch") else \
                    backend.get_vocab()
            else:
                vocab = read_vocabulary(directory, meta)
            if meta.get("saved_by") == "transformers":
                missing = [f"{role} ({token})" if token else role
                           for role, token in zip(ROLES, special_tokens_of(meta))
                           if role in REQUIRED_ROLES and (token is None or token not in vocab)]
            else:
                missing = [t for t in SPECIAL_TOKENS if t not in vocab]
            if missing:
                raise UserError(f"{directory}: the vocabulary lacks the special tokens {missing}")
        except (OSError, ValueError, KeyError) as error:
            raise UserError(f"{directory}: cannot read the tokenizer files ({error})") from None
        return cls(directory, meta, vocab, num_workers, backend=backend)

    @property
    def max_line_bytes(self) -> int | None:
        """The longest text its word segmenter takes at once (longer ones it cuts, see
        ``segmenters.base.split_long_text``); None without a segmenter or a limit."""
        return getattr(self._segmenter, "max_input_bytes", None)

    @property
    def ends_lines_at_nul(self) -> bool:
        """Whether its word segmenter ends a text at its first NUL character (MeCab, as in transformers)."""
        return bool(getattr(self._segmenter, "ends_at_nul", False))

    def __reduce__(self):
        return (FastEncoder.from_pretrained, (str(self.tokenizer_dir), 1))

    def __enter__(self) -> FastEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # -- subword ids of one word, as transformers' subword tokenizers compute them ----------------------

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

    def _encode_words(self, texts: list[str], with_starts: bool) -> tuple[list[list[int]], list[list[bool]] | None]:
        """Ids (and word starts) per text: the segmenter's words, then cached subword ids; no special tokens here."""
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
        if self._python is not None:
            ids = self._python(texts, add_special_tokens=False)["input_ids"]
            if not with_starts:
                return ids, None
            # its subword markers: WordPiece's '##' continues a word, SentencePiece's '▁' starts one
            marker = self.algorithm == "wordpiece"
            starts = [[not t.startswith("##") if marker else t.startswith(SPIECE_UNDERLINE) or k == 0
                       for k, t in enumerate(self._python.convert_ids_to_tokens(row))] for row in ids]
            return ids, starts
        if self._rust is not None:
            encodings = self._rust.encode_batch(texts, add_special_tokens=False)
            if not with_starts:
                return [e.ids for e in encodings], None
            if self._starts_at_spaces:
                return [e.ids for e in encodings], [_space_starts(e.tokens, e.word_ids) for e in encodings]
            return [e.ids for e in encodings], [_word_starts(e.word_ids) for e in encodings]
        special = self._special
        if not any("[" in text and special.search(text) for text in texts):
            return self._encode_words(texts, with_starts)
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
        piece_ids, piece_starts = self._encode_words(pieces, True)
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
        if self._pool is None:  # forked: the workers start from this encoder (its segmenter, its warm cache)
            self._pool = worker_pool(self.num_workers, _init_encoder_worker, (self,), inherit=True)
        size = -(-len(texts) // (self.num_workers * 4))
        tasks = [(texts[i:i + size], with_starts) for i in range(0, len(texts), size)]
        all_ids: list[list[int]] = []
        all_starts: list[list[bool]] | None = [] if with_starts else None
        try:
            for ids, starts in ordered_map(self._pool, _encode_in_worker, tasks, 2 * self.num_workers + 2):
                all_ids += ids
                if with_starts:
                    all_starts += starts
        except BrokenProcessPool as error:
            self.close()
            raise worker_died(error, "encoding text", "encoding", self.num_workers, "num_workers") from None
        return all_ids, all_starts

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False,
                     causal_lm: bool = False) -> list[list[int]]:
        """Token ids of each text; with ``add_special_tokens``, what ``tokenizer(text)`` adds: ``[CLS] ... [SEP]``,
        or for the tokenizer saved with a causal LM (``causal_lm``) nothing where it is a tokenizer.json (see
        :mod:`.causal`)."""
        encoded, _ = self._encode_parallel(texts, False)
        if add_special_tokens and not (causal_lm and adds_nothing(self.meta)):
            return [[self.cls_token_id, *ids, self.sep_token_id] for ids in encoded]
        return encoded

    def encode_batch_with_word_starts(self, texts: list[str]) -> list[tuple[list[int], list[bool]]]:
        """(ids, starts) per text: ``starts[i]`` is True where token i begins a word (whole-word masking): a word of
        the segmenter, or of the tokenizer.json pre-tokenizer without one."""
        return list(zip(*self._encode_parallel(texts, True)))

