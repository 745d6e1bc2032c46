"""Pretrain a BERT, RoBERTa, ELECTRA or GPT-style model on a corpus with a tokenizer from train_tokenizer.py.

Example (the README's quick start; bert-tiny trains on a laptop CPU in minutes):

    python run_pretraining.py --input_file samples/ja_sample.txt --tokenizer_dir out/tokenizer \
        --model_dir out/bert-tiny --parameter_file parameter.json --model_type bert-tiny

Multi-process / multi-node: launch the same command with torchrun (or python -m torch.distributed.launch);
see the README. Resume an interrupted run by adding --do_continue. SIGTERM or SIGUSR1 (a cluster's preemption
notice) saves a checkpoint at the end of the current step and exits 0; train_summary.json is written only when the
run has finished. Bad input and failed writes end with one "error: ..." line and exit code 2.

    python run_pretraining.py --list_presets    # every preset: family, shape, parameters, budget
"""

from __future__ import annotations

import sys

from lmpretrain.errors import run_cli
from lmpretrain.log import setup_logging
from lmpretrain.preset_list import list_presets, listing_requested
from lmpretrain.run_config import build_parser, parse_args


def main(argv=None) -> None:
    setup_logging()
    listing = listing_requested(build_parser(), argv)
    if listing is not None:
        print(list_presets(listing.parameter_file))
        return
    from lmpretrain.trainer import train  # heavy imports after argument parsing, so --help is instant

    train(parse_args(argv))


if __name__ == "__main__":
    sys.exit(run_cli(main))
