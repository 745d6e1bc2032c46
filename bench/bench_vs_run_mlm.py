"""Our MLM-only BERT against a run_mlm.py-style baseline: held-out masked loss and accuracy at equal steps, wall time.

    .venv/bin/python bench/bench_vs_run_mlm.py --tokenizer_dir /tmp/tok \\
        [--corpus ../shared/corpora/ja_aozora_medium/train.txt] [--steps 300] [--evals 3] [--markdown out.md]

The corpus has no valid/test split (../shared/corpora/README.md), so every 20th document is held out: the rest is
the training text of both runs, the held-out lines are the evaluation text of both.

* **ours**: ``run_pretraining.py`` on a bert-tiny-shaped preset with ``next-sentence-prediction: false`` (the packed
  MLM-only layout), its dataset built first with ``--build_dataset_only`` (the prep time), then trained; a
  ``checkpoint-N/`` every ``steps / evals`` steps (its wall time: when it appears, from the launch of the training
  process).
* **baseline**, built as transformers' ``examples/pytorch/language-modeling/run_mlm.py`` builds it (read, not
  copied): every line tokenized by ``AutoTokenizer`` with its special tokens (empty lines too), ``group_texts``
  (concatenated per 1,000 lines and cut into ``max_seq_length`` chunks, the remainder of each 1,000 dropped),
  ``DataCollatorForLanguageModeling`` (0.15, 80/10/10) over shuffled chunks, ``BertForMaskedLM`` with the config our
  run wrote, AdamW with the same learning rate, betas, epsilon, weight decay (not on biases and LayerNorm, as the
  Trainer) and gradient clipping, ``get_linear_schedule_with_warmup`` with the same warmup and steps (its warmup
  one step ahead, as ours: :func:`baseline_schedule`).
* **one evaluation** for both: the held-out lines as run_mlm.py's chunks and as our packed instances, masked once by
  ``DataCollatorForLanguageModeling(seed=...)`` (the same positions and replacements for every model), loss = mean
  cross-entropy over all labelled tokens and accuracy over the same tokens (what run_mlm.py's ``compute_metrics``
  and our ``evaluate`` count), plus the accuracy on the [MASK]ed, the random and the kept tokens separately.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from benchlib import machine, report  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_CORPUS = REPO.parent / "shared" / "corpora" / "ja_aozora_medium" / "train.txt"
PRESET = "bert-tiny-mlm"
GROUP_LINES = 1000  # run_mlm.py's datasets.map(batched=True) default: group_texts sees 1,000 lines at a time


def split_documents(corpus: Path, out: Path, every: int) -> tuple[Path, Path, int, int]:
    """Every ``every``-th document (blank-line separated) to heldout.txt, the others to train.txt."""
    docs, current = [], []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line)
        elif current:
            docs.append(current)
            current = []
    if current:
        docs.append(current)
    train, heldout = out / "train.txt", out / "heldout.txt"
    held = [d for i, d in enumerate(docs) if i % every == every - 1]
    kept = [d for i, d in enumerate(docs) if i % every != every - 1]
    for path, part in ((train, kept), (heldout, held)):
        path.write_text("".join("\n".join(d) + "\n\n" for d in part), encoding="utf-8")
    return train, heldout, len(kept), len(held)


def group_texts(examples: dict, length: int) -> dict:
    """run_mlm.py's group_texts: concatenate, drop the remainder, cut into chunks of ``length``."""
    concatenated = {k: [t for seq in v for t in seq] for k, v in examples.items()}
    total = len(next(iter(concatenated.values())))
    if total >= length:
        total = (total // length) * length
    return {k: [t[i:i + length] for i in range(0, total, length)] for k, t in concatenated.items()}


def run_mlm_chunks(tokenizer, path: Path, length: int) -> list[dict]:
    """Lines tokenized with special tokens (as the ``text`` dataset gives them, empty ones too), grouped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    chunks = []
    for start in range(0, len(lines), GROUP_LINES):
        encoded = tokenizer(lines[start:start + GROUP_LINES], return_special_tokens_mask=True)
        grouped = group_texts(dict(encoded), length)  # every field the tokenizer returned, as run_mlm.py groups
        chunks += [dict(zip(grouped, values)) for values in zip(*grouped.values())]
    return chunks


def baseline_schedule(optimizer, warmup_steps: int, train_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' ``get_linear_schedule_with_warmup`` with its warmup one step ahead, as ours.

    transformers' factor at 0-based step s < warmup is ``s / warmup`` (update 0 at rate 0, the peak first reached at
    update ``warmup``); ours (``lmpretrain.optim.schedule_factor``) is ``(s + 1) / warmup`` (the peak at update
    ``warmup - 1``). Both decay as ``(train - s) / (train - warmup)`` from step ``warmup`` on. Neither is wrong (the
    original BERT's TF warmup is transformers' ``step / warmup``: google-research/bert optimization.py
    ``create_optimizer``, ``global_step / num_warmup_steps`` from global step 0); the baseline takes ours so that the
    runs differ only in the data they see and in the model code."""
    from transformers import get_linear_schedule_with_warmup

    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)  # theirs, built aside: its factor alone
    theirs = get_linear_schedule_with_warmup(probe, warmup_steps, train_steps).lr_lambdas[0]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: theirs(step + 1) if step < warmup_steps else theirs(step))


