"""Training throughput of the newer families against the older ones of the same size, in one run on this machine:
ModernBERT vs BERT (masked LMs) and Llama vs GPT-2 (causal LMs).

    .venv/bin/python bench/bench_modern.py --steps 25 --warmup 5 \\
        [--corpus ../shared/corpora/ja_aozora_small/train.txt] [--markdown out.md]

Every family trains the same preset (layers, hidden size, ffn size, heads, sequence length, batch) through
``run_pretraining``'s loop (``lmpretrain.trainer.train``), fp32, on one BPE tokenizer without MeCab (ModernBERT's
export needs a tokenizer.json), vocabulary 8000, trained on the corpus. Tokens/s is the loop's own
``train/tokens_per_second`` (real, non-padding tokens), averaged over the steps after ``--warmup``.
Each family keeps its own layout and collator (BERT: NSP pairs, 15% masking; ModernBERT: packed sentences, 30%;
both causal families: causal blocks).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

from benchlib import machine, report  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LMP_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PAIRS = (("modernbert", "bert"), ("llama", "gpt"))


def main() -> None:
    from lmpretrain.run_config import TrainArgs
    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer
    from lmpretrain.trainer import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(REPO.parent / "shared/corpora/ja_aozora_small/train.txt"))
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--sequence_length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    preset = {"number-of-layers": args.layers, "hidden-size": args.hidden, "sequence-length": args.sequence_length,
              "ffn-inner-hidden-size": 4 * args.hidden, "attention-heads": max(1, args.hidden // 64),
              "warmup-steps": 2, "learning-rate": 1e-3, "batch-size": {"-1": args.batch},
              "train-steps": args.steps, "save-steps": args.steps, "logging-steps": 1, "eval-steps": 10 ** 6,
              "eval-share": 0.05}
    speed = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokenizer = work / "tokenizer"
        train_tokenizer([args.corpus], tokenizer, TokenizerSpec(mecab_dic_type="none", tokenizer_type="bpe",
                                                                vocab_size=8000, min_frequency=1), num_workers=1)
        (work / "parameter.json").write_text(json.dumps({f"{f}-bench": preset for pair in PAIRS for f in pair}))
        for family in (f for pair in PAIRS for f in pair):
            out = work / family
            train(TrainArgs(input_file=[args.corpus], tokenizer_dir=str(tokenizer), model_dir=str(out),
                            model_type=f"{family}-bench", parameter_file=str(work / "parameter.json"),
                            num_workers=1, max_eval_samples=8, cache_dir=str(work / f"cache-{family}")))
            rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
            rates = [r["train/tokens_per_second"] for r in rows
                     if "train/tokens_per_second" in r and r["step"] > args.warmup]
            speed[family] = sum(rates) / len(rates)
    command = "python bench/bench_modern.py " + shlex.join(sys.argv[1:])
    lines = [f"Command: `{command}`  ", f"Machine: {machine()}  ",
             f"Corpus: `{args.corpus}`; {args.layers} layers x {args.hidden} hidden, ffn {4 * args.hidden}, "
             f"sequence {args.sequence_length}, batch {args.batch}, fp32; steps {args.steps}, the first "
             f"{args.warmup} untimed.", "", "| new | tokens/s | same-size old | tokens/s | new / old |",
             "|---|---|---|---|---|"]
    for new, old in PAIRS:
        lines.append(f"| {new} | {speed[new]:,.0f} | {old} | {speed[old]:,.0f} | {speed[new] / speed[old]:.2f}x |")
    report(lines, args.markdown)


if __name__ == "__main__":
    main()
