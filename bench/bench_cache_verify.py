"""Cost of verifying a dataset cache's contents on reuse (issue 25): CRC-32 of every shard file and the id range check.

    .venv/bin/python bench/bench_cache_verify.py --corpus ../shared/corpora/ja_aozora_medium/train.txt \\
        [--tokenizer_dir DIR] [--cache_mb 35] [--repeats 5] [--markdown out.md]

Builds (once) a cache of about ``--cache_mb`` MB from copies of the corpus, then times cache reuse
(``build_or_load_dataset`` finding the cache: hashing the corpus, loading the tokenizer, mapping and checking the
shards) with the content verification and without it (``TokenShards.verify`` replaced by a no-op: the reuse path as it
was before checksums), alternating, ``--repeats`` times each, in this one process; the page cache is warm for both
(the files were just written or read). Also the verification alone, in seconds per GB of cache, and the raw
checksum speeds it was chosen from. Without ``--tokenizer_dir`` a small tokenizer (MeCab ipadic + WordPiece, 8000
tokens) is trained first on the corpus's first 2 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from benchlib import machine, report  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LMP_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def raw_speeds(size_mb: int = 256) -> dict[str, float]:
    """Seconds per GB of each candidate checksum over one in-memory buffer, in 16 MB chunks (verify reads 1 MiB)."""
    data = memoryview(np.random.default_rng(0).integers(0, 255, size_mb << 20, dtype=np.uint8))
    chunk = 1 << 24
    candidates = {
        "zlib.crc32": lambda: [zlib.crc32(data[i:i + chunk]) for i in range(0, len(data), chunk)],
        "zlib.adler32": lambda: [zlib.adler32(data[i:i + chunk]) for i in range(0, len(data), chunk)],
        "hashlib.sha256": lambda: [hashlib.sha256().update(data[i:i + chunk]) for i in range(0, len(data), chunk)],
        "hashlib.blake2b": lambda: [hashlib.blake2b().update(data[i:i + chunk]) for i in range(0, len(data), chunk)],
    }
    speeds = {}
    for name, run in candidates.items():
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        speeds[name] = best / (len(data) / 1e9)
    return speeds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--tokenizer_dir")
    parser.add_argument("--cache_mb", type=float, default=35.0, help="about this many MB of cache")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tmp_dir")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)

    from lmpretrain.data import TokenShards, build_or_load_dataset

    work = Path(tempfile.mkdtemp(prefix="bench_verify_", dir=args.tmp_dir))
    tokenizer_dir = args.tokenizer_dir
    if not tokenizer_dir:
        from lmpretrain.tokenization import TokenizerSpec, train_tokenizer

        head = work / "head.txt"
        with open(args.corpus, "rb") as source:
            head.write_bytes(source.read(2 << 20).rsplit(b"\n", 1)[0] + b"\n")
        tokenizer_dir = str(work / "tokenizer")
        train_tokenizer([str(head)], Path(tokenizer_dir), TokenizerSpec(mecab_dic_type="ipadic", vocab_size=8000,
                                                                         limit_alphabet=3000), num_workers=1)
    # the corpus repeated: about 0.55 bytes of cache per byte of Japanese text (measured on the first build)
    corpus_bytes = Path(args.corpus).stat().st_size
    copies = max(1, round(args.cache_mb * 1e6 / (0.55 * corpus_bytes)))
    corpus = work / "corpus.txt"
    with open(corpus, "wb") as out:
        for _ in range(copies):
            out.write(Path(args.corpus).read_bytes())
    cache = work / "cache"
    started = time.perf_counter()
    shards = build_or_load_dataset([str(corpus)], tokenizer_dir, str(cache), num_workers=os.cpu_count() or 1)
    build_s = time.perf_counter() - started
    cache_bytes = sum(shards.manifest["file_sizes"].values())
    print(f"built {cache_bytes / 1e6:.1f} MB of cache from {copies} copies ({corpus.stat().st_size / 1e6:.0f} MB) in "
          f"{build_s:.1f} s", flush=True)

    verify = TokenShards.verify
    times: dict[str, list[float]] = {"without verification (before)": [], "with verification (after)": []}
    for _ in range(args.repeats):
        for label in times:
            TokenShards.verify = verify if "with " in label else (lambda self, vocab_size, chunk_bytes=0: None)
            started = time.perf_counter()
            build_or_load_dataset([str(corpus)], tokenizer_dir, str(cache), num_workers=1)
            times[label].append(time.perf_counter() - started)
    TokenShards.verify = verify
    alone = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        TokenShards(shards.directory).verify(shards.vocab_size)
        alone.append(time.perf_counter() - started)
    speeds = raw_speeds()

    before, after = (statistics.median(t) for t in times.values())
    lines = [f"Machine: {machine()}; load average (1 min) at the end: {os.getloadavg()[0]:.2f}.",
             f"Command: `.venv/bin/python bench/bench_cache_verify.py --corpus {args.corpus} --cache_mb "
             f"{args.cache_mb:g} --repeats {args.repeats}`", "",
             f"Cache: {cache_bytes / 1e6:.1f} MB ({shards.num_tokens / 1e6:.1f} M tokens, {shards.ids.dtype}) from "
             f"{corpus.stat().st_size / 1e6:.0f} MB of text ({copies} copies of the corpus), built in {build_s:.1f} s.",
             "", f"| cache reuse (median of {args.repeats}, warm page cache) | seconds |", "|---|---|"]
    for label, values in times.items():
        lines.append(f"| {label} | {statistics.median(values):.3f} (min {min(values):.3f}) |")
    lines += [f"| difference | {after - before:+.3f} |", "",
              f"Verification alone (CRC-32 of the 4 files + id range check): {statistics.median(alone):.3f} s for "
              f"{cache_bytes / 1e6:.1f} MB = **{statistics.median(alone) / (cache_bytes / 1e9):.2f} s per GB**.", "",
              "Raw checksum speed, one core, 256 MB in memory (s per GB): " +
              ", ".join(f"{name} {s:.2f}" for name, s in speeds.items()) + "."]
    report(lines, args.markdown)


if __name__ == "__main__":
    main()
