"""Vocabulary quality at the same vocabulary size: tokens per character and [UNK] rate on held-out text, for
WordPiece, the `tokenizers` BPE and Unigram, and the SentencePiece library's Unigram, BPE and char models, without a
word segmenter and on MeCab (ipadic) words.

    .venv/bin/python bench/bench_vocab_quality.py [--corpus ../shared/corpora/ja_aozora_small/train.txt] \\
        [--vocab_size 8000] [--held_out_share 0.1] [--markdown out.md]

The corpus's documents (a blank line after each) are split: the last ones, up to ``--held_out_share`` of its
characters, are held out (whole documents, so no held-out sentence is in the training text), the rest train
every tokenizer in-process (train_tokenizer's defaults otherwise: min_frequency 2, limit_alphabet 6129, 10 unused
tokens; SentencePiece: character_coverage 0.9995). Each held-out line is encoded by FastEncoder (the ids
AutoTokenizer gives, checked on the first 200 lines); tokens/char = tokens / characters of the held-out lines
(fewer is more text per sequence), on every line and on the lines no tokenizer gives an [UNK] (a fair
comparison: WordPiece spends one [UNK] on a whole word), unk% = [UNK] tokens / tokens, round trip = held-out
lines that decode to themselves exactly (AutoTokenizer.decode; a word segmenter's decode puts spaces between
words, so only one-word lines come back there).
"ratio" is tokens/char (known lines) over WordPiece's with the same segmenter, in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchlib import machine, report  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_CORPUS = REPO.parent / "shared" / "corpora" / "ja_aozora_small" / "train.txt"

KINDS = [  # (label, tokenizer_type, spm flags)
    ("WordPiece (tokenizers)", "wordpiece", {}),
    ("BPE (tokenizers)", "bpe", {}),
    ("Unigram (tokenizers)", "unigram", {}),
    ("SentencePiece unigram", "sentencepiece", {"spm_model_type": "unigram"}),
    ("SentencePiece bpe", "sentencepiece", {"spm_model_type": "bpe"}),
    ("SentencePiece unigram + byte fallback", "sentencepiece", {"spm_model_type": "unigram",
                                                                "spm_byte_fallback": True}),
    ("SentencePiece char", "sentencepiece", {"spm_model_type": "char"}),
]


def split_documents(corpus: Path, share: float) -> tuple[str, list[str], int]:
    """(training text, held-out lines, held-out documents): whole documents from the end, ``share`` of the text."""
    documents = [d for d in corpus.read_text(encoding="utf-8").split("\n\n") if d.strip()]
    held_out, chars = 0, 0
    while chars < share * sum(map(len, documents)) and held_out < len(documents) - 1:
        held_out += 1
        chars += len(documents[-held_out])
    train = "\n\n".join(documents[:-held_out]) + "\n\n"
    lines = [line for d in documents[-held_out:] for line in d.splitlines() if line.strip()]
    return train, lines, held_out


def measure(directory: Path, lines: list[str]) -> dict:
    from transformers import AutoTokenizer

    from lmpretrain.tokenization import FastEncoder

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    with FastEncoder.from_pretrained(directory) as encoder:
        ids = encoder.encode_batch(lines)
        unk = encoder.unk_token_id
    reference = [tokenizer(line, add_special_tokens=False)["input_ids"] for line in lines[:200]]
    if reference != ids[:200]:
        raise SystemExit(f"{directory}: FastEncoder's ids differ from AutoTokenizer's")
    tokens = sum(map(len, ids))
    return {"ids": ids, "tokens_per_char": tokens / sum(map(len, lines)),
            "unk": sum(row.count(unk) for row in ids) / tokens,
            "unk_lines": {i for i, row in enumerate(ids) if unk in row},
            "vocab": len(tokenizer), "round_trip": sum(tokenizer.decode(row) == line for row, line in zip(ids, lines))}


def known_tokens_per_char(result: dict, known: list[int], lines: list[str]) -> float:
    """Tokens per character on the lines no tokenizer gave an [UNK]: WordPiece spends one [UNK] on a whole word
    with an unknown character, which would make it look shorter."""
    return sum(len(result["ids"][i]) for i in known) / sum(len(lines[i]) for i in known)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="a .txt corpus, a blank line per document")
    p.add_argument("--vocab_size", type=int, default=8000, help="the vocabulary size of every tokenizer")
    p.add_argument("--held_out_share", type=float, default=0.1,
                   help="share of the corpus's characters held out (whole documents from its end)")
    p.add_argument("--segmenters", default="none,ipadic", help="--mecab_dic_type values, comma-separated")
    p.add_argument("--markdown", default=None, help="also write the result table to this file")
    args = p.parse_args()

    from tqdm import tqdm

    from lmpretrain.tokenization import TokenizerSpec, train_tokenizer

    train_text, lines, held_out = split_documents(args.corpus, args.held_out_share)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text(train_text, encoding="utf-8")
        runs = [(dic, kind) for dic in args.segmenters.split(",") for kind in KINDS]
        for dic, (label, tokenizer_type, spm) in tqdm(runs, desc="tokenizers", unit="tokenizer"):
            spec = TokenizerSpec.from_flags(mecab_dic_type=dic, tokenizer_type=tokenizer_type,
                                            vocab_size=args.vocab_size, **spm)
            out = Path(tmp) / f"{dic}-{label.replace(' ', '_')}"
            started = time.perf_counter()
            train_tokenizer([str(train_file)], out, spec, num_workers=1)
            seconds = time.perf_counter() - started
            results.append((dic, label, seconds, measure(out, lines)))
    known = [i for i in range(len(lines)) if not any(i in result["unk_lines"] for *_, result in results)]
    rows, baseline = [], {}
    for dic, label, seconds, result in results:
        fair = known_tokens_per_char(result, known, lines)
        baseline.setdefault(dic, fair)
        rows.append(f"| {'none' if dic == 'none' else 'MeCab ' + dic} | {label} | {result['vocab']} | {fair:.3f} | "
                    f"{fair / baseline[dic]:.2f}x | {result['tokens_per_char']:.3f} | {100 * result['unk']:.2f}% | "
                    f"{result['round_trip']}/{len(lines)} | {seconds:.1f} |")
    held_chars = sum(map(len, lines))
    lines_out = [
        f"held out: the last {held_out} documents of {args.corpus.parent.name} "
        f"({len(lines)} lines, {held_chars} characters); requested vocabulary {args.vocab_size}",
        "",
        f"tokens/char (known): on the {len(known)} held-out lines ({sum(len(lines[i]) for i in known)} characters) "
        "no tokenizer gives an [UNK]; ratio: that over WordPiece's with the same segmenter",
        "",
        "| segmenter | tokenizer | vocab | tokens/char (known) | ratio vs WordPiece | tokens/char (all) | unk% | "
        "round trip | train s |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"machine: {machine(('transformers', 'tokenizers', 'sentencepiece', 'fugashi'))}",
    ]
    report(lines_out, args.markdown)


if __name__ == "__main__":
    main()
