"""create_datasets.py: the original's newest first step, writing this toolkit's own dataset (:mod:`.dataset_dir`).

The corpus is tokenized once into token shards (``data.cache.build_or_load_dataset``, the run's own cache format:
fingerprinted, reused while corpus and tokenizer are unchanged) under
``<dataset_dir>/<dataset_type>_<max_length>_<input_corpus>[_<mask_style>]``, with ``lmpretrain_dataset.json``
beside them. Instances and masks are made while training (the original stored static masks for a mask style).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

from .data import build_or_load_dataset, resolve_corpus_files
from .data.layouts import get_layout
from .dataset_dir import DATASET_FORMAT, DATASET_META, dataset_name
from .errors import UserError
from .fsutil import atomic_write_text
from .hub import tokenizer_location
from .log import get_logger
from .models.dataset_styles import (
    NSP_STYLE,
    WHOLE_WORD_SUFFIX,
    dataset_settings,
    dataset_type_of,
    mask_style_names,
)
from .prepare import _check_tokenizer_flags
from .tokenization import META_FILE, read_meta, word_tokenizer_of

logger = get_logger(__name__)
_FLAGS = {"mecab_dic_type": "mecab_dic", "tokenizer_type": "subword_tokenizer_type",
          "word_tokenizer": "word_tokenizer_type"}


def premasked(mask_style: str | None) -> bool:
    """Whether the original stored this mask style's masks (its probability then is the dataset's): not bert's."""
    return mask_style is not None and mask_style.removesuffix(WHOLE_WORD_SUFFIX) != NSP_STYLE


def create_dataset(*, input_corpus: str, max_length: int, input_files: list[str] | None, dataset_type: str | None,
                   mask_style: str | None, tokenizer_name_or_path: str, word_tokenizer_type: str | None = None,
                   subword_tokenizer_type: str | None = None, mecab_dic: str | None = None,
                   dataset_dir: str = "./dataset/", mlm_probability: float = 0.15, num_workers: int | None = None,
                   load_from_hub: bool = False) -> Path:
    """Write the dataset and return its dir. UserError on bad input, before anything is written."""
    mask_style = None if mask_style in (None, "", "none") else mask_style
    dataset_type = dataset_type or None
    if dataset_type is None and mask_style is None:
        raise UserError("give --dataset_type (nsp or linebyline) or --mask_style (" + ", ".join(mask_style_names()) +
                        ")")
    try:
        layout, whole_word_mask = dataset_settings(dataset_type, mask_style)
    except KeyError:
        raise UserError(f"--mask_style {mask_style}: expected one of {', '.join(mask_style_names())}") from None
    if mask_style is not None:
        style_type = dataset_type_of(mask_style)  # the original's type of the mask style
        if dataset_type not in (None, style_type):
            logger.warning("--mask_style %s has priority over --dataset_type %s (as in the original): the dataset is "
                           "%s", mask_style, dataset_type, style_type)
        dataset_type = style_type
        if not premasked(mask_style):
            logger.info("--mask_style %s (the original's README; its parser refuses it): an nsp dataset, masked while "
                        "training%s", mask_style, " on whole words" if whole_word_mask else "")
    if max_length < get_layout(layout).minimum_length:
        raise UserError(f"--max_length {max_length} is too short for {layout} instances (at least "
                        f"{get_layout(layout).minimum_length})")
    if not 0 < mlm_probability < 1:
        raise UserError(f"--mlm_probability {mlm_probability}: a probability between 0 and 1")
    if not input_corpus or Path(input_corpus).name != input_corpus or input_corpus in (".", ".."):
        raise UserError(f"--input_corpus {input_corpus!r}: a name (it is part of the dataset's folder name), not a "
                        f"path")
    if not input_files:
        raise UserError(f"--input_file: give the corpus file(s) (the original's downloads of {input_corpus} from "
                        f"the hub are not built here)")
    for name in input_files:
        if not Path(name).exists():
            raise UserError(f"--input_file: {name} does not exist")
        resolve_corpus_files(name)
    tokenizer_dir = tokenizer_location(tokenizer_name_or_path, "--tokenizer_name_or_path")
    if not Path(tokenizer_dir).is_dir():
        hub = "" if load_from_hub else " (a hub name is org/name[@rev])"
        raise UserError(f"--tokenizer_name_or_path {tokenizer_name_or_path} is neither a tokenizer dir, a file in "
                        f"one (vocab.txt, spiece.model), nor a hub name{hub}")
    meta = read_meta(Path(tokenizer_dir)) or {}
    given = SimpleNamespace(mecab_dic_type=mecab_dic, tokenizer_type=subword_tokenizer_type,
                            word_tokenizer=word_tokenizer_type, tokenizer_dir=tokenizer_dir)
    _check_tokenizer_flags(given, meta, _FLAGS)

    target = Path(dataset_dir) / dataset_name(dataset_type, max_length, input_corpus, mask_style)
    (target / DATASET_META).unlink(missing_ok=True)  # shards being rebuilt never pass for the recorded dataset
    shards = build_or_load_dataset(list(input_files), tokenizer_dir, target,
                                   num_workers=num_workers or os.cpu_count() or 1)
    record = {
        "format": DATASET_FORMAT, "shards": shards.directory.name, "layout": layout, "sequence_length": max_length,
        "whole_word_mask": whole_word_mask, "mlm_probability": mlm_probability if premasked(mask_style) else None,
        "tokenizer": {"name_or_path": tokenizer_name_or_path, "dir": str(Path(tokenizer_dir).resolve()),
                      "fingerprint": shards.manifest["components"]["tokenizer"],
                      "word_tokenizer": word_tokenizer_of(meta), "tokenizer_type": meta.get("tokenizer_type"),
                      "mecab_dic_type": meta.get("mecab_dic_type"), "dictionary": meta.get("dictionary"),
                      "metadata_file": META_FILE if meta else None},
        "corpus": [str(Path(name).resolve()) for name in input_files],
        "num_documents": shards.num_documents, "num_tokens": shards.num_tokens,
        "original": {"input_corpus": input_corpus, "max_length": max_length, "dataset_type": dataset_type,
                     "mask_style": mask_style, "tokenizer_name_or_path": tokenizer_name_or_path},
    }
    for old in target.iterdir():  # shards of another corpus or tokenizer path, written here before: not this dataset
        if old.is_dir() and old.name != shards.directory.name and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    atomic_write_text(target / DATASET_META, json.dumps(record, indent=1, ensure_ascii=False))
    logger.info("dataset %s: %d documents, %d tokens for %s instances of sequence-length %d%s (masks are drawn while "
                "training)", target, shards.num_documents, shards.num_tokens, layout, max_length,
                ", whole-word masking" if whole_word_mask else "")
    return target
