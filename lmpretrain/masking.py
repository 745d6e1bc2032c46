"""Masking collators: token MLM, whole-word MLM (MeCab words), SpanBERT spans, ELECTRA's split; causal LM.

How many tokens a sequence masks: ``n = max(1, round(rate × maskable))`` where ``maskable`` counts the
sequence's tokens that are neither special tokens nor padding (BERT's rule, without its cap). Then:

* token masking takes the ``n`` maskable tokens with the smallest random keys;
* whole-word masking visits the words (a word = a token whose ``word_starts`` flag is set plus the
  tokens that follow it up to the next start) in random order and takes a word while the running token
  count before it plus half its length stays within ``n`` (always at least one word), so a word is never
  split and the masked-token rate matches ``rate`` on average instead of drifting below it;
* span masking (SpanBERT) repeatedly draws a span length in words from Geometric(p) clipped at
  ``span_max_words`` and a uniform start word, and masks those whole words, left to right, under the same
  half-word rule, until ``n`` tokens are masked (SpanBERT likewise cuts the last span at the budget).

Each chosen token becomes ``[MASK]`` with probability ``mask_token_prob``, a random non-special token with
``random_token_prob``, and stays as it is otherwise; ``labels`` holds the original id there and -100
elsewhere. Every random number comes from :mod:`lmpretrain.rng`, keyed by (seed, the instance's global
``position``, token or word index), so an instance is masked the same way in any batch, with any
padding, in any process, and in a resumed run — and differently each time it is used again (a new
position). All of it is tensor arithmetic over the batch; the only Python loop is over span rounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UserError
from .rng import uniform

# one stream per kind of draw, so that no two decisions share random numbers
_TOKEN_KEYS, _WORD_KEYS, _REPLACE, _RANDOM_ID, _SPAN_LENGTH = 1, 2, 3, 4, 5


@dataclass
class MaskingConfig:
    mlm_probability: float = 0.15
    """Share of maskable tokens to predict (parameter.json ``mlm-probability``, or ``mask-percent`` / 100)."""
    mask_token_prob: float = 0.8
    """Share of the chosen tokens replaced by [MASK] (ELECTRA's original setting: 0.85)."""
    random_token_prob: float = 0.1
    """Share replaced by a random non-special token (ELECTRA: 0.0); the rest stay unchanged."""
    whole_word: bool = False
    span: bool = False
    span_geometric_p: float = 0.2
    span_max_words: int = 10
    pad_to_multiple_of: int | None = 8

    def validate(self) -> None:
        problems = []
        for name in ("mlm_probability", "mask_token_prob", "random_token_prob", "span_geometric_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name} must be in [0, 1] (got {value})")
        if self.mlm_probability == 0.0:
            problems.append("mlm_probability must be above 0")
        if self.mask_token_prob + self.random_token_prob > 1.0 + 1e-9:
            problems.append(f"mask_token_prob + random_token_prob must be at most 1 (got "
                            f"{self.mask_token_prob} + {self.random_token_prob})")
        if self.span and self.span_geometric_p <= 0.0:
            problems.append("span_geometric_p must be above 0 for span masking")
        if self.span_max_words < 1:
            problems.append(f"span_max_words must be at least 1 (got {self.span_max_words})")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            problems.append(f"pad_to_multiple_of must be positive (got {self.pad_to_multiple_of})")
        if problems:
            raise UserError("masking: " + "; ".join(problems))


def _as_array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.numpy()
    return np.asarray(value)


def pad_instances(instances: list[dict], pad_token_id: int, multiple: int | None) -> dict[str, torch.Tensor]:
    """Stack variable-length instances into padded tensors (input_ids, attention_mask, word_starts, ...)."""
    lengths = [len(inst["input_ids"]) for inst in instances]
    length = max(lengths) if lengths else 0
    if multiple:
        length = int(math.ceil(length / multiple) * multiple)
    batch_size = len(instances)
    input_ids = np.full((batch_size, length), pad_token_id, dtype=np.int64)
    attention = np.zeros((batch_size, length), dtype=np.int64)
    word_starts = np.ones((batch_size, length), dtype=bool)
    has_types = "token_type_ids" in instances[0]
    token_types = np.zeros((batch_size, length), dtype=np.int64) if has_types else None
    for row, (inst, n) in enumerate(zip(instances, lengths)):
        input_ids[row, :n] = _as_array(inst["input_ids"])
        attention[row, :n] = 1
        if "word_starts" in inst:
            word_starts[row, :n] = _as_array(inst["word_starts"])
        if has_types:
            token_types[row, :n] = _as_array(inst["token_type_ids"])
    batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention),
             "word_starts": torch.from_numpy(word_starts),
             "positions": torch.tensor([int(inst.get("position", i)) for i, inst in enumerate(instances)],
                                       dtype=torch.int64)}
    if has_types:
        batch["token_type_ids"] = torch.from_numpy(token_types)
    if "next_sentence_label" in instances[0]:
        batch["next_sentence_label"] = torch.tensor([int(i["next_sentence_label"]) for i in instances])
    return batch


