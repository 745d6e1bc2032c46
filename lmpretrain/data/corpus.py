"""Corpus reading: ``.txt`` (one sentence per line, a blank line between documents), ``.jsonl`` (one document per
line, its text in a field, one sentence per line of that text), directories of them, and ``.gz``, ``.bz2`` and
``.xz`` versions of each (suffixes in any letter case).

Everything streams: a file is read line by line, never held whole in memory. Invalid UTF-8, malformed JSON and damaged
compressed data are a :class:`UserError` naming the file and line. Files of a corpus directory that are not corpus
files are skipped with a warning naming them; one compressed in a way Python cannot read (``.zst``, ...) is an error.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import stat
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import UserError
from ..fsutil import sha256_file
from ..log import get_logger

logger = get_logger(__name__)

COMPRESSIONS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".lzma": "lzma"}
"""Compressions read by suffix (Python's own gzip, bz2 and lzma modules)."""
UNREADABLE_COMPRESSIONS = {".zst": "zstd", ".zstd": "zstd", ".lz4": "lz4", ".br": "brotli", ".zip": "zip",
                           ".7z": "7z", ".z": "compress"}
CORPUS_SUFFIXES = tuple(kind + compression for kind in (".txt", ".jsonl") for compression in ("", *COMPRESSIONS))
_SHOWN = 10  # skipped files named in a warning
_WARNED_DIRS: set[str] = set()


def compression_of(path: Path) -> str | None:
    """The compression a corpus file is read through (by its suffix, any case): "gzip", "bzip2", "xz", or None."""
    return COMPRESSIONS.get(Path(path).suffix.lower())


def is_jsonl(path: Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".jsonl") or any(name.endswith(".jsonl" + c) for c in COMPRESSIONS)


def _unreadable_compression(path: Path) -> str | None:
    return UNREADABLE_COMPRESSIONS.get(Path(path).suffix.lower())


def _not_a_file(path: Path) -> str:
    """What a path that exists but is neither a regular file nor a directory is, in words."""
    mode = path.stat().st_mode
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def resolve_corpus_files(corpus_paths: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """The corpus files named by ``corpus_paths`` (files, or directories searched recursively), in a stable order.

    In a directory, files ending in one of :data:`CORPUS_SUFFIXES` (any case) are the corpus; one that names a
    corpus file compressed in a way that cannot be read (``x.txt.zst``) is an error; other files are skipped with one
    warning naming them."""
    if isinstance(corpus_paths, (str, os.PathLike)):
        corpus_paths = [corpus_paths]
    files: list[Path] = []
    for name in corpus_paths:
        path = Path(name)
        if path.is_dir():
            found, skipped = [], []
            for p in sorted(path.rglob("*")):
                if not p.is_file():
                    continue
                lower = p.name.lower()
                if lower.endswith(CORPUS_SUFFIXES):
                    found.append(p)
                elif _unreadable_compression(p) and lower[:-len(p.suffix)].endswith((".txt", ".jsonl")):
                    raise UserError(f"corpus file {p} is compressed with {_unreadable_compression(p)}, which is not "
                                    f"read here; decompress it, or recompress it with gzip, bzip2 or xz")
                else:
                    skipped.append(p)
            if not found:
                raise UserError(f"corpus directory {path} holds no .txt or .jsonl files (optionally compressed: "
                                f"{', '.join(COMPRESSIONS)})")
            # warned once a process: each step that reads the corpus resolves it again
            if skipped and str(path.resolve()) not in _WARNED_DIRS:
                _WARNED_DIRS.add(str(path.resolve()))
                names = ", ".join(str(p.relative_to(path)) for p in skipped[:_SHOWN])
                more = f" and {len(skipped) - _SHOWN} more" if len(skipped) > _SHOWN else ""
                logger.warning("corpus directory %s: skipping %d file%s that %s not .txt or .jsonl (optionally "
                               "compressed: %s): %s%s", path, len(skipped), "s" if len(skipped) > 1 else "",
                               "are" if len(skipped) > 1 else "is", ", ".join(COMPRESSIONS), names, more)
            files.extend(found)
        elif path.is_file():
            if _unreadable_compression(path):
                raise UserError(f"corpus file {path} is compressed with {_unreadable_compression(path)}, which is "
                                f"not read here; decompress it, or recompress it with gzip, bzip2 or xz")
            files.append(path)
        elif path.exists():
            raise UserError(f"corpus file {path} is {_not_a_file(path)}: a corpus is read more than once (hashed for "
                            f"the cache's fingerprint, then tokenized), so it must be a regular file; write it to one "
                            f"first")
        else:
            raise UserError(f"corpus file {path} does not exist")
    if not files:
        raise UserError("no corpus files given")
    return files


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (as stored: a ``.gz`` file is hashed compressed), streamed."""
    try:
        return sha256_file(path)
    except OSError as error:
        raise UserError(f"cannot read corpus file {path}: {error.strerror}") from error


def corpus_fingerprint(files: Sequence[Path]) -> list[dict]:
    """One entry per file: its path, size and content hash (the content decides; the path is for messages)."""
    return [{"path": str(Path(f).resolve()), "size": Path(f).stat().st_size, "sha256": file_digest(Path(f))}
            for f in files]


def _open_binary(path: Path) -> io.BufferedIOBase:
    handle = open(path, "rb")
    compression = compression_of(path)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=handle, mode="rb")
    if compression == "bzip2":
        return bz2.BZ2File(handle, mode="rb")
    if compression in ("xz", "lzma"):
        return lzma.LZMAFile(handle, mode="rb")
    return handle


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the line ending) for each line, failing with file:line on invalid UTF-8 and on
    damaged compressed data."""
    number = 0
    try:
        with _open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    hint = f" (or its {compression_of(path)} data are damaged)" if compression_of(path) else ""
                    raise UserError(f"{path}:{number}: invalid UTF-8 (byte {error.start}: "
                                    f"{raw[error.start:error.start + 4]!r}); convert the corpus to UTF-8{hint}") \
                        from None
                if number == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                yield number, text.rstrip("\r\n")
    except (gzip.BadGzipFile, EOFError, zlib.error, lzma.LZMAError) as error:
        raise _damaged(path, number, error) from None
    except OSError as error:
        if compression_of(path) and error.errno is None:  # bz2's "Invalid data stream"
            raise _damaged(path, number, error) from None
        raise UserError(f"cannot read corpus file {path}: {error.strerror or error}") from None


def _damaged(path: Path, lines_read: int, error: Exception) -> UserError:
    kind = compression_of(path)
    where = f"after line {lines_read}" if lines_read else "at its start"
    if isinstance(error, gzip.BadGzipFile) and not lines_read:
        return UserError(f"{path}: not a valid gzip file ({error})")
    return UserError(f"{path}: not a valid {kind} file: its compressed data are damaged or cut short {where} "
                     f"({error or type(error).__name__}); recompress it from the original")


class CorpusPosition:
    """Where reading has got to (file and line), for messages about a failure further down the pipeline."""

    def __init__(self):
        self.path: Path | None = None
        self.line = 0

    def __str__(self) -> str:
        return f"{self.path} near line {self.line}" if self.path is not None else "the corpus"


def iter_sentences(files: Sequence[Path], text_field: str = "text", *, long_line_bytes: int | None = None,
                   position: CorpusPosition | None = None,
                   nul_ends_line: bool = False) -> Iterator[tuple[str, bool]]:
    """Yield ``(sentence, starts_document)`` for each non-blank sentence of the corpus, in order.

    Each file starts a new document; in ``.txt`` files a blank line ends a document; in ``.jsonl`` files each line
    is a document whose ``text_field`` holds its sentences, one per line. ``long_line_bytes``: the longest line the
    word segmenter takes whole; the first longer line of each file gets one warning naming it (the segmenter cuts
    such lines, see ``segmenters.base.split_long_text``). ``position`` is kept at the line being read.
    ``nul_ends_line``: the word segmenter ends a sentence at a NUL character (MeCab, as transformers' tokenizer
    does; kept for parity): a file with such sentences gets one warning naming the first line and the characters lost.
    """
    for path in files:
        jsonl = is_jsonl(path)
        new_document = True
        warned = long_line_bytes is None
        nul_lines, nul_dropped, nul_first = 0, 0, 0
        for number, line in _decoded_lines(path):
            if position is not None:
                position.path, position.line = path, number
            if not warned and len(line) * 4 > long_line_bytes and len(line.encode("utf-8")) > long_line_bytes:
                warned = True
                logger.warning("%s:%d: a line of %d bytes is longer than the word segmenter takes at once (%d): it "
                               "is cut at sentence ends (%s), else at whitespace or a change of script, and the "
                               "pieces segmented one by one (longer lines further in this file too, without a "
                               "warning)", path, number, len(line.encode("utf-8")), long_line_bytes, "。！？!?.")
            if jsonl:
                if not line.strip():
                    continue
                sentences = _jsonl_sentences(path, number, line, text_field)
            elif not line.strip():
                new_document = True
                continue
            else:
                sentences = [line]
            for sentence in sentences:
                if nul_ends_line and "\x00" in sentence:
                    nul_lines += 1
                    nul_dropped += len(sentence) - sentence.index("\x00")
                    nul_first = nul_first or number
                yield sentence, new_document
                new_document = False
            if jsonl:
                new_document = True
        if nul_lines:
            logger.warning("%s:%d: a NUL character: the word segmenter (MeCab) ends a line at its first NUL, as "
                           "transformers' BertJapaneseTokenizer does, so the rest is not tokenized: %d character%s "
                           "dropped from %d line%s of this file (this is the first); remove the NUL characters to "
                           "keep them", path, nul_first, nul_dropped, "s" if nul_dropped != 1 else "", nul_lines,
                           "s" if nul_lines != 1 else "")


def _jsonl_sentences(path: Path, number: int, line: str, text_field: str) -> list[str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{number}: not a JSON object ({error.msg})") from None
    # a text field given twice: JSON would keep the last silently (other repeated fields are not read, so not checked);
    # the cheap count first, so that only a line that may repeat it is parsed again
    if line.count(f'"{text_field}"') > 1 and isinstance(record, dict):
        pairs = json.loads(line, object_pairs_hook=lambda pairs: pairs)
        if sum(key == text_field for key, _ in pairs) > 1:
            raise UserError(f"{path}:{number}: field {text_field!r} is given twice in this JSON line (JSON would "
                            f"silently keep the last one)")
    if not isinstance(record, dict) or text_field not in record:
        raise UserError(f"{path}:{number}: no {text_field!r} field in this JSON line")
    text = record[text_field]
    if not isinstance(text, str):
        raise UserError(f"{path}:{number}: field {text_field!r} is not a string")
    return [s for s in text.splitlines() if s.strip()]


def iter_chunks(files: Sequence[Path], *, chunk_chars: int = 1 << 20, text_field: str = "text",
                long_line_bytes: int | None = None, position: CorpusPosition | None = None,
                nul_ends_line: bool = False) -> Iterator[tuple[list[str], list[bool]]]:
    """Group the corpus's sentences into chunks of about ``chunk_chars`` characters for the tokenizing workers.

    A chunk is ``(sentences, starts_document)``; a long document spans several chunks, so memory stays bounded.
    ``long_line_bytes``, ``position`` and ``nul_ends_line``: as for :func:`iter_sentences`.
    """
    sentences: list[str] = []
    starts: list[bool] = []
    size = 0
    for sentence, starts_document in iter_sentences(files, text_field, long_line_bytes=long_line_bytes,
                                                    position=position, nul_ends_line=nul_ends_line):
        sentences.append(sentence)
        starts.append(starts_document)
        size += len(sentence)
        if size >= chunk_chars:
            yield sentences, starts
            sentences, starts, size = [], [], 0
    if sentences:
        yield sentences, starts