def our_preset(steps: int, evals: int, batch: int, length: int, warmup: int | None = None) -> dict:
    base = json.loads((REPO / "parameter.json").read_text(encoding="utf-8"))["bert-tiny"]
    preset = {k: v for k, v in base.items() if k not in ("train-steps", "save-steps", "eval-steps", "eval-share")}
    preset.update({"next-sentence-prediction": False, "train-steps": steps, "save-steps": max(1, steps // evals),
                   "save-total-limit": evals + 1, "eval-share": 0.0, "batch-size": {"-1": batch},
                   "sequence-length": length, "logging-steps": max(1, steps // 10)})
    if warmup is not None:
        preset["warmup-steps"] = warmup
    return preset


def train_ours(args, train: Path, work: Path) -> dict:
    """Build the dataset (timed), then train with checkpoints; the wall time each checkpoint appeared."""
    parameter_file = work / "parameter.json"
    preset = our_preset(args.steps, args.evals, args.batch, args.length, args.warmup)
    parameter_file.write_text(json.dumps({PRESET: preset}), encoding="utf-8")
    model_dir = work / "ours"
    command = [sys.executable, str(REPO / "run_pretraining.py"), "--input_file", str(train), "--tokenizer_dir",
               args.tokenizer_dir, "--model_dir", str(model_dir), "--parameter_file", str(parameter_file),
               "--model_type", PRESET, "--cache_dir", str(work / "cache"), "--seed", str(args.seed),
               "--device", "cpu", "--num_workers", "1"]
    env = {**os.environ, "LMP_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    subprocess.run(command + ["--build_dataset_only"], check=True, env=env, capture_output=True)
    prep_s = time.perf_counter() - started
    started = time.perf_counter()
    log = open(work / "ours.log", "w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    seen: dict[int, float] = {}
    while process.poll() is None:
        for path in model_dir.glob("checkpoint-*"):
            step = path.name.split("-")[-1]
            if step.isdigit() and int(step) not in seen and (path / "model.safetensors").is_file():
                seen[int(step)] = time.perf_counter() - started  # saved atomically: complete when it appears
        time.sleep(0.2)
    log.close()
    if process.returncode != 0:
        raise SystemExit(f"our run failed: see {work / 'ours.log'}")
    checkpoints = {step: (model_dir / f"checkpoint-{step}", wall) for step, wall in sorted(seen.items())}
    return {"prep_s": prep_s, "checkpoints": checkpoints, "total_s": time.perf_counter() - started}


def train_baseline(args, tokenizer, train: Path, config_dir: Path, work: Path) -> dict:
    from transformers import (
        AutoConfig,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
    )

    preset = our_preset(args.steps, args.evals, args.batch, args.length, args.warmup)
    started = time.perf_counter()
    chunks = run_mlm_chunks(tokenizer, train, args.length)
    prep_s = time.perf_counter() - started
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    model = BertForMaskedLM(AutoConfig.from_pretrained(config_dir))
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=preset["learning-rate"], betas=(0.9, 0.999), eps=1e-6)
    scheduler = baseline_schedule(optimizer, preset["warmup-steps"], args.steps)
    loader = torch.utils.data.DataLoader(chunks, batch_size=args.batch, shuffle=True, drop_last=True,
                                         collate_fn=collator, generator=torch.Generator().manual_seed(args.seed))
    save_every, checkpoints, step = preset["save-steps"], {}, 0
    while step < args.steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % save_every == 0 or step == args.steps:
                path = work / "baseline" / f"checkpoint-{step}"
                model.save_pretrained(path)
                checkpoints[step] = (path, time.perf_counter() - started)
            if step == args.steps:
                break
    return {"prep_s": prep_s, "checkpoints": checkpoints, "chunks": len(chunks)}


def fixed_eval_batches(tokenizer, heldout: Path, args, encoder) -> dict[str, list[dict]]:
    """The held-out lines as run_mlm.py's chunks and as our packed instances, masked once with a fixed seed."""
    from transformers import DataCollatorForLanguageModeling

    from lmpretrain.data import build_or_load_dataset, make_instances

    chunks = run_mlm_chunks(tokenizer, heldout, args.length)[:args.eval_sequences]
    shards = build_or_load_dataset([str(heldout)], args.tokenizer_dir, str(Path(args.work) / "cache"), num_workers=1)
    packed = make_instances(shards, "packed_sentences", sequence_length=args.length, cls_id=encoder.cls_token_id,
                            sep_id=encoder.sep_token_id, seed=args.seed, sentence_marks=encoder.sentence_marks())
    instances = [{"input_ids": packed[p]["input_ids"].tolist()} for p in range(min(len(packed), args.eval_sequences))]
    for inst in instances:
        inst["special_tokens_mask"] = tokenizer.get_special_tokens_mask(inst["input_ids"],
                                                                        already_has_special_tokens=True)
    sets = {}
    for name, features in (("run_mlm.py chunks", chunks), ("our packed instances", instances)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=args.mask_seed)
        batches = []
        for start in range(0, len(features), 32):
            part = [{k: v for k, v in f.items() if k in ("input_ids", "special_tokens_mask")}
                    for f in features[start:start + 32]]
            batch = collator(part)
            batch["original"] = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
            batches.append(batch)
        sets[name] = batches
    return sets


@torch.no_grad()
def evaluate_dir(model_dir: Path, batches: list[dict], mask_id: int) -> dict:
    """Loss and accuracy over every labelled token; accuracy by what the token was shown as."""
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    loss_sum, counts, correct = 0.0, np.zeros(4), np.zeros(4)
    for batch in batches:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        labelled = batch["labels"] != -100
        targets = batch["labels"][labelled]
        chosen = logits[labelled]
        loss_sum += float(torch.nn.functional.cross_entropy(chosen.float(), targets, reduction="sum"))
        hit = (chosen.argmax(-1) == targets).numpy()
        shown = batch["input_ids"][labelled]
        kinds = np.where((shown == mask_id).numpy(), 1, np.where((shown == targets).numpy(), 3, 2))
        for kind in (1, 2, 3):
            counts[kind] += (kinds == kind).sum()
            correct[kind] += hit[kinds == kind].sum()
        counts[0] += len(targets)
        correct[0] += hit.sum()
    return {"loss": loss_sum / counts[0], "accuracy": correct[0] / counts[0],
            "by_kind": (correct[1:] / np.maximum(counts[1:], 1)).tolist(), "tokens": int(counts[0])}


def main(argv=None) -> list[tuple]:
    """The rows of the table: (step, run, train wall s, held-out set, evaluate_dir's result)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer_dir", required=True, help="a tokenizer dir written by train_tokenizer.py")
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--evals", type=int, default=3, help="checkpoints evaluated: every steps / evals steps")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--heldout_every", type=int, default=20, help="hold out every N-th document")
    parser.add_argument("--eval_sequences", type=int, default=128)
    parser.add_argument("--warmup", type=int, help="warmup steps of both runs (default: the bert-tiny preset's)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--mask_seed", type=int, default=1234)
    parser.add_argument("--work", help="working dir (default: a temporary one, removed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both runs (1: no spinning threads "
                        "on a loaded machine)")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python", "bench/bench_vs_run_mlm.py",
                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    os.environ.setdefault("LMP_NO_PROGRESS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    from lmpretrain.tokenization import FastEncoder

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_run_mlm_") as tmp:
        args.work = args.work or tmp
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        train, heldout, n_train, n_held = split_documents(Path(args.corpus), work, args.heldout_every)
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_dir)
        ours = train_ours(args, train, work)
        print(f"ours: prep {ours['prep_s']:.1f} s, checkpoints {list(ours['checkpoints'])}", flush=True)
        config_dir = next(iter(ours["checkpoints"].values()))[0]
        baseline = train_baseline(args, tokenizer, train, config_dir, work)
        print(f"baseline: prep {baseline['prep_s']:.1f} s, {baseline['chunks']} chunks", flush=True)
        with FastEncoder.from_pretrained(args.tokenizer_dir) as encoder:
            sets = fixed_eval_batches(tokenizer, heldout, args, encoder)
        rows = []
        for step in sorted(set(ours["checkpoints"]) & set(baseline["checkpoints"])):
            for name, run in (("ours", ours), ("run_mlm.py-style", baseline)):
                path, wall = run["checkpoints"][step]
                for set_name, batches in sets.items():
                    result = evaluate_dir(path, batches, tokenizer.mask_token_id)
                    rows.append((step, name, wall, set_name, result))
                    print(step, name, f"{wall:.0f} s", set_name, {k: result[k] for k in ("loss", "accuracy")},
                          flush=True)
    load_after = os.getloadavg()
    preset = our_preset(args.steps, args.evals, args.batch, args.length, args.warmup)
    lines = ["### Held-out masked loss against a run_mlm.py-style baseline (issue 29, item 4)", "",
             "```", command, "```", "",
             f"Machine: {machine()}. Load average (1/5/15 min) {load_before[0]:.1f}/{load_before[1]:.1f}/"
             f"{load_before[2]:.1f} before, {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f} after: the 2 "
             f"cores were shared with other agents' work; read the wall times as a ratio within this run.",
             f"Corpus `{Path(args.corpus).parent.name}`: {n_train} documents trained on, {n_held} held out (every "
             f"{args.heldout_every}-th). bert-tiny shape (2 x 128, ffn 512, 2 heads), sequence {args.length}, batch "
             f"{args.batch}, {args.steps} steps, lr {preset['learning-rate']:g}, warmup "
             f"{preset['warmup-steps']} (the same rates step for step), linear decay, fp32 CPU on "
             f"{args.threads} torch thread(s) each, seed {args.seed}. Prep (tokenize and "
             f"lay out the training text): ours {ours['prep_s']:.1f} s (dataset build), baseline "
             f"{baseline['prep_s']:.1f} s (AutoTokenizer + group_texts: {baseline['chunks']:,} chunks).",
             f"Evaluation: the first {args.eval_sequences} sequences of each held-out set, masked once "
             f"(transformers' collator, seed {args.mask_seed}), the same tensors for every model.", "",
             "| step | run | train wall s | held-out set | masked tokens | loss | accuracy | acc. [MASK] | "
             "acc. random | acc. kept |", "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for step, name, wall, set_name, r in rows:
        m, rnd, kept = r["by_kind"]
        lines.append(f"| {step} | {name} | {wall:.0f} | {set_name} | {r['tokens']:,} | {r['loss']:.3f} | "
                     f"{r['accuracy']:.4f} | {m:.4f} | {rnd:.4f} | {kept:.4f} |")
    report(lines, args.markdown)
    return rows


if __name__ == "__main__":
    main()
