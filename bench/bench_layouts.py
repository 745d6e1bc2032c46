"""Coverage and fill of every instance layout: what one epoch of each layout trains on (issue 29).

    .venv/bin/python bench/bench_layouts.py --corpus samples/ja_sample.txt \\
        ../shared/corpora/ja_aozora_medium/train.txt --tokenizer_dir /tmp/tok_ja [--sequence_length 128 512] \\
        [--seed 0] [--instance_version 2] [--cache_dir /tmp/bench_layouts_cache] [--markdown out.md]

For each corpus (tokenized through the dataset cache, in ``--cache_dir``; one ``--tokenizer_dir`` for all, or one
per corpus), each sequence length and each layout in ``lmpretrain.data.LAYOUTS``, the instances of all the corpus's
documents with the defaults a run uses (short-seq-prob 0.1, next-sentence probability 0.5) and the figures the run's
log line "dataset: ..." states (``InstanceDataset.epoch_tokens``): **coverage**, the corpus tokens one epoch's
instances hold from their own place / the corpus's tokens (a random next sentence covers nothing), and **fill**, the
real (non-padding) tokens / the instances' slots (instances x sequence-length). A Markdown table is printed last.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchlib import machine  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmpretrain.data import INSTANCE_VERSION, LAYOUTS, build_or_load_dataset, make_instances  # noqa: E402
from lmpretrain.tokenization import FastEncoder  # noqa: E402


def measure(shards, encoder, layout: str, sequence_length: int, seed: int, version: int) -> dict:
    started = time.perf_counter()
    dataset = make_instances(shards, layout, sequence_length=sequence_length, cls_id=encoder.cls_token_id,
                             sep_id=encoder.sep_token_id, seed=seed, version=version,
                             sentence_marks=encoder.sentence_marks())
    real, covered, exact = dataset.epoch_tokens()
    return {"layout": layout, "sequence_length": sequence_length, "instances": len(dataset),
            "corpus_tokens": shards.num_tokens, "covered": covered, "real": real, "exact": exact,
            "coverage": covered / shards.num_tokens, "fill": real / (len(dataset) * sequence_length),
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", nargs="+", required=True)
    parser.add_argument("--tokenizer_dir", nargs="+", required=True, help="one for all corpora, or one per corpus")
    parser.add_argument("--sequence_length", type=int, nargs="+", default=[128])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--instance_version", type=int, default=INSTANCE_VERSION,
                        help="the instance builders' version (1: before issue 29)")
    parser.add_argument("--cache_dir", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    if len(args.tokenizer_dir) not in (1, len(args.corpus)):
        parser.error("give one --tokenizer_dir, or one per --corpus")
    tokenizers = args.tokenizer_dir * len(args.corpus) if len(args.tokenizer_dir) == 1 else args.tokenizer_dir
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="bench_layouts_")
    rows = []
    for corpus, tokenizer_dir in zip(args.corpus, tokenizers):
        shards = build_or_load_dataset([corpus], tokenizer_dir, cache_dir, num_workers=1)
        with FastEncoder.from_pretrained(tokenizer_dir) as encoder:
            for length in args.sequence_length:
                for layout in args.layouts:
                    row = measure(shards, encoder, layout, length, args.seed, args.instance_version)
                    row["corpus"] = corpus
                    rows.append(row)
                    print(f"{corpus} {layout} L={length}: {row['instances']} instances, coverage "
                          f"{100 * row['coverage']:.1f}%, fill {100 * row['fill']:.1f}% "
                          f"({row['seconds']:.1f} s)", flush=True)
    lines = [f"Command: `.venv/bin/python bench/bench_layouts.py {shlex.join(sys.argv[1:])}`", "",
             f"Machine: {machine()}", "",
             "| corpus | corpus tokens | layout | sequence-length | instances | coverage | fill |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        about = "" if row["exact"] else "~"
        lines.append(f"| {Path(row['corpus']).parent.name}/{Path(row['corpus']).name} | {row['corpus_tokens']:,} | "
                     f"{row['layout']} | {row['sequence_length']} | {row['instances']:,} | "
                     f"{about}{100 * row['coverage']:.1f}% | {about}{100 * row['fill']:.1f}% |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
