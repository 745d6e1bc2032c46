"""Training throughput on a GPU (issue 15, item 5): our loop against transformers' ``Trainer``, eager and compiled.

    python bench/bench_gpu.py [--markdown out.md]                  # a CUDA GPU: the base models below, bf16
    python bench/bench_gpu.py --smoke                              # a CPU: tiny presets, 4 steps, fp32, 1 thread
    python bench/bench_gpu.py --only bert-base@128 gpt2-small@1024 --steps 30 --modes eager compiled

Cases (``preset@sequence-length``, per-device batch): BERT-base, RoBERTa-base and ELECTRA-base at 128 (batch 128) and
512 (batch 32), GPT-2 small at 1024 (batch 16), ModernBERT-base at 1024 (batch 16), Llama-1B at 2048 (batch 4),
DeBERTa-v3-base at 512 (batch 32). For each, in this one invocation and with the same batches:

- **ours**: ``lmpretrain.trainer.train`` (run_pretraining.py's loop: the family's instances, masking and loss terms,
  the MLM head on the masked positions only, its ``--dataloader_workers``), bf16 autocast (``--bf16``), logging every
  step; ``compiled`` adds ``--compile``;
- **Trainer**: ``transformers.Trainer`` on the same transformers model (same config, same initial weights, SDPA
  attention, ModernBERT's FlashAttention where installed), as run_mlm.py / run_clm.py train it: the model's own
  forward with ``labels`` (logits over every position), AdamW with the same settings, ``bf16=True``;
  ``torch_compile=True`` when compiled. ELECTRA and DeBERTa-v3 train a generator and a discriminator together, which
  no transformers class does: they have no Trainer row.

The first ``--warmup`` steps (compilation, allocator warm-up) are not timed. Printed per case and mode: tokens/s
(real, non-padding tokens), sequences/s, TFLOPS per device and MFU (the same model FLOPs per batch for both columns:
``lmpretrain.models.flops``, i.e. the useful work; Trainer's full-vocabulary logits are extra work it does not get
credit for), and peak GPU memory (``torch.cuda.max_memory_allocated``). Ours also prints the first step's seconds
(compilation when compiled). MFU is against the device's dense bf16 peak (``lmpretrain.throughput``), or
``--peak_tflops``.

The corpus is synthetic unless ``--corpus`` is given: documents of pseudo-words (Zipf-distributed, a fixed seed)
and a WordPiece vocabulary trained on them (no word segmenter), so the benchmark needs nothing outside the repo.
"""

from __future__ import annotations

import argparse
import copy
import gc
import inspect
import json
import os
import random
import shlex
import string
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import machine, report  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LMP_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class Case:
    preset: str
    sequence_length: int
    batch: int

    @property
    def name(self) -> str:
        return f"{self.preset}@{self.sequence_length}"


GPU_CASES = (Case("bert-base", 128, 128), Case("bert-base", 512, 32), Case("roberta-base", 128, 128),
             Case("roberta-base", 512, 32), Case("electra-base", 128, 128), Case("electra-base", 512, 32),
             Case("gpt2-small", 1024, 16), Case("modernbert-base", 1024, 16), Case("llama-1b", 2048, 4),
             Case("deberta-v3-base", 512, 32))
SMOKE_CASES = (Case("bert-tiny", 32, 4), Case("electra-tiny", 32, 4), Case("llama-tiny", 32, 4))


def synthetic_corpus(path: Path, words: int, seed: int = 0) -> Path:
    """Documents (blank-line separated) of sentences of Zipf-distributed pseudo-words: text any family can train on."""
    rng = random.Random(seed)
    lexicon = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(20_000)]
    weights = [1 / (rank + 1) for rank in range(len(lexicon))]
    lines, written = [], 0
    while written < words:
        for _ in range(rng.randint(4, 12)):
            sentence = rng.choices(lexicon, weights, k=rng.randint(6, 24))
            lines.append(" ".join(sentence) + ".")
            written += len(sentence)
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_tokenizer(corpus: Path, out: Path, vocab_size: int, segmenter: str) -> Path:
    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer

    spec = TokenizerSpec(mecab_dic_type=segmenter, tokenizer_type="wordpiece", vocab_size=vocab_size,
                         min_frequency=2, limit_alphabet=1000)
    train_tokenizer([str(corpus)], out, spec, num_workers=min(8, os.cpu_count() or 1))
    return out


