"""Tokenizer training: MeCab pre-tokenization in worker processes, the `tokenizers` trainers made deterministic,
and saving a dir that ``AutoTokenizer.from_pretrained`` loads (see :mod:`lmpretrain.tokenization` for the files of
each combination). ``train_tokenizer.py`` is a thin wrapper around :func:`train_tokenizer`.

Nothing is written to ``--model_dir`` until the tokenizer is complete: it is built in a hidden temporary dir beside
it and renamed into place; an existing dir is replaced only if it holds a tokenizer with the same settings and
nothing else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import asdict
from pathlib import Path

from . import __version__
from .errors import UserError
from .fsutil import replace_dir
from .log import progress
from .pretokenize import NORMALIZATION, ParallelSegmenter, dictionary_info
from .tokenization import (
    MAX_INPUT_CHARS_PER_WORD,
    META_FILE,
    SPIECE_UNDERLINE,
    TOKENIZER_FILES,
    TokenizerSpec,
)


def _check_model_dir(model_dir: Path, spec: TokenizerSpec) -> None:
    """An existing dir may be empty or hold a tokenizer with the same settings (then it is replaced)."""
    if not model_dir.exists():
        return
    if not model_dir.is_dir():
        raise UserError(f"--model_dir {model_dir} exists and is not a directory")
    entries = [p for p in model_dir.iterdir() if not p.name.startswith(".")]
    if not entries:
        return
    meta_path = model_dir / META_FILE
    if not meta_path.is_file():
        raise UserError(f"--model_dir {model_dir} already holds files that are not a tokenizer of this toolkit; "
                        "choose an empty or new directory")
    others = sorted(p.name for p in entries if p.name not in TOKENIZER_FILES and p.name != "special_tokens_map.json")
    if others:  # e.g. a pretraining output dir, which carries a copy of its tokenizer: never replace it
        raise UserError(f"--model_dir {model_dir} holds more than a tokenizer ({', '.join(others[:3])}"
                        f"{', ...' if len(others) > 3 else ''}); choose an empty or new directory")
    try:
        recorded = json.loads(meta_path.read_text(encoding="utf-8"))["spec"]
    except (ValueError, KeyError):
        raise UserError(f"{meta_path} is corrupt; choose another --model_dir") from None
    differences = [f"{k} {recorded.get(k)!r} -> {v!r}" for k, v in asdict(spec).items() if recorded.get(k) != v]
    if differences:
        raise UserError(f"--model_dir {model_dir} holds a different tokenizer ({'; '.join(differences)}); "
                        "choose another --model_dir or remove it")


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
        if bert_words:  # without MeCab, WordPiece's words are BertPreTokenizer's (punctuation splits too)
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


def _pretokenize(files, spec: TokenizerSpec, out_path: Path, num_workers: int) -> tuple[int, int, _CharacterStats]:
    """MeCab-segment the corpus into ``out_path`` (words separated by spaces, one line per input line).

    Chunks of lines go to ``num_workers`` processes and come back in order, so the file (and the tokenizer
    trained on it) is the same for any number of workers. Returns (non-blank lines, their characters, statistics).
    """
    from .data.corpus import iter_chunks

    compressed = any(f.name.endswith(".gz") for f in files)
    total_bytes = None if compressed else sum(f.stat().st_size for f in files)
    chunk_bytes: deque = deque()  # input size of each chunk in flight, for the progress bar
    stats = _CharacterStats(bert_words=spec.mecab_dic_type == "none" and spec.algorithm == "wordpiece")
    lines = chars = 0

    def chunks():
        nonlocal chars
        for sentences, _ in iter_chunks(files, chunk_chars=1 << 18):
            chars += sum(map(len, sentences))
            chunk_bytes.append(sum(len(s.encode("utf-8")) + 1 for s in sentences))
            yield sentences

    segmenter = ParallelSegmenter(spec.mecab_dic_type, spec.mecab_option, num_workers)
    try:
        with open(out_path, "w", encoding="utf-8") as out, \
                progress(total=total_bytes, desc="pre-tokenize (MeCab)", unit="B", unit_scale=True) as bar:
            for segmented in segmenter.map_lines(chunks()):
                kept = [line for line in segmented if line]
                out.write("".join(line + "\n" for line in kept))
                stats.add(kept)  # while the workers segment the next chunks
                lines += len(kept)
                bar.update(chunk_bytes.popleft())
            if total_bytes is not None:
                bar.update(max(0, total_bytes - bar.n))  # blank lines and line ends not counted above
    finally:
        segmenter.close()
    return lines, chars, stats


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


def _build_rust_tokenizer(spec: TokenizerSpec, stats: _CharacterStats):
    """The untrained `tokenizers` pipeline and its trainer for the spec."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = spec.special_tokens()
    show = not os.environ.get("LMP_NO_PROGRESS") and sys.stdout.isatty()  # its bars print blank lines otherwise
    mecab = spec.mecab_dic_type != "none"
    alphabet = _alphabet(spec, stats)
    if spec.algorithm == "wordpiece":
        # ##c for each kept character found inside a word, created up front in a fixed order: the trainer would
        # number them in hash order, and its merges break count ties by those numbers
        seeds = ["##" + c for c in alphabet if stats.counts[c] > stats.initial[c]]
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit() if mecab else pre_tokenizers.BertPreTokenizer()
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
    if not mecab:
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


