"""Write a BPE or Unigram model trained by `tokenizers` as a sentencepiece model file (``spiece.model``).

transformers' BertJapaneseTokenizer applies a sentencepiece model to each MeCab word; it cannot read a
`tokenizers` model. The conversion keeps every piece and its id; Unigram keeps its log-probabilities as
scores, BPE gets scores that order the pieces by the step at which training created them (sentencepiece's
BPE merges the highest-scoring pair first). Special tokens become control pieces (never produced from
text, but found by ``PieceToId``), ``[UNK]`` the unknown piece. The normalizer is the identity: the text is
already NFKC-normalized and split into words by MeCab before sentencepiece sees it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import UserError

SPIECE_UNDERLINE = "\u2581"


def write_sentencepiece_model(tokenizer, algorithm: str, path: Path) -> None:
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    model = json.loads(tokenizer.to_str())["model"]
    vocab = tokenizer.get_vocab()
    specials = {t for t in vocab if t.startswith("[") and t.endswith("]") and (t in {
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"} or t.startswith("[unused"))}
    proto = sp_pb2.ModelProto()
    proto.trainer_spec.model_type = sp_pb2.TrainerSpec.UNIGRAM if algorithm == "unigram" else sp_pb2.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(vocab)
    proto.trainer_spec.unk_id = vocab["[UNK]"]
    proto.trainer_spec.bos_id = -1
    proto.trainer_spec.eos_id = -1
    proto.trainer_spec.pad_id = vocab["[PAD]"]
    proto.trainer_spec.unk_piece = "[UNK]"
    proto.trainer_spec.pad_piece = "[PAD]"
    proto.trainer_spec.byte_fallback = False
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = True
    proto.normalizer_spec.escape_whitespaces = True
    if algorithm == "unigram":
        scores = {piece: score for piece, score in model["vocab"]}
    else:
        scores = {token: -float(i) for token, i in vocab.items()}  # later pieces come from later merges
    for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        piece = proto.pieces.add()
        piece.piece = token
        piece.score = float(scores.get(token, 0.0))
        if token == "[UNK]":
            piece.type = sp_pb2.ModelProto.SentencePiece.UNKNOWN
        elif token in specials:
            piece.type = sp_pb2.ModelProto.SentencePiece.CONTROL
        else:
            piece.type = sp_pb2.ModelProto.SentencePiece.NORMAL
    data = proto.SerializeToString()
    import sentencepiece

    try:
        sentencepiece.SentencePieceProcessor(model_proto=data)
    except RuntimeError as error:  # should not happen; say which model could not be converted
        raise UserError(f"cannot write {path} as a sentencepiece model: {error}") from None
    path.write_bytes(data)
