"""Training instances, built lazily from token shards: one dataset class per kind of instance (``layouts.py``
declares the layouts by name, each with its class; a family names the one it trains on).

Every dataset has ``len()`` instances per epoch and ``dataset[position]`` builds the instance drawn at a *global*
sample position (see :mod:`.sampler`), so the data order and every random choice inside an instance are a pure
function of ``(seed, position)``. The index saying which tokens form instance ``i`` is computed once, in numpy,
with memory proportional to the number of instances.

- :class:`NextSentenceDataset`: ``[CLS] A [SEP] B [SEP]`` for next-sentence prediction, as in Google's
  create_pretraining_data.py (BERT); :class:`SentenceOrderDataset`: the same pairs, the negative A and B swapped
  (ALBERT).
- :class:`PackedSentenceDataset`: FULL-SENTENCES: ``[CLS] s1 s2 ... [SEP]`` packed across documents, a ``[SEP]``
  between documents (RoBERTa), or as many whole lines of one document as fit (the original's line-by-line; ELECTRA).
- :class:`CausalBlockDataset`: contiguous blocks of the token stream, ``[SEP]`` as the end-of-document token, no
  ``[CLS]`` (causal LMs).

Sentences longer than an instance are split into instance-sized pieces rather than dropped.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..log import get_logger
from .sampler import EpochOrder
from .shards import TokenShards

logger = get_logger(__name__)

EPOCH_SAMPLE = 20_000
"""Instances built to measure an epoch of a layout drawn per position (more: a strided sample, scaled)."""
NSP_STREAM = 0x4E5350  # rng stream for the random choices inside a BERT instance
SOP_STREAM = 0x534F50  # the same for an ALBERT (sentence-order) instance


EVAL_SPLIT_DOCUMENTS = 1  # eval-share of the documents, by count: runs recorded before the split had a version
EVAL_SPLIT_TOKENS = 2  # documents until eval-share of the tokens: what new runs use
MIN_EVAL_INSTANCES = 10  # an eval split with fewer is warned about: its loss and perplexity mean little


def split_eval(shards: TokenShards, eval_share: float, seed: int,
               version: int = EVAL_SPLIT_DOCUMENTS) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``eval_share`` of the corpus (documents chosen by ``seed``): ``(train_doc_ids, eval_doc_ids)``,
    sorted. ``version`` 1 (``EVAL_SPLIT_DOCUMENTS``) holds out that share of the documents by count, so the share
    of tokens and instances follows the sizes of the documents drawn (0.1 held out 14-23% of the instances);
    version 2 (``EVAL_SPLIT_TOKENS``, the run description's default) takes documents, in the same seeded order,
    while they fit in that share of the tokens, then the smallest one left if it brings the share closer (or if
    none fitted): the held-out tokens are as close to the share as whole documents allow.

    The two never overlap; at least one document stays for training. With one document there is no eval split.
    """
    if not 0.0 <= eval_share < 1.0:
        raise UserError(f"eval share must be in [0, 1) (got {eval_share})")
    if version not in (EVAL_SPLIT_DOCUMENTS, EVAL_SPLIT_TOKENS):
        raise ValueError(f"unknown eval split version {version}")
    num_documents = shards.num_documents
    num_eval = min(int(round(eval_share * num_documents)), num_documents - 1)
    if eval_share > 0 and num_eval == 0:
        num_eval = 1 if num_documents > 1 else 0
        if num_eval == 0:
            logger.warning("the corpus has a single document: no documents held out for evaluation")
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xE7A1]).permutation(num_documents)
    if version == EVAL_SPLIT_TOKENS and num_eval:
        taken = _token_share(_document_tokens(shards)[order], eval_share)
        eval_docs, train_docs = np.sort(order[taken]), np.sort(order[~taken])
    else:
        eval_docs, train_docs = np.sort(order[:num_eval]), np.sort(order[num_eval:])
    return train_docs, eval_docs


def _document_tokens(shards: TokenShards) -> np.ndarray:
    """The number of tokens of each document."""
    sentence_offsets, document_offsets = np.asarray(shards.sentence_offsets), np.asarray(shards.document_offsets)
    return np.diff(sentence_offsets[document_offsets])


