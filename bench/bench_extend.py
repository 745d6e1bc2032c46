"""Extending a tokenizer (train_tokenizer.py --base_tokenizer_dir) against the base and against a tokenizer trained
from scratch on the domain, in one run on this machine: wall time, and tokens, unknown tokens and ids kept on text
neither saw.

    .venv/bin/python bench/bench_extend.py [--base_corpus ../shared/corpora/ja_aozora_small/train.txt] \\
        [--domain ../shared/corpora/ja_aozora_medium/train.txt] [--vocab 8000] [--added 4000] [--markdown out.md]

The base (MeCab ipadic + WordPiece, ``--vocab`` tokens) is trained on ``--base_corpus``; the first ``--domain_lines``
lines of ``--domain`` are the domain corpus; the ``--eval_lines`` lines after them are the held-out text. The
extension and the from-scratch tokenizer both have ``--vocab`` + ``--added`` tokens and run with ``--workers``
MeCab workers.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchlib import machine, report  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LMP_NO_PROGRESS", "1")
CORPORA = REPO.parent / "shared" / "corpora"


def _lines(path: Path, start: int, count: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line for line in f.read().splitlines()[start:start + count] if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base_corpus", default=str(CORPORA / "ja_aozora_small" / "train.txt"))
    parser.add_argument("--domain", default=str(CORPORA / "ja_aozora_medium" / "train.txt"))
    parser.add_argument("--domain_lines", type=int, default=40000)
    parser.add_argument("--eval_lines", type=int, default=5000)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--added", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--markdown")
    args = parser.parse_args()

    from lmpretrain.tokenization import FastEncoder, TokenizerSpec, extend_tokenizer, train_tokenizer

    work = Path(tempfile.mkdtemp(prefix="bench-extend-"))
    domain, held_out = work / "domain.txt", _lines(Path(args.domain), args.domain_lines, args.eval_lines)
    domain.write_text("\n".join(_lines(Path(args.domain), 0, args.domain_lines)) + "\n", encoding="utf-8")
    spec = TokenizerSpec(vocab_size=args.vocab)
    train_tokenizer([args.base_corpus], work / "base", spec, num_workers=args.workers)
    started = time.perf_counter()
    extend_tokenizer(work / "base", work / "extended", input_file=[str(domain)],
                     vocab_size=args.vocab + args.added, num_workers=args.workers)
    extend_seconds = time.perf_counter() - started
    started = time.perf_counter()
    train_tokenizer([str(domain)], work / "scratch", TokenizerSpec(vocab_size=args.vocab + args.added),
                    num_workers=args.workers)
    scratch_seconds = time.perf_counter() - started

    characters = sum(map(len, held_out))
    with FastEncoder.from_pretrained(work / "base") as base:
        base_ids = base.encode_batch(held_out)
    rows = []
    for name, seconds in (("base", None), ("extended", extend_seconds), ("scratch", scratch_seconds)):
        with FastEncoder.from_pretrained(work / name) as encoder:
            ids = encoder.encode_batch(held_out)
            unknown = sum(x.count(encoder.unk_token_id) for x in ids)
            same = sum(a == b for a, b in zip(ids, base_ids))
            rows.append(f"| {name} | {encoder.vocab_size} | {'' if seconds is None else f'{seconds:.1f}'} | "
                        f"{sum(map(len, ids)) / characters:.4f} | {unknown} | {same / len(held_out):.1%} |")
    command = "python bench/bench_extend.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report([f"`{command}`", "", machine(), "",
            f"base on {args.base_corpus}; domain: {args.domain_lines} lines of {args.domain}; held out: the next "
            f"{len(held_out)} non-blank lines ({characters} characters); {args.workers} MeCab workers", "",
            "| tokenizer | tokens | build s | tokens per character (held out) | [UNK] (held out) | lines with the "
            "base's ids |", "|---|---|---|---|---|---|", *rows, "",
            f"extending / training from scratch at the same size: {extend_seconds / scratch_seconds:.2f}x the time"],
           args.markdown)


if __name__ == "__main__":
    main()
