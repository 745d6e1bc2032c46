"""Subword training with the SentencePiece library itself (``--tokenizer_type sentencepiece --spm_model_type
unigram|bpe|char``), as the original's newest version and the Megatron-style Japanese GPT recipes train theirs.

The library trains on the pre-tokenized file with the toolkit's special tokens at their usual ids (``[PAD]`` 0,
``[UNK]`` 1, then ``[CLS] [SEP] [MASK] [unused0]...`` as control pieces, never produced from text), the identity
normalization (the text is NFKC-normalized before it, or kept as written, see below), and ``hard_vocab_limit``
off: ``--vocab_size`` is the most it makes, as the `tokenizers` trainers do. What is saved:

- with a word segmenter: its ``spiece.model``, which transformers' ``BertJapaneseTokenizer`` applies to each word
  (``subword_tokenizer_type`` "sentencepiece"), so a piece never crosses a word boundary; it trains with
  ``split_by_whitespace`` on the space-joined words, the same constraint;
- without one: ``spiece.model`` and the tokenizer.json converted from it by transformers'
  ``SpmConverter.build_tokenizer_from_spm_proto`` (which follows the model's own normalizer spec and ranks BPE merges
  by piece score, so it encodes as ``SentencePieceProcessor.encode``), NFKC in front, ``[CLS] $A [SEP]`` added as
  for every tokenizer.json here; AutoTokenizer and FastEncoder both run that file.

``--spm_byte_fallback`` spells a character outside the vocabulary as its UTF-8 bytes (``<0xE3>``...) instead of
``[UNK]``. Without a segmenter it also keeps the text as written (no NFKC, runs of spaces kept), so that
``decode(encode(text)) == text`` for any text: the tokenizer for a causal LM that must write what it read.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from ...errors import UserError
from ...log import duration, get_logger, heartbeat
from ..tokenizer_dir import SPIECE_UNDERLINE, SPM_CHARACTER_COVERAGE, TokenizerSpec
from .base import SubwordTrainer

logger = get_logger(__name__)

INSTALL_HINT = "pip install sentencepiece (the version requirements.txt pins)"
HEARTBEAT_S = 30.0  # between the "still training" lines
MAX_SENTENCE_BYTES = 1 << 20  # the library skips longer lines (its default is 4192 bytes: an Aozora paragraph)


def import_sentencepiece():
    """The ``sentencepiece`` module, or one UserError saying what to install."""
    try:
        import sentencepiece
    except ImportError:
        raise UserError(f"--spm_model_type trains with the SentencePiece library, which is not installed: "
                        f"{INSTALL_HINT}") from None
    return sentencepiece


def _without_paths(model: bytes) -> bytes:
    """The model without the training file's path (a temporary dir): the same corpus gives the same bytes."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    del proto.trainer_spec.input[:]
    proto.trainer_spec.ClearField("model_prefix")
    return proto.SerializeToString()


