"""Tokenizers: the tokenizer dir format, ``FastEncoder``, training, and the word segmenters behind one interface.

The stable public face (these import paths stay valid)::

    from lmpretrain.tokenization import FastEncoder, TokenizerSpec, train_tokenizer, extend_tokenizer, META_FILE
    from lmpretrain.tokenization import tokenizer_fingerprint, check_tokenizer_matches, read_vocabulary

| module                 | owns                                                                              |
|------------------------|-----------------------------------------------------------------------------------|
| ``tokenizer_dir``      | the files of a tokenizer dir, ``TokenizerSpec``, metadata, fingerprint, vocabulary |
| ``encoder``            | ``FastEncoder``: AutoTokenizer's ids, fast, in batches, with word starts          |
| ``training``           | ``train_tokenizer``: pre-tokenize in workers, train, save atomically              |
| ``extend``             | ``extend_tokenizer``: a base's ids kept, a domain's most used new tokens appended  |
| ``vocabulary``         | a model's tokens, special tokens by role, and its tokenizer as a splitter        |
| ``causal``             | the tokenizer files saved with a causal LM: bos/eos/pad, what it adds             |
| ``normalization``      | NFKC, as every tokenizer here applies it first (unless it is kept as written)     |
| ``segmenters/``        | the word-segmenter interface, declarations and registry; one module per segmenter |
| ``subword/``           | the subword-library interface; one module per library (``hf_tokenizers``,        |
|                        | ``sentencepiece_lib``)                                                            |
"""

from .causal import check_auto_tokenizer_loads, check_causal_tokenizer, declare_causal_lm
from .encoder import FastEncoder
from .extend import extend_tokenizer
from .saving import copy_tokenizer_files
from .tokenizer_dir import (
    META_FILE,
    SPECIAL_TOKENS,
    TOKENIZER_FILES,
    TokenizerSpec,
    check_tokenizer_matches,
    read_meta,
    read_vocabulary,
    tokenizer_fingerprint,
    word_tokenizer_of,
)
from .training import train_tokenizer
from .vocabulary import ModelVocabulary, model_vocabulary, token_text

__all__ = ["META_FILE", "SPECIAL_TOKENS", "TOKENIZER_FILES", "FastEncoder", "ModelVocabulary", "TokenizerSpec",
           "check_auto_tokenizer_loads", "check_causal_tokenizer", "check_tokenizer_matches", "copy_tokenizer_files",
           "declare_causal_lm", "extend_tokenizer",
           "model_vocabulary", "read_meta", "read_vocabulary", "token_text", "tokenizer_fingerprint", "train_tokenizer",
           "word_tokenizer_of"]
