"""Subword training with the `tokenizers` library (its Rust trainers), made deterministic: its trainers break ties in
hash order, so the same corpus and settings would not give the same files. Here they give byte-identical files,
whatever the number of workers that pre-tokenized the corpus.

Word-segmented + WordPiece is saved as vocab.txt; word-segmented + BPE/Unigram as a sentencepiece model
(``spiece.model``, see :mod:`.spm_export`), the subword format transformers' ``BertJapaneseTokenizer`` reads; without
a word segmenter the whole `tokenizers` pipeline is saved as tokenizer.json.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

from ...errors import UserError
from ..tokenizer_dir import MAX_INPUT_CHARS_PER_WORD, SPIECE_UNDERLINE, TokenizerSpec
from .base import SubwordTrainer


class _CharacterStats:
    """Character counts of the pre-tokenized text: how often each character occurs, and how often as a word's first.

    `tokenizers`' trainers break ties in hash-map order, which differs from run to run (huggingface/tokenizers#1794):
    which characters ``limit_alphabet`` keeps, the ids of WordPiece's ``##c`` tokens (and through them the merges),
    Unigram's scores for rare characters. These counts let ``_train`` fix all three.
    """

    _WORD_START = re.compile(r"(?<!\S)\S")  # a character at the start of a whitespace-separated word

    def __init__(self, bert_words: bool):
        self.counts: Counter = Counter()
        self.initial: Counter = Counter()
        self._bert = None
        if bert_words:  # without a word segmenter, WordPiece's words are BertPreTokenizer's (punctuation splits too)
            from tokenizers import pre_tokenizers

            self._bert = pre_tokenizers.BertPreTokenizer()

    def add(self, lines: list[str]) -> None:
        text = "\n".join(lines)
        self.counts.update(text)
        if self._bert is None:
            self.initial.update(self._WORD_START.findall(text))
        else:
            for line in lines:
                self.initial.update(word[0] for word, _ in self._bert.pre_tokenize_str(line))

    def characters(self) -> Counter:
        """Occurrences of each character inside words (what the trainers count)."""
        return Counter({c: n for c, n in self.counts.items() if not c.isspace()})


def _training_lines(path: Path, batch_lines: int = 1024):
    """The pre-tokenized lines without their line ends (``Tokenizer.train`` on the file would keep the "\n", which
    Metaspace leaves inside words, giving pieces like "。\n" that break vocab.txt)."""
    with open(path, encoding="utf-8") as f:
        batch = []
        for line in f:
            batch.append(line.rstrip("\n"))
            if len(batch) == batch_lines:
                yield batch
                batch = []
        if batch:
            yield batch


def _alphabet(spec: TokenizerSpec, stats: _CharacterStats) -> list[str]:
    """The ``limit_alphabet`` most frequent characters, ties broken by code point (not by hash order)."""
    counts = stats.characters()
    if spec.algorithm != "wordpiece":
        counts[SPIECE_UNDERLINE] += sum(stats.initial.values())  # Metaspace puts one before every word
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:spec.limit_alphabet]
    return sorted(c for c, _ in ranked)


def _build_rust_tokenizer(spec: TokenizerSpec, stats: _CharacterStats, word_segmented: bool):
    """The untrained `tokenizers` pipeline and its trainer for the spec."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = spec.special_tokens()
    show = not os.environ.get("LMP_NO_PROGRESS") and sys.stdout.isatty()  # its bars print blank lines otherwise
    alphabet = _alphabet(spec, stats)
    if spec.algorithm == "wordpiece":
        # ##c for each kept character found inside a word, created up front in a fixed order: the trainer would
        # number them in hash order, and its merges break count ties by those numbers
        seeds = ["##" + c for c in alphabet if stats.counts[c] > stats.initial[c]]
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
        tokenizer.pre_tokenizer = (pre_tokenizers.WhitespaceSplit() if word_segmented
                                   else pre_tokenizers.BertPreTokenizer())
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=spec.vocab_size, min_frequency=spec.min_frequency,
                                            limit_alphabet=len(alphabet), initial_alphabet=alphabet,
                                            special_tokens=specials + seeds, show_progress=show)
    elif spec.algorithm == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, min_frequency=spec.min_frequency,
                                      limit_alphabet=len(alphabet), initial_alphabet=alphabet,
                                      special_tokens=specials, show_progress=show)
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=spec.vocab_size, special_tokens=specials, unk_token="[UNK]",
                                          show_progress=show)
    if not word_segmented:
        tokenizer.normalizer = normalizers.NFKC()
    return tokenizer, trainer


