r"""Is the pretraining working? Fine-tune copies of a model dir on a small task and report its metric over seeds.

Example (after the README's quick start; a task built by scripts/make_author_task.py or any task dir):

    python evaluate_downstream.py --model_dir out/bert-tiny --task out/aozora-same-work --output_dir out/probe

The model dir is an exported model or a checkpoint-N/ folder (both are Hugging Face dirs with their tokenizer),
loaded with AutoModelForSequenceClassification: encoders use their own head, causal LMs (GPT-2, Llama) the last
non-pad token. TASK_DIR holds train, dev and test as .jsonl (fields "text" or "text_a"/"text_b", and "label") or
.tsv with a header. String or integer labels: classification, reported as accuracy; float labels: regression,
reported as Pearson and Spearman correlation. Each seed fine-tunes a fresh copy (its head, dropout and data order
from the seed); the mean and the spread over seeds go to <output_dir>/downstream_results.json with every seed's
train, dev and test metrics, and one summary line goes to stdout. Bad task files end with one "error: ..." line
naming the file, line and key (exit code 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lmpretrain.cli import make_parser
from lmpretrain.errors import run_cli
from lmpretrain.log import setup_logging


def default_output_dir(model_dir: str, task_dir: str) -> Path:
    model = Path(model_dir).resolve()
    name = f"{model.parent.name}-{model.name}" if model.name.startswith("checkpoint-") else model.name
    return Path("downstream") / f"{name}__{Path(task_dir).resolve().name}"


def main(argv=None) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--model_dir", required=True, help="an exported model dir or a checkpoint-N/ folder")
    parser.add_argument("--task", required=True, help="a dir with train, dev and test (.jsonl or .tsv)")
    parser.add_argument("--output_dir", default=None,
                        help="where downstream_results.json goes (default: downstream/<model>__<task> here)")
    parser.add_argument("--seeds", type=int, default=3, help="how many fine-tuning runs (seeds --seed, --seed+1, ...)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--learning_rate", type=float, default=None,
                        help="peak learning rate (default: 5e-5 scaled by 768 / the model's hidden size, at most 1e-3)")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the train split")
    parser.add_argument("--batch_size", type=int, default=16, help="examples per step")
    parser.add_argument("--max_length", type=int, default=128,
                        help="tokens per example, at most the model's positions")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when present)")
    args = parser.parse_args(argv)
    setup_logging()

    from lmpretrain.downstream import ProbeSettings, evaluate, summary_line  # torch and transformers: after --help

    settings = ProbeSettings(seeds=args.seeds, seed=args.seed, learning_rate=args.learning_rate, epochs=args.epochs,
                             batch_size=args.batch_size, max_length=args.max_length, device=args.device)
    output_dir = args.output_dir or default_output_dir(args.model_dir, args.task)
    print(summary_line(evaluate(args.model_dir, args.task, output_dir, settings)), flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main))
