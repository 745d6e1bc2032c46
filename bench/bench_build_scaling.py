"""How the dataset build scales with the corpus: seconds per MB and peak memory at 1x, 4x and 16x of ~35 MB (issue 25).

    .venv/bin/python bench/bench_build_scaling.py --corpus ../shared/corpora/ja_aozora_medium/train.txt \\
        [--base_mb 35] [--scales 1 4 16] [--workers 1 2] [--tokenizer_dir DIR] [--tmp_dir DIR] [--markdown out.md]

The base corpus is ``--base_mb`` MB of varied copies of ``--corpus``; the scaled corpora are ``scale`` times as much,
made the same way. No two copies are the same text: copy k takes the documents (blank-line separated) in an order
rotated by k places and rotates each document's lines by k, so every copy tokenizes into other sentences and
documents (the cache cannot shrink by repetition, and a per-document structure cannot be reused). Each build runs in
a fresh subprocess with an empty cache: its wall time, the build process's own peak RSS (VmHWM) and the peak of the
process tree (``os.wait4``'s ``ru_maxrss`` of the child: the largest of it and the workers it waited for). The bench
process itself reads nothing into memory but the corpus (a few MB), so no fork inherits a large parent. Without
``--tokenizer_dir`` a small tokenizer (MeCab ipadic + WordPiece, 8000 tokens) is trained first on 2 MB of the corpus.
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
from pathlib import Path

from benchlib import machine, report  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent

BUILD = textwrap.dedent("""
    import json, sys, time
    from lmpretrain.data import build_or_load_dataset

    def rss_mb(field):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024

    corpus, tok, cache, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    started = time.perf_counter()
    shards = build_or_load_dataset([corpus], tok, cache, num_workers=workers)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "tokens": shards.num_tokens, "documents": shards.num_documents,
                      "cache_bytes": sum(shards.manifest["file_sizes"].values()),
                      "hwm_mb": rss_mb("VmHWM"), "rss_end_mb": rss_mb("VmRSS")}))
""")

TRAIN = textwrap.dedent("""
    import sys
    from pathlib import Path
    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer
    train_tokenizer([sys.argv[1]], Path(sys.argv[2]), TokenizerSpec(mecab_dic_type="ipadic", vocab_size=8000,
                                                                    limit_alphabet=3000), num_workers=1)
""")


def own_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


def varied_copy(documents: list[list[bytes]], k: int) -> bytes:
    """Copy ``k`` of the corpus: documents in an order rotated by ``k``, each document's lines rotated by ``k``."""
    shift = k % len(documents)
    out = []
    for lines in documents[shift:] + documents[:shift]:
        turn = k % len(lines)
        out.append(b"".join(lines[turn:] + lines[:turn]))
    return b"\n".join(out)


def write_corpus(documents: list[list[bytes]], path: Path, target_bytes: int) -> int:
    """Varied copies 0, 1, 2, ... until ``target_bytes``, cut at a document boundary; returns the bytes written."""
    written, k = 0, 0
    with open(path, "wb") as handle:
        while written < target_bytes:
            copy = varied_copy(documents, k)
            if written + len(copy) > target_bytes:  # the last copy cut at a document boundary
                cut = copy.rfind(b"\n\n", 0, target_bytes - written)
                if cut <= 0:
                    break
                copy = copy[:cut + 1]
            handle.write(copy if copy.endswith(b"\n") else copy + b"\n")
            written += len(copy) + (0 if copy.endswith(b"\n") else 1)
            handle.write(b"\n")
            written += 1
            k += 1
    return written


def read_documents(corpus: Path) -> list[list[bytes]]:
    documents: list[list[bytes]] = [[]]
    with open(corpus, "rb") as handle:
        for line in handle:
            if line.strip():
                documents[-1].append(line if line.endswith(b"\n") else line + b"\n")
            elif documents[-1]:
                documents.append([])
    return [d for d in documents if d]


