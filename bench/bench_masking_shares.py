"""Masking on real text: what our collators select and what the selected tokens become, against BERT's definition.

    .venv/bin/python bench/bench_masking_shares.py --tokenizer_dir /tmp/tok \\
        [--corpus ../shared/corpora/ja_aozora_medium/train.txt] [--instances 4096] [--markdown out.md]

For each preset below, the run description is built from parameter.json as run_pretraining.py builds it
(``describe``), the instances of its layout come from our dataset code on the corpus, and the collator is the one a
run trains with (``data_setup.make_collator``: the preset's ``mask-percent`` / split, whole-word masking from
``--do_whole_word_mask``). On the same batches, transformers' ``DataCollatorForLanguageModeling`` (given the same
``special_tokens_mask``, rate and split) is measured as well. Counted over every batch:

* **selected share**: labelled tokens / maskable tokens (not special, not [unused], not padding) vs the preset's rate,
  with the spread of the per-sequence share (ours takes round(rate x maskable) per sequence; transformers a Bernoulli
  per token);
* **[MASK] / random / kept** among the selected, vs the preset's split (a random draw equal to the original counts as
  kept, as a model sees it), and random draws that are special tokens;
* **never selected**: special tokens and padding (counts that must be 0);
* **whole-word grouping** (whole-word cases): words are rebuilt from the instances' MeCab word starts (a start flag,
  then the tokens up to the next start, special tokens excluded) and every word must be fully selected or not at all.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from benchlib import machine, report  # noqa: E402  (bench/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmpretrain.data import build_or_load_dataset, make_instances  # noqa: E402
from lmpretrain.data_setup import instance_options, make_collator  # noqa: E402
from lmpretrain.models import get_family  # noqa: E402
from lmpretrain.models.presets import load_parameters  # noqa: E402
from lmpretrain.run_config import TrainArgs  # noqa: E402
from lmpretrain.run_description import describe  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "corpora" / "ja_aozora_medium" / "train.txt"
CASES = (  # (label, preset, --do_whole_word_mask)
    ("BERT, token MLM", "bert-tiny", False),
    ("BERT, whole-word (MeCab words)", "bert-tiny", True),
    ("RoBERTa", "roberta-tiny", False),
    ("ELECTRA", "electra-tiny", False),
    ("DeBERTa-v2", "deberta-v2-tiny", False),
    ("DeBERTa-v3 (RTD)", "deberta-v3-tiny", False),
)


@dataclass
class Shares:
    """Counts over many batches of one collator."""
    maskable: int = 0
    selected: int = 0
    masked: int = 0
    random: int = 0
    kept: int = 0
    random_special: int = 0
    selected_special: int = 0
    selected_padding: int = 0
    words: int = 0
    words_split: int = 0
    multi_token_words_selected: int = 0
    row_shares: list = field(default_factory=list)

    def add(self, original: torch.Tensor, attention: torch.Tensor, out: dict, special_ids: torch.Tensor,
            mask_id: int, word_starts: torch.Tensor | None = None) -> None:
        labels = out["labels"][:, :original.shape[1]]
        shown = out["input_ids"][:, :original.shape[1]]
        selected = labels != -100
        special = torch.isin(original, special_ids)
        real = attention.bool()
        maskable = real & ~special
        assert torch.equal(labels[selected], original[selected]), "a label is not the original token"
        self.maskable += int(maskable.sum())
        self.selected += int(selected.sum())
        self.selected_special += int((selected & special & real).sum())
        beyond = out["labels"][:, original.shape[1]:] != -100  # our collator pads to a multiple of 8
        self.selected_padding += int((selected & ~real).sum()) + int(beyond.sum())
        is_mask = selected & (shown == mask_id)
        is_kept = selected & (shown == original)
        is_random = selected & ~is_mask & ~is_kept
        self.masked += int(is_mask.sum())
        self.kept += int(is_kept.sum())
        self.random += int(is_random.sum())
        self.random_special += int((is_random & torch.isin(shown, special_ids)).sum())
        rows = maskable.sum(1)
        self.row_shares += (selected.sum(1)[rows > 0] / rows[rows > 0]).tolist()
        if word_starts is not None:
            self._words(selected, maskable, word_starts.bool() & real)

    def _words(self, selected, maskable, starts) -> None:
        """Words from the MeCab word starts: a start, then the maskable tokens up to the next start."""
        word = starts.long().cumsum(1)  # a word's id: the count of starts so far (specials are starts of their own)
        for row in range(selected.shape[0]):
            keep = maskable[row]
            ids, chosen = word[row][keep], selected[row][keep]
            if len(ids) == 0:
                continue
            count = torch.bincount(ids)
            hit = torch.bincount(ids, weights=chosen.double()).long()
            present = count > 0
            self.words += int(present.sum())
            self.words_split += int(((hit > 0) & (hit < count)).sum())
            self.multi_token_words_selected += int(((hit == count) & (count > 1)).sum())

    @property
    def share(self) -> float:
        return self.selected / max(self.maskable, 1)

    def split(self) -> tuple[float, float, float]:
        total = max(self.selected, 1)
        return self.masked / total, self.random / total, self.kept / total


def preset_collator(preset: str, whole_word: bool, tokenizer_dir: str, corpus: str, encoder,
                    parameter_file: str = str(REPO / "parameter.json"), seed: int = 42):
    """(run description's data settings, family, our collator) as run_pretraining.py configures them."""
    params = load_parameters(parameter_file, preset)
    family = get_family(params.family)
    args = TrainArgs(input_file=[corpus], tokenizer_dir=tokenizer_dir, model_dir="unused", model_type=preset,
                     parameter_file=parameter_file, do_whole_word_mask=whole_word, seed=seed)
    data = describe(args, params, family).data
    return data, family, make_collator(family.collator, data, encoder, seed=data.seed)


def hf_collator(tokenizer, data, seed: int):
    from transformers import DataCollatorForLanguageModeling

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DataCollatorForLanguageModeling(tokenizer, mlm_probability=data.mlm_probability,
                                               mask_replace_prob=data.mask_token_prob,
                                               random_replace_prob=data.random_token_prob, seed=seed)


def measure_case(preset: str, whole_word: bool, tokenizer_dir: str, corpus: str, cache_dir: str, encoder,
                 hf_tokenizer, instances: int, batch_size: int, seed: int = 42) -> dict:
    """Our collator's and transformers' counts on the same batches of the preset's real instances."""
    data, family, ours = preset_collator(preset, whole_word, tokenizer_dir, corpus, encoder, seed=seed)
    shards = build_or_load_dataset([corpus], tokenizer_dir, cache_dir, num_workers=1)
    dataset = make_instances(shards, data.layout, seed=data.seed, **instance_options(data, encoder))
    theirs = hf_collator(hf_tokenizer, data, seed)
    special_ids = ours.special_ids  # every special and [unused] id, padding and [MASK] included
    mask_id = encoder.mask_token_id
    count = min(instances, len(dataset))
    stride = max(1, len(dataset) // count)  # spread over the whole epoch
    positions = [p * stride for p in range(count)]
    result = {"preset": preset, "whole_word": whole_word, "layout": data.layout, "rate": data.mlm_probability,
              "split": (data.mask_token_prob, data.random_token_prob,
                        1 - data.mask_token_prob - data.random_token_prob),
              "ours": Shares(), "transformers": Shares(), "instances": count}
    for start in range(0, count, batch_size):
        batch = [dataset[p] for p in positions[start:start + batch_size]]
        length = max(len(i["input_ids"]) for i in batch)
        original = torch.full((len(batch), length), encoder.pad_token_id, dtype=torch.int64)
        attention = torch.zeros_like(original)
        starts = torch.ones_like(original, dtype=torch.bool)
        for row, inst in enumerate(batch):
            n = len(inst["input_ids"])
            original[row, :n] = torch.as_tensor(np.asarray(inst["input_ids"], dtype=np.int64))
            attention[row, :n] = 1
            starts[row, :n] = torch.as_tensor(np.asarray(inst["word_starts"], dtype=bool))
        result["ours"].add(original, attention, ours(batch), special_ids, mask_id,
                           starts if data.whole_word_mask else None)
        features = [{"input_ids": original[r, :int(attention[r].sum())].tolist(),
                     "special_tokens_mask": torch.isin(original[r, :int(attention[r].sum())],
                                                       special_ids).long().tolist()} for r in range(len(batch))]
        result["transformers"].add(original, attention, theirs(features), special_ids, mask_id)
    return result


def table(results: list[dict]) -> list[str]:
    lines = ["| case (preset, layout) | collator | selected / maskable (rate) | per-sequence sd | [MASK] / random / "
             "kept (split) | random drew a special | specials / padding selected | words split / words "
             "(multi-token words taken whole) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rate, split = r["rate"], r["split"]
        case = f"{r['label']} (`{r['preset']}`, {r['layout']})"
        for name in ("ours", "transformers"):
            s: Shares = r[name]
            m, rnd, kept = s.split()
            words = (f"{s.words_split:,} / {s.words:,} ({s.multi_token_words_selected:,})" if s.words else "")
            collator = "lmpretrain" if name == "ours" else "transformers `DataCollatorForLanguageModeling`" + (
                " (token MLM: its whole_word_mask needs offsets, see bench_masking.py)" if r["whole_word"] else "")
            lines.append(f"| {case} | {collator} | {s.share:.4f} ({rate:g}) | {np.std(s.row_shares):.4f} | "
                         f"{m:.3f} / {rnd:.3f} / {kept:.3f} ({split[0]:g}/{split[1]:g}/{split[2]:g}) | "
                         f"{s.random_special:,} | {s.selected_special:,} / {s.selected_padding:,} | {words} |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer_dir", required=True, help="a tokenizer dir written by train_tokenizer.py")
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS if DEFAULT_CORPUS.is_file()
                                                else REPO / "samples" / "ja_sample.txt"))
    parser.add_argument("--instances", type=int, default=4096, help="instances per case, spread over the epoch")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--cache_dir", help="the dataset cache (default: a temporary dir)")
    parser.add_argument("--markdown", help="also write the Markdown section here")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python", "bench/bench_masking_shares.py",
                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    os.environ.setdefault("LMP_NO_PROGRESS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)

    from transformers import AutoTokenizer

    from lmpretrain.tokenization import FastEncoder

    hf_tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_dir)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_shares_") as tmp, \
            FastEncoder.from_pretrained(args.tokenizer_dir) as encoder:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        for label, preset, whole_word in CASES:
            started = time.perf_counter()
            result = measure_case(preset, whole_word, args.tokenizer_dir, args.corpus, cache, encoder, hf_tokenizer,
                                  args.instances, args.batch_size)
            result["label"] = label
            results.append(result)
            print(f"{label}: {result['instances']} instances in {time.perf_counter() - started:.1f} s", flush=True)
    lines = ["### Masking shares on real text (issue 29, item 3)", "", "```", command, "```", "",
             f"Machine: {machine(('torch', 'transformers', 'tokenizers', 'fugashi', 'numpy'))}.",
             f"Corpus `{Path(args.corpus).parent.name}/{Path(args.corpus).name}`, tokenizer `{args.tokenizer_dir}`; "
             f"{args.instances} instances per case spread evenly over epoch 0, batches of {args.batch_size}, the "
             f"same batches for both collators (transformers' gets `special_tokens_mask` over the same special and "
             f"[unused] ids, and the preset's rate and split).", "", *table(results)]
    report(lines, args.markdown)


if __name__ == "__main__":
    main()
