"""Tokenizer training: the corpus pre-tokenized by the word segmenter in worker processes, the subword model
learnt from it (:mod:`.subword`), and a dir that ``AutoTokenizer.from_pretrained`` loads (see :mod:`.tokenizer_dir`
for the files of each combination). ``train_tokenizer.py`` is a thin wrapper around :func:`train_tokenizer`.

Nothing is written to ``--model_dir`` until the tokenizer is complete: it is built in a hidden temporary dir beside
it and renamed into place; an existing dir is replaced only if it holds a tokenizer with the same settings and
nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..fsutil import process_is_running, replace_dir
from ..log import get_logger, progress
from ..workers import BrokenProcessPool, ordered_map, worker_died, worker_pool
from .segmenters import Unsegmented, Verbatim, WordSegmenter, declaration, get_segmenter
from .subword import SubwordTrainer, subword_trainer
from .tokenizer_dir import META_FILE, TOKENIZER_FILES, TokenizerSpec

logger = get_logger(__name__)


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


def temp_prefix(model_dir: Path) -> str:
    """The name of a run's temporary dir beside ``model_dir`` up to mkdtemp's random part: ``.<dir>.tmp-<host>-<pid>-``,
    so that a later run can tell whose it is (:func:`sweep_stale_temp_dirs`)."""
    return f".{model_dir.name}.tmp-{socket.gethostname()}-{os.getpid()}-"


PRETOKENIZED_PREFIX = ".pretokenized-"


def _stale(path: Path, prefix: str) -> bool:
    """Whether ``path`` (``<prefix><host>-<pid>-<random>``) belongs to a process of this host that is gone."""
    host, _, pid = path.name[len(prefix):].rpartition("-")[0].rpartition("-")
    return host == socket.gethostname() and pid.isdigit() and not process_is_running(int(pid))


def sweep_stale_temp_dirs(model_dir: str | Path, intermediate_dir: str | Path | None = None) -> list[Path]:
    """Remove the temporary dirs that killed runs into ``model_dir`` left (beside it, and their pre-tokenized text in
    ``intermediate_dir``): only those whose owner (host and pid in the name) is a dead process of this host.
    Returns what was removed."""
    model_dir = Path(model_dir)
    places = [(model_dir.parent, f".{model_dir.name}.tmp-")]
    if intermediate_dir is not None:
        places.append((Path(intermediate_dir), PRETOKENIZED_PREFIX))
    removed = []
    for directory, prefix in places:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob(f"{prefix}*")):
            if path.is_dir() and not path.is_symlink() and _stale(path, prefix):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    if removed:
        logger.warning("removed %s: left by tokenizer runs into %s that were killed", ", ".join(map(str, removed)),
                       model_dir)
    return removed


_worker_segmenter: WordSegmenter | None = None


def _init_worker(segmenter: WordSegmenter) -> None:
    global _worker_segmenter
    _worker_segmenter = segmenter


def _segment_lines(texts: list[str]) -> list[str]:
    return _worker_segmenter.lines_batch(texts)


def _segmented_chunks(segmenter: WordSegmenter, chunks: Iterable[list[str]], num_workers: int,
                      position=None) -> Iterator[list[str]]:
    """Each chunk's texts as words joined by single spaces, chunk by chunk, in order; in ``num_workers`` forked
    processes (they start from this process's segmenter) when more than one. ``position``: where reading had got
    to (a ``corpus.CorpusPosition``), named if a worker dies."""
    if num_workers == 1:
        yield from (segmenter.lines_batch(chunk) for chunk in chunks)
        return
    pool = worker_pool(num_workers, _init_worker, (segmenter,), inherit=True)
    try:
        yield from ordered_map(pool, _segment_lines, chunks, 2 * num_workers + 2)
    except BrokenProcessPool as error:
        raise worker_died(error, f"pre-tokenizing {position or 'the corpus'}", "pre-tokenizing", num_workers,
                          "--num_files") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _pretokenize(files, segmenter: WordSegmenter | None, trainer: SubwordTrainer, out_path: Path,
                 num_workers: int) -> tuple[int, int]:
    """Segment the corpus into words, into ``out_path`` (words separated by spaces, one line per input line); without
    a segmenter, NFKC-normalize it. The trainer observes every chunk.

    Chunks of lines go to ``num_workers`` processes and come back in order, so the file (and the tokenizer
    trained on it) is the same for any number of workers. Returns (non-blank lines, their characters).
    """
    from ..data.corpus import CorpusPosition, compression_of, iter_chunks

    compressed = any(compression_of(f) for f in files)
    total_bytes = None if compressed else sum(f.stat().st_size for f in files)
    chunk_bytes: deque = deque()  # input size of each chunk in flight, for the progress bar
    lines = chars = 0
    position = CorpusPosition()

    def chunks():
        nonlocal chars
        for sentences, _ in iter_chunks(files, chunk_chars=1 << 18, position=position,
                                        long_line_bytes=getattr(segmenter, "max_input_bytes", None),
                                        nul_ends_line=bool(getattr(segmenter, "ends_at_nul", False))):
            chars += sum(map(len, sentences))
            chunk_bytes.append(sum(len(s.encode("utf-8")) + 1 for s in sentences))
            yield sentences

    desc = f"pre-tokenize ({segmenter.name})" if segmenter is not None else "pre-tokenize"
    unsegmented = Verbatim() if trainer.verbatim else Unsegmented()
    segmented_chunks = _segmented_chunks(segmenter or unsegmented, chunks(), max(1, num_workers), position)
    try:
        with open(out_path, "w", encoding="utf-8") as out, \
                progress(total=total_bytes, desc=desc, unit="B", unit_scale=True) as bar:
            for segmented in segmented_chunks:
                kept = [line for line in segmented if line]
                out.write("".join(line + "\n" for line in kept))
                trainer.observe(kept)  # while the workers segment the next chunks
                lines += len(kept)
                _check_vocab_floor(trainer, lines)
                bar.update(chunk_bytes.popleft())
            if total_bytes is not None:
                bar.update(max(0, total_bytes - bar.n))  # blank lines and line ends not counted above
    finally:
        segmented_chunks.close()
    return lines, chars


def _check_vocab_floor(trainer: SubwordTrainer, lines: int) -> None:
    """Stop as soon as the lines read prove ``--vocab_size`` too small (not after pre-tokenizing the whole corpus)."""
    floor = trainer.vocab_floor()
    if floor is not None and floor[0] > trainer.spec.vocab_size:
        raise UserError(f"--vocab_size {trainer.spec.vocab_size} is too small: the first {lines} lines of text "
                        f"already make {trainer.spec.tokenizer_type} keep {floor[1]} = {floor[0]} tokens before any "
                        f"subword; raise --vocab_size well above {floor[0]} or lower --limit_alphabet")


def _too_small(trainer: SubwordTrainer, trained_size: int) -> UserError:
    spec = trainer.spec
    floor = trainer.vocab_floor(final=True)
    if floor is not None and floor[0] == trained_size:
        return UserError(f"--vocab_size {spec.vocab_size} is too small: {spec.tokenizer_type} keeps {floor[1]} = "
                         f"{floor[0]} tokens before any subword; raise --vocab_size well above {floor[0]} or lower "
                         f"--limit_alphabet")
    return UserError(f"--vocab_size {spec.vocab_size} is too small: the vocabulary {spec.tokenizer_type} made has "
                     f"{trained_size} tokens{f' ({floor[1]} and {trained_size - floor[0]} more)' if floor else ''}; "
                     f"raise --vocab_size well above {trained_size} or lower --limit_alphabet")


def _special_tokens_config() -> dict:
    return {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
            "mask_token": "[MASK]"}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _save(trainer: SubwordTrainer, segmenter: WordSegmenter | None, spec: TokenizerSpec, out: Path,
          vocab_size: int, stats: dict) -> None:
    """Write the tokenizer files of ``spec``'s combination into ``out``: the segmenter's and the subword model's
    ``tokenizer_config.json`` entries, and the metadata."""
    specials = _special_tokens_config()
    config = {**specials, "model_max_length": 512, "do_lower_case": False}
    if segmenter is not None:
        config.update(segmenter.transformers_config())
    config.update(trainer.save(out))
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json", specials)
    recorded = segmenter.record() if segmenter is not None else None
    text_form = segmenter or (Verbatim() if trainer.verbatim else Unsegmented())  # what the subword model saw
    dictionary = recorded["dictionary"] if recorded is not None else text_form.dictionary_info()
    meta = {"lmpretrain_version": __version__, "spec": asdict(spec),
            "word_tokenizer": segmenter.name if segmenter is not None else "none",
            "mecab_dic_type": spec.legacy_mecab_dic_type,
            "tokenizer_type": spec.algorithm, "dictionary": dictionary, "mecab_option": spec.mecab_option,
            "word_segmenter": recorded, "normalization": text_form.normalization,
            "subword_library": spec.subword_library, "vocab_size": vocab_size, "training": stats}
    _write_json(out / META_FILE, meta)


SEGMENTED_FILE = "segmented.txt"
"""The word-segmented training text (one corpus line a line, words joined by spaces), kept in --intermediate_dir."""


def train_tokenizer(input_file: str | list[str], model_dir: str | Path, spec: TokenizerSpec, *, num_workers: int,
                    intermediate_dir: str | None = None) -> dict:
    """Train and save a tokenizer; returns a summary. Nothing is written to ``model_dir`` until it is complete;
    ``intermediate_dir`` keeps the segmented text (``segmented.txt``, replaced as a whole) after training."""
    from ..data.corpus import resolve_corpus_files

    started = time.perf_counter()
    spec.validate()
    model_dir = Path(model_dir)
    files = resolve_corpus_files(input_file)
    for file in files:
        if file.stat().st_size == 0:
            raise UserError(f"--input_file {file} is empty")
    _check_model_dir(model_dir, spec)
    segmenter = get_segmenter(*spec.word_segmenter())  # a clear error now (dictionary, options), not in a worker
    trainer = subword_trainer(spec, word_segmented=segmenter is not None)

    model_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temp_dirs(model_dir, intermediate_dir)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(model_dir), dir=model_dir.parent))
    work = tmp / "work"
    kept = Path(intermediate_dir) / SEGMENTED_FILE if intermediate_dir else None
    try:
        if kept is not None:  # the segmented text is kept there (users inspect it), renamed into place when complete
            kept.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f"{PRETOKENIZED_PREFIX}{socket.gethostname()}-{os.getpid()}-",
                                         dir=kept.parent))
        else:
            work.mkdir()
        segmented = work / SEGMENTED_FILE
        lines, chars = _pretokenize(files, segmenter, trainer, segmented, num_workers)
        if lines == 0:
            raise UserError(f"--input_file {', '.join(map(str, files))} has no text")
        trained_size = trainer.train(segmented, lines)
        if trained_size > spec.vocab_size:
            raise _too_small(trainer, trained_size)
        if kept is not None:
            segmented.replace(kept)
        shutil.rmtree(work, ignore_errors=True)
        _save(trainer, segmenter, spec, tmp, trained_size,
              {"lines": lines, "characters": chars, "files": [str(f) for f in files]})
        replace_dir(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    return {"model_dir": str(model_dir), "vocab_size": trained_size, "lines": lines, "characters": chars,
            "seconds": round(seconds, 1),
            "tokenizer_type": spec.algorithm if spec.spm_model_type is None else f"SentencePiece {spec.spm_model_type}",
            "mecab_dic_type": spec.legacy_mecab_dic_type,
            "word_segmenter": _describe(spec)}


def _describe(spec: TokenizerSpec) -> str:
    """The word segmenter in a few words, for the summary line ("MeCab ipadic", "Sudachi core (split mode C)")."""
    name, options = spec.word_segmenter()
    return "no word segmenter" if name is None else declaration(name).describe(options)
