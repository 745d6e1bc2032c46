"""MeCab word segmentation through fugashi, exactly as transformers' ``MecabTokenizer`` does it.

transformers' ``BertJapaneseTokenizer`` (word_tokenizer_type "mecab") NFKC-normalizes the text, runs
``fugashi.GenericTagger('-d <dicdir> -r <dicdir>/mecabrc <mecab_option>')`` and takes each node's
surface. We build the tagger from the same arguments, so the words are identical, but ask MeCab for
its ``-Owakati`` output (surfaces joined by spaces) and split it in one call per line, which avoids
creating a Python object per word.
"""

from __future__ import annotations

import multiprocessing
import os
import unicodedata
from collections.abc import Iterable, Iterator

from .errors import UserError

DICTIONARIES = ("ipadic", "unidic_lite", "unidic", "none")
NORMALIZATION = "NFKC"


def dictionary_dir(name: str) -> str:
    """The installed directory of a MeCab dictionary package; a clear error if it is missing."""
    if name not in DICTIONARIES or name == "none":
        raise UserError(f"--mecab_dic_type {name!r} is not one of {', '.join(DICTIONARIES)}")
    module_name = {"ipadic": "ipadic", "unidic_lite": "unidic_lite", "unidic": "unidic"}[name]
    try:
        module = __import__(module_name)
    except ModuleNotFoundError:
        raise UserError(f"--mecab_dic_type {name}: the Python package {module_name!r} is not installed "
                        f"(pip install {module_name.replace('_', '-')})") from None
    directory = module.DICDIR
    if not os.path.isdir(directory) or not os.path.isfile(os.path.join(directory, "sys.dic")):
        hint = " Run `python -m unidic download` (about 500 MB) or use --mecab_dic_type unidic_lite." \
            if name == "unidic" else ""
        raise UserError(f"--mecab_dic_type {name}: the dictionary files are not in {directory}.{hint}")
    return directory


def mecab_arguments(dic: str, mecab_option: str | None) -> str:
    """The tagger arguments transformers' MecabTokenizer builds for (mecab_dic, mecab_option)."""
    directory = dictionary_dir(dic)
    return f'-d "{directory}" -r "{os.path.join(directory, "mecabrc")}" ' + (mecab_option or "")


def dictionary_info(dic: str) -> dict:
    """Name and version of a dictionary, recorded in the tokenizer dir."""
    if dic == "none":
        return {"name": "none"}
    from importlib.metadata import PackageNotFoundError, version

    package = {"ipadic": "ipadic", "unidic_lite": "unidic-lite", "unidic": "unidic"}[dic]
    try:
        package_version = version(package)
    except PackageNotFoundError:
        package_version = None
    info = {"name": dic, "package": package, "package_version": package_version}
    try:
        import fugashi

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
        self._tagger = None
        if dic != "none":
            import fugashi

            try:
                self._tagger = fugashi.GenericTagger(mecab_arguments(dic, mecab_option) + " -Owakati")
            except RuntimeError as error:
                raise UserError(f"MeCab could not start with --mecab_option {mecab_option!r}: {error}") from None

    def __reduce__(self):  # rebuilt in worker processes rather than pickled
        return (WordSegmenter, (self.dic, self.mecab_option))

    def words(self, text: str) -> list[str]:
        text = unicodedata.normalize(NORMALIZATION, text)
        if self._tagger is None:
            return text.split()
        # transformers' WordpieceTokenizer splits every MeCab surface on whitespace again; wakati output joined
        # by spaces and split here gives exactly those pieces.
        return self._tagger.parse(text).split()

    def words_batch(self, texts: list[str]) -> list[list[str]]:
        return [self.words(t) for t in texts]


_worker_segmenter: WordSegmenter | None = None


def _init_worker(dic: str, mecab_option: str | None) -> None:
    global _worker_segmenter
    _worker_segmenter = WordSegmenter(dic, mecab_option)


def _segment_chunk(texts: list[str]) -> list[list[str]]:
    return _worker_segmenter.words_batch(texts)


class ParallelSegmenter:
    """MeCab in ``num_workers`` processes (in-process when 1); ``map`` keeps the order of its input chunks."""

    def __init__(self, dic: str, mecab_option: str | None, num_workers: int):
        self.local = WordSegmenter(dic, mecab_option)
        self.num_workers = max(1, num_workers)
        self._pool = None
        if self.num_workers > 1:
            context = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
            self._pool = context.Pool(self.num_workers, initializer=_init_worker, initargs=(dic, mecab_option))

    def map(self, chunks: Iterable[list[str]]) -> Iterator[list[list[str]]]:
        if self._pool is None:
            return (self.local.words_batch(chunk) for chunk in chunks)
        return self._pool.imap(_segment_chunk, chunks)

    def words_batch(self, texts: list[str], min_parallel: int = 2048) -> list[list[str]]:
        if self._pool is None or len(texts) < min_parallel:
            return self.local.words_batch(texts)
        size = -(-len(texts) // (self.num_workers * 4))
        out: list[list[str]] = []
        for part in self._pool.imap(_segment_chunk, [texts[i:i + size] for i in range(0, len(texts), size)]):
            out.extend(part)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
