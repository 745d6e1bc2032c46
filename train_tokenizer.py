"""Train a tokenizer (MeCab or Sudachi pre-tokenization + WordPiece / BPE / Unigram) that AutoTokenizer loads.

Example:

    python train_tokenizer.py --input_file samples/ja_sample.txt --model_dir out/tokenizer \
        --mecab_dic_type ipadic --tokenizer_type wordpiece --vocab_size 3000 --min_frequency 1

    python train_tokenizer.py --input_file samples/ja_sample.txt --model_dir out/tokenizer-sudachi \
        --word_tokenizer sudachi --sudachi_split_mode C --tokenizer_type wordpiece --vocab_size 3000 --min_frequency 1

AutoTokenizer.from_pretrained("out/tokenizer") then returns a BertJapaneseTokenizer with the same segmenter and
dictionary, and lmpretrain.tokenization.FastEncoder gives the same ids, faster.
"""

from __future__ import annotations

import os
import sys

from lmpretrain.cli import make_parser
from lmpretrain.errors import run_cli
from lmpretrain.log import setup_logging


def main(argv=None) -> None:
    p = make_parser(__doc__)
    p.add_argument("--input_file", required=True, nargs="+", help="corpus file(s) or directories of .txt files")
    p.add_argument("--model_dir", required=True, help="output tokenizer dir")
    p.add_argument("--intermediate_dir", default=None,
                   help="keep the word-segmented training text here (segmented.txt); None: a temp dir, removed")
    p.add_argument("--num_files", type=int, default=os.cpu_count() or 1,
                   help="parallel segmenter workers (the result does not depend on it; default: the machine's cores)")
    p.add_argument("--word_tokenizer", default=None,
                   help="mecab (default), sudachi, juman or none (no word segmenter)")
    p.add_argument("--mecab_dic_type", default=None, help="ipadic (default), unidic_lite, unidic or none")
    p.add_argument("--mecab_dic", default=None, help="the original's newer name of --mecab_dic_type")
    p.add_argument("--mecab_option", default=None,
                   help="extra MeCab arguments (e.g. '-u user.dic'), recorded for AutoTokenizer")
    p.add_argument("--sudachi_split_mode", default=None, help="A (default, shortest words), B or C (longest)")
    p.add_argument("--sudachi_dict_type", default=None, help="core (default), small or full (sudachidict_<type>)")
    p.add_argument("--tokenizer_type", default="wordpiece", help="wordpiece, bpe (alias: sentencepiece) or unigram")
    p.add_argument("--vocab_size", type=int, default=32768, help="tokens in the vocabulary, special tokens included")
    p.add_argument("--min_frequency", type=int, default=2, help="wordpiece and bpe only")
    p.add_argument("--limit_alphabet", type=int, default=6129, help="wordpiece and bpe only")
    p.add_argument("--num_unused_tokens", type=int, default=10, help="[unused0].. tokens kept in the vocabulary")
    args = p.parse_args(argv)
    setup_logging()

    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer

    spec = TokenizerSpec.from_flags(word_tokenizer=args.word_tokenizer, mecab_dic_type=args.mecab_dic_type,
                                    mecab_dic=args.mecab_dic, mecab_option=args.mecab_option,
                                    sudachi_split_mode=args.sudachi_split_mode,
                                    sudachi_dict_type=args.sudachi_dict_type, tokenizer_type=args.tokenizer_type,
                                    vocab_size=args.vocab_size,
                                    min_frequency=args.min_frequency, limit_alphabet=args.limit_alphabet,
                                    num_unused_tokens=args.num_unused_tokens)
    if args.num_files < 1:
        from lmpretrain.errors import UserError

        raise UserError(f"--num_files must be at least 1 (got {args.num_files})")
    s = train_tokenizer(args.input_file, args.model_dir, spec, num_workers=args.num_files,
                        intermediate_dir=args.intermediate_dir)
    print(f"tokenizer: {s['tokenizer_type']} on {s['word_segmenter']}, {s['vocab_size']} tokens, trained on "
          f"{s['lines']} lines ({s['characters']} characters) in {s['seconds']} s -> {s['model_dir']}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
