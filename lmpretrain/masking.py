"""Masking collators: token MLM, whole-word MLM (MeCab words), SpanBERT spans, ELECTRA's split; causal LM.

**How many tokens a sequence masks.** ``budget = round(rate × maskable)``, at least 1 when ``maskable > 0``,
where ``maskable`` counts the sequence's tokens that are neither special tokens nor padding (BERT's
``create_pretraining_data`` rule without its ``max_predictions_per_seq`` cap; ``round`` is half-to-even).
The budget is always counted in *tokens*, so the share of predicted tokens is ``rate`` in every mode:

* **token masking** takes the ``budget`` maskable tokens with the smallest random keys (exactly ``budget``);
* **whole-word masking** orders the words by random keys and takes them in that order while the tokens
  taken before a word plus *half* of the word stay within the budget, always at least one word. A word
  (a token whose ``word_starts`` flag is set, plus the tokens up to the next start; words never cross the
  [CLS]/[SEP] of an instance or padding; an [UNK] inside a word is left as it is) is never split, and
  rounding at the last word goes up or down to the nearer side, so the token rate matches ``rate`` on
  average instead of drifting below it (as "stop before exceeding" would on long Japanese words);
* **span masking** (SpanBERT) draws span lengths in words from a Geometric(p) truncated at
  ``span_max_words`` (p=0.2, 10 words: mean 3.8 words, as in the paper) and a uniform start word per
  span; the words are taken span by span, left to right inside a span, under the same half-word rule,
  until the budget is reached. A word already taken by an earlier span is skipped, so spans may touch
  or merge. It is computed without a loop: each word gets the index of the first span covering it, and
  words are then taken in the order (span index, word index).

Word boundaries come from the dataset (MeCab words), so whole-word and span masking work the same for
WordPiece, BPE and Unigram vocabularies; no ``##`` prefixes or offset mappings are needed.

**What chosen tokens become.** Each chosen token independently becomes ``[MASK]`` with probability
``mask_token_prob``, a random token with ``random_token_prob`` (uniform over the non-special ids of the
vocabulary), and stays as it is otherwise. ``labels`` holds the original id there and -100 elsewhere.

**Randomness.** Every random number comes from :mod:`lmpretrain.rng`, keyed by (seed, the instance's
global ``position``, token or word index, purpose), so an instance is masked the same way in any batch,
with any padding, in any process, and in a resumed run, and differently each time it is used again (a
new position). Sorts are stable, so ties between keys are broken by index, which padding does not move.
Everything is tensor arithmetic over the whole batch, on any device; there is no Python loop per token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UserError
from .rng import uniform

# one rng stream per purpose, so that no two decisions share random numbers (ELECTRA sampling uses 101)
_TOKEN_KEYS, _WORD_KEYS, _REPLACE, _RANDOM_ID, _SPAN_DRAWS = 1, 2, 3, 4, 5
_NOT_A_KEY = 2.0  # larger than any uniform key: sorts after every real candidate


@dataclass
class MaskingConfig:
    mlm_probability: float = 0.15
    """Share of maskable tokens to predict (parameter.json ``mlm-probability``, or ``mask-percent`` / 100)."""
    mask_token_prob: float = 0.8
    """Share of the chosen tokens replaced by [MASK] (ELECTRA's original setting: 0.85)."""
    random_token_prob: float = 0.1
    """Share replaced by a random non-special token (ELECTRA: 0.0); the rest stay unchanged."""
    whole_word: bool = False
    """Mask whole MeCab words (``--do_whole_word_mask``)."""
    span: bool = False
    """SpanBERT span masking over whole words (implies whole words)."""
    span_geometric_p: float = 0.2
    """Parameter of the geometric distribution of span lengths, in words."""
    span_max_words: int = 10
    """Longest span, in words; the geometric distribution is truncated there and renormalized."""
    pad_to_multiple_of: int | None = 8
    """Round the padded length up to a multiple of this (tensor-core friendly); None: the longest instance."""
    pad_to_length: int | None = None
    """Pad every batch to this length (the sequence length): one shape, so torch.compile compiles once."""
    masked_index_bucket: int | None = None
    """Also give ``masked_index`` (the flat [B x L] indices of the masked positions, row-major) and ``masked_labels``
    (their labels), padded to a multiple of this with index 0 and label -100: the models gather the masked rows
    with it instead of a boolean mask, a shape known on the host (no device sync, few shapes under compile)."""

    def validate(self) -> None:
        """Raise one :class:`UserError` naming every bad field."""
        problems = []
        for name in ("mlm_probability", "mask_token_prob", "random_token_prob", "span_geometric_p"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                problems.append(f"{name} must be in [0, 1] (got {value!r})")
        if self.mlm_probability == 0.0:
            problems.append("mlm_probability must be above 0")
        if self.mask_token_prob + self.random_token_prob > 1.0 + 1e-9:
            problems.append(f"mask_token_prob + random_token_prob must be at most 1 (got "
                            f"{self.mask_token_prob} + {self.random_token_prob})")
        if self.span and self.span_geometric_p == 0.0:
            problems.append("span_geometric_p must be above 0 for span masking")
        if not isinstance(self.span_max_words, int) or self.span_max_words < 1:
            problems.append(f"span_max_words must be an integer of at least 1 (got {self.span_max_words!r})")
        for name in ("pad_to_multiple_of", "pad_to_length", "masked_index_bucket"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                problems.append(f"{name} must be a positive integer (got {value!r})")
        if problems:
            raise UserError("masking: " + "; ".join(problems))


def _as_array(value, dtype) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype).reshape(-1)


def pad_instances(instances: list[dict], pad_token_id: int, multiple: int | None,
                  length: int | None = None) -> dict[str, torch.Tensor]:
    """Stack variable-length instances into right-padded tensors (``length``: at least this long).

    Returns input_ids, attention_mask, word_starts (True on padding), positions (the instance's ``position``,
    or its index in the list when absent), and token_type_ids / next_sentence_label / sentence_order_label when the
    instances have them.
    """
    if not instances:
        raise ValueError("cannot collate an empty list of instances")
    ids = [_as_array(inst["input_ids"], np.int64) for inst in instances]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    length = max(int(lengths.max()), length or 0)
    if multiple:
        length = -(-length // multiple) * multiple
    filled = np.arange(length)[None, :] < lengths[:, None]  # row-major order matches the concatenation

    def stack(key: str, fill, dtype) -> np.ndarray:
        out = np.full(filled.shape, fill, dtype=dtype)
        out[filled] = np.concatenate([_as_array(inst[key], dtype) for inst in instances])
        return out

    input_ids = np.full(filled.shape, pad_token_id, dtype=np.int64)
    input_ids[filled] = np.concatenate(ids)
    batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(filled.astype(np.int64)),
             "positions": torch.tensor([int(inst.get("position", i)) for i, inst in enumerate(instances)],
                                       dtype=torch.int64)}
    if all("word_starts" in inst for inst in instances):
        batch["word_starts"] = torch.from_numpy(stack("word_starts", True, bool))
    else:  # no word boundaries known: every token is a word of its own
        batch["word_starts"] = torch.ones(filled.shape, dtype=torch.bool)
    if "token_type_ids" in instances[0]:
        batch["token_type_ids"] = torch.from_numpy(stack("token_type_ids", 0, np.int64))
    for label in ("next_sentence_label", "sentence_order_label"):
        if label in instances[0]:
            batch[label] = torch.tensor([int(i[label]) for i in instances], dtype=torch.int64)
    return batch


def truncated_geometric(u: torch.Tensor, p: float, max_value: int) -> torch.Tensor:
    """Map uniforms in [0, 1) to k in 1..max_value with P(k) ∝ p (1-p)^(k-1) (inverse CDF, vectorized)."""
    if p >= 1.0:
        return torch.ones_like(u, dtype=torch.int64)
    log_q = math.log1p(-p)
    total = -math.expm1(max_value * log_q)  # 1 - (1-p)^max: the mass kept by the truncation
    k = torch.floor(torch.log1p(-u.double() * total) / log_q) + 1
    return k.clamp(1, max_value).long()


class MLMCollator:
    """Pads a list of instances and masks them; see the module docstring for the rules."""

    def __init__(self, config: MaskingConfig, *, vocab_size: int, pad_token_id: int, mask_token_id: int,
                 special_token_ids: Sequence[int], seed: int):
        config.validate()
        self.config = config
        self.vocab_size = int(vocab_size)
        self.pad_token_id = int(pad_token_id)
        self.mask_token_id = int(mask_token_id)
        self.seed = int(seed)
        self.special_ids = torch.tensor(sorted({int(i) for i in special_token_ids} | {pad_token_id, mask_token_id}),
                                        dtype=torch.int64)
        allowed = torch.ones(self.vocab_size, dtype=torch.bool)
        allowed[self.special_ids[(self.special_ids >= 0) & (self.special_ids < self.vocab_size)]] = False
        self.random_ids = torch.nonzero(allowed).flatten()
        if len(self.random_ids) == 0:
            raise UserError("masking: the vocabulary has no non-special token to draw random replacements from")
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, instances: list[dict]) -> dict[str, torch.Tensor]:
        missing = [i for i, inst in enumerate(instances) if "position" not in inst]
        if missing:
            raise ValueError(f"instances {missing[:5]} have no 'position': masks would not be reproducible")
        batch = pad_instances(instances, self.pad_token_id, self.config.pad_to_multiple_of, self.config.pad_to_length)
        word_starts = batch.pop("word_starts")
        batch["input_ids"], batch["labels"] = self.mask(batch["input_ids"], batch["attention_mask"], word_starts,
                                                        batch["positions"])
        if self.config.masked_index_bucket:
            batch["masked_index"], batch["masked_labels"] = masked_index(batch["labels"],
                                                                         self.config.masked_index_bucket)
        return batch

    def mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_starts: torch.Tensor,
             positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input_ids, labels) for a padded batch, on whatever device the tensors are on."""
        special_ids, random_ids = self._tables(input_ids.device)
        maskable = attention_mask.bool() & ~torch.isin(input_ids, special_ids)
        chosen = self.choose(maskable, word_starts.bool(), positions)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
        return self.replace(input_ids, chosen, positions, random_ids), labels

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on_device:
            self._on_device[device] = (self.special_ids.to(device), self.random_ids.to(device))
        return self._on_device[device]

    # --- which tokens ---------------------------------------------------------------------------------------
    def budget(self, maskable: torch.Tensor) -> torch.Tensor:
        """Tokens to mask per row: round(rate × maskable), at least 1 where anything is maskable."""
        count = maskable.sum(dim=1)
        wanted = torch.round(count.double() * self.config.mlm_probability).long().clamp(min=1)
        return torch.where(count > 0, torch.minimum(wanted, count), torch.zeros_like(count))

    def choose(self, maskable: torch.Tensor, word_starts: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Boolean [B, L]: the tokens to predict."""
        batch_size, length = maskable.shape
        budget = self.budget(maskable)
        positions = positions.to(maskable.device)
        if not (self.config.whole_word or self.config.span):
            keys = uniform(self.seed, positions, length, _TOKEN_KEYS).masked_fill(~maskable, _NOT_A_KEY)
            order = torch.sort(keys, dim=1, stable=True).indices
            first = torch.arange(length, device=maskable.device).expand(batch_size, length) < budget[:, None]
            return torch.zeros_like(maskable).scatter(1, order, first)
        word_id, word_count = _words(maskable, word_starts)
        if self.config.span:
            order = self._span_order(word_count, positions, budget)
        else:
            keys = uniform(self.seed, positions, length, _WORD_KEYS).masked_fill(word_count == 0, _NOT_A_KEY)
            order = torch.sort(keys, dim=1, stable=True).indices
        taken_words = _take_words_in_order(word_count, order, budget)
        return taken_words.gather(1, word_id) & maskable

    def _span_order(self, word_count: torch.Tensor, positions: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        """Word slots sorted by (index of the first span covering them, slot); uncovered and empty slots last."""
        config = self.config
        batch_size, length = word_count.shape
        device = word_count.device
        is_word = word_count > 0
        num_words = is_word.sum(dim=1)
        slots = torch.arange(length, device=device)
        # slot of the k-th real word of each row (real words first, in order)
        real_slots = torch.sort((~is_word).to(torch.int8), dim=1, stable=True).indices
        # Enough spans to reach the budget except at extreme rates; the count is a function of the row's own
        # budget, so a row's spans do not depend on the batch around it.
        span_cap = 2 * budget + 8
        rounds = int(span_cap.max())
        draws = uniform(self.seed, positions, 2 * rounds, _SPAN_DRAWS).view(batch_size, rounds, 2)
        span_words = truncated_geometric(draws[..., 0], config.span_geometric_p, config.span_max_words)
        start_rank = torch.floor(draws[..., 1] * num_words[:, None]).long()
        start_rank = torch.minimum(start_rank, (num_words[:, None] - 1).clamp(min=0))
        start_slot = real_slots.gather(1, start_rank)  # [B, rounds]
        # every (span, offset) pair marks slot start + offset with the span index; keep the smallest per slot
        offsets = torch.arange(config.span_max_words, device=device)
        targets = start_slot[..., None] + offsets  # [B, rounds, max_words]
        span_index = torch.arange(rounds, device=device)[None, :, None].expand_as(targets)
        valid = (offsets < span_words[..., None]) & (targets < length) & (span_index < span_cap[:, None, None])
        targets = torch.where(valid, targets, torch.full_like(targets, length))  # invalid ones go to a spare slot
        first_span = torch.full((batch_size, length + 1), rounds, dtype=torch.int64, device=device)
        first_span.scatter_reduce_(1, targets.reshape(batch_size, -1), span_index.reshape(batch_size, -1),
                                   reduce="amin")
        first_span = first_span[:, :length]
        key = torch.where(is_word & (first_span < rounds), first_span * length + slots, (rounds + 1) * length + slots)
        return torch.sort(key, dim=1).indices

    # --- what they become -----------------------------------------------------------------------------------
    def replace(self, input_ids: torch.Tensor, chosen: torch.Tensor, positions: torch.Tensor,
                random_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[MASK] / random non-special token / unchanged for the chosen tokens, per the configured shares."""
        random_ids = self.random_ids.to(input_ids.device) if random_ids is None else random_ids
        length = input_ids.shape[1]
        positions = positions.to(input_ids.device)
        u = uniform(self.seed, positions, length, _REPLACE)
        to_mask = chosen & (u < self.config.mask_token_prob)
        to_random = chosen & ~to_mask & (u < self.config.mask_token_prob + self.config.random_token_prob)
        out = torch.where(to_mask, torch.full_like(input_ids, self.mask_token_id), input_ids)
        if self.config.random_token_prob > 0:
            pick = (uniform(self.seed, positions, length, _RANDOM_ID) * len(random_ids)).long()
            out = torch.where(to_random, random_ids[pick.clamp(max=len(random_ids) - 1)], out)
        return out


def masked_index(labels: torch.Tensor, bucket: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat indices of the labelled positions (row-major: the order a boolean mask selects them in) and their
    labels, padded to a multiple of ``bucket`` (at least one bucket) with index 0 and label -100."""
    flat = labels.reshape(-1)
    found = torch.nonzero(flat != -100).flatten()
    size = max(1, -(-len(found) // bucket)) * bucket
    index = torch.zeros(size, dtype=torch.int64)
    index[:len(found)] = found
    targets = torch.full((size,), -100, dtype=flat.dtype)
    targets[:len(found)] = flat[found]
    return index, targets


def _words(maskable: torch.Tensor, word_starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token its word slot in the row; per slot its number of maskable tokens (0: not a word).

    A non-maskable token flagged as a word start (the [CLS] and [SEP] the dataset inserts, padding) is a slot of
    its own (count 0), and the token after it starts a new word even without a ``word_starts`` flag (a segment
    cut mid-word), so words never cross it. A non-maskable token inside a word (an [UNK] for an unknown
    character of a MeCab word, flag not set) stays in its word, which is then masked around it, never split.
    """
    boundary = ~maskable & word_starts
    starts = word_starts | torch.roll(boundary, 1, dims=1)  # the token after a boundary starts a word
    starts[:, 0] = True
    word_id = starts.long().cumsum(dim=1) - 1
    word_count = torch.zeros_like(word_id).scatter_add(1, word_id, maskable.long())
    return word_id, word_count


def _take_words_in_order(word_count: torch.Tensor, order: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Boolean per word slot: take words in ``order`` while tokens before + half the word ≤ budget (≥ 1 word)."""
    counts = word_count.gather(1, order)
    before = counts.cumsum(dim=1) - counts
    take = (2 * before + counts <= 2 * budget[:, None])  # integer form of before + counts / 2 <= budget
    take[:, 0] = True  # at least one word; a row with nothing maskable has count 0 there
    take &= counts > 0
    # the rule stops at the first word that does not fit: later words have even more tokens before them
    return torch.zeros_like(take).scatter(1, order, take)


class CausalLMCollator:
    """Pads instances for a causal LM; labels are the inputs (transformers shifts them), -100 on padding."""

    def __init__(self, *, pad_token_id: int, pad_to_multiple_of: int | None = 8, pad_to_length: int | None = None,
                 predicted_index_bucket: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_to_length = pad_to_length
        self.predicted_index_bucket = predicted_index_bucket
        """Also give ``predicted_index`` / ``predicted_labels``: the positions with a next token, as flat indices into
        [B x (L - 1)] and their next tokens, padded as ``MaskingConfig.masked_index_bucket`` pads."""

    def __call__(self, instances: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_instances(instances, self.pad_token_id, self.pad_to_multiple_of, self.pad_to_length)
        batch.pop("word_starts")
        batch.pop("token_type_ids", None)
        batch.pop("next_sentence_label", None)
        batch.pop("sentence_order_label", None)
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        if self.predicted_index_bucket:
            batch["predicted_index"], batch["predicted_labels"] = masked_index(batch["labels"][:, 1:],
                                                                               self.predicted_index_bucket)
        return batch
