"""The overlapped input pipeline in training (issue 15, benchmark (b)): tokens/s and the share of step time the
loop waited for its next batch, with ``--dataloader_workers 0`` (batches built in the loop's process) against 1
(built ahead in a background process), in the same invocation.

    .venv/bin/python bench/bench_input_pipeline.py [--corpus ../shared/corpora/ja_aozora_small/train.txt] \\
        [--steps 40] [--workers 0 1] [--markdown out.md]

The model is small enough that data preparation shows on a CPU: a BERT (NSP pairs, whole-word masking) with 1
layer, hidden 16, a 1,500-token MeCab + WordPiece vocabulary (alphabet limited to 500), batch 256, sequence
128, one torch thread in the loop. Each run logs every ``--window`` steps; the first window (worker start,
warm-up) is not counted. Tokens/s counts real (non-padding) tokens; the wait share is
``train/data_wait_fraction`` (time in the loop's batch fetch over the window's wall time).
A Markdown section is printed last.

``--mode layouts`` (issue 15, benchmark (a)) measures the input pipeline alone: sequences/s that ``StepBatches``
delivers to a loop that does nothing else, with each ``--workers`` count, for each instance layout (BERT's
sentence_pairs, RoBERTa's packed_sentences, ELECTRA's whole_lines with whole-word masking; GPT's causal_blocks, which
has no masking) at sequence 128, batch 256, over ``--steps`` steps after one untimed step (worker start-up).

    .venv/bin/python bench/bench_input_pipeline.py --mode layouts --workers 0 1 2 [--steps 40] [--unpacked] \\
        [--repeat 3]

``--unpacked`` also runs each worker count with every tensor sent on its own (``StepBatches(pack=False)``), the
transfer before workers packed a micro-batch into one shared-memory buffer, in the same invocation. ``--repeat N``
runs every case N times, the worker counts interleaved, and reports the medians (a 2-core machine shared with
other work moves a single run by 2x).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

from benchlib import machine, report  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LMP_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PRESET = {"number-of-layers": 1, "hidden-size": 16, "sequence-length": 128, "ffn-inner-hidden-size": 64,
          "attention-heads": 1, "warmup-steps": 2, "learning-rate": 1e-3, "batch-size": {"-1": 256},
          "train-steps": 40, "save-steps": 10**9, "eval-steps": 10**9, "logging-steps": 10, "whole-word-mask": True}


def run(args, workers: int, tokenizer: Path, work: Path) -> dict:
    from lmpretrain.run_config import TrainArgs
    from lmpretrain.trainer import train

    out = work / f"w{workers}"
    train(TrainArgs(input_file=[args.corpus], tokenizer_dir=str(tokenizer), model_dir=str(out),
                    model_type="bert-pipeline", parameter_file=str(work / "parameter.json"), num_workers=1,
                    max_eval_samples=8, train_steps=args.steps, cache_dir=str(work / "cache"),
                    dataloader_workers=workers))
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "train/tokens_per_second" in r][1:]  # the first window: start-up
    return {"workers": workers, "windows": len(rows),
            "tokens_per_second": sum(r["train/tokens_per_second"] for r in rows) / len(rows),
            "data_wait_fraction": sum(r["train/data_wait_fraction"] for r in rows) / len(rows),
            "losses": [r["train/loss"] for r in rows]}


LAYOUT_FAMILIES = {"sentence_pairs": "bert", "packed_sentences": "roberta", "whole_lines": "electra",
                   "causal_blocks": "gpt"}


def pipeline_alone(args, family: str, workers: int, tokenizer: Path, work: Path, pack: bool = True) -> float:
    """Sequences/s the input pipeline delivers for this family's layout (nothing else runs in the loop)."""
    import time

    from lmpretrain.data.loader import StepBatches
    from lmpretrain.data_setup import build_run_data
    from lmpretrain.distributed import init_distributed
    from lmpretrain.prepare import place_run, prepare_run
    from lmpretrain.run_config import TrainArgs

    run = prepare_run(TrainArgs(input_file=[args.corpus], tokenizer_dir=str(tokenizer), model_dir=str(work / "out"),
                                model_type=f"{family}-pipeline", parameter_file=str(work / "parameter.json"),
                                num_workers=1, cache_dir=str(work / "cache"), overwrite_output_dir=True,
                                do_whole_word_mask=family != "gpt"))
    try:
        layout = init_distributed(run.description.system.node_batch_sizes, local_rank=-1, node_rank=-1, device="cpu")
        data = build_run_data(place_run(run, layout), layout)
        with StepBatches(data.train_dataset, data.collator, layout, next_position=0, steps=args.steps + 1,
                         accumulation=1, workers=workers, pack=pack) as batches:
            batches.next_step()  # worker start-up, untimed
            started = time.perf_counter()
            for _ in range(args.steps):
                batches.next_step()
            elapsed = time.perf_counter() - started
    finally:
        run.encoder.close()
    return args.steps * layout.global_batch_size / elapsed