def _canonical_wordpiece(tokenizer, spec: TokenizerSpec):
    """The trained WordPiece with its ##c seeds as ordinary tokens: specials, characters, ##characters, the rest."""
    from tokenizers import Tokenizer, models

    specials = spec.special_tokens()
    tokens = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    rest = tokens[len(specials):]  # the trainer numbers the special tokens first
    order = (specials + [t for t in rest if len(t) == 1] + [t for t in rest if len(t) == 3 and t.startswith("##")]
             + [t for t in rest if len(t) > 1 and not (len(t) == 3 and t.startswith("##"))])
    rebuilt = Tokenizer(models.WordPiece({t: i for i, t in enumerate(order)}, unk_token="[UNK]",
                                         max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    rebuilt.normalizer, rebuilt.pre_tokenizer, rebuilt.decoder = (tokenizer.normalizer, tokenizer.pre_tokenizer,
                                                                  tokenizer.decoder)
    rebuilt.add_special_tokens(specials)
    return rebuilt


def _canonical_unigram(tokenizer, spec: TokenizerSpec, stats: _CharacterStats) -> None:
    """Give the trainer's penalized characters their scores by frequency, and order pieces by (score, piece).

    The Unigram trainer adds every character the pruned model lacks with score ``min + k * 1e-4``, k in hash order;
    sentencepiece gives the smaller penalties to the more frequent characters, and so do we. Scores are rounded to
    1e-6 (their noise is ~1e-15; a log-probability difference of 1e-6 changes no practical segmentation).
    """
    from tokenizers import models

    model = json.loads(tokenizer.to_str())["model"]
    n_specials = len(spec.special_tokens())
    specials, pieces = model["vocab"][:n_specials], model["vocab"][n_specials:]
    if pieces:
        characters_by_score: dict[float, list[str]] = {}
        for piece, score in pieces:
            if len(piece) == 1:
                characters_by_score.setdefault(score, []).append(piece)
        lowest = min(score for _, score in pieces)
        penalized, scores, penalty = [], [], 0.0
        while lowest + penalty in characters_by_score:  # the trainer's sequence, computed as it does
            found = characters_by_score[lowest + penalty]
            penalized.extend(found)
            scores.extend([lowest + penalty] * len(found))
            penalty += 0.0001
        fixed = dict(zip(sorted(penalized, key=lambda c: (-stats.counts[c], c)), scores))
        # EM sums in hash order, so scores also differ from run to run in their last bits: round those away
        pieces = sorted(([p, round(fixed.get(p, score), 6)] for p, score in pieces), key=lambda ps: (-ps[1], ps[0]))
    tokenizer.model = models.Unigram([tuple(v) for v in specials + pieces], unk_id=spec.special_tokens().index("[UNK]"),
                                     byte_fallback=False)


def _train(spec: TokenizerSpec, segmented: Path, lines: int, stats: _CharacterStats, word_segmented: bool):
    """Train the subword model on the pre-tokenized file; the same input always gives the same tokenizer."""
    tokenizer, trainer = _build_rust_tokenizer(spec, stats, word_segmented)
    if not word_segmented and spec.algorithm != "wordpiece":
        tokenizer.normalizer = None  # the segmented file is already NFKC; restored below for saving
    try:
        tokenizer.train_from_iterator(_training_lines(segmented), trainer, length=lines)
    except Exception as error:
        if "not large enough" not in str(error):
            raise
        needed = len(stats.characters()) + len(spec.special_tokens())
        raise UserError(f"--vocab_size {spec.vocab_size} is too small: {spec.tokenizer_type} keeps every character "
                        f"of the corpus, and its characters and {len(spec.special_tokens())} special tokens "
                        f"already need about {needed}") from None
    if not word_segmented:
        from tokenizers import normalizers

        tokenizer.normalizer = normalizers.NFKC()
    if spec.algorithm == "wordpiece":
        tokenizer = _canonical_wordpiece(tokenizer, spec)
    elif spec.algorithm == "unigram":
        _canonical_unigram(tokenizer, spec, stats)
    return tokenizer


def _write_vocab_txt(tokenizer, path: Path) -> None:
    """One token per line in id order, as transformers' load_vocab reads it back."""
    tokens = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    if [i for _, i in tokens] != list(range(len(tokens))):
        raise ValueError("the trained vocabulary's ids are not 0..n-1")
    broken = [t for t, _ in tokens if "\n" in t or "\r" in t]
    if broken:  # would shift every later id in vocab.txt
        raise ValueError(f"vocabulary tokens contain line breaks: {broken[:3]!r}")
    path.write_text("".join(token + "\n" for token, _ in tokens), encoding="utf-8")


class TokenizersTrainer(SubwordTrainer):
    """WordPiece, BPE or Unigram trained by `tokenizers` on the pre-tokenized corpus."""

    def __init__(self, spec: TokenizerSpec, word_segmented: bool):
        super().__init__(spec, word_segmented)
        self._stats = _CharacterStats(bert_words=not word_segmented and spec.algorithm == "wordpiece")
        self._tokenizer = None

    def observe(self, lines: list[str]) -> None:
        self._stats.add(lines)

    def vocab_floor(self, final: bool = False) -> tuple[int, str] | None:
        """WordPiece and BPE keep the ``limit_alphabet`` most frequent characters (all, when fewer) whatever
        ``vocab_size`` says, and WordPiece a ``##c`` form of each one found inside a word (counted once the whole
        corpus is in: which characters the alphabet keeps can change until then). Unigram: None (its trainer says)."""
        if self.spec.algorithm not in ("wordpiece", "bpe"):
            return None
        stats, spec = self._stats, self.spec
        distinct = sum(1 for c in stats.counts if not c.isspace())
        if spec.algorithm == "bpe" and stats.initial and SPIECE_UNDERLINE not in stats.counts:
            distinct += 1  # the word-start mark Metaspace adds
        characters = min(distinct, spec.limit_alphabet)
        specials = len(spec.special_tokens())
        kept = (f"the --limit_alphabet {spec.limit_alphabet} most frequent of its {distinct}"
                if distinct > spec.limit_alphabet else f"all {distinct} of the corpus; --limit_alphabet is "
                                                        f"{spec.limit_alphabet}")
        parts = [f"{specials} special and unused tokens", f"{characters} characters ({kept})"]
        floor = specials + characters
        if final and spec.algorithm == "wordpiece":
            inside = sum(1 for c in _alphabet(spec, stats) if stats.counts[c] > stats.initial[c])
            parts.append(f"{inside} word-internal forms of them (##c)")
            floor += inside
        return floor, " + ".join(parts)

    def train(self, segmented: Path, num_lines: int) -> int:
        self._tokenizer = _train(self.spec, segmented, num_lines, self._stats, self.word_segmented)
        return self._tokenizer.get_vocab_size()

    def save(self, out: Path) -> dict:
        from tokenizers import processors

        tokenizer, algorithm = self._tokenizer, self.spec.algorithm
        if self.word_segmented:
            if algorithm == "wordpiece":
                config = {"subword_tokenizer_type": "wordpiece"}
            else:
                from .spm_export import write_sentencepiece_model

                write_sentencepiece_model(tokenizer, algorithm, out / "spiece.model")
                config = {"subword_tokenizer_type": "sentencepiece", "spm_file": "spiece.model"}
            _write_vocab_txt(tokenizer, out / "vocab.txt")  # for sentencepiece only a readable list of the pieces
            return config
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id),
                                                                                     ("[SEP]", sep_id)])
        tokenizer.save(str(out / "tokenizer.json"))
        if algorithm == "wordpiece":
            _write_vocab_txt(tokenizer, out / "vocab.txt")
        return {"tokenizer_class": "PreTrainedTokenizerFast"}
