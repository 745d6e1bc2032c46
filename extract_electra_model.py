r"""Split an ELECTRA or DeBERTa-v3 checkpoint into a generator and a discriminator, each a Hugging Face model dir.

Examples:

    python extract_electra_model.py --input_dir out/electra-tiny/checkpoint-300 --output_dir out/electra-tiny-hf \
        --parameter_file parameter.json --model_type electra-tiny --generator --discriminator

    python extract_electra_model.py --input_dir out/deberta/checkpoint-300 --output_dir out/deberta-hf \
        --parameter_file parameter.json --model_type deberta-v3-tiny --generator --discriminator

ELECTRA: out/electra-tiny-hf/generator loads with AutoModelForMaskedLM, out/electra-tiny-hf/discriminator with
ElectraForPreTraining / AutoModelForPreTraining (and AutoModel). DeBERTa-v3: the generator loads with
AutoModelForMaskedLM, the discriminator with AutoModel / AutoModelForSequenceClassification (its replaced-token
detection head beside it in rtd_head.safetensors). Both parts carry the tokenizer files. Each export is checked: the
written dir, loaded back through transformers, must give the checkpoint's logits.
"""

from __future__ import annotations

import sys

from lmpretrain.cli import make_parser
from lmpretrain.errors import UserError, run_cli
from lmpretrain.log import setup_logging


def main(argv=None) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--input_dir", required=True,
                        help="a checkpoint-<step>/ folder of an ELECTRA or DeBERTa-v3 run")
    parser.add_argument("--output_dir", required=True, help="writes <output_dir>/generator and/or /discriminator")
    parser.add_argument("--parameter_file", default=None, help="optional: cross-check sizes against this preset")
    parser.add_argument("--model_type", default=None, help="the preset in --parameter_file to cross-check against")
    parser.add_argument("--generator", action="store_true", help="write output_dir/generator")
    parser.add_argument("--discriminator", action="store_true", help="write output_dir/discriminator")
    args = parser.parse_args(argv)
    setup_logging()

    from lmpretrain.convert import extract_parts  # a sharded checkpoint converted first

    params = None
    if bool(args.parameter_file) != bool(args.model_type):
        raise UserError("--parameter_file and --model_type go together (to check the checkpoint against a preset)")
    if args.parameter_file:
        from lmpretrain.models import load_parameters

        params = load_parameters(args.parameter_file, args.model_type)
    names = [name for name, wanted in (("discriminator", args.discriminator), ("generator", args.generator)) if wanted]
    written = extract_parts(args.input_dir, args.output_dir, names, params=params)
    print("extracted and verified: " + ", ".join(f"{name} -> {path}" for name, path in written.items()))


if __name__ == "__main__":
    sys.exit(run_cli(main))
