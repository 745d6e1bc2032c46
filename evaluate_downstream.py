r"""Is the pretraining working? Fine-tune copies of a model dir on a small task and report its metric over seeds.

Example (after the README's quick start; a task built by scripts/make_author_task.py or any task dir):

    python evaluate_downstream.py --model_dir out/bert-tiny --task out/aozora-same-work --output_dir out/probe

The model dir is an exported model or a checkpoint-N/ folder (both are Hugging Face dirs with their tokenizer), or a
hub name (org/name[@revision], its cached snapshot; downloaded unless HF_HUB_OFFLINE=1), loaded with
AutoModelForSequenceClassification: encoders use their own head, causal LMs (GPT-2, Llama) the last
non-pad token. TASK_DIR holds train, dev and test as .jsonl (fields "text" or "text_a"/"text_b", and "label") or
.tsv with a header. String or integer labels: classification, reported as accuracy; float labels: regression,
reported as Pearson and Spearman correlation. Each seed fine-tunes a fresh copy (its head, dropout and data order
from the seed); the mean and the spread over seeds go to <output_dir>/downstream_results.json with every seed's
train, dev and test metrics, and one summary line goes to stdout. Bad task files end with one "error: ..." line
naming the file, line and key (exit code 2).

JGLUE (MARC-ja, JNLI, JSTS, JCoLA) as you have it locally (nothing is downloaded): give the dataset's dir, e.g.
--task JGLUE/datasets/jnli-v1.3 (named marc_ja-v*, jnli-v*, jsts-v*, jcola-v*; or any dir with --task_format
jglue-jnli), holding train-v*.json and valid-v*.json with JGLUE's own fields. Without test labels, test is valid
(as papers report) and dev is --dev_share of train (seed 0), held out of train; with a labelled test-v*.json, dev
is valid and test is test.

--zero_shot (causal LMs): no fine-tuning; each label's verbalizer (--label_words: a JSON file or inline object
{"label": "text", ...}; without it, JGLUE's built-in words, else the label itself) is scored as a continuation of
--prompt (a template with {text}, or {text_a} and {text_b}) by its summed token log-likelihood; the best label is
the prediction, reported with the same metrics on dev and test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lmpretrain.cli import make_parser
from lmpretrain.errors import UserError, run_cli
from lmpretrain.log import setup_logging


def default_output_dir(model_dir: str, task_dir: str) -> Path:
    model = Path(model_dir).resolve()
    name = f"{model.parent.name}-{model.name}" if model.name.startswith("checkpoint-") else model.name
    return Path("downstream") / f"{name}__{Path(task_dir).resolve().name}"


def main(argv=None) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--model_dir", required=True,
                        help="an exported model dir, a checkpoint-N/ folder or a hub name (org/name[@revision])")
    parser.add_argument("--task", required=True, help="a dir with train, dev and test (.jsonl or .tsv), or a JGLUE "
                        "dataset dir (marc_ja-v*, jnli-v*, jsts-v*, jcola-v*)")
    parser.add_argument("--task_format", default=None,
                        choices=["plain", "jglue-marc_ja", "jglue-jnli", "jglue-jsts", "jglue-jcola"],
                        help="how --task is read (default: JGLUE's format for a dir named like JGLUE's, else plain)")
    parser.add_argument("--dev_share", type=float, default=0.1,
                        help="JGLUE without test labels: the share of train held out as dev (seed 0)")
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
    parser.add_argument("--zero_shot", action="store_true",
                        help="causal LMs: score each label's verbalizer as a continuation, no fine-tuning")
    parser.add_argument("--label_words", default=None,
                        help="--zero_shot: a JSON file or inline JSON object mapping each label to its verbalizer text")
    parser.add_argument("--prompt", default=None,
                        help="--zero_shot: the prompt template ({text}, or {text_a} and {text_b})")
    args = parser.parse_args(argv)
    setup_logging()

    from lmpretrain.downstream import ProbeSettings, evaluate, summary_line  # torch and transformers: after --help
    from lmpretrain.hub import local_dir

    if (args.label_words or args.prompt) and not args.zero_shot:
        raise UserError("--label_words and --prompt go with --zero_shot")
    settings = ProbeSettings(seeds=args.seeds, seed=args.seed, learning_rate=args.learning_rate, epochs=args.epochs,
                             batch_size=args.batch_size, max_length=args.max_length, device=args.device,
                             zero_shot=args.zero_shot, label_words=read_label_words(args.label_words),
                             prompt=args.prompt, task_format=args.task_format, dev_share=args.dev_share)
    output_dir = args.output_dir or default_output_dir(args.model_dir, args.task)
    model_dir = local_dir(args.model_dir, "--model_dir")
    print(summary_line(evaluate(model_dir, args.task, output_dir, settings)), flush=True)


def read_label_words(value: str | None) -> dict | None:
    """--label_words: an inline JSON object or a JSON file holding one (label -> verbalizer text)."""
    if value is None:
        return None
    inline = value.lstrip().startswith("{")
    where = "--label_words" if inline else f"--label_words {value}"
    try:
        text = value if inline else Path(value).read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"{where}: cannot be read ({error.strerror})") from None
    try:
        words = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(words, dict) or not all(isinstance(v, str) for v in words.values()):
        raise UserError(f"{where}: a JSON object mapping each label to its verbalizer text is expected")
    return words


if __name__ == "__main__":
    sys.exit(run_cli(main))
