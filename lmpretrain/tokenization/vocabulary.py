"""A model's vocabulary as vocabulary adaptation needs it: its tokens by id, its special tokens by role, and a way
to split any text into the model's own token ids (the tokenizer the model was trained with).

``model_vocabulary(dir)`` reads a tokenizer dir of this toolkit (through :class:`FastEncoder`) or one saved by
transformers (through ``AutoTokenizer``); ``token_text(token)`` is the text a vocabulary token stands for, without
the WordPiece continuation mark (``##``) or the Metaspace word mark (``▁``), which is what the old tokenizer is
asked to split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..log import get_logger
from .tokenizer_dir import SPECIAL_TOKENS, SPIECE_UNDERLINE, read_meta, read_vocabulary

logger = get_logger(__name__)

ROLES = ("pad", "unk", "cls", "sep", "mask")
"""Special-token roles, in the order of ``SPECIAL_TOKENS`` ([PAD] [UNK] [CLS] [SEP] [MASK])."""
_ROLE_FALLBACKS = {"cls": "bos", "sep": "eos"}  # a causal LM's tokenizer may have bos/eos and no cls/sep


@dataclass(frozen=True)
class ModelVocabulary:
    tokens: dict[str, int]
    """token -> id, as AutoTokenizer reads the dir."""
    roles: dict[str, str]
    """role ("pad", "unk", "cls", "sep", "mask") -> token, for the roles the tokenizer has."""
    split: Callable[[list[str]], list[list[int]]] | None = None
    """texts -> their ids under this tokenizer (no special tokens added); None: not asked for, or cannot load."""


def token_text(token: str) -> str:
    """The text a vocabulary token stands for: ``##ing`` -> ``ing``, ``▁the`` -> ``the`` (empty for ``▁``)."""
    if token.startswith("##") and len(token) > 2:
        token = token[2:]
    return token.replace(SPIECE_UNDERLINE, " ").strip()


def model_vocabulary(directory: str | Path, *, with_split: bool = False) -> ModelVocabulary | None:
    """The vocabulary of the tokenizer files in ``directory`` (None when it holds none, e.g. a bare model dir or a
    hub name); ``with_split``: also the tokenizer itself, to split texts."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    meta = read_meta(directory)
    try:
        tokens = read_vocabulary(directory, meta)
    except (OSError, ValueError, KeyError):
        return None
    if tokens is None:
        return None
    if meta is not None:  # ours: the fixed special tokens, and FastEncoder (AutoTokenizer's ids, faster)
        roles = {role: token for role, token in zip(ROLES, SPECIAL_TOKENS) if token in tokens}
        split = _fast_split(directory) if with_split else None
        return ModelVocabulary(tokens, roles, split)
    tokenizer = _auto_tokenizer(directory)
    roles = {}
    if tokenizer is not None:
        for role in ROLES:
            token = getattr(tokenizer, f"{role}_token", None) or \
                getattr(tokenizer, f"{_ROLE_FALLBACKS.get(role, role)}_token", None)
            if token is not None and str(token) in tokens:
                roles[role] = str(token)
    split = None
    if with_split and tokenizer is not None:
        def split(texts: list[str]) -> list[list[int]]:
            return tokenizer(texts, add_special_tokens=False)["input_ids"]
    return ModelVocabulary(tokens, roles, split)


def _fast_split(directory: Path) -> Callable[[list[str]], list[list[int]]] | None:
    from ..errors import UserError
    from .encoder import FastEncoder

    try:
        encoder = FastEncoder.from_pretrained(directory)
    except UserError as error:
        logger.warning("cannot load the tokenizer in %s to split new tokens (%s): they start from the mean "
                       "embedding", directory, error)
        return None

    def split(texts: list[str]) -> list[list[int]]:
        return encoder.encode_batch(texts)

    return split


def _auto_tokenizer(directory: Path):
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as error:  # noqa: BLE001 - any tokenizer transformers cannot load: no splitting, said once
        logger.warning("transformers cannot load the tokenizer in %s (%s): new tokens start from the mean embedding",
                       directory, error)
        return None
