"""Vocabulary adaptation: the eval loss at step 0 of a continued run on a new corpus with a new tokenizer, for each
way of giving the pretrained model's embedding rows to the new vocabulary, in one run on this machine.

    .venv/bin/python bench/bench_vocab.py [--old ../shared/corpora/ja_aozora_small/train.txt] \\
        [--new ../shared/corpora/ja_aozora_medium/train.txt] [--steps 250] [--markdown out.md]

A tiny BERT (4 layers, hidden 128) is pretrained for ``--steps`` steps on ``--old`` with a MeCab + WordPiece
tokenizer trained on it (vocabulary ``--vocab``). A second tokenizer of the same kind is trained on the first
``--new_lines`` lines of ``--new``; the continued run trains on those lines and evaluates (``--eval_lines``
further lines, the same masks for every variant) before its first step. Variants:

- ``by id``: rows kept by id (what ``--resize_embeddings`` did before), rows past the old size at the mean;
- ``by token, random new``: shared tokens keep their rows, new ones drawn as the model was initialised
  (normal, std ``initializer-range``; bias 0), as UER-py's vocabulary adapter does;
- ``by token, mean new``: as above, new rows at the mean embedding;
- ``by token + composed``: new rows the mean of their pieces under the model's tokenizer (what the toolkit does).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
from pathlib import Path

from benchlib import machine  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LMP_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CORPORA = REPO.parent / "shared" / "corpora"
PRESET = {"number-of-layers": 4, "hidden-size": 128, "sequence-length": 128, "ffn-inner-hidden-size": 512,
          "attention-heads": 4, "warmup-steps": 50, "learning-rate": 1e-3, "batch-size": {"-1": 32},
          "save-steps": 100000, "logging-steps": 100, "eval-steps": 100000, "dropout": 0.0,
          "attention-dropout": 0.0, "eval-share": 0.02}


def _lines(path: Path, start: int, count: int, out: Path) -> Path:
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()[start:start + count]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", default=str(CORPORA / "ja_aozora_small" / "train.txt"))
    parser.add_argument("--new", default=str(CORPORA / "ja_aozora_medium" / "train.txt"))
    parser.add_argument("--new_lines", type=int, default=4000)
    parser.add_argument("--eval_lines", type=int, default=800)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--markdown")
    args = parser.parse_args()

    import torch

    import lmpretrain.prepare as prepare
    from lmpretrain.models import plan_adaptation
    from lmpretrain.models.vocab_adapt import VocabPlan
    from lmpretrain.run_config import TrainArgs
    from lmpretrain.tokenization import TokenizerSpec, model_vocabulary, train_tokenizer
    from lmpretrain.trainer import train

    class RandomNewRows(VocabPlan):
        def apply(self, old):
            new = super().apply(old)
            if self.initialised:
                rows = torch.tensor(self.initialised)
                new[rows] = torch.randn(len(rows), *old.shape[1:]) * 0.02 if old.dim() > 1 else 0.0
            return new

    work = Path(tempfile.mkdtemp(prefix="bench-vocab-"))
    spec = dict(mecab_dic_type="ipadic", tokenizer_type="wordpiece", vocab_size=args.vocab, min_frequency=2,
                limit_alphabet=3000, num_unused_tokens=10)
    old_tok, new_tok = work / "tok-old", work / "tok-new"
    new_train = _lines(Path(args.new), 0, args.new_lines, work / "new-train.txt")
    new_eval = _lines(Path(args.new), args.new_lines, args.eval_lines, work / "new-eval.txt")
    train_tokenizer([args.old], old_tok, TokenizerSpec(**spec), num_workers=2)
    train_tokenizer([str(new_train)], new_tok, TokenizerSpec(**spec), num_workers=2)
    params = work / "parameter.json"
    params.write_text(json.dumps({"bert-old": {**PRESET, "train-steps": args.steps},
                                  "bert-new": {**PRESET, "train-steps": 1, "resize-embeddings": True,
                                               "pretrained_model_name_or_path": str(work / "base")}}))

    def run(corpus, tokenizer, out, model_type, eval_file=None):
        return train(TrainArgs(input_file=[str(corpus)], tokenizer_dir=str(tokenizer), model_dir=str(out),
                               model_type=model_type, parameter_file=str(params), num_workers=2,
                               eval_file=[str(eval_file)] if eval_file else None, max_eval_samples=512,
                               cache_dir=str(work / "cache")))

    base = run(args.old, old_tok, work / "base", "bert-old")
    old, new = model_vocabulary(work / "base", with_split=True), model_vocabulary(new_tok)
    token_plan = prepare.vocabulary_plan(str(work / "base"), new_tok)
    plain = plan_adaptation(old.tokens, new.tokens, old_roles=old.roles, new_roles=new.roles)  # no composing
    variants = {
        "by id (before)": VocabPlan.by_id(plain.old_size, plain.new_size),
        "by token, random new rows (UER-py style)": RandomNewRows(**plain.__dict__),
        "by token, new rows at the mean": plain,
        "by token + composed from pieces (now)": token_plan,
    }
    rows = []
    for i, (name, plan) in enumerate(variants.items()):
        prepare.vocabulary_plan = lambda *_, plan=plan: plan
        torch.manual_seed(0)
        summary = run(new_train, new_tok, work / f"continued-{i}", "bert-new", new_eval)
        rows.append((name, math.log(summary["eval/perplexity_at_start"]), plan.summary()))
        print(rows[-1], flush=True)

    command = "python bench/bench_vocab.py " + shlex.join(sys.argv[1:])
    table = [f"Command: `{command}`", f"Machine: {machine()}", "",
             f"Old model: BERT 4x128, {args.steps} steps on `{Path(args.old).parent.name}` (final eval loss "
             f"{math.log(base['eval/perplexity']):.3f} on its own tokenizer); new corpus: the first {args.new_lines} "
             f"lines of `{Path(args.new).parent.name}` (eval: the next {args.eval_lines}); both tokenizers MeCab "
             f"ipadic + WordPiece, vocabulary {args.vocab}, each trained on its corpus.", "",
             "| embedding rows | eval MLM loss at step 0 | rows |", "|---|---|---|"]
    table += [f"| {name} | {loss:.3f} | {detail} |" for name, loss, detail in rows]
    text = "\n".join(table)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
