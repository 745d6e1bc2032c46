"""Tokenizer benchmark: train_tokenizer.py's wall time and peak memory, and encoding throughput of FastEncoder
against transformers' BertJapaneseTokenizer and bare MeCab.

    .venv/bin/python bench/bench_tokenizer.py [--corpus ../shared/corpora/ja_aozora_medium/train.txt] \\
        [--max_chars N] [--subset_chars 2000000] [--repeats 3] [--out BENCHMARKS.md]

(a) train_tokenizer.py runs in a subprocess with its defaults (ipadic + WordPiece, vocab 32768, one MeCab worker
per core); its process tree is sampled from /proc every 50 ms: peak of the summed PSS (shared pages counted once)
and the largest single process's peak RSS (VmHWM). (b) On the corpus's non-blank lines, as the dataset builder
sees them: AutoTokenizer on the trained dir (BertJapaneseTokenizer: MeCab + WordPiece in Python) on the first
``--subset_chars`` characters only (it is slow); FastEncoder with 1 and 2 workers and bare MeCab word segmentation
(fugashi ``GenericTagger`` with ``-Owakati``, one ``parse`` per line: the floor) on the subset and on the whole
text. FastEncoder's ids are checked equal to AutoTokenizer's on the subset. Every FastEncoder run starts from a
fresh encoder (empty word cache; the worker pool starts inside the timed call), plus one row with the cache warm
(a second pass over the subset); MeCab and FastEncoder take the fastest of ``--repeats`` runs; AutoTokenizer runs
once after a small warm-up. (c) Sudachi (``--sudachi_split_mode``, sudachidict_core) + WordPiece trained
in-process on the same corpus: AutoTokenizer (BertJapaneseTokenizer with word_tokenizer_type "sudachi") against
FastEncoder (1 worker, fresh) and bare Sudachi segmentation on the same subset, in the same run, ids checked equal.
The Markdown section is printed to stdout and appended to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import machine  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_CORPUS = REPO.parent / "shared" / "corpora" / "ja_aozora_medium" / "train.txt"


# ---- (a) training: wall time and peak memory of the process tree ---------------------------------------------------

def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, peak RSS) of a process in kB; (0, 0) once it is gone."""
    pss = hwm = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return pss, hwm


def run_measured(command: list[str], interval_s: float = 0.05) -> dict:
    """Run ``command``; wall time, peak summed PSS of its process tree, largest single-process peak RSS."""
    peak = {"tree_pss_kb": 0, "process_hwm_kb": 0}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "LMP_NO_PROGRESS": "1", "PYTHONPATH": str(REPO)})

    def sample():
        while process.poll() is None:
            sizes = [_memory_kb(pid) for pid in _descendants(process.pid)]
            peak["tree_pss_kb"] = max(peak["tree_pss_kb"], sum(pss for pss, _ in sizes))
            peak["process_hwm_kb"] = max([peak["process_hwm_kb"], *(hwm for _, hwm in sizes)])
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed:\n{stderr}")
    return {"seconds": seconds, "summary": stdout.strip().splitlines()[-1], **peak}


# ---- (b) encoding throughput ---------------------------------------------------------------------------------------

