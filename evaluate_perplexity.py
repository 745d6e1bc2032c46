r"""Measure a trained model's perplexity on a corpus file, as run_pretraining.py's evaluation measures it.

Example (the quick start's model; a checkpoint-<step>/ folder works too):

    python evaluate_perplexity.py --model_dir out/quickstart/bert-tiny --input_file samples/ja_sample.txt \
        --max_samples 200

Masked LMs: the perplexity of the masked tokens, masked as the run's evaluation masks them (its masking settings
and seed, from the run record in the model dir); causal LMs: of every next token. A model dir with the run's record
(lmpretrain_config.json) gives the same instances and masks as that run's --eval_file evaluation; another HF dir is
read with its family's usual masking and seed 42. Prints one summary line, then the result as JSON on stdout.
"""

from __future__ import annotations

import json
import sys

from lmpretrain.cli import make_parser
from lmpretrain.errors import run_cli
from lmpretrain.log import setup_logging


def main(argv=None) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--model_dir", required=True,
                        help="a final model dir or checkpoint-<step>/ of run_pretraining.py, or another HF model dir "
                             "with its tokenizer files")
    parser.add_argument("--input_file", nargs="+", required=True,
                        help="corpus: .txt files (one sentence a line, a blank line between documents), directories "
                             "of them, .jsonl or .gz")
    parser.add_argument("--max_samples", type=int, default=1000, help="evaluate on at most this many instances")
    parser.add_argument("--batch_size", type=int, default=16, help="instances per forward pass")
    parser.add_argument("--sequence_length", type=int, default=None,
                        help="tokens per instance (default: the run's, else the model's positions up to 512)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present, else cpu)")
    parser.add_argument("--cache_dir", default=None,
                        help="keep the tokenized corpus here for the next evaluation (default: a temporary dir)")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="tokenization processes (default: the machine's cores)")
    args = parser.parse_args(argv)
    setup_logging()

    from lmpretrain.perplexity import evaluate_model_dir

    result = evaluate_model_dir(args.model_dir, args.input_file, max_samples=args.max_samples,
                                batch_size=args.batch_size, sequence_length=args.sequence_length, device=args.device,
                                cache_dir=args.cache_dir, num_workers=args.num_workers)
    print(f"{result['model_dir']}: perplexity {result['perplexity']:.4f} ({result['family']} {result['term']} "
          f"{result['loss']:.4f}) on {result['instances']} {result['layout']} instances of {result['sequence_length']} "
          f"tokens from {', '.join(args.input_file)}")
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(run_cli(main))
