r"""Build a downstream task for evaluate_downstream.py from a corpus of works, split by work (no work in two splits).

Examples (the corpus is read where it is; only the task is written, into --output_dir):

    # paragraph pairs from one work or from two ("same" / "different"; chance 0.5), from the corpus alone
    python scripts/make_author_task.py --corpus ../shared/corpora/ja_aozora_medium/train.txt \
        --output_dir out/aozora-same-work

    # paragraph pairs where B is A's next paragraph or one from another work ("next" / "other"; chance 0.5): a
    # coherence task, the one bench/bench_probe_curve.py measures pretraining with
    python scripts/make_author_task.py --corpus ../shared/corpora/ja_aozora_medium/train.txt --kind continuation \
        --pairs 1000 400 400 --output_dir out/aozora-continuation

    # author attribution, given each work's author (authors.tsv: "work<TAB>author", work = 0-based document index)
    python scripts/make_author_task.py --corpus my_works.txt --authors authors.tsv --output_dir out/authors

The corpus is the toolkit's format: one paragraph a line, one blank line after each document (a work). The same
corpus bytes and --seed give the same files; task.json records the corpus hash, the works in each split and the
test split's chance accuracy.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: the package is one level up

from lmpretrain.cli import make_parser  # noqa: E402
from lmpretrain.errors import run_cli  # noqa: E402


def main(argv=None) -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--corpus", required=True, help="a corpus file, one blank line after each work")
    parser.add_argument("--output_dir", required=True, help="where train/dev/test.jsonl and task.json go")
    parser.add_argument("--authors", default=None,
                        help="a .tsv (work<TAB>author) or .jsonl file naming each work's author: an author task "
                             "(default: without one, the same-work pair task)")
    parser.add_argument("--kind", default=None, choices=("same_work", "continuation", "author"),
                        help="the task: same_work (pairs from one work or two), continuation (B is A's next "
                             "paragraph or one from another work), author (needs --authors); default: author "
                             "with --authors, else same_work")
    parser.add_argument("--seed", type=int, default=0, help="the split and sampling seed")
    parser.add_argument("--min_chars", type=int, default=20, help="shorter paragraphs are skipped")
    parser.add_argument("--max_chars", type=int, default=400,
                        help="longer paragraphs are cut (continuation: A keeps its last, B its first max_chars)")
    parser.add_argument("--per_work", type=int, default=50, help="author task: at most this many paragraphs a work")
    parser.add_argument("--pairs", type=int, nargs=3, default=(2000, 400, 400), metavar=("TRAIN", "DEV", "TEST"),
                        help="same_work / continuation task: pairs per split")
    args = parser.parse_args(argv)

    from lmpretrain.author_task import build_task

    info = build_task(args.corpus, args.output_dir, authors=args.authors, seed=args.seed, min_chars=args.min_chars,
                      max_chars=args.max_chars, per_work=args.per_work, pairs=tuple(args.pairs),
                      kind=args.kind)
    sizes = ", ".join(f"{split} {n} ({len(info['works'][split])} works)" for split, n in info["sizes"].items())
    print(f"{info['kind']} task: {sizes}; test chance accuracy {info['test_chance_accuracy']:.3f} -> "
          f"{args.output_dir}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
