r"""Turn a checkpoint of run_pretraining.py (sharded by --fsdp or not) into a plain Hugging Face model dir.

Example (a 2-process --fsdp full_shard run's checkpoint, converted in one process, no GPU needed):

    python convert_checkpoint.py --checkpoint_dir out/llama-sharded/checkpoint-3000 --output_dir out/llama-3000-hf

The output is what the run's final export writes at that step: config.json, model.safetensors (the whole model,
from every process's shards), the tokenizer files and the run record, each part of a family with several parts
(ELECTRA's generator/) in its folder. It loads with the Auto classes; the written dir is checked against the
checkpoint's model (logits through transformers' Auto classes, AutoTokenizer ids) before it is renamed into place.
"""

from __future__ import annotations

import sys

from lmpretrain.cli import make_parser
from lmpretrain.errors import run_cli
from lmpretrain.log import setup_logging


def main(argv=None) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--checkpoint_dir", required=True,
                        help="a checkpoint-<step>/ folder of run_pretraining.py (with sharded/ under --fsdp, or not)")
    parser.add_argument("--output_dir", required=True, help="the HF model dir to write (new, or an empty dir)")
    args = parser.parse_args(argv)
    setup_logging()

    from lmpretrain.convert import convert_checkpoint

    written = convert_checkpoint(args.checkpoint_dir, args.output_dir)
    print(f"converted and verified: {args.checkpoint_dir} -> {written}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