def _token_share(sizes: np.ndarray, share: float) -> np.ndarray:
    """Which of the documents of ``sizes`` (tokens, in the seeded order) to hold out for ``share`` of the tokens: as
    :func:`split_eval` version 2 says. At least one is taken; ``share`` < 1 leaves one."""
    target = share * float(sizes.sum())
    taken = np.zeros(len(sizes), dtype=bool)
    cumulative = np.cumsum(sizes)
    prefix = int(np.searchsorted(cumulative, target, side="right"))  # the seeded order's first documents that fit
    taken[:prefix] = True
    held = float(cumulative[prefix - 1]) if prefix else 0.0
    for i in np.flatnonzero(sizes[prefix:] <= target - held) + prefix:  # then the later ones that still fit
        if sizes[i] <= target - held:
            taken[i], held = True, held + float(sizes[i])
    left = np.flatnonzero(~taken)  # none of them fits now: one more overshoots, the smallest least
    if len(left) > 1:
        smallest = left[int(np.argmin(sizes[left]))]
        if not taken.any() or abs(held + float(sizes[smallest]) - target) < target - held:
            taken[smallest] = True
    return taken


def _document_sentences(shards: TokenShards, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sentence indices of ``docs`` in order, the position in ``docs`` of each one's document)."""
    offsets = np.asarray(shards.document_offsets)
    counts = offsets[docs + 1] - offsets[docs]
    owner = np.repeat(np.arange(len(docs), dtype=np.int64), counts)
    first = np.repeat(offsets[docs] - (np.cumsum(counts) - counts), counts)
    return first + np.arange(counts.sum(), dtype=np.int64), owner


def _other_document(own: int, count: int, u: float) -> int:
    """A document other than ``own`` of ``count`` (by its position in the split), drawn by the uniform ``u``; ``own``
    when it is the only one (the pairs' random next segment)."""
    if count < 2:
        return own
    pick = int(u * (count - 1))
    return pick + 1 if pick >= own else pick


class InstanceDataset:
    """Base class: position -> (epoch, index) -> instance dict (see module docstring)."""

    layout = ""

    def __init__(self, shards: TokenShards, docs: np.ndarray, *, sequence_length: int, cls_id: int, sep_id: int,
                 seed: int, shuffle: bool = True):
        self.shards = shards
        self.doc_ids = docs
        self.sequence_length = sequence_length
        self.cls_id = int(cls_id)
        self.sep_id = int(sep_id)
        self.seed = int(seed)
        self.shuffle = shuffle
        self._order: EpochOrder | None = None

    def _finish_index(self, size: int) -> None:
        if size == 0:
            raise UserError(f"the corpus yields no {self.layout} instances")
        self._order = EpochOrder(size, self.seed, self.shuffle)

    def __len__(self) -> int:
        return self._order.size

    def locate(self, position: int) -> tuple[int, int]:
        return self._order.locate(position)

    def __getitem__(self, position: int) -> dict:
        epoch, index = self._order.locate(int(position))
        instance = self.build(index, int(position))
        instance["position"] = int(position)
        return instance

    def build(self, index: int, position: int) -> dict:
        raise NotImplementedError

    def epoch_tokens(self) -> tuple[int, int, bool]:
        """``(real, covered, exact)`` of one epoch: ``real`` the tokens of its instances that are not padding
        (special tokens included: what a batch computes on), ``covered`` the corpus tokens its instances hold from
        their own place (a random next sentence is real but covers nothing). ``exact`` False: estimated from a
        sample of :data:`EPOCH_SAMPLE` instances (the layouts whose instances are drawn per position)."""
        count = len(self)
        positions = range(count) if count <= EPOCH_SAMPLE else np.linspace(0, count - 1, EPOCH_SAMPLE).astype(int)
        real = covered = 0
        for position in positions:
            index = self.locate(int(position))[1]
            instance_real, instance_covered = self.instance_tokens(index, int(position))
            real, covered = real + instance_real, covered + instance_covered
        scale = count / len(positions)
        return int(round(real * scale)), int(round(covered * scale)), count <= EPOCH_SAMPLE

    def instance_tokens(self, index: int, position: int) -> tuple[int, int]:
        """(real, covered) tokens of instance ``index`` drawn at ``position`` (see :meth:`epoch_tokens`)."""
        ids = self.build(index, position)["input_ids"]
        return len(ids), len(ids) - int(np.isin(ids, (self.cls_id, self.sep_id)).sum())

    def _tokens(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray(self.shards.ids[start:end], dtype=np.int64), self.shards.token_word_starts(start, end))


class PackedSentenceDataset(InstanceDataset):
    """FULL-SENTENCES packed across documents (``cross_documents``), or the whole lines of one document."""

    def __init__(self, shards: TokenShards, docs: np.ndarray, *, cross_documents: bool, **common):
        self.layout = "packed_sentences" if cross_documents else "whole_lines"
        super().__init__(shards, docs, **common)
        self.cross_documents = cross_documents
        capacity = self.sequence_length - 2
        sentences, owner = _document_sentences(shards, docs)
        offsets = np.asarray(shards.sentence_offsets)
        lo, hi = offsets[sentences], offsets[sentences + 1]
        pieces = (hi - lo + capacity - 1) // capacity  # a sentence longer than an instance is split
        piece_no = np.arange(pieces.sum(), dtype=np.int64) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        self.segment_start = np.repeat(lo, pieces) + piece_no * capacity
        self.segment_end = np.minimum(self.segment_start + capacity, np.repeat(hi, pieces))
        self.segment_doc = np.repeat(owner, pieces)
        self.instance_first = self._pack(capacity)
        self._finish_index(len(self.instance_first) - 1)

    def _pack(self, capacity: int) -> np.ndarray:
        """Greedy packing: the first segment of each instance, plus the end."""
        firsts = [0]
        used, previous = 0, -1
        for i, (length, doc) in enumerate(zip((self.segment_end - self.segment_start).tolist(),
                                              self.segment_doc.tolist())):
            new_doc = doc != previous and used > 0
            extra = 1 if new_doc and self.cross_documents else 0
            if used > 0 and (used + extra + length > capacity or (new_doc and not self.cross_documents)):
                firsts.append(i)
                used = length
            else:
                used += extra + length
            previous = doc
        firsts.append(len(self.segment_start))
        return np.asarray(firsts, dtype=np.int64)

    def epoch_tokens(self) -> tuple[int, int, bool]:
        lengths = self.segment_end - self.segment_start
        covered = int(lengths.sum())
        changes = np.flatnonzero(np.diff(self.segment_doc) != 0) + 1  # a [SEP] there unless an instance starts
        changes = len(np.setdiff1d(changes, self.instance_first)) if self.cross_documents else 0
        return covered + 2 * len(self) + changes, covered, True

    def build(self, index: int, position: int) -> dict:
        ids, starts = [np.array([self.cls_id])], [np.ones(1, bool)]
        lo, hi = int(self.instance_first[index]), int(self.instance_first[index + 1])
        for k in range(lo, hi):
            if k > lo and self.segment_doc[k] != self.segment_doc[k - 1]:
                ids.append(np.array([self.sep_id]))
                starts.append(np.ones(1, bool))
            segment_ids, segment_starts = self._tokens(int(self.segment_start[k]), int(self.segment_end[k]))
            ids.append(segment_ids)
            starts.append(segment_starts)
        ids.append(np.array([self.sep_id]))
        starts.append(np.ones(1, bool))
        return {"input_ids": np.concatenate(ids).astype(np.int64), "word_starts": np.concatenate(starts)}


class CausalBlockDataset(InstanceDataset):
    """Contiguous blocks of ``sequence_length`` tokens of the documents' stream, each document followed by [SEP]."""

    layout = "causal_blocks"

    def __init__(self, shards: TokenShards, docs: np.ndarray, **common):
        super().__init__(shards, docs, **common)
        offsets = np.asarray(shards.sentence_offsets)
        doc_offsets = np.asarray(shards.document_offsets)
        self.doc_token_start = offsets[doc_offsets[docs]]
        lengths = offsets[doc_offsets[docs + 1]] - self.doc_token_start + 1  # + end-of-document token
        self.stream_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        total = int(self.stream_offsets[-1])
        blocks = -(-total // self.sequence_length)
        if blocks > 1 and total - (blocks - 1) * self.sequence_length < 2:
            blocks -= 1  # a last block of one token has nothing to predict
        self.total_tokens = total
        self._finish_index(blocks)

    def epoch_tokens(self) -> tuple[int, int, bool]:
        real = min(self.total_tokens, len(self) * self.sequence_length)
        ends = int((self.stream_offsets[1:] <= real).sum())  # the end-of-document tokens among them
        return real, real - ends, True

    def build(self, index: int, position: int) -> dict:
        start = index * self.sequence_length
        end = min(start + self.sequence_length, self.total_tokens)
        j = int(np.searchsorted(self.stream_offsets, start, side="right")) - 1
        ids, starts = [], []
        while start < end:
            doc_begin, doc_end = int(self.stream_offsets[j]), int(self.stream_offsets[j + 1])
            stop = min(end, doc_end)
            text_end = min(stop, doc_end - 1)  # stream position of the end-of-document token is doc_end - 1
            if start < text_end:
                base = int(self.doc_token_start[j]) - doc_begin
                piece_ids, piece_starts = self._tokens(base + start, base + text_end)
                ids.append(piece_ids)
                starts.append(piece_starts)
            if stop == doc_end:
                ids.append(np.array([self.sep_id]))
                starts.append(np.ones(1, bool))
            start = stop
            j += 1
        return {"input_ids": np.concatenate(ids).astype(np.int64), "word_starts": np.concatenate(starts)}


class NextSentenceDataset(InstanceDataset):
    """BERT's sentence pairs with next-sentence labels (0: B follows A, 1: B is random) and token types.

    The chunks of consecutive sentences (each with its target length, shorter with ``short_seq_prob``) are fixed
    once from the seed and cover every sentence of the documents exactly once per epoch. Where A ends, whether B is
    random, the random document and truncation are drawn per position, so each epoch pairs differently.
    """

    layout = "sentence_pairs"
    label = "next_sentence_label"
    rng_stream = NSP_STREAM

    def __init__(self, shards: TokenShards, docs: np.ndarray, *, short_seq_prob: float, nsp_probability: float,
                 **common):
        super().__init__(shards, docs, **common)
        self.nsp_probability = float(nsp_probability)
        self.max_num_tokens = self.sequence_length - 3
        sentences, owner = _document_sentences(shards, docs)
        offsets = np.asarray(shards.sentence_offsets)
        lengths = (offsets[sentences + 1] - offsets[sentences]).tolist()
        generator = np.random.default_rng([self.seed & 0xFFFFFFFF, 0xB127])
        count = max(len(lengths), 1)
        short = (generator.random(count) < short_seq_prob).tolist()
        short_target = generator.integers(2, max(self.max_num_tokens, 2) + 1, count).tolist()
        first, target = [], []
        used, chunk, owners = 0, 0, owner.tolist()
        for i, length in enumerate(lengths):
            if used == 0:
                first.append(i)
                target.append(short_target[chunk] if short[chunk] else self.max_num_tokens)
            used += length
            if i + 1 == len(lengths) or owners[i + 1] != owners[i] or used >= target[-1]:
                used = 0
                chunk += 1
        self.sentences = sentences  # global sentence ids, in document order
        self.sentence_doc = owner
        self.chunk_first = np.asarray(first + [len(lengths)], dtype=np.int64)
        self.chunk_target = np.asarray(target, dtype=np.int64)
        doc_offsets = np.asarray(shards.document_offsets)
        counts = doc_offsets[docs + 1] - doc_offsets[docs]
        self.doc_first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # into self.sentences
        self._finish_index(len(target))

    def _collect(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens of sentences ``self.sentences[lo:hi]`` (consecutive in one document, hence contiguous)."""
        offsets = self.shards.sentence_offsets
        return self._tokens(int(offsets[self.sentences[lo]]), int(offsets[self.sentences[hi - 1] + 1]))

    def _segments(self, index: int, position: int):
        """(A ids, A starts, B ids, B starts, label, whether B is from its own place) of instance ``index``."""
        # a pure function of (seed, position): the same pair whichever process builds it, resumed or not
        u = np.random.default_rng([self.seed & 0xFFFFFFFF, position, self.rng_stream]).random(6).tolist()
        lo, hi = int(self.chunk_first[index]), int(self.chunk_first[index + 1])
        target = int(self.chunk_target[index])
        a_end = lo + 1 + int(u[0] * (hi - lo - 1)) if hi - lo >= 2 else hi
        a_ids, a_starts, b_ids, b_starts, label = self._pair(lo, a_end, hi, target, u)
        own = hi - lo > 1 and (self.layout == "sentence_order" or label == 0)
        return (*self._truncate(a_ids, a_starts, b_ids, b_starts, u[4], u[5]), label, own)

    def instance_tokens(self, index: int, position: int) -> tuple[int, int]:
        a_ids, _, b_ids, _, _, own = self._segments(index, position)
        return len(a_ids) + len(b_ids) + 3, len(a_ids) + (len(b_ids) if own else 0)

    def build(self, index: int, position: int) -> dict:
        a_ids, a_starts, b_ids, b_starts, label, _ = self._segments(index, position)
        one = np.ones(1, bool)
        ids = np.concatenate([[self.cls_id], a_ids, [self.sep_id], b_ids, [self.sep_id]]).astype(np.int64)
        starts = np.concatenate([one, a_starts, one, b_starts, one])
        token_types = np.zeros(len(ids), dtype=np.int64)
        token_types[len(a_ids) + 2:] = 1
        return {"input_ids": ids, "word_starts": starts, "token_type_ids": token_types, self.label: label}

    def _pair(self, lo: int, a_end: int, hi: int, target: int, u: list[float]):
        """(A ids, A word starts, B ids, B word starts, label) of the chunk's sentences ``lo:hi`` split at ``a_end``:
        B follows A (0), or B comes from a random document (1; always for a chunk of one sentence)."""
        a_ids, a_starts = self._collect(lo, a_end)
        if hi - lo == 1 or u[1] < self.nsp_probability:
            b_ids, b_starts = self._random_segment(int(self.sentence_doc[lo]), max(target - len(a_ids), 1), u[2], u[3])
            return a_ids, a_starts, b_ids, b_starts, 1
        return (a_ids, a_starts, *self._collect(a_end, hi), 0)

    def _random_segment(self, own: int, target: int, u_doc: float, u_start: float):
        """Sentences from a random other document (of this split), from a random sentence, about ``target`` long."""
        doc = _other_document(own, len(self.doc_ids), u_doc)
        first, last = int(self.doc_first[doc]), int(self.doc_first[doc + 1])
        lo = first + int(u_start * (last - first))
        offsets = self.shards.sentence_offsets
        start = int(offsets[self.sentences[lo]])
        hi = lo + 1
        while hi < last and int(offsets[self.sentences[hi - 1] + 1]) - start < target:
            hi += 1
        return self._collect(lo, hi)

    def _truncate(self, a_ids, a_starts, b_ids, b_starts, u_a: float, u_b: float):
        """Trim the longer side until the pair fits (as truncate_seq_pair), from the front or back by chance."""
        la, lb = len(a_ids), len(b_ids)
        excess = la + lb - self.max_num_tokens
        if excess > 0:
            first = min(excess, abs(la - lb))
            if la > lb:
                la -= first
            else:
                lb -= first
            rest = excess - first
            lb -= (rest + 1) // 2
            la -= rest // 2
        a_cut = slice(len(a_ids) - la, None) if u_a < 0.5 else slice(0, la)
        b_cut = slice(len(b_ids) - lb, None) if u_b < 0.5 else slice(0, lb)
        return a_ids[a_cut], a_starts[a_cut], b_ids[b_cut], b_starts[b_cut]


class SentenceOrderDataset(NextSentenceDataset):
    """ALBERT's sentence-order pairs (Lan et al. 2019): the chunks, split points, truncation and token types of
    :class:`NextSentenceDataset` (drawn from a stream of their own), with label 0 when B follows A and 1 when the
    same two segments are swapped (with ``nsp_probability``; 0.5 in ALBERT), as in google-research/albert's
    create_pretraining_data.py. A chunk of one sentence has no second segment: as there, B then comes from a random
    document, labelled 1."""

    layout = "sentence_order"
    label = "sentence_order_label"
    rng_stream = SOP_STREAM

    def _pair(self, lo: int, a_end: int, hi: int, target: int, u: list[float]):
        if hi - lo == 1:
            return super()._pair(lo, a_end, hi, target, u)
        a_ids, a_starts = self._collect(lo, a_end)
        b_ids, b_starts = self._collect(a_end, hi)
        if u[1] < self.nsp_probability:
            return b_ids, b_starts, a_ids, a_starts, 1
        return a_ids, a_starts, b_ids, b_starts, 0


# ---- version 2 (issue 29): every token counts ----------------------------------------------------------------------

def _word_start_before(shards: TokenShards, start: int, cut: int, lookback: int = 32) -> int:
    """The last token index in ``(start, cut]`` that begins a word, searched ``lookback`` tokens back from ``cut``;
    ``cut`` itself where none is that close (a word that long is cut inside)."""
    low = max(start + 1, cut - lookback)
    starts = np.flatnonzero(shards.token_word_starts(low, cut + 1))
    return low + int(starts[-1]) if len(starts) else cut


def split_long_lines(shards: TokenShards, sentences: np.ndarray, cap: int, marks: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, index into ``sentences``) of every piece: a line of at most ``cap`` tokens is one piece; a longer
    one is cut after each sentence end (the long-line rule's cut points: a token ending in ``。！？!?``, or in a full
    stop not followed by a digit; ``marks``: ``FastEncoder.sentence_marks()``, None: no sentence ends known), and a
    sentence still longer than ``cap`` at the last word start of each ``cap`` tokens."""
    offsets = np.asarray(shards.sentence_offsets)
    lo, hi = offsets[sentences], offsets[sentences + 1]
    long = np.flatnonzero(hi - lo > cap)
    keep = np.ones(len(sentences), dtype=bool)
    keep[long] = False
    starts, ends, owner = [lo[keep]], [hi[keep]], [np.flatnonzero(keep)]
    for k in long.tolist():
        a, b = int(lo[k]), int(hi[k])
        cuts = [a]
        if marks is not None:
            ids = np.asarray(shards.ids[a:b], dtype=np.int64)
            mark = marks[ids]
            decimal = (mark[:-1] & 4).astype(bool) & (mark[1:] & 2).astype(bool)  # "12" "." "5"
            ends_here = (mark[:-1] & 1).astype(bool) & ~decimal
            cuts += (a + 1 + np.flatnonzero(ends_here)).tolist()
        cuts.append(b)
        pieces = []
        for x, y in zip(cuts, cuts[1:]):
            while y - x > cap:
                cut = _word_start_before(shards, x, x + cap)
                pieces.append((x, cut))
                x = cut
            pieces.append((x, y))
        starts.append(np.asarray([p[0] for p in pieces], dtype=np.int64))
        ends.append(np.asarray([p[1] for p in pieces], dtype=np.int64))
        owner.append(np.full(len(pieces), k, dtype=np.int64))
    start, end, line = np.concatenate(starts), np.concatenate(ends), np.concatenate(owner)
    order = np.argsort(start, kind="stable")
    return start[order], end[order], line[order]


class PackedStreamDataset(InstanceDataset):
    """Text packed to the sequence length (layout version 2): the documents' tokens as one stream, a ``[SEP]``
    between documents, cut into ``[CLS] ... [SEP]`` instances of ``sequence_length`` tokens, each cut moved back to
    the nearest word start (so that whole-word masking sees whole words); where a cut falls on a document's end, the
    instance's closing ``[SEP]`` is the separator. As RoBERTa's FULL-SENTENCES packs across documents and
    ``run_mlm.py``'s ``group_texts`` fills every sequence, except that a sentence may continue in the next instance."""

    def __init__(self, shards: TokenShards, docs: np.ndarray, *, layout: str, **common):
        self.layout = layout
        super().__init__(shards, docs, **common)
        offsets = np.asarray(shards.sentence_offsets)
        doc_offsets = np.asarray(shards.document_offsets)
        self.doc_token_start = offsets[doc_offsets[docs]]
        lengths = offsets[doc_offsets[docs + 1]] - self.doc_token_start + 1  # + the separator after each document
        self.stream_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.separators = self.stream_offsets[1:-1] - 1  # stream positions of the [SEP]s between documents
        total = int(self.stream_offsets[-1]) - 1  # no separator after the last document
        capacity = self.sequence_length - 2
        is_separator = set(self.separators.tolist())
        firsts, ends, position = [], [], 0
        while position < total:
            end = min(position + capacity, total)
            if end < total:
                if end - 1 in is_separator:
                    end -= 1  # the instance ends with a document: its closing [SEP] is the separator
                elif end not in is_separator:
                    end = self._word_start(position, end)
            firsts.append(position)
            ends.append(end)
            position = end + 1 if end in is_separator else end
        self.instance_first = np.asarray(firsts, dtype=np.int64)
        self.instance_end = np.asarray(ends, dtype=np.int64)
        self._finish_index(len(firsts))

    def _word_start(self, start: int, end: int) -> int:
        """The cut ``end`` (a text token) moved back to the word start at or before it, not before ``start`` nor
        the start of its document."""
        k = int(np.searchsorted(self.stream_offsets, end, side="right")) - 1
        begin = max(start, int(self.stream_offsets[k]))
        base = int(self.doc_token_start[k]) - int(self.stream_offsets[k])  # stream position + base = token index
        return _word_start_before(self.shards, begin + base, end + base) - base

    def _stream(self, start: int, end: int) -> tuple[list, list]:
        ids, starts = [], []
        k = int(np.searchsorted(self.stream_offsets, start, side="right")) - 1
        while start < end:
            doc_begin, doc_end = int(self.stream_offsets[k]), int(self.stream_offsets[k + 1])
            text_end = min(end, doc_end - 1)
            if start < text_end:
                base = int(self.doc_token_start[k]) - doc_begin
                piece_ids, piece_starts = self._tokens(base + start, base + text_end)
                ids.append(piece_ids)
                starts.append(piece_starts)
            if end >= doc_end:
                ids.append(np.array([self.sep_id]))
                starts.append(np.ones(1, bool))
            start = doc_end
            k += 1
        return ids, starts

    def build(self, index: int, position: int) -> dict:
        start, end = int(self.instance_first[index]), int(self.instance_end[index])
        ids, starts = self._stream(start, end)
        one = np.ones(1, bool)
        return {"input_ids": np.concatenate([[self.cls_id], *ids, [self.sep_id]]).astype(np.int64),
                "word_starts": np.concatenate([one, *starts, one])}

    def epoch_tokens(self) -> tuple[int, int, bool]:
        spans = self.instance_end - self.instance_first
        inner = np.searchsorted(self.separators, self.instance_end) - np.searchsorted(self.separators,
                                                                                       self.instance_first)
        real = int(spans.sum()) + 2 * len(self)
        return real, real - 2 * len(self) - int(inner.sum()), True


class SentencePairDataset(NextSentenceDataset):
    """BERT's sentence pairs, every token counted (layout version 2). Differences from :class:`NextSentenceDataset`:

    - the units are the pieces of :func:`split_long_lines` (a line longer than a segment, ``sequence_length - 4``
      tokens, is cut at its sentence ends), not whole lines, so that no line's tail is truncated away;
    - a chunk closes before a piece that would take it past ``sequence_length - 3`` tokens (the next chunk starts
      there), so that an in-order pair is never truncated; the chunk's target (shorter with ``short_seq_prob``,
      drawn per chunk as before) is otherwise as in Google's create_pretraining_data.py;
    - where A ends and whether B is random are drawn with the index (seeded), and the pieces a random B replaces are
      put back to start the next chunk, as Google's ``i -= num_unused_segments`` does; the random document, where
      its text starts, and so the random B are drawn per position, and only a random B is truncated (from its end).
    """

    decided_with_index = True

    def __init__(self, shards: TokenShards, docs: np.ndarray, *, short_seq_prob: float, nsp_probability: float,
                 sentence_marks: np.ndarray | None = None, **common):
        InstanceDataset.__init__(self, shards, docs, **common)
        self.nsp_probability = float(nsp_probability)
        self.max_num_tokens = self.sequence_length - 3
        sentences, owner = _document_sentences(shards, docs)
        start, end, line = split_long_lines(shards, sentences, max(self.max_num_tokens - 1, 1), sentence_marks)
        self.piece_start, self.piece_end, self.sentence_doc = start, end, owner[line]
        self.doc_first = np.searchsorted(self.sentence_doc, np.arange(len(docs) + 1)).astype(np.int64)
        lengths = (end - start).tolist()
        generator = np.random.default_rng([self.seed & 0xFFFFFFFF, 0xB128])
        first, a_end, random, target = [], [], [], []

        def draw() -> int:
            short = generator.random() < short_seq_prob
            return int(generator.integers(2, max(self.max_num_tokens, 2) + 1)) if short else self.max_num_tokens

        for d in range(len(docs)):
            i, stop = int(self.doc_first[d]), int(self.doc_first[d + 1])
            lo, used, goal = i, 0, draw()
            while i < stop:
                if used and used + lengths[i] > self.max_num_tokens:
                    close = True  # the piece would not fit: it starts the next chunk
                else:
                    used += lengths[i]
                    i += 1
                    close = i == stop or used >= goal
                if not close:
                    continue
                count = i - lo
                split = lo + (1 if count < 2 else int(generator.integers(1, count)))
                is_random = count == 1 or (self.decided_with_index and generator.random() < self.nsp_probability)
                if is_random and self.decided_with_index:
                    i = split  # the pieces B would have taken start the next chunk
                first.append(lo)
                a_end.append(split)
                random.append(is_random)
                target.append(goal)
                lo, used, goal = i, 0, draw()
        self.chunk_first = np.asarray(first + [len(lengths)], dtype=np.int64)
        self.chunk_a_end = np.asarray(a_end, dtype=np.int64)
        self.chunk_random = np.asarray(random, dtype=bool)
        self.chunk_target = np.asarray(target, dtype=np.int64)
        self._finish_index(len(target))

    def _collect(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens of pieces ``lo:hi`` (consecutive in one document, hence contiguous)."""
        return self._tokens(int(self.piece_start[lo]), int(self.piece_end[hi - 1]))

    def _random_segment(self, own: int, target: int, u_doc: float, u_start: float):
        doc = _other_document(own, len(self.doc_ids), u_doc)
        first, last = int(self.doc_first[doc]), int(self.doc_first[doc + 1])
        lo = first + int(u_start * (last - first))
        hi = lo + 1
        while hi < last and int(self.piece_end[hi - 1]) - int(self.piece_start[lo]) < target:
            hi += 1
        return self._collect(lo, hi)

    def _segments(self, index: int, position: int):
        u = np.random.default_rng([self.seed & 0xFFFFFFFF, position, self.rng_stream]).random(6).tolist()
        lo, hi = int(self.chunk_first[index]), int(self.chunk_first[index + 1])
        a_ids, a_starts = self._collect(lo, int(self.chunk_a_end[index]))
        if self.chunk_random[index]:
            b_ids, b_starts = self._random_segment(int(self.sentence_doc[lo]),
                                                   max(int(self.chunk_target[index]) - len(a_ids), 1), u[2], u[3])
            keep = self.max_num_tokens - len(a_ids)
            return a_ids, a_starts, b_ids[:keep], b_starts[:keep], 1, False
        return (a_ids, a_starts, *self._collect(int(self.chunk_a_end[index]), hi), 0, True)


class SentenceOrderPairDataset(SentencePairDataset):
    """ALBERT's sentence-order pairs on the chunks of :class:`SentencePairDataset` (layout version 2): every chunk
    of two or more pieces is split (where, drawn per position) into A and B, swapped with ``nsp_probability``
    (label 1), as :class:`SentenceOrderDataset`; a chunk of one piece takes a random B, labelled 1."""

    layout = "sentence_order"
    label = "sentence_order_label"
    rng_stream = SOP_STREAM
    decided_with_index = False

    def _segments(self, index: int, position: int):
        lo, hi = int(self.chunk_first[index]), int(self.chunk_first[index + 1])
        if hi - lo == 1:
            return super()._segments(index, position)
        u = np.random.default_rng([self.seed & 0xFFFFFFFF, position, self.rng_stream]).random(6).tolist()
        a_end = lo + 1 + int(u[0] * (hi - lo - 1))
        a_ids, a_starts = self._collect(lo, a_end)
        b_ids, b_starts = self._collect(a_end, hi)
        if u[1] < self.nsp_probability:
            return b_ids, b_starts, a_ids, a_starts, 1, True
        return a_ids, a_starts, b_ids, b_starts, 0, True