def layouts_main(args) -> None:
    from lmpretrain.log import setup_logging
    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer

    setup_logging()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-layouts-") as tmp:
        work = Path(tmp)
        shape = {k: v for k, v in PRESET.items() if k != "whole-word-mask"}
        electra = {"embedding-size": 16, "generator-size": "1/1"}  # a generator the 1-head shape divides into
        presets = {f"{family}-pipeline": {**shape, **(electra if family == "electra" else {})}
                   for family in LAYOUT_FAMILIES.values()}
        (work / "parameter.json").write_text(json.dumps(presets))
        spec = TokenizerSpec(mecab_dic_type="ipadic", tokenizer_type="wordpiece", vocab_size=1500, min_frequency=2,
                             limit_alphabet=500)
        train_tokenizer([args.corpus], work / "tokenizer", spec, num_workers=1)
        runs: dict[tuple, list[float]] = {}
        for layout_name, family in LAYOUT_FAMILIES.items():
            for repeat in range(args.repeat):  # interleaved: machine noise spreads over every worker count alike
                for workers in args.workers:
                    for pack in ((True, False) if args.unpacked and workers > 0 else (True,)):
                        key = (layout_name, workers) if pack else (layout_name, workers, "unpacked")
                        rate = pipeline_alone(args, family, workers, work / "tokenizer", work, pack=pack)
                        runs.setdefault(key, []).append(rate)
                        print(f"{layout_name} {workers} worker(s){'' if pack else ', unpacked'} "
                              f"(run {repeat + 1}/{args.repeat}): {rate:,.0f} sequences/s", flush=True)
        results = {key: statistics.median(rates) for key, rates in runs.items()}
    load_after = os.getloadavg()[0]
    command = "python bench/bench_input_pipeline.py " + shlex.join(sys.argv[1:])
    header = " | ".join(f"{w} worker(s) seq/s" for w in args.workers)
    lines = ["## Input pipeline alone, by layout (issue 15, benchmark (a))", "", f"Command: `{command.strip()}`  ",
             f"Machine: {machine()}; load average {load_before:.2f} at the start, {load_after:.2f} at the end.  ",
             f"Sequence 128, batch 256, whole-word masking (MeCab + WordPiece, 1,500 tokens) for the masked LMs; "
             f"{args.steps} steps timed after one untimed step; each figure the median of {args.repeat} "
             f"interleaved run(s).", "",
             f"| layout (family) | {header} | "
             + " | ".join(f"{a} → {b} workers" for a, b in zip(args.workers, args.workers[1:])) + " |",
             "|---|" + "---:|" * (2 * len(args.workers) - 1)]
    for layout_name, family in LAYOUT_FAMILIES.items():
        rates = [results[layout_name, w] for w in args.workers]
        ratios = [f"{b / a:.2f}×" for a, b in zip(rates, rates[1:])]
        lines.append(f"| {layout_name} ({family}) | " + " | ".join(f"{r:,.0f}" for r in rates) + " | "
                     + " | ".join(ratios) + " |")
    if args.unpacked:
        counts = [w for w in args.workers if w > 0]
        lines += ["", "Each tensor sent on its own (`pack=False`, the transfer before one-buffer packing), same "
                  "invocation:", "",
                  "| layout (family) | " + " | ".join(f"{w} worker(s): packed / unpacked seq/s" for w in counts)
                  + " |", "|---|" + "---:|" * len(counts)]
        for layout_name, family in LAYOUT_FAMILIES.items():
            cells = [f"{results[layout_name, w]:,.0f} / {results[layout_name, w, 'unpacked']:,.0f} "
                     f"({results[layout_name, w] / results[layout_name, w, 'unpacked']:.2f}×)" for w in counts]
            lines.append(f"| {layout_name} ({family}) | " + " | ".join(cells) + " |")
    report(lines, args.markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(REPO.parent / "shared/corpora/ja_aozora_small/train.txt"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--repeat", type=int, default=1,
                        help="layouts mode: run each worker count this many times, interleaved, and report medians")
    parser.add_argument("--unpacked", action="store_true",
                        help="layouts mode: also run each worker count sending every tensor on its own (the transfer "
                             "before one-buffer packing), for a same-run ratio")
    parser.add_argument("--mode", choices=("training", "layouts"), default="training",
                        help="training: tokens/s and wait share of a training run (benchmark (b)); layouts: the input "
                             "pipeline alone, sequences/s per instance layout (benchmark (a))")
    args = parser.parse_args()
    if args.mode == "layouts":
        return layouts_main(args)
    import torch

    from lmpretrain.log import setup_logging
    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer

    setup_logging()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        (work / "parameter.json").write_text(json.dumps({"bert-pipeline": {**PRESET, "logging-steps": args.window}}))
        spec = TokenizerSpec(mecab_dic_type="ipadic", tokenizer_type="wordpiece", vocab_size=1500, min_frequency=2,
                         limit_alphabet=500)
        train_tokenizer([args.corpus], work / "tokenizer", spec, num_workers=1)
        results = [run(args, workers, work / "tokenizer", work) for workers in args.workers]
    load_after = os.getloadavg()[0]

    command = "python bench/bench_input_pipeline.py " + shlex.join(sys.argv[1:])
    lines = ["## Input pipeline in training (issue 15, benchmark (b))", "", f"Command: `{command.strip()}`  ",
             f"Machine: {machine()}; load average {load_before:.2f} at the start, {load_after:.2f} at the end.  ",
             f"Model: BERT (NSP pairs, whole-word masking), 1 layer, hidden 16, vocabulary 1,500, batch 256, "
             f"sequence 128, fp32, one torch thread; {args.steps} steps, the first {args.window} not counted.", "",
             "| --dataloader_workers | tokens/s | data wait share of step time |", "|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['workers']} | {r['tokens_per_second']:,.0f} | {100 * r['data_wait_fraction']:.1f}% |")
    base = results[0]
    for r in results[1:]:
        lines.append("")
        speedup = r["tokens_per_second"] / base["tokens_per_second"]
        lines.append(f"- {r['workers']} worker(s) vs {base['workers']}: **{speedup:.2f}x** "
                     f"tokens/s; wait share {100 * base['data_wait_fraction']:.1f}% -> "
                     f"{100 * r['data_wait_fraction']:.1f}%; logged losses identical: "
                     f"{'yes' if r['losses'] == base['losses'] else 'NO'}")
    report(lines, args.markdown)


if __name__ == "__main__":
    main()