class MLMCollator:
    """Pads a list of instances and masks them; see the module docstring for the rules."""

    def __init__(self, config: MaskingConfig, *, vocab_size: int, pad_token_id: int, mask_token_id: int,
                 special_token_ids: Sequence[int], seed: int):
        config.validate()
        self.config = config
        self.pad_token_id = pad_token_id
        self.mask_token_id = mask_token_id
        self.seed = int(seed)
        self.special_ids = torch.tensor(sorted(set(special_token_ids) | {pad_token_id, mask_token_id}))
        allowed = torch.ones(vocab_size, dtype=torch.bool)
        allowed[self.special_ids[self.special_ids < vocab_size]] = False
        self.random_ids = torch.nonzero(allowed).flatten()
        if len(self.random_ids) == 0:
            raise UserError("masking: the vocabulary has no non-special token to draw random replacements from")

    def __call__(self, instances: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_instances(instances, self.pad_token_id, self.config.pad_to_multiple_of)
        word_starts = batch.pop("word_starts")
        input_ids = batch["input_ids"]
        maskable = (batch["attention_mask"] == 1) & ~torch.isin(input_ids, self.special_ids)
        chosen = self.choose(maskable, word_starts, batch["positions"])
        batch["labels"] = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
        batch["input_ids"] = self.replace(input_ids, chosen, batch["positions"])
        return batch

    # --- which tokens ---------------------------------------------------------------------------------------
    def budget(self, maskable: torch.Tensor) -> torch.Tensor:
        count = maskable.sum(dim=1)
        return torch.where(count > 0, torch.clamp(torch.round(count * self.config.mlm_probability), min=1), 0)

    def choose(self, maskable: torch.Tensor, word_starts: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        length = maskable.shape[1]
        budget = self.budget(maskable)
        if self.config.span:
            return self._choose_spans(maskable, word_starts, positions, budget)
        if not self.config.whole_word:
            keys = uniform(self.seed, positions, length, _TOKEN_KEYS).masked_fill(~maskable, 2.0)
            rank = keys.argsort(dim=1).argsort(dim=1)
            return (rank < budget[:, None]) & maskable
        word_id, word_count = _words(maskable, word_starts)
        keys = uniform(self.seed, positions, length, _WORD_KEYS).masked_fill(word_count == 0, 2.0)
        order = keys.argsort(dim=1)
        counts = word_count.gather(1, order).to(torch.float32)
        before = counts.cumsum(dim=1) - counts
        take = (before + counts / 2 <= budget[:, None]) | (torch.arange(length) == 0)
        take &= counts > 0
        taken_words = torch.zeros_like(take).scatter(1, order, take)
        return taken_words.gather(1, word_id) & maskable

    def _choose_spans(self, maskable, word_starts, positions, budget) -> torch.Tensor:
        config = self.config
        word_id, word_count = _words(maskable, word_starts)
        # dense index of each maskable word (0..W-1 per row), so spans are drawn over real words only
        is_word = word_count > 0
        dense = is_word.long().cumsum(dim=1) - 1
        num_words = is_word.sum(dim=1)
        taken_words = torch.zeros_like(is_word)
        taken_tokens = torch.zeros_like(budget)
        # A row stops at its budget, or after its own cap of rounds (spans can overlap), never because of
        # another row: the result for an instance does not depend on the batch it is in.
        cap = 4 * budget + 8
        rounds = int(cap.max()) if len(cap) else 0
        draws = uniform(self.seed, positions, 2 * rounds, _SPAN_LENGTH)
        for r in range(rounds):
            active = (taken_tokens < budget) & (r < cap)
            if not bool(active.any()):
                break
            u_length, u_start = draws[:, 2 * r], draws[:, 2 * r + 1]
            span = torch.floor(torch.log1p(-u_length) / math.log(1 - config.span_geometric_p)) + 1
            span = span.clamp(max=config.span_max_words).long()
            start = torch.floor(u_start * num_words).long()
            in_span = is_word & (dense >= start[:, None]) & (dense < (start + span)[:, None]) & active[:, None]
            new = in_span & ~taken_words
            # words of the span, left to right, while the total stays within the budget (SpanBERT truncates)
            new_counts = (word_count * new).to(torch.float32)
            running = taken_tokens[:, None] + new_counts.cumsum(dim=1) - new_counts / 2
            taken_words |= new & (running <= budget[:, None])
            taken_tokens = (word_count * taken_words).sum(dim=1)
        return taken_words.gather(1, word_id) & maskable

    # --- what they become -----------------------------------------------------------------------------------
    def replace(self, input_ids: torch.Tensor, chosen: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        u = uniform(self.seed, positions, length, _REPLACE)
        to_mask = chosen & (u < self.config.mask_token_prob)
        to_random = chosen & ~to_mask & (u < self.config.mask_token_prob + self.config.random_token_prob)
        pick = (uniform(self.seed, positions, length, _RANDOM_ID) * len(self.random_ids)).long()
        random_tokens = self.random_ids[pick.clamp(max=len(self.random_ids) - 1)]
        out = torch.where(to_mask, torch.full_like(input_ids, self.mask_token_id), input_ids)
        return torch.where(to_random, random_tokens, out)


def _words(maskable: torch.Tensor, word_starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token its word index in the row; per word index its number of maskable tokens.

    A non-maskable token (special, padding) always starts a word of its own, so words never cross it.
    """
    starts = word_starts.bool() | ~maskable
    starts[:, 0] = True
    word_id = starts.long().cumsum(dim=1) - 1
    word_count = torch.zeros_like(word_id).scatter_add(1, word_id, maskable.long())
    return word_id, word_count


class CausalLMCollator:
    """Pads instances for a causal LM; labels are the inputs (transformers shifts them), -100 on padding."""

    def __init__(self, *, pad_token_id: int, pad_to_multiple_of: int | None = 8):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, instances: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_instances(instances, self.pad_token_id, self.pad_to_multiple_of)
        batch.pop("word_starts")
        batch.pop("token_type_ids", None)
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return batch