def train_args(args, case: Case, tokenizer: Path, work: Path, model_dir: Path, *, compiled: bool):
    from lmpretrain.run_config import TrainArgs

    return TrainArgs(input_file=[str(args.corpus_path)], tokenizer_dir=str(tokenizer), model_dir=str(model_dir),
                     model_type=case.preset, parameter_file=str(work / "parameter.json"), num_workers=1,
                     max_eval_samples=8, train_steps=args.warmup + args.steps, cache_dir=str(work / "cache"),
                     bf16=not args.smoke, compile=compiled, device=args.device, peak_tflops=args.peak_tflops,
                     overwrite_output_dir=True)


def ours(args, case: Case, tokenizer: Path, work: Path, tokens: list[float], *, compiled: bool) -> dict:
    """Our loop's figures over the timed steps: each step's seconds from its logged tokens/s (logging every step) and
    its real tokens (``tokens``: the same batches, built here)."""
    from lmpretrain.trainer import train

    out = work / f"ours-{case.name}-{compiled}"
    reset_memory(args.device)
    train(train_args(args, case, tokenizer, work, out, compiled=compiled))
    memory = peak_memory(args.device)
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    seconds = {r["step"]: tokens[r["step"] - 1] / r["train/tokens_per_second"] for r in rows
               if "train/tokens_per_second" in r}
    timed = [seconds[step] for step in range(args.warmup + 1, args.warmup + args.steps + 1)]
    return {"tokens_per_second": sum(tokens[args.warmup:]) / sum(timed),
            "sequences_per_second": case.batch * args.steps / sum(timed), "seconds": sum(timed), "memory": memory,
            "first_step_seconds": seconds[1]}


def reset_memory(device: str | None) -> None:
    """Free what the last run left (compiled graphs included) and restart the peak-memory count."""
    import torch

    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available() and device != "cpu":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str | None) -> float | None:
    import torch

    if torch.cuda.is_available() and device != "cpu":
        return torch.cuda.max_memory_allocated() / 2**30
    return None


def batches_and_model(args, case: Case, tokenizer: Path, work: Path):
    """The batches our loop trains on (same seed, same positions), our model built with the same seed, and its
    transformers model for Trainer; None for a family whose main part is not a transformers training class."""
    import torch

    from lmpretrain.data import positions_for_step
    from lmpretrain.data_setup import build_run_data
    from lmpretrain.distributed import init_distributed
    from lmpretrain.prepare import place_run, prepare_run

    run = prepare_run(train_args(args, case, tokenizer, work, work / "hf", compiled=False))
    try:
        layout = init_distributed(run.description.system.node_batch_sizes, local_rank=-1, node_rank=-1, device="cpu")
        data = build_run_data(place_run(run, layout), layout)
        batches = []
        for step in range(args.warmup + args.steps):
            positions = positions_for_step(step * layout.global_batch_size, layout)
            batches.append(data.collator([data.train_dataset[p] for p in positions]))
        torch.manual_seed(run.description.data.seed)
        model = run.build_model()
    finally:
        run.encoder.close()
    return batches, model, run.description.model.params


