"""Build a downstream task from a corpus of works (the toolkit's corpus format: one blank line after each document),
split by work so that no work is in two splits.

Three kinds, all reproducible from the corpus bytes and a seed:

- ``author`` (given a file naming each work's author): paragraphs labelled by author; each author's works are dealt
  to dev, test and train in turn (shuffled by the seed), so every author in dev/test has other works in train.
  Authors with fewer than three works are left out (they cannot be in all three splits).
- ``same_work`` (the corpus alone; the Aozora corpora in ../shared/corpora have their title/author headers removed):
  pairs of paragraphs (``text_a``, ``text_b``) labelled ``same`` when both come from one work, ``different``
  otherwise, half of each, works dealt to the splits by share. Chance is 0.5.
- ``continuation`` (the corpus alone): pairs of paragraphs (``text_a``, ``text_b``) labelled ``next`` when B is the
  line right after A in its work (both at least ``min_chars`` long), ``other`` when B is the line after a random
  place of ANOTHER work of the same split; half of each, works dealt to the splits by share as for ``same_work``.
  A keeps its LAST ``max_chars`` characters and B its first, so the place where they meet is in the pair even when
  the probe cuts it to a few tokens.
  In both classes A is drawn the same way (a work of the split, then a place in it) and B is "the line after a
  drawn place", so neither paragraph alone tells the label: only how A and B fit together does (a coherence task,
  like BERT's next-sentence prediction but across works). Chance is 0.5.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from .errors import UserError
from .fsutil import sha256_file

SPLITS = ("train", "dev", "test")


def read_works(corpus: str | Path, min_chars: int, max_chars: int) -> list[list[str]]:
    """Each document's paragraphs (lines) of ``min_chars`` characters or more, cut at ``max_chars``."""
    works, current = [], []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                if current:
                    works.append(current)
                current = []
                continue
            current.append(line)
    if current:
        works.append(current)
    return [[p[:max_chars] for p in work if len(p) >= min_chars] for work in works]


def read_authors(path: str | Path, works: int) -> dict[int, str]:
    """A .jsonl (``{"work": 0, "author": "..."}``) or .tsv (``work<TAB>author`` with that header) file: the 0-based
    index of a document in the corpus, and its author."""
    path = Path(path)
    found = {}
    with open(path, encoding="utf-8") as f:
        lines = list(enumerate(f, 1))
    if path.suffix == ".tsv":
        if not lines or lines[0][1].rstrip("\n").split("\t") != ["work", "author"]:
            raise UserError(f"{path}:1: the header must be 'work<TAB>author'")
        rows = [(n, dict(zip(("work", "author"), line.rstrip("\n").split("\t")))) for n, line in lines[1:]
                if line.strip()]
    else:
        try:
            rows = [(n, json.loads(line)) for n, line in lines if line.strip()]
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: not JSON lines ({error})") from None
    for number, row in rows:
        try:
            work, author = int(row["work"]), str(row["author"]).strip()
        except (KeyError, ValueError, TypeError):
            raise UserError(f"{path}:{number}: needs keys 'work' (a document index) and 'author'") from None
        if not author:
            raise UserError(f"{path}:{number}: key 'author' is empty")
        if not 0 <= work < works:
            raise UserError(f"{path}:{number}: key 'work' {work} is not a document of the corpus (0..{works - 1})")
        found[work] = author
    return found


def _cap(paragraphs: list[str], per_work: int, rng: random.Random) -> list[str]:
    return paragraphs if len(paragraphs) <= per_work else rng.sample(paragraphs, per_work)


def _author_rows(works, authors: dict[int, str], per_work: int, rng: random.Random):
    by_author: dict[str, list[int]] = {}
    for work in sorted(authors):
        if works[work]:
            by_author.setdefault(authors[work], []).append(work)
    dealt = {split: [] for split in SPLITS}
    for author in sorted(by_author):
        if len(by_author[author]) < 3:
            continue
        order = by_author[author][:]
        rng.shuffle(order)
        dealt["dev"].append(order[0])
        dealt["test"].append(order[1])
        dealt["train"] += order[2:]
    if not dealt["train"]:
        raise UserError("no author has three works with paragraphs (an author must be in train, dev and test)")
    rows = {split: [{"text": p, "label": authors[w]} for w in sorted(ws) for p in _cap(works[w], per_work, rng)]
            for split, ws in dealt.items()}
    return rows, dealt


def _deal(usable: list[int], shares: tuple[float, float], rng: random.Random, what: str) -> dict[str, list[int]]:
    """Works dealt to dev, test and train by share (at least two in each), in an order shuffled by ``rng``."""
    if len(usable) < 6:
        raise UserError(f"{len(usable)} documents {what} needs at least 6")
    rng.shuffle(usable)
    n_dev = max(2, round(shares[0] * len(usable)))
    n_test = max(2, round(shares[1] * len(usable)))
    return {"dev": usable[:n_dev], "test": usable[n_dev:n_dev + n_test], "train": usable[n_dev + n_test:]}