def timed(function, repeats: int = 1) -> dict:
    """The fastest of ``repeats`` calls: wall seconds, this process's CPU seconds, and the last result."""
    best = None
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        result = function()
        run = {"seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu, "result": result}
        if best is None or run["seconds"] < best["seconds"]:
            best = run
    return best


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fast_encoder_run(tokenizer_dir: Path, texts: list[str], workers: int, warm: bool = False):
    """One encode_batch call on a fresh encoder (empty word cache, no pool yet; ``warm``: after one untimed pass
    over the same texts, as in a long dataset build); CPU time includes its workers'."""
    from lmpretrain.tokenization import FastEncoder

    encoder = FastEncoder.from_pretrained(tokenizer_dir, num_workers=workers)
    if warm:
        encoder.encode_batch(texts)
    children = _children_cpu()
    try:
        run = timed(lambda: encoder.encode_batch(texts))
    finally:
        encoder.close()  # the workers' CPU time is counted once they have been joined
    run["cpu_seconds"] += _children_cpu() - children
    return run


def encode_benchmarks(tokenizer_dir: Path, subset: list[str], whole: list[str], repeats: int) -> dict:
    import fugashi
    from transformers import AutoTokenizer

    from lmpretrain.tokenization.segmenters.mecab import mecab_arguments

    results = {}
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer(subset[:200])  # warm-up: MeCab's dictionary pages, first-call setup
    results["bert", "subset"] = timed(lambda: tokenizer(subset, add_special_tokens=False)["input_ids"])
    tagger = fugashi.GenericTagger(mecab_arguments("ipadic", None) + " -Owakati")
    parse = tagger.parse
    for name, texts in (("subset", subset), ("whole", whole)):
        results["mecab", name] = timed(lambda texts=texts: [parse(t) for t in texts], repeats)
        for workers in (1, 2):
            runs = [fast_encoder_run(tokenizer_dir, texts, workers) for _ in range(repeats)]
            results[f"fast{workers}", name] = min(runs, key=lambda r: r["seconds"])
    runs = [fast_encoder_run(tokenizer_dir, subset, 1, warm=True) for _ in range(repeats)]
    results["warm1", "subset"] = min(runs, key=lambda r: r["seconds"])
    results["identical"] = results["fast1", "subset"]["result"] == results["bert", "subset"]["result"]
    results["type"] = type(tokenizer).__name__
    return results


def sudachi_benchmarks(corpus: Path, tokenizer_dir: Path, subset: list[str], split_mode: str, repeats: int,
                       num_workers: int) -> dict:
    """(c): a Sudachi + WordPiece tokenizer on the same corpus; AutoTokenizer vs FastEncoder vs bare Sudachi."""
    from transformers import AutoTokenizer

    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer
    from lmpretrain.tokenization.segmenters import get_segmenter

    spec = TokenizerSpec.from_flags(word_tokenizer="sudachi", sudachi_split_mode=split_mode)
    started = time.perf_counter()
    summary = train_tokenizer([str(corpus)], tokenizer_dir, spec, num_workers=num_workers)
    results = {"train_seconds": time.perf_counter() - started, "vocab_size": summary["vocab_size"]}
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer(subset[:200])
    results["bert"] = timed(lambda: tokenizer(subset, add_special_tokens=False)["input_ids"])
    runs = [fast_encoder_run(tokenizer_dir, subset, 1) for _ in range(repeats)]
    results["fast1"] = min(runs, key=lambda r: r["seconds"])
    segmenter = get_segmenter(*spec.word_segmenter())
    results["sudachi"] = timed(lambda: segmenter.wakati_batch(subset), repeats)
    results["identical"] = results["fast1"]["result"] == results["bert"]["result"]
    results["type"], results["mode"] = f"{type(tokenizer).__name__} ({tokenizer.word_tokenizer_type})", split_mode
    return results


# ---- report --------------------------------------------------------------------------------------------------------

def read_lines(corpus: Path, max_chars: int) -> list[str]:
    lines, chars = [], 0
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if max_chars and chars + len(line) > max_chars:
                break
            lines.append(line)
            chars += len(line)
    return lines


def first_chars(lines: list[str], limit: int) -> list[str]:
    out, chars = [], 0
    for line in lines:
        if chars >= limit:
            break
        out.append(line)
        chars += len(line)
    return out


def sudachi_markdown(sud: dict, subset: list[str]) -> list[str]:
    chars = sum(map(len, subset))
    names = {"bert": f"transformers {sud['type']} (AutoTokenizer)", "fast1": "FastEncoder, 1 worker",
             "sudachi": "bare Sudachi (sudachipy, surfaces joined)"}
    rows = [f"| {names[k]} | subset | {chars / sud[k]['seconds']:,.0f} | {sud[k]['seconds']:.2f} | "
            f"{sud[k]['cpu_seconds']:.2f} | {chars / sud[k]['cpu_seconds']:,.0f} |"
            for k in ("bert", "fast1", "sudachi")]
    per_core = sud["bert"]["cpu_seconds"] / sud["fast1"]["cpu_seconds"]
    wall = sud["bert"]["seconds"] / sud["fast1"]["seconds"]
    floor = sud["fast1"]["seconds"] / sud["sudachi"]["seconds"]
    return [
        f"### (c) Sudachi (split mode {sud['mode']}, sudachidict_core) + WordPiece, same corpus, same subset",
        "",
        f"Trained in {sud['train_seconds']:.1f} s ({sud['vocab_size']} tokens). FastEncoder's ids equal "
        f"AutoTokenizer's on every subset line: **{'yes' if sud['identical'] else 'NO'}**.",
        "",
        "| encoder | text | characters/s (wall) | wall s | CPU s | characters per CPU s |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"- FastEncoder / BertJapaneseTokenizer (Sudachi) per core: **{per_core:.2f}x** (characters per CPU second, "
        f"1 worker; {wall:.2f}x by wall time); FastEncoder time / bare Sudachi time: {floor:.2f}x (FastEncoder's time "
        "is almost all Sudachi's own analysis, so the gain is smaller than with MeCab).",
        "",
    ]


def markdown(command: str, corpus: Path, training: dict, enc: dict, subset: list[str], whole: list[str],
             loads: tuple, sud: dict | None = None) -> str:
    chars = {"subset": sum(map(len, subset)), "whole": sum(map(len, whole))}
    names = {"bert": f"transformers {enc['type']} (AutoTokenizer)", "fast1": "FastEncoder, 1 worker",
             "fast2": "FastEncoder, 2 workers", "mecab": "bare MeCab (fugashi GenericTagger -Owakati)",
             "warm1": "FastEncoder, 1 worker, warm word cache"}
    rows = []
    for key, text in [("bert", "subset"), ("fast1", "subset"), ("fast2", "subset"), ("warm1", "subset"),
                      ("mecab", "subset"), ("fast1", "whole"), ("fast2", "whole"), ("mecab", "whole")]:
        r = enc[key, text]
        rows.append(f"| {names[key]} | {text} | {chars[text] / r['seconds']:,.0f} | {r['seconds']:.2f} | "
                    f"{r['cpu_seconds']:.2f} | {chars[text] / r['cpu_seconds']:,.0f} |")

    def ratio(a: str, b: str, text: str, measure: str) -> float:
        return enc[a, text][measure] / enc[b, text][measure]

    per_core = ratio("bert", "fast1", "subset", "cpu_seconds")  # characters per CPU second, FastEncoder / BertJapanese
    per_core_wall = ratio("bert", "fast1", "subset", "seconds")
    per_core_warm = ratio("bert", "warm1", "subset", "cpu_seconds")
    per_core_2 = chars["subset"] / (2 * enc["fast2", "subset"]["seconds"]) / (chars["subset"] / enc["bert", "subset"]
                                                                               ["seconds"])
    floor = {t: ratio("fast1", "mecab", t, "seconds") for t in ("subset", "whole")}
    floor_cpu = {t: ratio("fast1", "mecab", t, "cpu_seconds") for t in ("subset", "whole")}
    speedup = {t: ratio("fast1", "fast2", t, "seconds") for t in ("subset", "whole")}
    verdict = {True: "met", False: "missed"}
    return "\n".join([
        "## Tokenizer: training and encoding (bench/bench_tokenizer.py)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}; load average {loads[0]:.2f} at the start, {loads[1]:.2f} at the end "
        "(the machine is shared).  ",
        f"Corpus: `{corpus}`: {len(whole):,} non-blank lines, {chars['whole']:,} characters; subset: the first "
        f"{len(subset):,} lines, {chars['subset']:,} characters.",
        "",
        "### (a) train_tokenizer.py with its defaults (ipadic + WordPiece, vocab 32768, MeCab workers = cores)",
        "",
        "| wall time | peak memory, process tree (summed PSS) | largest process peak RSS |",
        "|---|---|---|",
        f"| {training['seconds']:.1f} s | {training['tree_pss_kb'] / 1024:,.0f} MiB | "
        f"{training['process_hwm_kb'] / 1024:,.0f} MiB |",
        "",
        f"`{training['summary']}`",
        "",
        "### (b) Encoding throughput, same tokenizer (ids without [CLS]/[SEP])",
        "",
        f"FastEncoder's ids equal AutoTokenizer's on every subset line: **{'yes' if enc['identical'] else 'NO'}**.",
        "",
        "| encoder | text | characters/s (wall) | wall s | CPU s | characters per CPU s |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"- FastEncoder / BertJapaneseTokenizer per core: **{per_core:.1f}x** (characters per CPU second, 1 worker; "
        f"{per_core_wall:.1f}x by wall time; {per_core_2:.1f}x per core by wall time with 2 workers); "
        f"target >= 5x: {verdict[per_core >= 5]}. With a warm word cache (steady state of a long build): "
        f"**{per_core_warm:.1f}x**.",
        f"- FastEncoder 1-worker time / bare MeCab time: **{floor['subset']:.2f}x** on the subset, "
        f"**{floor['whole']:.2f}x** on the whole text (CPU time: {floor_cpu['subset']:.2f}x, "
        f"{floor_cpu['whole']:.2f}x); target <= 2.5x: {verdict[max(floor.values()) <= 2.5]}.",
        f"- 2 workers vs 1: {speedup['subset']:.2f}x faster on the subset, {speedup['whole']:.2f}x on the whole text "
        "(wall time; the pool starts inside the call).",
        "",
        *(sudachi_markdown(sud, subset) if sud is not None else []),
    ])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    parser.add_argument("--max_chars", type=int, default=0, help="use only the first N characters of the corpus")
    parser.add_argument("--subset_chars", type=int, default=2_000_000,
                        help="characters for the BertJapaneseTokenizer comparison")
    parser.add_argument("--repeats", type=int, default=3, help="FastEncoder and MeCab: the fastest of N runs")
    parser.add_argument("--num_files", type=int, default=os.cpu_count() or 1, help="train_tokenizer.py's workers")
    parser.add_argument("--sudachi_split_mode", default="A", help="(c): A, B or C; 'none' skips (c)")
    parser.add_argument("--out", help="append the Markdown section to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    corpus = Path(args.corpus)
    if not corpus.is_file():
        sys.exit(f"error: corpus {corpus} not found (see --corpus)")
    loads_start = os.getloadavg()[0]
    whole = read_lines(corpus, args.max_chars)
    subset = first_chars(whole, args.subset_chars)
    with tempfile.TemporaryDirectory(prefix="bench-tokenizer-") as tmp:
        training_input = corpus
        if args.max_chars:
            training_input = Path(tmp) / "corpus.txt"
            training_input.write_text("\n".join(whole) + "\n", encoding="utf-8")
        tokenizer_dir = Path(tmp) / "tokenizer"
        training = run_measured([sys.executable, str(REPO / "train_tokenizer.py"), "--input_file", str(training_input),
                                 "--model_dir", str(tokenizer_dir), "--num_files", str(args.num_files)])
        encoding = encode_benchmarks(tokenizer_dir, subset, whole, args.repeats)
        sudachi = None if args.sudachi_split_mode == "none" else sudachi_benchmarks(
            training_input, Path(tmp) / "tokenizer-sudachi", subset, args.sudachi_split_mode, args.repeats,
            args.num_files)
    command = shlex.join(["python", "bench/bench_tokenizer.py", *(argv if argv is not None else sys.argv[1:])])
    section = markdown(command, corpus, training, encoding, subset, whole, (loads_start, os.getloadavg()[0]),
                       sudachi)
    print(section)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + section)


if __name__ == "__main__":
    main()
