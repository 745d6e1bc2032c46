"""MeCab word segmentation through fugashi, exactly as transformers' ``MecabTokenizer`` does it.

transformers' ``BertJapaneseTokenizer`` (word_tokenizer_type "mecab") NFKC-normalizes the text, runs
``fugashi.GenericTagger('-d <dicdir> -r <dicdir>/mecabrc <mecab_option>')`` and takes each node's
surface; its subword step then splits every surface on whitespace again. We build the tagger from the
same arguments, so the words are identical, but ask MeCab for its ``-Owakati`` output (surfaces joined
by spaces) in one call per line and ``str.split()`` it, which gives exactly those pieces without a
Python object per MeCab node.

One difference between the two fugashi calls is compensated: the node API reads the text as a C string
(it ends at the first NUL character) while ``parse`` reads it whole, so the text is cut at a NUL first.

NFKC is ``unicodedata.normalize``'s result, computed faster (``nfkc``) for lines that need it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from unicodedata import is_normalized, normalize

from .errors import UserError

DICTIONARIES = ("ipadic", "unidic_lite", "unidic", "none")
NORMALIZATION = "NFKC"
_PACKAGES = {"ipadic": "ipadic", "unidic_lite": "unidic-lite", "unidic": "unidic"}  # distribution names
_UNIDIC_HINT = "python -m unidic download (about 770 MB), or use --mecab_dic_type unidic_lite"


_NFKC_TABLE: dict[int, str] = {}


def nfkc(text: str) -> str:
    """``unicodedata.normalize("NFKC", text)``, faster where the text is not normalized already.

    CPython's NFKC is slow on lines that need it (in Japanese text: full-width ASCII, "…", ideographic spaces).
    Replacing each BMP character c by NFKC(c) first does not change the line's NFKC (NFKD(NFKC(c)) = NFKD(c), and
    equivalence is kept under concatenation), so when the replaced line is already in NFKC, it is the answer;
    otherwise (combining marks, characters outside the BMP) the full algorithm runs on it.
    """
    if is_normalized(NORMALIZATION, text):
        return text
    if not _NFKC_TABLE:
        for code in range(0x10000):
            if not 0xD800 <= code <= 0xDFFF and normalize(NORMALIZATION, chr(code)) != chr(code):
                _NFKC_TABLE[code] = normalize(NORMALIZATION, chr(code))
    replaced = text.translate(_NFKC_TABLE)
    return replaced if is_normalized(NORMALIZATION, replaced) else normalize(NORMALIZATION, replaced)


def dictionary_dir(name: str) -> str:
    """The installed directory of a MeCab dictionary package; a clear error if it is missing."""
    if name not in _PACKAGES:
        raise UserError(f"--mecab_dic_type {name!r} is not one of {', '.join(DICTIONARIES)}")
    try:
        module = __import__(name)
    except ModuleNotFoundError:
        if name == "unidic":
            raise UserError(f"--mecab_dic_type unidic: the Python package 'unidic' is not installed; install it and "
                            f"download the dictionary (pip install unidic && {_UNIDIC_HINT})") from None
        raise UserError(f"--mecab_dic_type {name}: the Python package {_PACKAGES[name]!r} is not installed "
                        f"(pip install {_PACKAGES[name]})") from None
    directory = getattr(module, "DICDIR", None)
    if not directory or not os.path.isfile(os.path.join(directory, "sys.dic")):
        if name == "unidic":
            raise UserError(f"--mecab_dic_type unidic: the unidic package is installed but its dictionary has not "
                            f"been downloaded (no sys.dic in {directory}); run {_UNIDIC_HINT}")
        raise UserError(f"--mecab_dic_type {name}: the dictionary files are not in {directory}; reinstall "
                        f"{_PACKAGES[name]}")
    return directory


def mecab_arguments(dic: str, mecab_option: str | None) -> str:
    """The tagger arguments transformers' MecabTokenizer builds for (mecab_dic, mecab_option)."""
    directory = dictionary_dir(dic)
    return f'-d "{directory}" -r "{os.path.join(directory, "mecabrc")}" ' + (mecab_option or "")


def _mecab_error(error: Exception) -> str:
    """fugashi's start-up error is a page of advice; the line that says what went wrong is near its end."""
    lines = [line.strip() for line in str(error).splitlines()]
    details = [line for line in lines if line and not line.startswith(("arguments:", "---"))]
    return details[-1] if details else "unknown error"


def dictionary_info(dic: str) -> dict:
    """Name and version of a dictionary, recorded in the tokenizer dir."""
    if dic == "none":
        return {"name": "none"}
    from importlib.metadata import PackageNotFoundError, version

    package = _PACKAGES[dic]
    try:
        package_version = version(package)
    except PackageNotFoundError:
        package_version = None
    info = {"name": dic, "package": package, "package_version": package_version}
    try:
        import fugashi

        directory = dictionary_dir(dic)
        version_file = os.path.join(directory, "version")
        if os.path.isfile(version_file):
            with open(version_file, encoding="utf-8", errors="replace") as f:
                info["dictionary_release"] = f.read().strip()
        tagger = fugashi.GenericTagger(mecab_arguments(dic, None))
        info["dictionary_version"] = [d.get("version") for d in tagger.dictionary_info]
        info["fugashi_version"] = version("fugashi")
    except Exception:  # informational only
        pass
    return info