def _same_work_rows(works, pairs: dict[str, int], shares: tuple[float, float], rng: random.Random):
    dealt = _deal([w for w, paragraphs in enumerate(works) if len(paragraphs) >= 2], shares, rng,
                  "with two or more paragraphs; the same-work task")
    rows = {}
    for split, ws in dealt.items():
        made = []
        for k in range(pairs[split]):
            if k % 2 == 0:
                w = rng.choice(ws)
                a, b = rng.sample(works[w], 2)
                made.append({"text_a": a, "text_b": b, "label": "same"})
            else:
                w1, w2 = rng.sample(ws, 2)
                made.append({"text_a": rng.choice(works[w1]), "text_b": rng.choice(works[w2]), "label": "different"})
        rng.shuffle(made)
        rows[split] = made
    return rows, dealt


def read_lines(corpus: str | Path) -> list[list[str]]:
    """Each document's lines (paragraphs) in order, all of them (short ones included), whole."""
    works, current = [], []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                current.append(line)
            elif current:
                works.append(current)
                current = []
    if current:
        works.append(current)
    return works


def _continuation_rows(lines, min_chars: int, max_chars: int, pairs: dict[str, int], shares: tuple[float, float],
                       rng: random.Random):
    # places: the i of each pair of adjacent lines (i, i + 1) of a work that are both min_chars long or longer
    places = [[i for i in range(len(work) - 1) if len(work[i]) >= min_chars and len(work[i + 1]) >= min_chars]
              for work in lines]
    dealt = _deal([w for w, found in enumerate(places) if found], shares, rng,
                  f"with two adjacent paragraphs of {min_chars} characters or more; the continuation task")
    rows = {}
    for split, ws in dealt.items():
        made = []
        for k in range(pairs[split]):
            w = rng.choice(ws)
            i = rng.choice(places[w])
            if k % 2 == 0:
                made.append({"text_a": lines[w][i][-max_chars:], "text_b": lines[w][i + 1][:max_chars],
                             "label": "next"})
            else:
                other = rng.choice([v for v in ws if v != w])
                j = rng.choice(places[other])
                made.append({"text_a": lines[w][i][-max_chars:], "text_b": lines[other][j + 1][:max_chars],
                             "label": "other"})
        rng.shuffle(made)
        rows[split] = made
    return rows, dealt


KINDS = ("same_work", "continuation", "author")


def build_task(corpus: str | Path, output_dir: str | Path, *, authors: str | Path | None = None, seed: int = 0,
               min_chars: int = 20, max_chars: int = 400, per_work: int = 50, pairs: tuple[int, int, int] =
               (2000, 400, 400), shares: tuple[float, float] = (0.15, 0.15), kind: str | None = None) -> dict:
    """Write ``train.jsonl``, ``dev.jsonl``, ``test.jsonl`` and ``task.json`` (how it was built, which works are in
    which split, the chance level) into ``output_dir``; return the ``task.json`` content. ``kind`` is one of
    ``KINDS``; by default ``author`` when ``authors`` is given, else ``same_work``."""
    corpus, output_dir = Path(corpus), Path(output_dir)
    if not corpus.is_file():
        raise UserError(f"{corpus}: no such corpus file")
    kind = kind or ("author" if authors is not None else "same_work")
    if kind not in KINDS:
        raise UserError(f"unknown task kind {kind!r} (one of: {', '.join(KINDS)})")
    if (kind == "author") != (authors is not None):
        raise UserError("the author task needs an authors file (--authors), and only it takes one")
    works = read_works(corpus, min_chars, max_chars)
    rng = random.Random(seed)
    if kind == "author":
        rows, dealt = _author_rows(works, read_authors(authors, len(works)), per_work, rng)
        labels = sorted({row["label"] for row in rows["train"]})
        counts = {label: sum(row["label"] == label for row in rows["test"]) for label in labels}
        chance = max(counts.values()) / len(rows["test"])
    elif kind == "continuation":
        rows, dealt = _continuation_rows(read_lines(corpus), min_chars, max_chars, dict(zip(SPLITS, pairs)),
                                         shares, rng)
        chance = 0.5
    else:
        rows, dealt = _same_work_rows(works, dict(zip(SPLITS, pairs)), shares, rng)
        chance = 0.5
    output_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows[split])
        (output_dir / f"{split}.jsonl").write_text(text, encoding="utf-8")
    info = {"kind": kind, "corpus": str(corpus), "corpus_sha256": sha256_file(corpus), "seed": seed,
            "min_chars": min_chars, "max_chars": max_chars, "per_work": per_work if kind == "author" else None,
            "sizes": {split: len(rows[split]) for split in SPLITS},
            "works": {split: sorted(ws) for split, ws in dealt.items()},
            "test_chance_accuracy": chance,
            "rows_sha256": {split: hashlib.sha256((output_dir / f"{split}.jsonl").read_bytes()).hexdigest()
                            for split in SPLITS}}
    (output_dir / "task.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return info
