"""Corpus reading: ``.txt`` (one sentence per line, a blank line between documents), ``.jsonl`` (one document per
line, its text in a field, one sentence per line of that text), directories of them, and ``.gz`` versions of each.

Everything streams: a file is read line by line, never held whole in memory. Invalid UTF-8 and malformed JSON are a
:class:`UserError` naming the file and line.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import UserError
from ..fsutil import sha256_file
from ..log import get_logger

logger = get_logger(__name__)

CORPUS_SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")


def resolve_corpus_files(corpus_paths: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """The corpus files named by ``corpus_paths`` (files, or directories searched recursively), in a stable order."""
    if isinstance(corpus_paths, (str, os.PathLike)):
        corpus_paths = [corpus_paths]
    files: list[Path] = []
    for name in corpus_paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(CORPUS_SUFFIXES))
            if not found:
                raise UserError(f"corpus directory {path} holds no {'/'.join(CORPUS_SUFFIXES)} files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
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
    if path.name.endswith(".gz"):
        return gzip.GzipFile(fileobj=handle, mode="rb")
    return handle


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the line ending) for each line, failing with file:line on invalid UTF-8."""
    try:
        with _open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise UserError(f"{path}:{number}: invalid UTF-8 (byte {error.start}: "
                                    f"{raw[error.start:error.start + 4]!r}); convert the corpus to UTF-8") from None
                if number == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                yield number, text.rstrip("\r\n")
    except (gzip.BadGzipFile, EOFError) as error:
        raise UserError(f"{path}: not a valid gzip file ({error})") from None
    except OSError as error:
        raise UserError(f"cannot read corpus file {path}: {error.strerror or error}") from None


class CorpusPosition:
    """Where reading has got to (file and line), for messages about a failure further down the pipeline."""

    def __init__(self):
        self.path: Path | None = None
        self.line = 0

    def __str__(self) -> str:
        return f"{self.path} near line {self.line}" if self.path is not None else "the corpus"


def iter_sentences(files: Sequence[Path], text_field: str = "text", *, long_line_bytes: int | None = None,
                   position: CorpusPosition | None = None) -> Iterator[tuple[str, bool]]:
    """Yield ``(sentence, starts_document)`` for each non-blank sentence of the corpus, in order.

    Each file starts a new document; in ``.txt`` files a blank line ends a document; in ``.jsonl`` files each line
    is a document whose ``text_field`` holds its sentences, one per line. ``long_line_bytes``: the longest line the
    word segmenter takes whole; the first longer line of each file gets one warning naming it (the segmenter cuts
    such lines, see ``segmenters.base.split_long_text``). ``position`` is kept at the line being read.
    """
    for path in files:
        jsonl = path.name.endswith((".jsonl", ".jsonl.gz"))
        new_document = True
        warned = long_line_bytes is None
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
                for sentence in _jsonl_sentences(path, number, line, text_field):
                    yield sentence, new_document
                    new_document = False
                new_document = True
            elif not line.strip():
                new_document = True
            else:
                yield line, new_document
                new_document = False


def _jsonl_sentences(path: Path, number: int, line: str, text_field: str) -> list[str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{number}: not a JSON object ({error.msg})") from None
    if not isinstance(record, dict) or text_field not in record:
        raise UserError(f"{path}:{number}: no {text_field!r} field in this JSON line")
    text = record[text_field]
    if not isinstance(text, str):
        raise UserError(f"{path}:{number}: field {text_field!r} is not a string")
    return [s for s in text.splitlines() if s.strip()]


def iter_chunks(files: Sequence[Path], *, chunk_chars: int = 1 << 20, text_field: str = "text",
                long_line_bytes: int | None = None,
                position: CorpusPosition | None = None) -> Iterator[tuple[list[str], list[bool]]]:
    """Group the corpus's sentences into chunks of about ``chunk_chars`` characters for the tokenizing workers.

    A chunk is ``(sentences, starts_document)``; a long document spans several chunks, so memory stays bounded.
    ``long_line_bytes`` and ``position``: as for :func:`iter_sentences`.
    """
    sentences: list[str] = []
    starts: list[bool] = []
    size = 0
    for sentence, starts_document in iter_sentences(files, text_field, long_line_bytes=long_line_bytes,
                                                    position=position):
        sentences.append(sentence)
        starts.append(starts_document)
        size += len(sentence)
        if size >= chunk_chars:
            yield sentences, starts
            sentences, starts, size = [], [], 0
    if sentences:
        yield sentences, starts