def build(corpus: Path, tokenizer_dir: Path, cache: Path, workers: int, tmp: Path) -> dict:
    """One build in a fresh process; the result line plus the child's ru_maxrss from ``os.wait4``."""
    env = dict(os.environ, LMP_NO_PROGRESS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1")
    out_path, err_path = tmp / "build.out", tmp / "build.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", BUILD, str(corpus), str(tokenizer_dir), str(cache),
                                 str(workers)], cwd=REPO, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"build failed:\n{err_path.read_text()[-3000:]}")
    result = json.loads(out_path.read_text().strip().splitlines()[-1])
    result["tree_maxrss_mb"] = usage.ru_maxrss / 1024
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--base_mb", type=float, default=35.0)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tokenizer_dir")
    parser.add_argument("--tmp_dir")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python", "bench/bench_build_scaling.py",
                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    sys.path.insert(0, str(REPO))
    load_before = os.getloadavg()

    work = Path(tempfile.mkdtemp(prefix="bench_scaling_", dir=args.tmp_dir))
    try:
        tokenizer_dir = Path(args.tokenizer_dir) if args.tokenizer_dir else work / "tokenizer"
        if not args.tokenizer_dir:  # in a subprocess: this process stays small (its children start as a copy of it)
            head = work / "head.txt"
            with open(args.corpus, "rb") as source:
                head.write_bytes(source.read(2 << 20).rsplit(b"\n", 1)[0] + b"\n")
            subprocess.run([sys.executable, "-c", TRAIN, str(head), str(tokenizer_dir)], cwd=REPO, check=True,
                           env=dict(os.environ, LMP_NO_PROGRESS="1", PYTHONPATH=str(REPO)))
        documents = read_documents(Path(args.corpus))
        results = []
        for scale in args.scales:
            corpus = work / f"corpus_x{scale}.txt"
            size = write_corpus(documents, corpus, int(args.base_mb * scale * 1e6))
            for workers in args.workers:
                cache = work / f"cache_x{scale}_{workers}"
                result = build(corpus, tokenizer_dir, cache, workers, work)
                result.update(scale=scale, workers=workers, mb=size / 1e6, load=os.getloadavg()[0],
                              parent_rss_mb=own_rss_mb())
                results.append(result)
                print(json.dumps(result), flush=True)
                shutil.rmtree(cache)
            corpus.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = ["### Dataset build scaling (issue 25)", "", "```", command, "```", "",
             f"Machine: {machine(('tokenizers', 'fugashi', 'ipadic', 'numpy'))}. Load average "
             f"{load_before[0]:.1f} when it started (other agents' work on the same 2 cores: compare the rows of this "
             "run with each other; the load at each row's end is in its last column).", "",
             "| corpus | MB | workers | documents | M tokens | s | s per MB | CPU-s per MB | peak RSS build process MB "
             "| peak RSS process tree MB | RSS at end MB | load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    parent = max(r["parent_rss_mb"] for r in results)
    for r in results:
        lines.append(f"| {r['scale']}x | {r['mb']:.0f} | {r['workers']} | {r['documents']} | {r['tokens'] / 1e6:.1f} "
                     f"| {r['seconds']:.1f} | {r['seconds'] / r['mb']:.3f} | {r['cpu_seconds'] / r['mb']:.3f} "
                     f"| {r['hwm_mb']:.0f} | {r['tree_maxrss_mb']:.0f} | {r['rss_end_mb']:.0f} | {r['load']:.1f} |")
    lines += ["", "The process-tree figure (``ru_maxrss`` from ``os.wait4``) is at least this bench process's RSS "
                  f"when it started the build ({parent:.0f} MB at most): a child starts as a copy of its parent."]
    for workers in args.workers:
        mine = [r for r in results if r["workers"] == workers]
        if len(mine) > 1:
            first, last = mine[0], mine[-1]
            cpu_ratio = (last["cpu_seconds"] / last["mb"]) / (first["cpu_seconds"] / first["mb"])
            lines.append(f"- {workers} worker{'s' if workers > 1 else ''}, {last['scale']}x vs {first['scale']}x: "
                         f"s per MB x{(last['seconds'] / last['mb']) / (first['seconds'] / first['mb']):.2f}, "
                         f"CPU-s per MB x{cpu_ratio:.2f}, "
                         f"peak RSS of the build process {last['hwm_mb'] - first['hwm_mb']:+.0f} MB, of the tree "
                         f"{last['tree_maxrss_mb'] - first['tree_maxrss_mb']:+.0f} MB "
                         f"({last['mb'] / first['mb']:.0f}x the text)")
    report(lines, args.markdown)


if __name__ == "__main__":
    main()
