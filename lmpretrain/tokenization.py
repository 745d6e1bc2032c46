"""Tokenizer training and saving in HF format, and ``FastEncoder``: the toolkit's fast, exact encoder.

What a tokenizer dir holds, by (dictionary, algorithm):

| MeCab | subword      | AutoTokenizer class                           | FastEncoder runs                      |
|-------|--------------|-----------------------------------------------|---------------------------------------|
| a dic | wordpiece    | BertJapaneseTokenizer (mecab + wordpiece)     | fugashi + Rust WordPiece on the words |
| a dic | bpe, unigram | BertJapaneseTokenizer (mecab + sentencepiece) | fugashi + sentencepiece on the words  |
| none  | any          | PreTrainedTokenizerFast (tokenizer.json)      | the same tokenizer.json               |

For MeCab + BPE/Unigram the subword model is trained with the `tokenizers` library and written as a
sentencepiece model (``spiece.model``), which is the subword format transformers' BertJapaneseTokenizer
reads; FastEncoder runs that same file through the sentencepiece library, so the ids are identical.
``lmpretrain_tokenizer.json`` records the dictionary (name, package and dictionary versions), MeCab
options, normalization (NFKC) and the training settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import __version__
from .errors import UserError
from .log import get_logger, progress
from .pretokenize import DICTIONARIES, NORMALIZATION, ParallelSegmenter, dictionary_info

logger = get_logger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
META_FILE = "lmpretrain_tokenizer.json"
SUBWORD_FILE = "lmpretrain_wordpiece.json"  # the Rust WordPiece FastEncoder runs on MeCab words
ALGORITHMS = {"wordpiece": "wordpiece", "bpe": "bpe", "sentencepiece": "bpe", "unigram": "unigram"}
MAX_INPUT_CHARS_PER_WORD = 100  # as transformers' WordpieceTokenizer
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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer_dir: str | Path) -> str:
    """sha256 over the tokenizer files' contents: changes whenever the tokens could."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = Path(tokenizer_dir) / name
        if path.is_file():
            digest.update(f"{name}:{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------------------

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
    try:
        recorded = json.loads(meta_path.read_text(encoding="utf-8"))["spec"]
    except (ValueError, KeyError):
        raise UserError(f"{meta_path} is corrupt; choose another --model_dir") from None
    differences = [f"{k} {recorded.get(k)!r} -> {v!r}" for k, v in asdict(spec).items() if recorded.get(k) != v]
    if differences:
        raise UserError(f"--model_dir {model_dir} holds a different tokenizer ({'; '.join(differences)}); "
                        "choose another --model_dir or remove it")


def _pretokenize(files, spec: TokenizerSpec, out_path: Path, num_workers: int) -> tuple[int, int]:
    """MeCab-segment the corpus into ``out_path`` (words separated by spaces, one sentence per line)."""
    from .data.corpus import iter_chunks

    total_bytes = sum(f.stat().st_size for f in files)
    segmenter = ParallelSegmenter(spec.mecab_dic_type, spec.mecab_option, num_workers)
    lines = chars = 0
    try:
        chunks = (sentences for sentences, _ in iter_chunks(files, chunk_chars=1 << 18))
        with open(out_path, "w", encoding="utf-8") as out, \
                progress(total=total_bytes, desc="pre-tokenize (MeCab)", unit="B", unit_scale=True) as bar:
            for words_list in segmenter.map(chunks):
                for words in words_list:
                    if words:
                        line = " ".join(words)
                        out.write(line + "\n")
                        lines += 1
                        chars += len(line)
                        bar.update(len(line.encode("utf-8")))
    finally:
        segmenter.close()
    return lines, chars


def _build_rust_tokenizer(spec: TokenizerSpec):
    """The untrained `tokenizers` pipeline and its trainer for the spec."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = spec.special_tokens()
    show = not os.environ.get("LMP_NO_PROGRESS")
    mecab = spec.mecab_dic_type != "none"
    if spec.algorithm == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit() if mecab else pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=spec.vocab_size, min_frequency=spec.min_frequency,
                                            limit_alphabet=spec.limit_alphabet, special_tokens=specials,
                                            show_progress=show)
    elif spec.algorithm == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, min_frequency=spec.min_frequency,
                                      limit_alphabet=spec.limit_alphabet, special_tokens=specials,
                                      show_progress=show)
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=spec.vocab_size, special_tokens=specials, unk_token="[UNK]",
                                          show_progress=show)
    if not mecab:
        tokenizer.normalizer = normalizers.NFKC()
    return tokenizer, trainer


def _special_tokens_config() -> dict:
    return {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
            "mask_token": "[MASK]"}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _save(tokenizer, spec: TokenizerSpec, out: Path, stats: dict) -> None:
    """Write the tokenizer files of ``spec``'s combination into ``out``."""
    from tokenizers import processors

    mecab = spec.mecab_dic_type != "none"
    specials = _special_tokens_config()
    config = {**specials, "model_max_length": 512, "do_lower_case": False}
    if mecab and spec.algorithm == "wordpiece":
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        (out / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
        tokenizer.pre_tokenizer = None  # FastEncoder feeds MeCab words directly
        tokenizer.save(str(out / SUBWORD_FILE))
        config.update(tokenizer_class="BertJapaneseTokenizer", word_tokenizer_type="mecab",
                      subword_tokenizer_type="wordpiece",
                      mecab_kwargs={"mecab_dic": spec.mecab_dic_type, "mecab_option": spec.mecab_option})
    elif mecab:
        from .spm_export import write_sentencepiece_model

        write_sentencepiece_model(tokenizer, spec.algorithm, out / "spiece.model")
        (out / "vocab.txt").write_text("".join(t + "\n" for t, _ in sorted(tokenizer.get_vocab().items(),
                                                                           key=lambda kv: kv[1])), encoding="utf-8")
        config.update(tokenizer_class="BertJapaneseTokenizer", word_tokenizer_type="mecab",
                      subword_tokenizer_type="sentencepiece", spm_file="spiece.model",
                      mecab_kwargs={"mecab_dic": spec.mecab_dic_type, "mecab_option": spec.mecab_option})
    else:
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id),
                                                                                     ("[SEP]", sep_id)])
        tokenizer.save(str(out / "tokenizer.json"))
        config.update(tokenizer_class="PreTrainedTokenizerFast")
        if spec.algorithm == "wordpiece":
            vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
            (out / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json", specials)
    meta = {"lmpretrain_version": __version__, "spec": asdict(spec), "mecab_dic_type": spec.mecab_dic_type,
            "tokenizer_type": spec.algorithm, "dictionary": dictionary_info(spec.mecab_dic_type),
            "mecab_option": spec.mecab_option, "normalization": NORMALIZATION,
            "vocab_size": tokenizer.get_vocab_size(), "training": stats}
    _write_json(out / META_FILE, meta)


def _replace_dir(tmp: Path, model_dir: Path) -> None:
    """Move a finished tmp dir into place; an existing (same-settings or empty) dir is swapped out, not merged."""
    if model_dir.exists():
        old = model_dir.with_name(f".{model_dir.name}.old-{os.getpid()}")
        model_dir.rename(old)
        tmp.rename(model_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(model_dir)


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
    work = Path(tempfile.mkdtemp(prefix="pretokenized-", dir=intermediate_dir)) if intermediate_dir else tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    try:
        segmented = work / "segmented.txt"
        lines, chars = _pretokenize(files, spec, segmented, num_workers)
        if lines == 0:
            raise UserError(f"--input_file {', '.join(map(str, files))} has no text")
        tokenizer, trainer = _build_rust_tokenizer(spec)
        if spec.mecab_dic_type == "none" and spec.algorithm != "wordpiece":
            tokenizer.normalizer = None  # the segmented file is already NFKC; restored below for saving
        tokenizer.train([str(segmented)], trainer)
        if spec.mecab_dic_type == "none":
            from tokenizers import normalizers

            tokenizer.normalizer = normalizers.NFKC()
        trained_size = tokenizer.get_vocab_size()
        if trained_size > spec.vocab_size:
            raise UserError(f"--vocab_size {spec.vocab_size} is too small: the alphabet (up to --limit_alphabet "
                            f"{spec.limit_alphabet} characters) and {len(spec.special_tokens())} special tokens "
                            f"already need {trained_size}")
        shutil.rmtree(work, ignore_errors=True)
        stats = {"lines": lines, "characters": chars, "files": [str(f) for f in files]}
        _save(tokenizer, spec, tmp, stats)
        _replace_dir(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if intermediate_dir:
            shutil.rmtree(work, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    return {"model_dir": str(model_dir), "vocab_size": trained_size, "lines": lines, "characters": chars,
            "seconds": round(seconds, 1), "tokenizer_type": spec.algorithm, "mecab_dic_type": spec.mecab_dic_type}


# ----------------------------------------------------------------------------------------------------------------
# encoding
# ----------------------------------------------------------------------------------------------------------------

def _word_starts(word_ids: list[int | None]) -> list[bool]:
    starts, previous = [], None
    for word in word_ids:
        starts.append(word != previous)
        previous = word
    return starts


class FastEncoder:
    """Encode text to ids exactly as ``AutoTokenizer.from_pretrained(tokenizer_dir)`` does, but fast, in batches."""

    def __init__(self, tokenizer_dir: Path, meta: dict, vocab: dict[str, int], num_workers: int):
        self.tokenizer_dir = Path(tokenizer_dir)
        self.meta = meta
        self.num_workers = num_workers
        self.mecab_dic_type = meta["mecab_dic_type"]
        self.algorithm = meta["tokenizer_type"]
        self.vocab_size = len(vocab)
        self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id = (
            vocab[t] for t in SPECIAL_TOKENS)
        self.all_special_ids = sorted(vocab[t] for t in SPECIAL_TOKENS)
        self.fingerprint = tokenizer_fingerprint(self.tokenizer_dir)
        self._segmenter = None
        self._rust = None
        self._spm = None
        from tokenizers import Tokenizer

        if self.mecab_dic_type == "none":
            self._rust = Tokenizer.from_file(str(self.tokenizer_dir / "tokenizer.json"))
            return
        self._segmenter = ParallelSegmenter(self.mecab_dic_type, meta.get("mecab_option"), num_workers)
        if self.algorithm == "wordpiece":
            self._rust = Tokenizer.from_file(str(self.tokenizer_dir / SUBWORD_FILE))
        else:
            import sentencepiece

            self._spm = sentencepiece.SentencePieceProcessor(model_file=str(self.tokenizer_dir / "spiece.model"))

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
            if meta["mecab_dic_type"] == "none":
                vocab = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
                from tokenizers import Tokenizer

                vocab = Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab()
            else:
                tokens = (directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
                vocab = {t: i for i, t in enumerate(tokens)}
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
        if self._segmenter is not None:
            self._segmenter.close()

    def _encode(self, texts: list[str]) -> list[tuple[list[int], list[bool]]]:
        if self.mecab_dic_type == "none":
            encodings = self._rust.encode_batch(texts, add_special_tokens=False)
            return [(e.ids, _word_starts(e.word_ids)) for e in encodings]
        words_batch = self._segmenter.words_batch(texts)
        if self._rust is not None:
            encodings = self._rust.encode_batch(words_batch, is_pretokenized=True, add_special_tokens=False)
            return [(e.ids, _word_starts(e.word_ids)) for e in encodings]
        return [self._spm_encode(words) for words in words_batch]

    def _spm_encode(self, words: list[str]) -> tuple[list[int], list[bool]]:
        """sentencepiece per MeCab word, as transformers' SentencepieceTokenizer does (with its digit-comma rule)."""
        ids: list[int] = []
        starts: list[bool] = []
        words = [w.replace("``", '"').replace("''", '"') for w in words]
        for pieces in self._spm.encode(words, out_type=str):
            fixed = []
            for piece in pieces:
                if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
                    sub = self._spm.encode(piece[:-1].replace("\u2581", ""), out_type=str)
                    if piece[0] != "\u2581" and sub[0][0] == "\u2581":
                        sub = sub[1:] if len(sub[0]) == 1 else [sub[0][1:], *sub[1:]]
                    fixed.extend([*sub, piece[-1]])
                else:
                    fixed.append(piece)
            piece_ids = [self._spm.piece_to_id(p) for p in fixed]
            ids.extend(piece_ids)
            starts.extend([True] + [False] * (len(piece_ids) - 1))
        return ids, starts

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
        encoded = [ids for ids, _ in self._encode(texts)]
        if add_special_tokens:
            return [[self.cls_token_id, *ids, self.sep_token_id] for ids in encoded]
        return encoded

    def encode_batch_with_word_starts(self, texts: list[str]) -> list[tuple[list[int], list[bool]]]:
        return self._encode(texts)

    def word_starts_batch(self, texts: list[str]) -> list[list[bool]]:
        return [starts for _, starts in self._encode(texts)]
