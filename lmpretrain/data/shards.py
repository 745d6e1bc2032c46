"""Token shards: the tokenized corpus as memory-mapped arrays, and how they are written.

A shard directory holds
- ``ids.bin``: every token id of the corpus, concatenated (uint16 when the vocabulary fits, else uint32);
- ``word_starts.bin``: one bit per token, set where the token begins a MeCab word (``np.packbits``, little bit order);
- ``sentence_offsets.bin``: int64 ``[num_sentences + 1]``, token offset of each sentence;
- ``document_offsets.bin``: int64 ``[num_documents + 1]``, sentence offset of each document;
- ``manifest.json``, written last: fingerprint, counts, dtype, file sizes and each file's CRC-32 (computed while
  writing). No manifest, no cache.

Reuse verifies the contents (:meth:`TokenShards.verify`): each file's CRC-32 against the manifest's and every id
against the tokenizer's vocabulary size, in one streamed pass (0.5-0.7 s per GB on one loaded core, BENCHMARKS.md).

Writing streams: workers tokenize chunks of sentences and the parent appends their ids to the files, so memory does
not grow with the corpus. Opening a cache checks its offsets, and ``verify`` its contents, by reading the files in
fixed blocks (:func:`read_blocks`), not through the maps: a mapped page once read stays in the process's RSS, which
made a build's peak grow by 16 bytes per sentence (BENCHMARKS.md, dataset build scaling).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..log import get_logger, progress
from ..workers import BrokenProcessPool, ordered_map, worker_died, worker_pool

logger = get_logger(__name__)

FORMAT_VERSION = 2  # 2: the manifest records each file's CRC-32; a version 1 cache (none) is still readable
READABLE_VERSIONS = (1, 2)
CHECKSUM = "crc32"
MANIFEST = "manifest.json"
IDS_FILE = "ids.bin"
WORD_STARTS_FILE = "word_starts.bin"
SENTENCE_OFFSETS_FILE = "sentence_offsets.bin"
DOCUMENT_OFFSETS_FILE = "document_offsets.bin"
DATA_FILES = (IDS_FILE, WORD_STARTS_FILE, SENTENCE_OFFSETS_FILE, DOCUMENT_OFFSETS_FILE)
CHECK_BLOCK_ITEMS = 1 << 18  # offsets checked per read when a cache is opened (2 MiB)


class CacheInvalid(Exception):
    """A cache directory that is missing, incomplete or damaged; the message says why."""


def ids_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def read_blocks(path: Path, dtype: np.dtype, block_items: int = 1 << 18) -> Iterator[np.ndarray]:
    """The array stored in ``path``, in blocks of ``block_items`` read with plain reads into one reused buffer: each
    block is valid until the next is read. Memory stays ``block_items`` items whatever the file's size, and nothing of
    the file stays in the process's RSS (the page cache holds it, as for any read)."""
    dtype = np.dtype(dtype)
    buffer = np.empty(block_items, dtype)
    view = memoryview(buffer).cast("B")
    try:
        handle = open(path, "rb", buffering=0)
    except OSError as error:
        raise CacheInvalid(f"{Path(path).name} cannot be read ({error.strerror or error})") from None
    with handle:
        while True:
            filled = 0
            while filled < len(view):
                try:
                    got = handle.readinto(view[filled:])
                except OSError as error:
                    raise CacheInvalid(f"{Path(path).name} cannot be read ({error.strerror or error})") from None
                if not got:
                    break
                filled += got
            if filled % dtype.itemsize:
                raise CacheInvalid(f"{Path(path).name} holds a partial item at its end")
            if filled:
                yield buffer[:filled // dtype.itemsize]
            if filled < len(view):
                return


class TokenShards:
    """Read-only, memory-mapped view of a built shard directory. Pickles as its path (cheap for DataLoader workers)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self._open()

    def _open(self) -> None:
        m = self.manifest
        try:
            # plain ndarray views of the maps: indexing an np.memmap object is several times slower
            self.ids = np.asarray(np.memmap(self.directory / IDS_FILE, dtype=np.dtype(m["dtype"]), mode="r"))
            self._word_start_bits = np.asarray(np.memmap(self.directory / WORD_STARTS_FILE, np.uint8, mode="r"))
            self.sentence_offsets = np.asarray(np.memmap(self.directory / SENTENCE_OFFSETS_FILE, np.int64, mode="r"))
            self.document_offsets = np.asarray(np.memmap(self.directory / DOCUMENT_OFFSETS_FILE, np.int64, mode="r"))
        except (OSError, ValueError) as error:
            raise CacheInvalid(f"cannot map its files ({error})") from None
        self._check()

    def _check(self) -> None:
        m = self.manifest
        so, do = self.sentence_offsets, self.document_offsets
        if len(self.ids) != m["num_tokens"] or len(so) != m["num_sentences"] + 1 or len(do) != m["num_documents"] + 1:
            raise CacheInvalid("its array lengths do not match its manifest")
        if so[0] != 0 or so[-1] != m["num_tokens"] or do[0] != 0 or do[-1] != m["num_sentences"]:
            raise CacheInvalid("its offsets do not match its manifest")
        # read in blocks, not through the maps: a map's pages, once read, count in this process's RSS (8 bytes per
        # sentence, plus a diff of the same size, was all the growth of a build's peak RSS with the corpus)
        for name in (SENTENCE_OFFSETS_FILE, DOCUMENT_OFFSETS_FILE):
            last = None
            for block in read_blocks(self.directory / name, np.int64, CHECK_BLOCK_ITEMS):
                if (last is not None and len(block) and block[0] <= last) or np.any(block[1:] <= block[:-1]):
                    raise CacheInvalid("its offsets are not increasing")
                if len(block):
                    last = int(block[-1])

    @property
    def has_checksums(self) -> bool:
        return isinstance(self.manifest.get("checksums"), dict)

    def verify(self, vocab_size: int, chunk_bytes: int = 1 << 20) -> None:
        """Check the contents, not only the sizes: every file's CRC-32 against the one recorded at build (a cache
        without checksums, from format 1, skips this) and every id below ``vocab_size`` (the tokenizer's).
        CacheInvalid names the first problem found."""
        recorded = self.manifest.get("checksums") if self.has_checksums else {}
        arrays = {IDS_FILE: self.ids, WORD_STARTS_FILE: self._word_start_bits,
                  SENTENCE_OFFSETS_FILE: self.sentence_offsets, DOCUMENT_OFFSETS_FILE: self.document_offsets}
        for name, array in arrays.items():
            step = max(1, chunk_bytes // array.itemsize)
            crc = 0
            # read, not through the maps, as in _check: the whole cache would otherwise stay in this process's RSS
            for start, chunk in zip(range(0, len(array), step),
                                    read_blocks(self.directory / name, array.dtype, step)):
                if name == IDS_FILE and len(chunk) and int(chunk.max()) >= vocab_size:
                    at = start + int(np.flatnonzero(chunk >= vocab_size)[0])
                    sentence = int(np.searchsorted(self.sentence_offsets, at, side="right")) - 1
                    raise CacheInvalid(f"{IDS_FILE} holds id {int(self.ids[at])} (token {at}, sentence {sentence}), "
                                       f"beyond the tokenizer's vocabulary of {vocab_size}")
                if name in recorded:
                    crc = zlib.crc32(chunk, crc)
            if name in recorded and f"{crc:08x}" != recorded[name]:
                raise CacheInvalid(f"the content of {name} differs from what was written at build ({CHECKSUM} "
                                   f"{crc:08x}, recorded {recorded[name]}): the file was damaged or modified")

    def __getstate__(self) -> dict:
        return {"directory": str(self.directory), "manifest": self.manifest}

    def __setstate__(self, state: dict) -> None:
        self.directory = Path(state["directory"])
        self.manifest = state["manifest"]
        self._open()

    # sizes
    @property
    def num_documents(self) -> int:
        return int(self.manifest["num_documents"])

    @property
    def num_sentences(self) -> int:
        return int(self.manifest["num_sentences"])

    @property
    def num_tokens(self) -> int:
        return int(self.manifest["num_tokens"])

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    # access
    def sentence_lengths(self) -> np.ndarray:
        return np.diff(self.sentence_offsets)

    def sentence(self, i: int) -> np.ndarray:
        return self.ids[self.sentence_offsets[i]:self.sentence_offsets[i + 1]]

    def word_starts(self, i: int) -> np.ndarray:
        return self.token_word_starts(int(self.sentence_offsets[i]), int(self.sentence_offsets[i + 1]))

    def token_word_starts(self, start: int, end: int) -> np.ndarray:
        """Word-start flags of tokens ``[start, end)`` of the whole corpus."""
        bits = np.unpackbits(self._word_start_bits[start // 8:(end + 7) // 8], bitorder="little")
        return bits[start % 8:start % 8 + (end - start)].astype(bool)

    def document_sentence_range(self, d: int) -> tuple[int, int]:
        return int(self.document_offsets[d]), int(self.document_offsets[d + 1])

    def document_token_range(self, d: int) -> tuple[int, int]:
        lo, hi = self.document_sentence_range(d)
        return int(self.sentence_offsets[lo]), int(self.sentence_offsets[hi])

    def document(self, d: int) -> np.ndarray:
        lo, hi = self.document_token_range(d)
        return self.ids[lo:hi]

    def __repr__(self) -> str:
        return (f"TokenShards({str(self.directory)!r}, documents={self.num_documents}, "
                f"sentences={self.num_sentences}, tokens={self.num_tokens})")


def read_manifest(directory: Path) -> dict:
    """The manifest of a complete shard directory, checked against the files' sizes; CacheInvalid otherwise."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise CacheInvalid("there is no cache yet")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheInvalid("it has no manifest (an interrupted build?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CacheInvalid(f"its manifest cannot be read ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") not in READABLE_VERSIONS:
        raise CacheInvalid(f"it was written in another cache format (version {manifest.get('format_version')!r}, "
                           f"this version reads versions {READABLE_VERSIONS})" if isinstance(manifest, dict) else
                           "its manifest is not a JSON object")
    for name, size in manifest.get("file_sizes", {}).items():
        try:
            actual = (directory / name).stat().st_size
        except OSError:
            raise CacheInvalid(f"{name} is missing or unreadable") from None
        if actual != size:
            raise CacheInvalid(f"{name} has {actual} bytes, its manifest says {size} (truncated or modified)")
        if not os.access(directory / name, os.R_OK):
            raise CacheInvalid(f"{name} is not readable")
    if set(manifest.get("file_sizes", {})) != set(DATA_FILES):
        raise CacheInvalid("its manifest does not list its files")
    return manifest


class ShardWriter:
    """Appends tokenized sentences to the four files of a shard directory."""

    def __init__(self, directory: Path, dtype: np.dtype):
        self.directory = directory
        self.dtype = dtype
        self._files = {name: open(directory / name, "wb") for name in DATA_FILES}
        self._crc = dict.fromkeys(DATA_FILES, 0)
        self._bit_carry = np.zeros(0, dtype=bool)
        self.num_tokens = 0
        self.num_sentences = 0
        self.num_documents = 0
        self.num_characters = 0
        self._pending_start = False
        self._write(SENTENCE_OFFSETS_FILE, np.zeros(1, np.int64).tobytes())
        self._write(DOCUMENT_OFFSETS_FILE, np.zeros(1, np.int64).tobytes())

    def _write(self, name: str, data: bytes) -> None:
        self._crc[name] = zlib.crc32(data, self._crc[name])
        self._files[name].write(data)

    def checksums(self) -> dict[str, str]:
        """Each file's CRC-32 (hex) of the bytes written."""
        return {name: f"{crc:08x}" for name, crc in self._crc.items()}

    def append(self, ids: np.ndarray, word_starts: np.ndarray, lengths: np.ndarray,
               starts_document: np.ndarray) -> None:
        """Sentences of one chunk: their ids and word starts concatenated, lengths and document-start flags."""
        keep = lengths > 0  # a sentence with no tokens is dropped; its document-start flag moves to the next one
        if not keep.any():
            self._pending_start = self._pending_start or bool(starts_document.any())
            return
        starts = np.cumsum(starts_document)
        kept = np.flatnonzero(keep)
        before = np.concatenate([[0], starts[kept[:-1]]])
        new_doc = starts[kept] > before
        new_doc[0] = new_doc[0] or self._pending_start or self.num_documents == 0
        self._pending_start = bool(starts[-1] > starts[kept[-1]])
        lengths = lengths[kept].astype(np.int64)
        sentence_ends = self.num_tokens + np.cumsum(lengths)
        doc_sentence_starts = self.num_sentences + np.flatnonzero(new_doc)
        if self.num_documents > 0 or len(doc_sentence_starts) > 1:
            # a document's end offset is the next document's start; the last one is written by close()
            closing = doc_sentence_starts if self.num_documents > 0 else doc_sentence_starts[1:]
            self._write(DOCUMENT_OFFSETS_FILE, closing.astype(np.int64).tobytes())
        self.num_documents += len(doc_sentence_starts)
        self._write(IDS_FILE, ids.astype(self.dtype, copy=False).tobytes())
        self._write_bits(word_starts.astype(bool, copy=False))
        self._write(SENTENCE_OFFSETS_FILE, sentence_ends.tobytes())
        self.num_tokens += int(lengths.sum())
        self.num_sentences += len(lengths)

    def _write_bits(self, flags: np.ndarray) -> None:
        flags = np.concatenate([self._bit_carry, flags])
        whole = len(flags) // 8 * 8
        self._write(WORD_STARTS_FILE, np.packbits(flags[:whole], bitorder="little").tobytes())
        self._bit_carry = flags[whole:]

    def close(self) -> dict[str, int]:
        """Flush the last partial byte and document offset; return the file sizes."""
        if len(self._bit_carry):
            self._write(WORD_STARTS_FILE, np.packbits(self._bit_carry, bitorder="little").tobytes())
            self._bit_carry = np.zeros(0, dtype=bool)
        if self.num_documents:
            self._write(DOCUMENT_OFFSETS_FILE, np.array([self.num_sentences], np.int64).tobytes())
        for handle in self._files.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        return {name: (self.directory / name).stat().st_size for name in DATA_FILES}

    def abort(self) -> None:
        for handle in self._files.values():
            try:
                handle.close()
            except OSError:
                pass


# ---- tokenizing workers ------------------------------------------------------------------------------------------

_WORKER_ENCODER = None


def _init_worker(encoder_factory: Callable, tokenizer_dir: str) -> None:
    global _WORKER_ENCODER
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _WORKER_ENCODER = encoder_factory(tokenizer_dir, num_workers=1)


def encode_chunk(encoder, chunk: tuple[list[str], list[bool]]):
    """Tokenize one chunk of sentences into flat numpy arrays (ids, word starts, lengths, document starts, chars)."""
    sentences, starts = chunk
    encoded = encoder.encode_batch_with_word_starts(sentences)
    lengths = np.fromiter((len(ids) for ids, _ in encoded), dtype=np.int64, count=len(encoded))
    total = int(lengths.sum())
    ids = np.fromiter(chain.from_iterable(seq for seq, _ in encoded), dtype=np.uint32, count=total)
    word_starts = np.fromiter(chain.from_iterable(ws for _, ws in encoded), dtype=bool, count=total)
    chars = sum(len(s) for s in sentences)
    return ids, word_starts, lengths, np.asarray(starts, dtype=bool), chars


def _encode_in_worker(chunk):
    return encode_chunk(_WORKER_ENCODER, chunk)


def write_shards(chunks: Iterable[tuple[list[str], list[bool]]], directory: Path, *, encoder, encoder_factory,
                 tokenizer_dir: str, num_workers: int, desc: str = "tokenizing", position=None) -> dict:
    """Tokenize ``chunks`` (in ``num_workers`` processes) into a shard directory; returns the counts and sizes.
    ``position`` (a ``corpus.CorpusPosition``): where reading had got to, named if a worker dies."""
    vocab_size = int(encoder.vocab_size)
    writer = ShardWriter(directory, ids_dtype(vocab_size))
    bar = progress(desc=desc, unit="char", unit_scale=True)
    pool = None
    try:
        if num_workers > 1:
            pool = worker_pool(num_workers, _init_worker, (encoder_factory, str(tokenizer_dir)))
            results = ordered_map(pool, _encode_in_worker, chunks, max_in_flight=2 * num_workers)
        else:
            results = (encode_chunk(encoder, chunk) for chunk in chunks)
        for ids, word_starts, lengths, starts, chars in results:
            if len(ids) and int(ids.max()) >= vocab_size:
                raise UserError(f"the tokenizer in {tokenizer_dir} produced id {int(ids.max())} beyond its "
                                f"vocabulary size {vocab_size}")
            writer.append(ids, word_starts, lengths, starts)
            writer.num_characters += chars
            bar.update(chars)
        sizes = writer.close()
    except BrokenProcessPool as error:
        writer.abort()
        raise worker_died(error, f"tokenizing {position or 'the corpus'}", "tokenizing", num_workers,
                          "--num_workers") from None
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return {"num_tokens": writer.num_tokens, "num_sentences": writer.num_sentences,
            "num_documents": writer.num_documents, "num_characters": writer.num_characters,
            "dtype": writer.dtype.name, "vocab_size": vocab_size, "file_sizes": sizes,
            "checksum": CHECKSUM, "checksums": writer.checksums()}