class WordSegmenter:
    """NFKC + MeCab words of a line; ``dic == "none"`` gives the NFKC text's whitespace-separated words."""

    def __init__(self, dic: str, mecab_option: str | None = None):
        self.dic = dic
        self.mecab_option = mecab_option
        self._parse = None
        if dic != "none":
            import fugashi

            try:
                self._parse = fugashi.GenericTagger(mecab_arguments(dic, mecab_option) + " -Owakati").parse
            except RuntimeError as error:
                raise UserError(f"MeCab could not start with --mecab_option {mecab_option!r}: "
                                f"{_mecab_error(error)}") from None

    def __reduce__(self):  # rebuilt in worker processes rather than pickled
        return (WordSegmenter, (self.dic, self.mecab_option))

    def wakati(self, text: str) -> str:
        """The line's words separated by whitespace: ``wakati(text).split()`` is ``words(text)``."""
        text = nfkc(text)
        if self._parse is None:
            return text
        if "\x00" in text:
            text = text[:text.index("\x00")]
        return self._parse(text)

    def wakati_batch(self, texts: list[str]) -> list[str]:
        """``wakati`` of each text, in one tight loop (the encoder's hot path)."""
        parse = self._parse
        normalized = [nfkc(t) for t in texts]
        if parse is None:
            return normalized
        return [parse(t) if "\x00" not in t else parse(t[:t.index("\x00")]) for t in normalized]

    def words(self, text: str) -> list[str]:
        return self.wakati(text).split()

    def words_batch(self, texts: list[str]) -> list[list[str]]:
        wakati = self.wakati
        return [wakati(t).split() for t in texts]

    def lines_batch(self, texts: list[str]) -> list[str]:
        """Each text as its words joined by single spaces (the pre-tokenized training text)."""
        wakati = self.wakati
        return [" ".join(wakati(t).split()) for t in texts]


_worker_segmenter: WordSegmenter | None = None


def _init_worker(dic: str, mecab_option: str | None) -> None:
    global _worker_segmenter
    _worker_segmenter = WordSegmenter(dic, mecab_option)


def _segment_chunk(texts: list[str]) -> list[list[str]]:
    return _worker_segmenter.words_batch(texts)


def _segment_chunk_lines(texts: list[str]) -> list[str]:
    return _worker_segmenter.lines_batch(texts)


def pool_context():
    """fork where available (workers start in milliseconds and share the dictionary's pages), else spawn."""
    return multiprocessing.get_context("spawn" if os.name == "nt" else "fork")


def bounded_imap(pool, function: Callable, items: Iterable, max_in_flight: int) -> Iterator:
    """``pool.imap`` that reads at most ``max_in_flight`` items ahead (``imap`` would queue the whole corpus)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(function, (item,)))
        if len(pending) >= max_in_flight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


class ParallelSegmenter:
    """MeCab in ``num_workers`` processes (in-process when 1); ``map`` keeps the order of its input chunks.

    The worker pool starts on first use, so an idle segmenter holds no processes.
    """

    def __init__(self, dic: str, mecab_option: str | None, num_workers: int):
        self.local = WordSegmenter(dic, mecab_option)  # also reports a bad dictionary or option here, not in a worker
        self.dic = dic
        self.mecab_option = mecab_option
        self.num_workers = max(1, num_workers)
        self._pool = None

    def _workers(self):
        if self._pool is None:
            self._pool = pool_context().Pool(self.num_workers, initializer=_init_worker,
                                             initargs=(self.dic, self.mecab_option))
        return self._pool

    def map(self, chunks: Iterable[list[str]]) -> Iterator[list[list[str]]]:
        """Words of every text of every chunk, chunk by chunk, in order."""
        if self.num_workers == 1:
            return (self.local.words_batch(chunk) for chunk in chunks)
        return bounded_imap(self._workers(), _segment_chunk, chunks, 2 * self.num_workers + 2)

    def map_lines(self, chunks: Iterable[list[str]]) -> Iterator[list[str]]:
        """Like ``map`` but each text comes back as one string of space-separated words (cheaper between processes)."""
        if self.num_workers == 1:
            return (self.local.lines_batch(chunk) for chunk in chunks)
        return bounded_imap(self._workers(), _segment_chunk_lines, chunks, 2 * self.num_workers + 2)

    def words_batch(self, texts: list[str], min_parallel: int = 2048) -> list[list[str]]:
        if self.num_workers == 1 or len(texts) < min_parallel:
            return self.local.words_batch(texts)
        size = -(-len(texts) // (self.num_workers * 4))
        out: list[list[str]] = []
        for part in self._workers().imap(_segment_chunk, [texts[i:i + size] for i in range(0, len(texts), size)]):
            out.extend(part)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
