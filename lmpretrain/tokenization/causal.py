"""The tokenizer files of a causal LM: what the model was trained with, declared so that generation works.

Causal instances are ``text [SEP] text [SEP] ...`` blocks (``data.instances.CausalBlockDataset``): ``[SEP]`` ends a
document, nothing starts one. The tokenizer saved with a causal model therefore declares ``[SEP]`` as its eos (and
bos, as GPT-2 uses one end-of-text token for both) and ``[PAD]`` as its pad, matching the model config's ids, and
adds nothing to a text, where transformers lets a tokenizer dir say so:

- no word segmenter (``tokenizer.json``): its post-processor (``[CLS] $A [SEP]``) is removed, so ``tokenizer(text)``
  gives the text's ids alone, as the model saw a document's start;
- with a word segmenter (MeCab, ``BertJapaneseTokenizer``): transformers 5 hard-codes ``[CLS] ... [SEP]`` in that
  class (``special_tokens_pattern="cls_sep"``, not settable from tokenizer_config.json), so ``tokenizer(text)``
  still wraps; ``pipeline("text-generation")`` passes ``add_special_tokens=False`` and is unaffected. A tokenizer
  without MeCab is the choice for generation (decoding a segmented tokenizer puts spaces between words, too).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .segmenters import segmenter_from_meta
from .tokenizer_dir import read_meta, read_vocabulary

END_OF_TEXT = "[SEP]"
PADDING = "[PAD]"
SPECIAL_TOKENS = {"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "pad_token": PADDING}


def adds_nothing(meta: dict | None) -> bool:
    """Whether a causal LM's copy of this tokenizer adds no special tokens (a tokenizer.json without a segmenter)."""
    return meta is not None and segmenter_from_meta(meta)[0] is None


def check_causal_tokenizer(directory: str | Path) -> None:
    """A causal LM needs its end-of-text token in the vocabulary: one UserError naming the dir otherwise."""
    directory = Path(directory)
    if read_meta(directory) is None:  # saved by transformers: its own bos/eos serve (FastEncoder checks them)
        return
    try:
        vocab = read_vocabulary(directory, read_meta(directory)) or {}
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{directory}: cannot read the tokenizer files ({error})") from None
    missing = [token for token in (END_OF_TEXT, PADDING) if token not in vocab]
    if missing:
        raise UserError(f"the tokenizer in {directory} has no {' and no '.join(missing)}: a causal LM ends every "
                        f"document with the end-of-text token {END_OF_TEXT} (its bos/eos) and pads with {PADDING}; "
                        "train the tokenizer with train_tokenizer.py, which adds both")


def check_auto_tokenizer_loads(directory: str | Path, model_type: str, display: str) -> None:
    """transformers 5 loads the AutoTokenizer of some model types (``modernbert`` among them) as a tokenizer.json
    (``TokenizersBackend``) whatever tokenizer_config.json names (``MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS``);
    a word-segmented tokenizer dir has no tokenizer.json, so its export would not load: one UserError now."""
    from transformers.models.auto.tokenization_auto import MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS

    meta = read_meta(Path(directory))
    if meta is not None and not adds_nothing(meta) and model_type in MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS:
        raise UserError(f"the tokenizer in {directory} uses a word segmenter ({segmenter_from_meta(meta)[0]}), but "
                        f"transformers loads a {display} model's AutoTokenizer from a tokenizer.json only; train "
                        "the tokenizer with --mecab_dic_type none")


def _update_json(path: Path, update) -> None:
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        update(data)
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def declare_causal_lm(directory: str | Path) -> None:
    """Rewrite the tokenizer files copied into a causal model's dir: bos/eos ``[SEP]``, pad ``[PAD]``, and no
    ``[CLS] ... [SEP]`` wrapping where the tokenizer is a tokenizer.json (see the module docstring)."""
    directory = Path(directory)
    if read_meta(directory) is None:  # a tokenizer saved by transformers keeps its own special tokens; one without
        # padding (GPT-2's) pads with its end of text in the copy, as training did (FastEncoder's pad_token_id)
        _update_json(directory / "tokenizer_config.json",
                     lambda config: config.get("pad_token") or config.update(pad_token=config.get("eos_token")))
        return
    _update_json(directory / "tokenizer_config.json", lambda config: config.update(SPECIAL_TOKENS))
    _update_json(directory / "special_tokens_map.json", lambda tokens: tokens.update(SPECIAL_TOKENS))
    if adds_nothing(read_meta(directory)):
        _update_json(directory / "tokenizer.json", lambda tokenizer: tokenizer.update(post_processor=None))
