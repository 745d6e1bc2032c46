r"""Tokenize a corpus once into a dataset dir that run_pretraining.py --dataset_dir trains from (the original's step 1).

Example (the original's newest two-step workflow; a tokenizer from train_tokenizer.py):

    python create_datasets.py --input_corpus sample --max_length 128 --input_file samples/ja_sample.txt \
        --dataset_type nsp --tokenizer_name_or_path out/tokenizer/vocab.txt --word_tokenizer_type mecab \
        --subword_tokenizer_type wordpiece --mecab_dic ipadic --dataset_dir out/dataset/
    python run_pretraining.py --dataset_dir out/dataset/nsp_128_sample --tokenizer_name_or_path out/tokenizer \
        --model_dir out/bert-tiny --parameter_file parameter.json --model_type bert-tiny

writes out/dataset/nsp_128_sample/: token shards and lmpretrain_dataset.json (tokenizer fingerprint, layout,
sequence length, whole-word masking). --mask_style roberta|electra|debertav2[-wwm] writes
linebyline_<max_length>_<input_corpus>_<mask_style> for those families; masks are drawn while training (the original
stored them), so the dataset holds tokens and the mask style chooses the layout and whole-word masking.
"""

from __future__ import annotations

import sys

from lmpretrain.cli import make_parser
from lmpretrain.errors import run_cli
from lmpretrain.log import setup_logging


def main(argv=None) -> None:
    p = make_parser(__doc__)
    p.add_argument("--input_corpus", required=True, help="the corpus's name: part of the dataset's folder name")
    p.add_argument("--max_length", type=int, required=True, help="the sequence length (the preset's sequence-length)")
    p.add_argument("--input_file", nargs="+", default=None,
                   help="corpus: .txt files (one sentence a line, a blank line between documents), directories of "
                        "them, .jsonl or .gz")
    p.add_argument("--dataset_type", choices=["nsp", "linebyline", ""], default="",
                   help="nsp: sentence pairs (BERT with next-sentence prediction); linebyline: packed text (MLM only);"
                        " overridden by --mask_style")
    p.add_argument("--mask_style", default="none",
                   help="roberta, electra or debertav2, with -wwm for whole-word masking (e.g. electra-wwm): the "
                        "layout and masking of that family (masked while training); none: --dataset_type decides")
    p.add_argument("--mlm_probability", type=float, default=0.15,
                   help="the original's masking probability of a mask style: recorded and checked against the preset's")
    p.add_argument("--tokenizer_name_or_path", required=True,
                   help="a tokenizer dir from train_tokenizer.py, its vocab.txt or spiece.model, or a hub name "
                        "org/name[@rev] (its snapshot in the HF cache)")
    p.add_argument("--load_from_hub", action="store_true",
                   help="the original's flag: --tokenizer_name_or_path is a hub name (hub names are resolved anyway)")
    p.add_argument("--word_tokenizer_type", default=None,
                   help="mecab, sudachi, juman or none: checked against the tokenizer dir (default: not checked)")
    p.add_argument("--subword_tokenizer_type", default=None,
                   help="wordpiece or sentencepiece: checked against the tokenizer dir (default: not checked)")
    p.add_argument("--mecab_dic", default=None,
                   help="ipadic, unidic_lite or unidic: checked against the tokenizer dir (default: not checked)")
    p.add_argument("--dataset_dir", default="./dataset/", help="where the dataset folder is written")
    p.add_argument("--cache_dir", default=None,
                   help="the original's cache of downloaded corpora: accepted and unused (default: none)")
    p.add_argument("--num_workers", type=int, default=None,
                   help="tokenization processes (default: the machine's cores)")
    args = p.parse_args(argv)
    setup_logging()
    from lmpretrain.create_dataset import create_dataset

    create_dataset(input_corpus=args.input_corpus, max_length=args.max_length, input_files=args.input_file,
                   dataset_type=args.dataset_type, mask_style=args.mask_style,
                   tokenizer_name_or_path=args.tokenizer_name_or_path, word_tokenizer_type=args.word_tokenizer_type,
                   subword_tokenizer_type=args.subword_tokenizer_type, mecab_dic=args.mecab_dic,
                   dataset_dir=args.dataset_dir, mlm_probability=args.mlm_probability, num_workers=args.num_workers,
                   load_from_hub=args.load_from_hub)


if __name__ == "__main__":
    sys.exit(run_cli(main))
