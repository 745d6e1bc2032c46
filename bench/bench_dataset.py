"""Dataset build benchmark: throughput, peak memory, worker scaling and cache reuse, against the original approach.

    .venv/bin/python bench/bench_dataset.py --corpus ../shared/corpora/ja_aozora_medium/train.txt \\
        --tokenizer_dir /tmp/bench_tok [--scale 10] [--workers 1 2] [--repeats 2] [--original_max_chars N] \\
        [--original_scaled] [--json out.json] [--markdown out.md]

The tokenizer dir is one written by ``train_tokenizer.py`` (e.g. ``--mecab_dic_type ipadic --tokenizer_type
wordpiece``); without ``--tokenizer_dir`` one is trained first on the corpus with train_tokenizer.py's defaults.
For the corpus and a ``--scale``x concatenation of it (written to a temporary directory), each build runs in a
fresh subprocess with an empty cache, so its peak RSS is that build's alone: characters/s, tokens/s, CPU time, peak
RSS of the main process and of the largest worker. Then the cache-reuse time (a second build call that finds the
cache). The original tool's approach runs on the same text in the same invocation: ``AutoTokenizer`` (transformers'
``BertJapaneseTokenizer``: MeCab + WordPiece) line by line, ``tokenize`` + ``convert_tokens_to_ids``, ids kept in
Python lists, as its ``TextDatasetForNextSentencePrediction`` does. By default it runs on the 1x corpus only (it is
slow); the ids it produced are checked against our shards. A Markdown section with the figures is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from benchlib import machine  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent

# Peak RSS from /proc's VmHWM: ru_maxrss of a process started by (v)fork + exec can report the RSS of its parent
# (Linux carries the old address space's high-water mark over exec), which is this benchmark process. The workers'
# figure is RUSAGE_CHILDREN's ru_maxrss, floored the same way at the build process's RSS when it started them.
PEAK_RSS = textwrap.dedent("""
    def peak_rss_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
""")

BUILD = PEAK_RSS + textwrap.dedent("""
    import json, resource, sys, time
    from lmpretrain.data import build_or_load_dataset
    corpus, tok, cache, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    shards = build_or_load_dataset([corpus], tok, cache, num_workers=workers)
    seconds = time.perf_counter() - started
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"seconds": seconds, "tokens": shards.num_tokens, "chars": shards.manifest["num_characters"],
                      "cpu_seconds": cpu, "directory": str(shards.directory),
                      "cache_bytes": sum(shards.manifest["file_sizes"].values()),
                      "rss_main_mb": peak_rss_mb(), "rss_worker_mb": kids.ru_maxrss / 1024}))
""")

ORIGINAL = PEAK_RSS + textwrap.dedent("""
    import hashlib, json, resource, sys, time
    import numpy as np
    from transformers import AutoTokenizer
    corpus, tok, max_chars = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tokenizer = AutoTokenizer.from_pretrained(tok)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    documents, chars, tokens = [[]], 0, 0
    with open(corpus, encoding="utf-8") as handle:  # the original: one line at a time, ids kept in Python lists
        for line in handle:
            line = line.strip()
            if not line and documents[-1]:
                documents.append([])
            ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(line))
            if ids:
                documents[-1].append(ids)
            chars += len(line)
            tokens += len(ids)
            if max_chars and chars >= max_chars:
                break
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    digest = hashlib.sha256()  # after the clock stops: the ids, to compare with our shards
    for document in documents:
        for ids in document:
            digest.update(np.asarray(ids, dtype=np.int64).tobytes())
    print(json.dumps({"seconds": seconds, "tokens": tokens, "chars": chars, "tokenizer": type(tokenizer).__name__,
                      "cpu_seconds": usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime,
                      "sentences": sum(len(d) for d in documents), "sha256": digest.hexdigest(),
                      "rss_main_mb": peak_rss_mb()}))
""")


def run_json(code: str, *args) -> dict:
    env = dict(os.environ, LMP_NO_PROGRESS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def shards_digest(directory: str, num_sentences: int) -> str:
    """sha256 of the first ``num_sentences`` sentences' ids (as int64), as the ORIGINAL script hashes them."""
    import hashlib

    import numpy as np

    from lmpretrain.data import TokenShards

    shards = TokenShards(directory)
    end = int(shards.sentence_offsets[min(num_sentences, shards.num_sentences)])
    digest = hashlib.sha256()
    for start in range(0, end, 1 << 22):
        digest.update(np.asarray(shards.ids[start:min(start + (1 << 22), end)], dtype=np.int64).tobytes())
    return digest.hexdigest()


def train_tokenizer(corpus: Path, model_dir: Path) -> None:
    """MeCab (ipadic) + WordPiece, 32768 tokens: train_tokenizer.py's defaults."""
    from lmpretrain.tokenization import TokenizerSpec
    from lmpretrain.tokenization import train_tokenizer as train

    started = time.perf_counter()
    train([str(corpus)], model_dir, TokenizerSpec(mecab_dic_type="ipadic", tokenizer_type="wordpiece"),
          num_workers=os.cpu_count() or 1)
    print(f"trained a tokenizer in {time.perf_counter() - started:.0f} s -> {model_dir}", flush=True)


