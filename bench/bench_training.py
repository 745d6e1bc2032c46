"""Training throughput: our loop against transformers' ``Trainer`` on the same model, batches and precision.

    .venv/bin/python bench/bench_training.py --model_types bert-tiny bert-small --steps 30 [--batch 32] \\
        [--corpus ../shared/corpora/ja_aozora_small/train.txt] [--markdown out.md]

For each preset: a MeCab + WordPiece tokenizer is trained on the corpus, then the same fixed list of batches
(our dataset pipeline and masking collator: NSP pairs, 15% masking) is trained on (1) by ``run_pretraining``'s
loop (``lmpretrain.trainer.train``, logging every step, no eval or checkpoint inside the timed steps) and (2) by
``transformers.Trainer`` with a ``BertForPreTraining`` of the same config, the same initial weights, AdamW with
the same hyperparameters, fp32, one batch per step. The first ``--warmup`` steps are not timed. Tokens/s counts
real (non-padding) tokens. A Markdown section with the figures and the ratio is printed last.
"""

from __future__ import annotations

import argparse
import json
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_tokenizer(corpus: Path, out: Path) -> Path:
    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer

    spec = TokenizerSpec(mecab_dic_type="ipadic", tokenizer_type="wordpiece", vocab_size=8000, min_frequency=2)
    train_tokenizer([str(corpus)], out, spec, num_workers=1)
    return out


def ours(args, model_type: str, tokenizer: Path, work: Path) -> list[dict]:
    """The per-step rows (with tokens/s) that our loop logs, trained with ``work/parameter.json``."""
    from lmpretrain.run_config import TrainArgs
    from lmpretrain.trainer import train

    params = work / "parameter.json"
    out = work / f"ours-{model_type}"
    train(TrainArgs(input_file=[args.corpus], tokenizer_dir=str(tokenizer), model_dir=str(out), model_type=model_type,
                    parameter_file=str(params), num_workers=1, max_eval_samples=8, train_steps=args.steps,
                    cache_dir=str(work / "cache")))
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "train/tokens_per_second" in r]
    return rows


def batches_and_model(args, model_type: str, tokenizer: Path, work: Path):
    """The exact batches our loop trained on (same seed, same positions) and our freshly initialised model."""
    from lmpretrain.data import positions_for_step
    from lmpretrain.data_setup import build_run_data
    from lmpretrain.distributed import init_distributed
    from lmpretrain.prepare import place_run, prepare_run
    from lmpretrain.run_config import TrainArgs

    params = work / "parameter.json"
    targs = TrainArgs(input_file=[args.corpus], tokenizer_dir=str(tokenizer), model_dir=str(work / "hf"),
                      model_type=model_type, parameter_file=str(params), num_workers=1, cache_dir=str(work / "cache"),
                      train_steps=args.steps)
    run = prepare_run(targs)
    layout = init_distributed(run.description.system.node_batch_sizes, local_rank=-1, node_rank=-1, device="cpu")
    data = build_run_data(place_run(run, layout), layout)
    batches = []
    for step in range(args.steps):
        positions = positions_for_step(step * layout.global_batch_size, layout)
        batch = data.collator([data.train_dataset[p] for p in positions])
        batches.append({k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels",
                                              "next_sentence_label")})
    import torch

    torch.manual_seed(targs.seed)
    model = run.build_model()
    run.encoder.close()
    return batches, model.model, run


def hf_trainer(args, batches, hf_model, run, work: Path) -> list[float]:
    """Per-step seconds of transformers' Trainer over the same batches (the warmup as our run resolves it: the
    preset's warmup-steps, or its warmup-ratio of --steps)."""
    params = run.description.optim
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Steps(torch.utils.data.Dataset):
        def __len__(self):
            return len(batches)

        def __getitem__(self, i):
            return batches[i]

    class Timer(TrainerCallback):
        def __init__(self):
            self.seconds, self.started = [], None

        def on_step_begin(self, *a, **k):
            self.started = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.seconds.append(time.perf_counter() - self.started)

    timer = Timer()
    training_args = TrainingArguments(
        output_dir=str(work / "hf-out"), per_device_train_batch_size=1, max_steps=len(batches),
        learning_rate=params.learning_rate, weight_decay=params.weight_decay, adam_epsilon=params.adam_epsilon,
        warmup_steps=params.warmup_steps, max_grad_norm=params.max_grad_norm, lr_scheduler_type="linear",
        logging_steps=10**9, save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
        remove_unused_columns=False, disable_tqdm=True, seed=42)
    trainer = Trainer(model=hf_model, args=training_args, train_dataset=Steps(), data_collator=lambda items: items[0],
                      callbacks=[timer])
    trainer.train()
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_types", nargs="+", default=["bert-tiny", "bert-small"])
    parser.add_argument("--corpus", default=str(REPO.parent / "shared/corpora/ja_aozora_small/train.txt"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="override the preset's batch-size (one node)")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    import torch

    from lmpretrain.log import setup_logging

    setup_logging()
    presets = json.loads((REPO / "parameter.json").read_text(encoding="utf-8"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        tokenizer = make_tokenizer(Path(args.corpus), work / "tokenizer")
        for model_type in args.model_types:
            preset = dict(presets[model_type], **{"save-steps": 10**9, "eval-steps": 10**9, "logging-steps": 1,
                                                   "dropout": 0.1})
            if args.batch:
                preset["batch-size"] = {"-1": args.batch}
            (work / "parameter.json").write_text(json.dumps({model_type: preset}))
            batches, hf_model, run = batches_and_model(args, model_type, tokenizer, work)
            tokens = [int(b["attention_mask"].sum()) for b in batches]
            log = ours(args, model_type, tokenizer, work)
            ours_seconds = [tokens[r["step"] - 1] / r["train/tokens_per_second"] for r in log]
            hf_seconds = hf_trainer(args, batches, hf_model, run, work)
            timed = slice(args.warmup, args.steps)
            n_tokens = sum(tokens[timed])
            ours_tps, hf_tps = n_tokens / sum(ours_seconds[timed]), n_tokens / sum(hf_seconds[timed])
            rows.append((model_type, run.description.model.params, preset["batch-size"]["-1"], ours_tps, hf_tps))
            print(f"{model_type}: ours {ours_tps:,.0f} tokens/s, Trainer {hf_tps:,.0f} tokens/s, "
                  f"ratio {ours_tps / hf_tps:.2f}", flush=True)
    command = "python bench/bench_training.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = ["### Training throughput vs transformers' Trainer (CPU, fp32)", "",
             f"Command: `{command}`  ",
             f"Machine: {machine()}; torch on {torch.get_num_threads()} threads  ",
             f"Corpus: `{args.corpus}`; steps {args.steps}, the first {args.warmup} untimed; same batches, same "
             "initial weights, AdamW, fp32, for both.", "",
             "| preset | layers × hidden, seq | batch | ours tokens/s | Trainer tokens/s | ours / Trainer |",
             "|---|---|---|---|---|---|"]
    for model_type, params, batch, ours_tps, hf_tps in rows:
        lines.append(f"| {model_type} | {params.number_of_layers} × {params.hidden_size}, {params.sequence_length} | "
                     f"{batch} | {ours_tps:,.0f} | {hf_tps:,.0f} | {ours_tps / hf_tps:.2f}× |")
    report(lines, args.markdown)


if __name__ == "__main__":
    main()
