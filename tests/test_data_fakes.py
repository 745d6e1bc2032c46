"""A fake encoder with FastEncoder's API (for the data tests) and corpus-writing helpers. Holds no tests itself.

The fake tokenizes character by character: a character's id is ``5 + codepoint % (vocab_size - 5)``, spaces are
dropped and mark word starts. Its settings live in ``fake_tokenizer.json`` in the tokenizer dir, so a test can
change the "tokenizer" by rewriting that file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

SETTINGS = "fake_tokenizer.json"
CJK = 0x4E00
CHARS_PER_DOC = 50


class FakeEncoder:
    pad_token_id, unk_token_id, cls_token_id, sep_token_id, mask_token_id = 0, 1, 2, 3, 4
    all_special_ids = [0, 1, 2, 3, 4]
    unused_token_ids: list[int] = []

    def __init__(self, vocab_size: int = 32000, salt: int = 0, fingerprint: str = "", delay: float = 0.0,
                 exit_on: str = ""):
        self.vocab_size = vocab_size
        self.salt = salt
        self.fingerprint = fingerprint
        self.delay = delay  # seconds per batch, to make builds slow enough to overlap in tests
        self.exit_on = exit_on  # the process dies (as if killed for memory) on a text containing this

    @classmethod
    def from_pretrained(cls, tokenizer_dir, num_workers: int = 1) -> FakeEncoder:
        raw = (Path(tokenizer_dir) / SETTINGS).read_bytes()
        settings = json.loads(raw)
        return cls(settings["vocab_size"], settings.get("salt", 0), hashlib.sha256(raw).hexdigest(),
                   settings.get("delay", 0.0), settings.get("exit_on", ""))

    def _encode(self, text: str) -> tuple[list[int], list[bool]]:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        keep = codes != 32
        starts = keep & np.concatenate([[True], codes[:-1] == 32])
        ids = 5 + (codes + self.salt) % (self.vocab_size - 5)
        return ids[keep].tolist(), starts[keep].tolist()

    def encode_batch(self, texts, add_special_tokens: bool = False) -> list[list[int]]:
        out = [self._encode(t)[0] for t in texts]
        if add_special_tokens:
            out = [[self.cls_token_id, *ids, self.sep_token_id] for ids in out]
        return out

    def encode_batch_with_word_starts(self, texts) -> list[tuple[list[int], list[bool]]]:
        time.sleep(self.delay)
        if self.exit_on and any(self.exit_on in t for t in texts):
            os._exit(9)
        return [self._encode(t) for t in texts]

    def sentence_marks(self) -> None:
        return None  # no sentence ends known: long lines are cut at word starts

    def close(self) -> None:
        pass


def fake_tokenizer_dir(path: Path, vocab_size: int = 32000, salt: int = 0, delay: float = 0.0,
                       exit_on: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / SETTINGS).write_text(json.dumps({"vocab_size": vocab_size, "salt": salt, "delay": delay,
                                             "exit_on": exit_on}))
    return path


def doc_sentences(doc: int, num_sentences: int, rng: np.random.Generator, max_words: int = 12) -> list[str]:
    """Sentences of document ``doc`` built from its own 50 CJK characters, so a token id tells its document."""
    alphabet = [chr(CJK + doc * CHARS_PER_DOC + j) for j in range(CHARS_PER_DOC)]
    sentences = []
    for _ in range(num_sentences):
        words = ["".join(rng.choice(alphabet, rng.integers(1, 4))) for _ in range(rng.integers(1, max_words))]
        sentences.append(" ".join(words))
    return sentences


def make_documents(num_docs: int, seed: int = 0, min_sentences: int = 1, max_sentences: int = 12,
                   max_words: int = 12) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [doc_sentences(d, int(rng.integers(min_sentences, max_sentences + 1)), rng, max_words)
            for d in range(num_docs)]


def write_txt(path: Path, documents: list[list[str]]) -> Path:
    path.write_text("".join("\n".join(doc) + "\n\n" for doc in documents), encoding="utf-8")
    return path


def doc_of_token(token_id: int, vocab_size: int = 32000) -> int:
    return (token_id - 5 - CJK) // CHARS_PER_DOC