def row(name: str, size_mb: float, r: dict) -> str:
    worker = f"{r['rss_worker_mb']:.0f}" if r.get("rss_worker_mb") else "–"
    return (f"| {name} | {size_mb:.0f} | {r['chars'] / 1e6:.2f} | {r['tokens'] / 1e6:.2f} | {r['seconds']:.1f} | "
            f"{r['chars'] / r['seconds'] / 1e6:.2f} | {r['tokens'] / r['seconds'] / 1e6:.2f} | "
            f"{r['chars'] / r['cpu_seconds'] / 1e6:.2f} | {r['rss_main_mb']:.0f} | {worker} |")


def markdown(args, command: str, corpora: dict[str, Path], results: dict) -> str:
    workers = args.workers
    lines = ["### Dataset build (issue 3)", "", "```", command, "```", "",
             f"Machine: {machine(('transformers', 'tokenizers', 'fugashi', 'ipadic', 'numpy'))}.",
             "The machine was shared with other work while this ran: compare the figures of one invocation with "
             "each other (ratios), not with other runs; M chars/CPU-s is the figure least affected by that load. "
             f"Each build ran in a fresh process with an empty cache, the fastest of {args.repeats} shown (peak RSS: "
             "the largest); the same for the original approach on the 1x corpus (once on a larger one).", "",
             "| run | corpus MB | M chars | M tokens | s | M chars/s | M tokens/s | M chars/CPU-s | peak RSS main MB "
             "| peak RSS worker MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, path in corpora.items():
        size = path.stat().st_size / 1e6
        for w in workers:
            lines.append(row(f"lmpretrain {label}, {w} worker{'s' if w > 1 else ''}", size,
                             results[f"build {label} workers={w}"]))
        if f"original {label}" in results:
            original = results[f"original {label}"]
            prefix = "" if not args.original_max_chars else f" (first {original['chars'] / 1e6:.1f} M chars)"
            lines.append(row(f"original ({original['tokenizer']}, line by line) {label}{prefix}", size, original))
    # against the original's best figures of the run: a run of it slowed by other load does not flatter us
    originals = [r for key, r in results.items() if key.startswith("original ")]
    best_rate = max(r["chars"] / r["seconds"] for r in originals)
    best_per_cpu = max(r["chars"] / r["cpu_seconds"] for r in originals)
    lines += ["", f"Ratios (speed-ups against the original approach's best figures in this run: "
                  f"{best_rate / 1e6:.2f} M chars/s, {best_per_cpu / 1e6:.2f} M chars per CPU-second):"]
    for label in corpora:
        for w in workers:
            ours = results[f"build {label} workers={w}"]
            speed = ours["chars"] / ours["seconds"] / best_rate
            per_cpu = ours["chars"] / ours["cpu_seconds"] / best_per_cpu
            lines.append(f"- speed-up over the original approach, {label}, {w} worker{'s' if w > 1 else ''}: "
                         f"**{speed:.1f}×** in chars/s, {per_cpu:.1f}× in chars per CPU-second")
    for label in corpora:
        original = results.get(f"original {label}", {})
        if "ids_match" in original:
            scope = "all" if not args.original_max_chars else f"the first {original['sentences']}"
            lines.append(f"- token ids of the original approach and of our shards ({scope} sentences, "
                         f"{original['tokens']} tokens): {'identical' if original['ids_match'] else 'DIFFERENT'}")
    if len(workers) > 1:
        for label in corpora:
            first, last = (results[f"build {label} workers={w}"] for w in (workers[0], workers[-1]))
            ratio = (last["chars"] / last["seconds"]) / (first["chars"] / first["seconds"])
            lines.append(f"- scaling {workers[0]} → {workers[-1]} workers, {label}: {ratio:.2f}×")
    labels = list(corpora)
    if len(labels) > 1:
        for w in workers:
            small, big = (results[f"build {label} workers={w}"] for label in (labels[0], labels[-1]))
            growth = f"{big['rss_main_mb'] - small['rss_main_mb']:+.0f} MB main"
            if small.get("rss_worker_mb"):
                growth += f", {big['rss_worker_mb'] - small['rss_worker_mb']:+.0f} MB worker"
            lines.append(f"- peak RSS {labels[-1]} vs {labels[0]}, {w} worker{'s' if w > 1 else ''}: {growth} "
                         f"({big['chars'] / small['chars']:.0f}× the text)")
        if f"original {labels[-1]}" in results and f"original {labels[0]}" in results:
            small, big = results[f"original {labels[0]}"], results[f"original {labels[-1]}"]
            lines.append(f"- peak RSS of the original approach {labels[-1]} vs {labels[0]}: "
                         f"{big['rss_main_mb'] - small['rss_main_mb']:+.0f} MB")
    for label in corpora:
        reuse = results.get(f"reuse {label}")
        if reuse:
            build = results[f"build {label} workers={workers[-1]}"]
            lines.append(f"- cache reuse {label}: {reuse['seconds']:.2f} s (hashing the corpus, loading the tokenizer, "
                         f"mapping the shards) vs {build['seconds']:.1f} s to build; cache "
                         f"{build['cache_bytes'] / 1e6:.0f} MB for a {corpora[label].stat().st_size / 1e6:.0f} MB "
                         f"corpus")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--tokenizer_dir", help="written by train_tokenizer.py (default: train one on the corpus)")
    parser.add_argument("--scale", type=int, default=10, help="also measure a concatenation of this many copies")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--original_max_chars", type=int, default=0,
                        help="stop the original approach after this many characters (0: the whole corpus)")
    parser.add_argument("--original_scaled", action="store_true",
                        help="also run the original approach on the scaled corpus (slow, and its memory grows)")
    parser.add_argument("--repeats", type=int, default=2, help="builds per configuration; the fastest is reported")
    parser.add_argument("--tmp_dir", help="where the concatenation and the caches go (default: the system's)")
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--markdown", help="also write the Markdown section here")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python", "bench/bench_dataset.py", *map(shlex.quote, sys.argv[1:] if argv is None
                                                                            else argv)])
    sys.path.insert(0, str(REPO))

    with tempfile.TemporaryDirectory(prefix="bench_dataset_", dir=args.tmp_dir) as tmp:
        tmp = Path(tmp)
        corpus = Path(args.corpus).resolve()
        tokenizer_dir = Path(args.tokenizer_dir).resolve() if args.tokenizer_dir else tmp / "tokenizer"
        if not args.tokenizer_dir:
            train_tokenizer(corpus, tokenizer_dir)
        corpora = {"1x": corpus}
        if args.scale > 1:
            scaled = tmp / f"corpus_x{args.scale}.txt"
            with open(scaled, "wb") as handle:
                for _ in range(args.scale):
                    with open(corpus, "rb") as source:
                        while block := source.read(1 << 24):
                            handle.write(block)
            corpora[f"{args.scale}x"] = scaled
        results: dict[str, dict] = {}
        print(f"corpus {corpus} ({corpus.stat().st_size / 1e6:.1f} MB), tokenizer {tokenizer_dir}, "
              f"{os.cpu_count()} CPUs", flush=True)
        for label, path in corpora.items():
            # the fastest of a few builds per setting, the settings interleaved: other work on the machine only slows
            # a build down, and a burst of it then hits every setting alike
            all_runs: dict[int, list[dict]] = {workers: [] for workers in args.workers}
            for repeat in range(args.repeats):
                for workers in args.workers:
                    cache = tmp / f"cache_{label}_{workers}_{repeat}"
                    all_runs[workers].append(run_json(BUILD, path, tokenizer_dir, cache, workers))
                    if repeat:
                        shutil.rmtree(tmp / f"cache_{label}_{workers}_{repeat - 1}")
            for workers in args.workers:
                runs = all_runs[workers]
                cache = tmp / f"cache_{label}_{workers}_{args.repeats - 1}"
                result = dict(min(runs, key=lambda r: r["seconds"]), directory=runs[-1]["directory"],
                              rss_main_mb=max(r["rss_main_mb"] for r in runs),
                              rss_worker_mb=max(r["rss_worker_mb"] for r in runs),
                              all_seconds=[round(r["seconds"], 2) for r in runs],
                              all_rss_main_mb=[round(r["rss_main_mb"]) for r in runs])
                results[f"build {label} workers={workers}"] = result
                print(f"build {label} workers={workers}: {result['seconds']:.1f} s, "
                      f"{result['chars'] / result['seconds'] / 1e6:.2f} M chars/s", flush=True)
                if workers == args.workers[-1]:
                    results[f"reuse {label}"] = run_json(BUILD, path, tokenizer_dir, cache, workers)
                    print(f"reuse {label}: {results[f'reuse {label}']['seconds']:.2f} s", flush=True)
            if label != "1x" and not args.original_scaled:
                continue
            runs = [run_json(ORIGINAL, path, tokenizer_dir, args.original_max_chars)
                    for _ in range(args.repeats if label == "1x" else 1)]
            original = dict(min(runs, key=lambda r: r["seconds"]), rss_main_mb=max(r["rss_main_mb"] for r in runs))
            ours = results[f"build {label} workers={args.workers[0]}"]
            original["ids_match"] = shards_digest(ours["directory"], original["sentences"]) == original["sha256"]
            results[f"original {label}"] = original
            print(f"original {label}: {original['seconds']:.1f} s, "
                  f"{original['chars'] / original['seconds'] / 1e6:.2f} M chars/s", flush=True)
        section = markdown(args, command, corpora, results)
        print("\n" + section, flush=True)
        if args.markdown:
            Path(args.markdown).write_text(section + "\n", encoding="utf-8")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