def _train(spec: TokenizerSpec, segmented: Path, lines: int, stats: _CharacterStats):
    """Train the subword model on the pre-tokenized file; the same input always gives the same tokenizer."""
    tokenizer, trainer = _build_rust_tokenizer(spec, stats)
    if spec.mecab_dic_type == "none" and spec.algorithm != "wordpiece":
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
    if spec.mecab_dic_type == "none":
        from tokenizers import normalizers

        tokenizer.normalizer = normalizers.NFKC()
    if spec.algorithm == "wordpiece":
        tokenizer = _canonical_wordpiece(tokenizer, spec)
    elif spec.algorithm == "unigram":
        _canonical_unigram(tokenizer, spec, stats)
    return tokenizer


def _special_tokens_config() -> dict:
    return {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
            "mask_token": "[MASK]"}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _write_vocab_txt(tokenizer, path: Path) -> None:
    """One token per line in id order, as transformers' load_vocab reads it back."""
    tokens = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    if [i for _, i in tokens] != list(range(len(tokens))):
        raise ValueError("the trained vocabulary's ids are not 0..n-1")
    broken = [t for t, _ in tokens if "\n" in t or "\r" in t]
    if broken:  # would shift every later id in vocab.txt
        raise ValueError(f"vocabulary tokens contain line breaks: {broken[:3]!r}")
    path.write_text("".join(token + "\n" for token, _ in tokens), encoding="utf-8")


def _save(tokenizer, spec: TokenizerSpec, out: Path, stats: dict) -> None:
    """Write the tokenizer files of ``spec``'s combination into ``out``."""
    from tokenizers import processors

    mecab = spec.mecab_dic_type != "none"
    specials = _special_tokens_config()
    config = {**specials, "model_max_length": 512, "do_lower_case": False}
    if mecab:
        config.update(tokenizer_class="BertJapaneseTokenizer", word_tokenizer_type="mecab",
                      mecab_kwargs={"mecab_dic": spec.mecab_dic_type, "mecab_option": spec.mecab_option})
        if spec.algorithm == "wordpiece":
            config.update(subword_tokenizer_type="wordpiece")
        else:
            from .spm_export import write_sentencepiece_model

            write_sentencepiece_model(tokenizer, spec.algorithm, out / "spiece.model")
            config.update(subword_tokenizer_type="sentencepiece", spm_file="spiece.model")
        _write_vocab_txt(tokenizer, out / "vocab.txt")  # for sentencepiece only a readable list of the pieces
    else:
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id),
                                                                                     ("[SEP]", sep_id)])
        tokenizer.save(str(out / "tokenizer.json"))
        config.update(tokenizer_class="PreTrainedTokenizerFast")
        if spec.algorithm == "wordpiece":
            _write_vocab_txt(tokenizer, out / "vocab.txt")
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json", specials)
    meta = {"lmpretrain_version": __version__, "spec": asdict(spec), "mecab_dic_type": spec.mecab_dic_type,
            "tokenizer_type": spec.algorithm, "dictionary": dictionary_info(spec.mecab_dic_type),
            "mecab_option": spec.mecab_option, "normalization": NORMALIZATION,
            "vocab_size": tokenizer.get_vocab_size(), "training": stats}
    _write_json(out / META_FILE, meta)


def train_tokenizer(input_file: str | list[str], model_dir: str | Path, spec: TokenizerSpec, *, num_workers: int,
                    intermediate_dir: str | None = None) -> dict:
    """Train and save a tokenizer; returns a summary. Nothing is written to ``model_dir`` until it is complete."""
    from .data.corpus import resolve_corpus_files

    started = time.perf_counter()
    spec.validate()
    model_dir = Path(model_dir)
    files = resolve_corpus_files(input_file)
    for file in files:
        if file.stat().st_size == 0:
            raise UserError(f"--input_file {file} is empty")
    _check_model_dir(model_dir, spec)
    if spec.mecab_dic_type != "none":
        from .pretokenize import dictionary_dir

        dictionary_dir(spec.mecab_dic_type)  # a clear error now, not in a worker

    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.tmp-", dir=model_dir.parent))
    work = tmp / "work"
    try:
        if intermediate_dir:
            Path(intermediate_dir).mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="pretokenized-", dir=intermediate_dir))
        else:
            work.mkdir()
        segmented = work / "segmented.txt"
        lines, chars, stats = _pretokenize(files, spec, segmented, num_workers)
        if lines == 0:
            raise UserError(f"--input_file {', '.join(map(str, files))} has no text")
        tokenizer = _train(spec, segmented, lines, stats)
        trained_size = tokenizer.get_vocab_size()
        if trained_size > spec.vocab_size:
            raise UserError(f"--vocab_size {spec.vocab_size} is too small: the alphabet (up to --limit_alphabet "
                            f"{spec.limit_alphabet} characters) and {len(spec.special_tokens())} special tokens "
                            f"already need {trained_size}")
        shutil.rmtree(work, ignore_errors=True)
        _save(tokenizer, spec, tmp, {"lines": lines, "characters": chars, "files": [str(f) for f in files]})
        replace_dir(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    return {"model_dir": str(model_dir), "vocab_size": trained_size, "lines": lines, "characters": chars,
            "seconds": round(seconds, 1), "tokenizer_type": spec.algorithm, "mecab_dic_type": spec.mecab_dic_type}