def hf_trainer(args, case: Case, batches, model, params, work: Path, *, compiled: bool) -> dict | None:
    """transformers' Trainer over the same batches, on the family's main transformers model (None: it has none
    that trains the family's objective)."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    if model.family.extractable:  # generator + discriminator: no transformers class trains them together
        return None
    hf_model = copy.deepcopy(next(iter(model.hf_models().values())))  # each mode starts from the same weights
    accepted = set(inspect.signature(hf_model.forward).parameters)
    steps = [{k: v for k, v in b.items() if k in accepted} for b in batches]
    cuda = torch.cuda.is_available() and args.device != "cpu"

    class Steps(torch.utils.data.Dataset):
        def __len__(self):
            return len(steps)

        def __getitem__(self, i):
            return steps[i]

    class Timer(TrainerCallback):
        def __init__(self):
            self.seconds, self.started = [], None

        def on_step_begin(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self.started)

    timer = Timer()
    training_args = TrainingArguments(
        output_dir=str(work / "hf-out"), per_device_train_batch_size=1, max_steps=len(steps),
        learning_rate=params.learning_rate, weight_decay=params.weight_decay, adam_epsilon=params.adam_epsilon,
        adam_beta1=params.adam_betas[0], adam_beta2=params.adam_betas[1], warmup_steps=params.warmup_steps,
        max_grad_norm=params.max_grad_norm, lr_scheduler_type="linear", logging_steps=10**9, save_strategy="no",
        report_to=[], use_cpu=not cuda, bf16=not args.smoke, torch_compile=compiled, dataloader_num_workers=0,
        dataloader_pin_memory=cuda, remove_unused_columns=False, disable_tqdm=True, seed=42)
    reset_memory(args.device)
    trainer = Trainer(model=hf_model, args=training_args, train_dataset=Steps(), data_collator=lambda items: items[0],
                      callbacks=[timer])
    trainer.train()
    memory = peak_memory(args.device)
    del trainer, hf_model  # nothing of this run stays on the device for the next one
    reset_memory(args.device)
    timed = slice(args.warmup, None)
    seconds = sum(timer.seconds[timed])
    tokens = sum(float(b["attention_mask"].sum()) for b in batches[timed])
    return {"tokens_per_second": tokens / seconds, "sequences_per_second": case.batch * args.steps / seconds,
            "seconds": seconds, "memory": memory}


def step_flops(model, batches) -> float:
    """Model FLOPs of the timed batches, as our loop counts them (the same work credited to both columns)."""
    from lmpretrain.data.loader import count_units
    from lmpretrain.models import BatchShape

    total = 0.0
    for batch in batches:
        units = count_units(batch)
        masked = batch["masked_index"].numel() if "masked_index" in batch else int(units.get("masked", 0))
        predicted = batch["predicted_index"].numel() if "predicted_index" in batch else int(units["next_tokens"])
        shape = BatchShape(*batch["input_ids"].shape, masked=masked, predicted=predicted)
        total += model.train_flops(shape)
    return total


def build_presets(cases) -> dict:
    presets = json.loads((REPO / "parameter.json").read_text(encoding="utf-8"))
    chosen = {}
    for case in cases:
        preset = dict(presets[case.preset])
        preset.update({"sequence-length": case.sequence_length, "batch-size": {"-1": case.batch},
                       "save-steps": 10**9, "eval-steps": 10**9, "logging-steps": 1, "eval-share": 0.01,
                       "warmup-steps": 2, "gradient-accumulation-steps": 1})
        preset.pop("max-position-embeddings", None)
        chosen[case.preset] = preset
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny presets, a few steps, fp32, eager only: runs on a CPU in seconds (CI runs it)")
    parser.add_argument("--only", nargs="+", default=None, metavar="PRESET@SEQ",
                        help="run these cases only (preset@sequence-length, e.g. bert-base@128); default: all")
    parser.add_argument("--batch", type=int, default=None, help="override every case's per-device batch")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 20; smoke 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; smoke 1)")
    parser.add_argument("--modes", nargs="+", choices=("eager", "compiled"), default=None,
                        help="eager and/or compiled (torch.compile) runs (default both; smoke eager)")
    parser.add_argument("--no_trainer", action="store_true", help="skip the transformers Trainer runs")
    parser.add_argument("--corpus", default=None,
                        help="a text corpus (one sentence per line, blank lines between documents; MeCab ipadic "
                             "pre-tokenization) instead of the synthetic one")
    parser.add_argument("--vocab_size", type=int, default=None, help="WordPiece vocabulary (default 32768; smoke 500)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when present)")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="the device's dense bf16 peak TFLOPS for MFU, where lmpretrain.throughput has none")
    parser.add_argument("--markdown", default=None, help="also write the result table to this file")
    args = parser.parse_args()
    import torch

    from lmpretrain.log import setup_logging
    from lmpretrain.throughput import device_peak_tflops

    setup_logging()
    if args.smoke:  # tiny models on a (shared) CPU: a second thread per op mostly adds contention
        torch.set_num_threads(1)
    args.steps = args.steps or (3 if args.smoke else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    modes = args.modes or (["eager"] if args.smoke else ["eager", "compiled"])
    cases = SMOKE_CASES if args.smoke else GPU_CASES
    if args.only:
        wanted = set(args.only)
        cases = tuple(c for c in cases if c.name in wanted or c.preset in wanted)
        if not cases:
            parser.error(f"--only {' '.join(args.only)}: no such case (cases: {', '.join(c.name for c in cases)})")
    if args.batch:
        cases = tuple(Case(c.preset, c.sequence_length, args.batch) for c in cases)
    if not args.smoke and not torch.cuda.is_available() and args.device != "cpu":
        parser.error("no CUDA GPU here: run with --smoke on a CPU (or --device cpu for the full cases, slowly)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    peak, peak_source = device_peak_tflops(device, args.peak_tflops)
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        sequences = args.warmup + args.steps
        words = sum(c.batch * c.sequence_length for c in cases) * sequences // len(cases) * 3
        args.corpus_path = Path(args.corpus) if args.corpus else synthetic_corpus(work / "corpus.txt", words)
        tokenizer = make_tokenizer(args.corpus_path, work / "tokenizer", args.vocab_size or (500 if args.smoke else
                                                                                            32768),
                                   "ipadic" if args.corpus else "none")
        (work / "parameter.json").write_text(json.dumps(build_presets(cases)))
        for case in cases:
            batches, model, params = batches_and_model(args, case, tokenizer, work)
            flops = step_flops(model, batches[args.warmup:])
            tokens = [float(b["attention_mask"].sum()) for b in batches]
            for mode in modes:
                compiled = mode == "compiled"
                mine = ours(args, case, tokenizer, work, tokens, compiled=compiled)
                theirs = None if args.no_trainer else hf_trainer(args, case, batches, model, params, work,
                                                                 compiled=compiled)
                rows.append((case, mode, params, mine, theirs, flops))
                print(f"{case.name} {mode}: ours {mine['tokens_per_second']:,.0f} tokens/s"
                      + (f", Trainer {theirs['tokens_per_second']:,.0f} tokens/s, ratio "
                         f"{mine['tokens_per_second'] / theirs['tokens_per_second']:.2f}" if theirs else ""),
                      flush=True)
            del batches, model
    command = "python bench/bench_gpu.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    precision = "fp32" if args.smoke else "bf16"
    lines = [f"### Training throughput on {name} ({precision}): ours vs transformers' Trainer", "",
             f"Command: `{command}`  ",
             f"Machine: {machine()}; device {name}; torch on {torch.get_num_threads()} threads  ",
             f"Steps: {args.steps} timed after {args.warmup} untimed; same batches, same initial weights; MFU against "
             f"{peak_source if peak else f'no peak ({peak_source}; --peak_tflops gives one)'}; model FLOPs from "
             "lmpretrain.models.flops for both; wall "
             f"{time.perf_counter() - started:.0f} s.", "",
             "| case | mode | batch | ours tokens/s | ours seq/s | ours TFLOPS | ours MFU | ours peak GiB | "
             "first step s | Trainer tokens/s | Trainer seq/s | Trainer MFU | Trainer peak GiB | ours / Trainer |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def mfu(tflops):
        return f"{100 * tflops / peak:.1f}%" if peak else "n/a"

    def gib(value):
        return f"{value:.1f}" if value is not None else "n/a"

    for case, mode, _params, mine, theirs, flops in rows:
        ours_tflops = flops / mine["seconds"] / 1e12
        cells = [case.name, mode, str(case.batch), f"{mine['tokens_per_second']:,.0f}",
                 f"{mine['sequences_per_second']:,.1f}", f"{ours_tflops:.3g}", mfu(ours_tflops), gib(mine["memory"]),
                 f"{mine['first_step_seconds']:.1f}"]
        if theirs:
            theirs_tflops = flops / theirs["seconds"] / 1e12
            cells += [f"{theirs['tokens_per_second']:,.0f}", f"{theirs['sequences_per_second']:,.1f}",
                      mfu(theirs_tflops), gib(theirs["memory"]),
                      f"{mine['tokens_per_second'] / theirs['tokens_per_second']:.2f}×"]
        else:
            cells += ["—"] * 4 + ["no Trainer class (generator + discriminator)" if not args.no_trainer else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    report(lines, args.markdown)


if __name__ == "__main__":
    main()
