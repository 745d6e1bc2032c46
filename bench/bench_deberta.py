"""Training throughput of two families of the same shapes in one run, by our loop (issue 16: DeBERTa-v3 vs ELECTRA).

    .venv/bin/python bench/bench_deberta.py --steps 25 --warmup 5 --batch 16 \\
        [--corpus ../shared/corpora/ja_aozora_small/train.txt] [--markdown out.md]

The same tokenizer (MeCab + WordPiece, trained on the corpus) and the same discriminator shape for every row:
``deberta-v3-tiny`` (2 × 128, ffn 512, 2 heads, seq 128), once with its half-depth generator and once with a
full-depth one, against ELECTRA of those shapes (embedding 128, generator 1/1: full width and depth, which is
what the second DeBERTa row has too). Each row is ``lmpretrain.trainer.train`` logging every step with no eval or
checkpoint in the timed steps; tokens/s counts real (non-padding) tokens, the first ``--warmup`` steps untimed.
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

from bench_training import make_tokenizer, ours  # noqa: E402  (bench/ is on sys.path when run as a script)
from benchlib import machine, report  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LMP_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def rows_to_run(presets: dict) -> dict[str, dict]:
    v3 = presets["deberta-v3-tiny"]
    shape = {k: v3[k] for k in ("number-of-layers", "hidden-size", "sequence-length", "ffn-inner-hidden-size",
                                "attention-heads", "warmup-steps", "learning-rate", "batch-size")}
    return {"deberta-v3-tiny": v3,
            "deberta-v3-tiny-fullgen": {**v3, "generator-depth": "1/1"},
            "electra-tiny-same": {**presets["electra-tiny"], **shape, "embedding-size": shape["hidden-size"],
                                  "generator-size": "1/1"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(REPO.parent / "shared/corpora/ja_aozora_small/train.txt"))
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="override the presets' batch-size (one node)")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    import torch

    from lmpretrain.log import setup_logging

    setup_logging()
    presets = rows_to_run(json.loads((REPO / "parameter.json").read_text(encoding="utf-8")))
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-families-") as tmp:
        work = Path(tmp)
        tokenizer = make_tokenizer(Path(args.corpus), work / "tokenizer")
        for model_type, preset in presets.items():
            preset = dict(preset, **{"save-steps": 10**9, "eval-steps": 10**9, "logging-steps": 1})
            if args.batch:
                preset["batch-size"] = {"-1": args.batch}
            (work / "parameter.json").write_text(json.dumps({model_type: preset}))
            log = [r for r in ours(args, model_type, tokenizer, work) if r["step"] > args.warmup]
            results[model_type] = statistics.median(r["train/tokens_per_second"] for r in log)
            print(f"{model_type}: {results[model_type]:,.0f} tokens/s", flush=True)
    reference = results["electra-tiny-same"]
    command = "python bench/bench_deberta.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = ["### DeBERTa-v3 vs ELECTRA of the same shapes (CPU, fp32, our loop)", "",
             f"Command: `{command}`  ", f"Machine: {machine()}; torch on {torch.get_num_threads()} threads  ",
             f"Corpus: `{args.corpus}`; steps {args.steps}, the first {args.warmup} untimed.", "",
             "| preset | generator | tokens/s | / ELECTRA |", "|---|---|---|---|"]
    generators = {"deberta-v3-tiny": "1 layer × 128 (half depth)", "deberta-v3-tiny-fullgen": "2 layers × 128",
                  "electra-tiny-same": "2 layers × 128"}
    for model_type, tps in results.items():
        lines.append(f"| {model_type} | {generators[model_type]} | {tps:,.0f} | {tps / reference:.2f}× |")
    report(lines, args.markdown)


if __name__ == "__main__":
    main()
