"""Quality per pretraining step: the downstream probe's accuracy at step 0 (random init) and after 25%, 50% and 100%
of a fixed pretraining budget.

    nice -n 19 .venv/bin/python bench/bench_probe_curve.py --model_types bert-tiny --steps 2000 \\
        [--corpus ../shared/corpora/ja_aozora_medium/train.txt] [--seeds 3] [--task_kind continuation] \\
        [--work DIR [--reuse_runs]] [--markdown out.md]

For each preset (bert-tiny; bert-small when asked): a MeCab + WordPiece tokenizer (vocab 16000) is trained on the
corpus, the probe task is built from it by ``lmpretrain.author_task.build_task`` (what scripts/make_author_task.py
runs; split by work, chance 0.5): by default the continuation task (B is A's next paragraph, or a paragraph from
another work of the split), or ``--task_kind same_work`` (pairs from one work or two), the preset is
pretrained on the corpus for ``--steps`` steps (its own batch, learning rate and warmup; checkpoints every quarter),
and the probe (``lmpretrain.downstream.evaluate``, ``--seeds`` fine-tuning runs each) is run on the initial model
(built exactly as the trainer builds it: the run's seed, then ``run.build_model()``; written as an HF dir) and on
``checkpoint-N`` at 25%, 50% and 100%. The table gives the test accuracy's mean ± standard deviation over seeds,
its min..max, the dev accuracy, the run's held-out MLM perplexity at that step, and the chance level; step 0 is
the comparison run of the same invocation.

``--reuse_runs`` (with ``--work``) takes a finished run of the same preset and budget already under ``--work`` (its
checkpoints, its step-0 model and its logged perplexities) instead of pretraining again, to probe the same checkpoints
on another task; the table says so.

Note: the task's paragraphs come from the pretraining corpus (the probe asks whether the representation learned
from this text tells how paragraphs fit together; its labels are never seen in pretraining).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from benchlib import machine, report  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LMP_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "training_state.pt", "lmpretrain_checkpoint.json")


def make_tokenizer(corpus: Path, out: Path) -> Path:
    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer

    if not (out / "tokenizer_config.json").is_file():
        spec = TokenizerSpec(mecab_dic_type="ipadic", tokenizer_type="wordpiece", vocab_size=16000, min_frequency=2)
        train_tokenizer([str(corpus)], out, spec, num_workers=1)
    return out


def pretrain(args, model_type: str, tokenizer: Path, work: Path) -> tuple[Path, list[tuple[int, Path]], dict]:
    """Pretrain ``model_type`` for ``args.steps``; return the run dir, [(step, model dir)] with step 0 the initial
    model, and the held-out perplexity logged at each step."""
    import torch

    from lmpretrain.prepare import prepare_run
    from lmpretrain.run_config import TrainArgs
    from lmpretrain.trainer import train

    quarter = max(1, args.steps // 4)
    run_dir, step0 = work / model_type, work / f"{model_type}-step0"
    summary_file = run_dir / "train_summary.json"
    if args.reuse_runs and summary_file.is_file() and (step0 / "config.json").is_file():
        if json.loads(summary_file.read_text(encoding="utf-8")).get("step") != args.steps:
            raise SystemExit(f"{summary_file}: not a finished run of {args.steps} steps (leave out --reuse_runs)")
        print(f"# pretraining {model_type}: reusing the finished run in {run_dir}", flush=True)
        return run_dir, [(0, step0)] + checkpoints(run_dir, quarter, args.steps), perplexities(run_dir)
    presets = json.loads((REPO / "parameter.json").read_text(encoding="utf-8"))
    preset = dict(presets[model_type], **{"train-steps": args.steps, "save-steps": quarter, "eval-steps": quarter,
                                          "logging-steps": min(50, quarter), "save-total-limit": 5})
    params = work / "parameter.json"
    params.write_text(json.dumps({model_type: preset}, indent=1), encoding="utf-8")
    run_dir = work / model_type
    targs = TrainArgs(input_file=[str(args.corpus)], tokenizer_dir=str(tokenizer), model_dir=str(run_dir),
                      model_type=model_type, parameter_file=str(params), num_workers=1, max_eval_samples=256,
                      cache_dir=str(work / "cache"), do_whole_word_mask=True, dataloader_workers=0,
                      overwrite_output_dir=True)
    draft = prepare_run(targs)  # the trainer's own first phase: the model it builds from the run's seed
    torch.manual_seed(draft.description.data.seed)
    initial = draft.build_model()
    draft.resources.close()
    started = time.perf_counter()
    train(targs)
    print(f"# pretraining {model_type}: {args.steps} steps in {time.perf_counter() - started:.0f} s", flush=True)
    points = checkpoints(run_dir, quarter, args.steps)
    shutil.rmtree(step0, ignore_errors=True)
    shutil.copytree(points[0][1], step0, ignore=shutil.ignore_patterns(*WEIGHT_FILES))  # tokenizer, record
    initial.save_pretrained(step0)
    return run_dir, [(0, step0)] + points, perplexities(run_dir)


def checkpoints(run_dir: Path, quarter: int, steps: int) -> list[tuple[int, Path]]:
    from lmpretrain.checkpoint import list_checkpoints

    return [(step, path) for step, path in list_checkpoints(run_dir) if step in {quarter, 2 * quarter, steps}]


def perplexities(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "train_summary.json").read_text(encoding="utf-8"))
    perplexity = {0: summary.get("eval/perplexity_at_start")}  # the run's own eval of its initial model
    for line in (run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "eval/perplexity" in row:
            perplexity[int(row["step"])] = row["eval/perplexity"]
    return perplexity


def probe(args, model_dir: Path, task: Path, out: Path) -> dict:
    from lmpretrain.downstream import ProbeSettings, evaluate

    settings = ProbeSettings(seeds=args.seeds, epochs=args.probe_epochs, batch_size=16,
                             max_length=args.probe_max_length, device="cpu")
    return evaluate(model_dir, task, out, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_types", nargs="+", default=["bert-tiny"])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared/corpora/ja_aozora_medium/train.txt")
    parser.add_argument("--steps", type=int, default=2000, help="the pretraining budget (checkpoints every quarter)")
    parser.add_argument("--seeds", type=int, default=3, help="probe fine-tuning seeds per point")
    parser.add_argument("--probe_epochs", type=int, default=3)
    parser.add_argument("--probe_max_length", type=int, default=128, help="tokens per probe pair")
    parser.add_argument("--pairs", type=int, nargs=3, default=(2000, 400, 400), metavar=("TRAIN", "DEV", "TEST"))
    parser.add_argument("--task_kind", default="continuation", choices=("continuation", "same_work"),
                        help="the probe task built from the corpus (lmpretrain.author_task)")
    parser.add_argument("--max_chars", type=int, default=None,
                        help="characters kept of a paragraph (default: continuation 80, A's last and B's first, "
                             "~60 tokens each at ~1.3 characters a token, so that the place where they meet is in a "
                             "128-token pair; same_work 400)")
    parser.add_argument("--reuse_runs", action="store_true",
                        help="probe a finished run of the same preset and --steps already under --work")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the box is shared)")
    parser.add_argument("--work", type=Path, default=None, help="keep the tokenizer, task and runs here")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    import tempfile

    import torch

    from lmpretrain.author_task import build_task
    from lmpretrain.log import setup_logging

    setup_logging()
    torch.set_num_threads(args.threads)
    command = "python bench/" + Path(__file__).name + " " + shlex.join(sys.argv[1:])
    lines = [f"Command: `{command}`  ", f"Machine: {machine()}  ",
             f"Load average at start: {os.getloadavg()[0]:.2f} (a box shared with other jobs)", ""]
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        tokenizer = make_tokenizer(args.corpus, work / "tokenizer")
        print(f"# tokenizer: {time.perf_counter() - started:.0f} s", flush=True)
        task = work / f"task-{args.task_kind}-{args.max_chars or 'default'}"
        max_chars = args.max_chars or (80 if args.task_kind == "continuation" else 400)
        info = build_task(args.corpus, task, pairs=tuple(args.pairs), kind=args.task_kind, max_chars=max_chars)
        sizes = ", ".join(f"{s} {n} pairs ({len(info['works'][s])} works)" for s, n in info["sizes"].items())
        lines += [f"Task: {args.task_kind} pairs from {args.corpus.name} (seed 0, {max_chars} characters a "
                  f"paragraph): {sizes}; test chance "
                  f"{info['test_chance_accuracy']:.3f}", ""]
        for model_type in args.model_types:
            run_dir, points, perplexity = pretrain(args, model_type, tokenizer, work)
            lines += [f"### {model_type}, {args.steps} steps", "",
                      "| step | share | test acc. (mean ± sd) | min..max | dev accuracy | MLM perplexity | chance |",
                      "|---:|---:|---:|---:|---:|---:|---:|"]
            for step, model_dir in points:
                t0 = time.perf_counter()
                results = probe(args, model_dir, task, work / f"probe-{task.name}" / f"{model_type}-{step}")
                tests = [r["test"]["accuracy"] for r in results["per_seed"]]
                ppl = perplexity.get(step)
                lines.append(
                    f"| {step} | {step / args.steps:.0%} | {results['mean']['test']['accuracy']:.3f} ± "
                    f"{results['std']['test']['accuracy']:.3f} | {min(tests):.3f}..{max(tests):.3f} | "
                    f"{results['mean']['dev']['accuracy']:.3f} ± {results['std']['dev']['accuracy']:.3f} | "
                    f"{'-' if ppl is None else f'{ppl:,.1f}'} | {results['chance']['test']['accuracy']:.3f} |")
                print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
            lines.append("")
        lines.append(f"Total: {time.perf_counter() - started:.0f} s")
    report(lines, args.markdown)


if __name__ == "__main__":
    main()
