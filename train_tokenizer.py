r"""Train a tokenizer (MeCab or Sudachi pre-tokenization + WordPiece / BPE / Unigram) that AutoTokenizer loads.

Example:

    python train_tokenizer.py --input_file samples/ja_sample.txt --model_dir out/tokenizer \
        --mecab_dic_type ipadic --tokenizer_type wordpiece --vocab_size 3000 --min_frequency 1

    python train_tokenizer.py --input_file samples/ja_sample.txt --model_dir out/tokenizer-sudachi \
        --word_tokenizer sudachi --sudachi_split_mode C --tokenizer_type wordpiece --vocab_size 3000 --min_frequency 1

    python train_tokenizer.py --input_file samples/ja_sample.txt --model_dir out/tokenizer-spm \
        --mecab_dic_type none --tokenizer_type sentencepiece --spm_model_type unigram --spm_byte_fallback \
        --vocab_size 2000

    python train_tokenizer.py --base_tokenizer_dir out/tokenizer --input_file samples/ja_clinical_sample.txt \
        --model_dir out/tokenizer-clinical --vocab_size 3200 --min_frequency 1

AutoTokenizer.from_pretrained("out/tokenizer") then returns a BertJapaneseTokenizer with the same segmenter and
dictionary, and lmpretrain.tokenization.FastEncoder gives the same ids, faster. The last keeps out/tokenizer's ids and
appends up to 200 tokens learnt from the clinical text (--vocab_size is the total).
"""

from __future__ import annotations

import argparse
import os
import sys

from lmpretrain.cli import make_parser
from lmpretrain.errors import run_cli
from lmpretrain.log import setup_logging
from lmpretrain.tokenization import segmenters


def _boolean(value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"{value!r} is not true or false")
    return value.lower() in ("true", "1")


def main(argv=None) -> None:
    p = make_parser(__doc__)
    p.add_argument("--input_file", nargs="+",
                   help="corpus: .txt files (one sentence a line, a blank line between documents), directories of "
                        "them, .jsonl (a text field) or .gz")
    p.add_argument("--model_dir", required=True, help="output tokenizer dir")
    p.add_argument("--intermediate_dir", default=None,
                   help="keep the word-segmented training text here (segmented.txt); default: a temp dir, removed")
    p.add_argument("--num_files", type=int, default=os.cpu_count() or 1,
                   help="parallel segmenter workers (the result does not depend on it; default: the machine's cores)")
    segmenters.add_flags(p)  # --word_tokenizer, then each declared segmenter's (--mecab_dic_type, --sudachi_...)
    p.add_argument("--tokenizer_type", default=None,
                   help="wordpiece (default), bpe (alias: sentencepiece, the `tokenizers` BPE) or unigram; "
                        "sentencepiece with --spm_model_type trains with the SentencePiece library")
    p.add_argument("--spm_model_type", default=None,
                   help="unigram, bpe or char: train with the SentencePiece library (needs --tokenizer_type "
                        "sentencepiece)")
    p.add_argument("--spm_split_by_whitespace", nargs="?", const="true", default=None, type=_boolean,
                   help="true (default) or false: whether a piece may span a space (false needs --word_tokenizer "
                        "none; with a word segmenter pieces never cross a word)")
    p.add_argument("--spm_byte_fallback", action="store_const", const=True, default=None,
                   help="spell characters outside the vocabulary as UTF-8 bytes, not [UNK]; without a word "
                        "segmenter the text is also kept as written, so decode(encode(text)) == text (causal LMs)")
    p.add_argument("--spm_character_coverage", type=float, default=None,
                   help="the share of the corpus's characters kept as pieces, above 0 to 1 (default 0.9995, the "
                        "library's, for Japanese and Chinese; 1.0 for a small alphabet); rarer ones become [UNK], or "
                        "bytes with --spm_byte_fallback (needs --spm_model_type)")
    p.add_argument("--vocab_size", type=int, default=None, help="the most tokens in the vocabulary (default 32768; "
                   "with --base_tokenizer_dir the extended total, base included)")
    p.add_argument("--min_frequency", type=int, default=2, help="wordpiece and bpe only (not --spm_model_type)")
    p.add_argument("--limit_alphabet", type=int, default=6129, help="wordpiece and bpe only (not --spm_model_type)")
    p.add_argument("--num_unused_tokens", type=int, default=None, help="[unused0].. tokens kept (default 10)")
    p.add_argument("--base_tokenizer_dir", default=None, help="extend this tokenizer dir (train_tokenizer.py's, a "
                   "run's model dir, or one saved by transformers: BertJapaneseTokenizer, a WordPiece/Unigram "
                   "tokenizer.json; or a hub name org/name[@rev], from the HF cache), its ids and settings kept: "
                   "tokens learnt from --input_file are appended")
    p.add_argument("--add_words", default=None,
                   help="with --base_tokenizer_dir: a file of words (one a line) appended before the learnt tokens")
    args = p.parse_args(argv)
    setup_logging()

    from lmpretrain.errors import UserError
    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer
    from lmpretrain.tokenizer_run import tokenizer_output

    if args.num_files < 1:
        raise UserError(f"--num_files must be at least 1 (got {args.num_files})")
    if args.base_tokenizer_dir is None and (args.add_words or not args.input_file):
        raise UserError("--add_words needs --base_tokenizer_dir" if args.add_words else "--input_file is required")
    spec = TokenizerSpec.from_flags(
        word_tokenizer=args.word_tokenizer, **{name: getattr(args, name) for name in segmenters.flag_fields()},
        tokenizer_type=args.tokenizer_type or "wordpiece",
        spm_model_type=args.spm_model_type, spm_split_by_whitespace=args.spm_split_by_whitespace,
        spm_byte_fallback=args.spm_byte_fallback, spm_character_coverage=args.spm_character_coverage,
        vocab_size=32768 if args.vocab_size is None else args.vocab_size,
        min_frequency=args.min_frequency, limit_alphabet=args.limit_alphabet,
        num_unused_tokens=10 if args.num_unused_tokens is None else args.num_unused_tokens)
    if args.base_tokenizer_dir is not None:  # a hub name (org/name[@rev]): its cached snapshot
        from lmpretrain.hub import local_dir

        args.base_tokenizer_dir = local_dir(args.base_tokenizer_dir, "--base_tokenizer_dir")
    with tokenizer_output(args.model_dir, args.intermediate_dir):  # the dir's lock; one line on SIGTERM / SIGINT
        if args.base_tokenizer_dir is not None:
            from lmpretrain.tokenization.extend import describe, extend_tokenizer, given_flags

            print(describe(extend_tokenizer(
                args.base_tokenizer_dir, args.model_dir, input_file=args.input_file, vocab_size=args.vocab_size,
                add_words=args.add_words, min_frequency=args.min_frequency, limit_alphabet=args.limit_alphabet,
                num_workers=args.num_files, intermediate_dir=args.intermediate_dir, asked=spec,
                given=given_flags(vars(args)))))
            return
        s = train_tokenizer(args.input_file, args.model_dir, spec, num_workers=args.num_files,
                            intermediate_dir=args.intermediate_dir)
    print(f"tokenizer: {s['tokenizer_type']} on {s['word_segmenter']}, {s['vocab_size']} tokens, trained on "
          f"{s['lines']} lines ({s['characters']} characters) in {s['seconds']} s -> {s['model_dir']}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