class SentencePieceLibraryTrainer(SubwordTrainer):
    """Unigram, BPE or char models trained by the SentencePiece library on the pre-tokenized corpus."""

    def __init__(self, spec: TokenizerSpec, word_segmented: bool):
        super().__init__(spec, word_segmented)
        self._spm = import_sentencepiece()  # fails before the corpus is pre-tokenized
        self.verbatim = bool(spec.spm_byte_fallback) and not word_segmented
        self.character_coverage = spec.spm_character_coverage or SPM_CHARACTER_COVERAGE
        self._model: bytes | None = None

    def train(self, segmented: Path, num_lines: int) -> int:
        spec = self.spec
        specials = spec.special_tokens()
        options = dict(
            input=str(segmented), model_type=spec.spm_model_type, vocab_size=spec.vocab_size,
            hard_vocab_limit=False, character_coverage=self.character_coverage,
            max_sentence_length=MAX_SENTENCE_BYTES,
            split_by_whitespace=True if self.word_segmented else bool(spec.spm_split_by_whitespace),
            byte_fallback=bool(spec.spm_byte_fallback),
            pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece=specials[0], unk_piece=specials[1],
            control_symbols=specials[2:], normalization_rule_name="identity",
            remove_extra_whitespaces=not self.verbatim,
            num_threads=1,  # its EM sums in thread order: one thread keeps the result the same run after run
            minloglevel=2,  # its progress is a page of log lines per EM round
        )
        if specials[:2] != ["[PAD]", "[UNK]"]:  # the ids pad_id and unk_id give them
            raise ValueError("the special tokens must start with [PAD], [UNK]")
        size = segmented.stat().st_size
        logger.info("training SentencePiece %s on %d lines (%.1f MB); the library reports no progress: a line "
                    "every %s until it is done", spec.spm_model_type, num_lines, size / 1e6,
                    duration(HEARTBEAT_S))
        model, started = io.BytesIO(), time.perf_counter()
        try:
            with heartbeat(f"SentencePiece still training ({spec.spm_model_type}, {num_lines} lines)",
                           logger=logger, first_s=HEARTBEAT_S, every_s=HEARTBEAT_S):
                self._spm.SentencePieceTrainer.train(model_writer=model, **options)
        except RuntimeError as error:
            message = str(error)
            if "Vocabulary size is smaller than required_chars" in message:
                needed = message.split(" vs ")[-1].split(".")[0]
                raise UserError(f"--vocab_size {spec.vocab_size} is too small: SentencePiece keeps the characters "
                                f"covering {100 * self.character_coverage:g}% of the corpus "
                                f"(--spm_character_coverage), and they and {len(specials)} special tokens "
                                f"already need {needed}") from None
            raise UserError(f"SentencePiece could not train on the corpus: {message.splitlines()[-1]}") from None
        self._model = _without_paths(model.getvalue())
        pieces = self._spm.SentencePieceProcessor(model_proto=self._model).get_piece_size()
        logger.info("trained SentencePiece %s: %d pieces in %s", spec.spm_model_type, pieces,
                    duration(time.perf_counter() - started))
        return pieces

    def save(self, out: Path) -> dict:
        (out / "spiece.model").write_bytes(self._model)
        if self.word_segmented:
            processor = self._spm.SentencePieceProcessor(model_proto=self._model)
            (out / "vocab.txt").write_text("".join(processor.id_to_piece(i) + "\n"
                                                   for i in range(processor.get_piece_size())), encoding="utf-8")
            return {"subword_tokenizer_type": "sentencepiece", "spm_file": "spiece.model"}
        self.tokenizer_json().save(str(out / "tokenizer.json"))
        return {"tokenizer_class": "PreTrainedTokenizerFast"}

    def tokenizer_json(self):
        """The trained model as a `tokenizers` pipeline that encodes as the library does (after NFKC, unless
        verbatim), with the special tokens recognised in text and ``[CLS] $A [SEP]`` added."""
        from sentencepiece import sentencepiece_model_pb2
        from tokenizers import normalizers, pre_tokenizers, processors
        from transformers.convert_slow_tokenizer import SpmConverter

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(self._model)
        if self.spec.spm_model_type == "bpe":  # the converter reads a dict as BPE (merges from the scores)
            vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
        else:  # unigram; a char model is a unigram model whose pieces are single characters (one segmentation)
            vocab = [(piece.piece, piece.score) for piece in proto.pieces]
        tokenizer = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
        if not self.verbatim:
            tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), tokenizer.normalizer])
        if self.spec.spm_split_by_whitespace:
            # no piece spans a space, so encoding each space-separated word alone gives the same pieces, and the
            # words are what whole-word masking masks (the converter does not split: a piece may span spaces)
            tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always",
                                                               split=True)
        specials = self.spec.special_tokens()
        tokenizer.add_special_tokens(specials)
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id),
                                                                                     ("[SEP]", sep_id)])
        return tokenizer
