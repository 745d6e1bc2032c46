"""A dataset dir written by create_datasets.py: the token shards (:mod:`lmpretrain.data.cache`'s format, built by
``build_or_load_dataset``) and ``lmpretrain_dataset.json``, which records what they were made for: the tokenizer's
fingerprint and segmenter, the instance layout, the sequence length, whole-word masking, and the original tool's
names. run_pretraining.py ``--dataset_dir`` reads it here, checked against the preset and the tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

from .data.shards import CacheInvalid, TokenShards
from .errors import UserError
from .models.dataset_styles import names_for

DATASET_META = "lmpretrain_dataset.json"
DATASET_FORMAT = 1
_REQUIRED = ("format", "shards", "layout", "sequence_length", "whole_word_mask", "tokenizer", "corpus")


def dataset_name(dataset_type: str, max_length: int, input_corpus: str, mask_style: str | None) -> str:
    """The original's folder name: ``<dataset_type>_<max_length>_<input_corpus>[_<mask_style>]`` (a mask style's
    dataset type is ``linebyline``, as there)."""
    return f"{dataset_type}_{max_length}_{input_corpus}" + (f"_{mask_style}" if mask_style else "")


def read_dataset(dataset_dir: str | Path) -> dict:
    """The metadata of a dataset dir; one UserError naming the dir or file when it is not one."""
    directory = Path(dataset_dir)
    if not directory.is_dir():
        raise UserError(f"--dataset_dir {directory} is not a directory")
    path = directory / DATASET_META
    if not path.is_file():
        raise UserError(f"--dataset_dir {directory} has no {DATASET_META}: not a dataset written by "
                        f"create_datasets.py (the original tool's dataset dirs, with their stored masks, are not "
                        f"read; create it again with this create_datasets.py)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} cannot be read ({error})") from None
    missing = [key for key in _REQUIRED if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise UserError(f"{path}: missing key(s) {', '.join(missing)} (an interrupted or hand-edited dataset; create "
                        f"it again)")
    if meta["format"] != DATASET_FORMAT:
        raise UserError(f"{path}: format {meta['format']} is not one this code reads ({DATASET_FORMAT}); a newer "
                        f"lmpretrain wrote it")
    return meta


def resolve_whole_word_mask(dataset_dir: str | Path, meta: dict, *, layout: str, sequence_length: int,
                            whole_word_mask: bool, mlm_probability: float, preset: str) -> bool:
    """Check the dataset's settings against the run's (``preset``: ``<parameter_file>: <model_type>``, for messages)
    and return whole-word masking: a mask style's (``-wwm``), else the run's own."""
    path = Path(dataset_dir) / DATASET_META
    original = meta.get("original", {})
    if meta["sequence_length"] != sequence_length:
        raise UserError(f"{path}: sequence_length {meta['sequence_length']} does not match {preset}.sequence-length "
                        f"{sequence_length}; create the dataset with --max_length {sequence_length}")
    if meta["layout"] != layout:
        made = original.get("mask_style") or original.get("dataset_type")
        fits = " or ".join(names_for(layout)) or "no dataset of the original's names"
        raise UserError(f"{path}: layout {meta['layout']} ({made}) does not match the {layout} instances {preset} "
                        f"trains; create the dataset with {fits}")
    if meta["whole_word_mask"] is None:
        return whole_word_mask
    if meta.get("mlm_probability") is not None and meta["mlm_probability"] != mlm_probability:
        raise UserError(f"{path}: mlm_probability {meta['mlm_probability']:g} (--mask_style "
                        f"{original.get('mask_style')}) does not match {preset}.mlm-probability {mlm_probability:g}; "
                        f"create the dataset with --mlm_probability {mlm_probability:g}")
    if whole_word_mask and not meta["whole_word_mask"]:
        raise UserError(f"{path}: whole_word_mask false (--mask_style {original.get('mask_style')}), but the run "
                        f"asks for whole-word masking (--do_whole_word_mask or the preset's whole-word-mask); create "
                        f"the dataset with a -wwm mask style")
    return bool(meta["whole_word_mask"])


def check_dataset_tokenizer(dataset_dir: str | Path, meta: dict, fingerprint: str, tokenizer_dir: str) -> None:
    """The run's tokenizer must be the one the shards were tokenized with (by fingerprint: its files' contents)."""
    recorded = meta["tokenizer"].get("fingerprint")
    if recorded != fingerprint:
        raise UserError(f"{Path(dataset_dir) / DATASET_META}: tokenizer.fingerprint {str(recorded)[:12]} does not "
                        f"match the tokenizer in {tokenizer_dir} ({fingerprint[:12]}): the dataset was tokenized "
                        f"with {meta['tokenizer'].get('name_or_path')}; give that tokenizer, or create the dataset "
                        f"again with this one")


def shards_dir(dataset_dir: str | Path, meta: dict) -> Path:
    return Path(dataset_dir) / meta["shards"]


def open_dataset_shards(dataset_dir: str | Path, meta: dict, vocab_size: int) -> TokenShards:
    """The dataset's token shards, their contents verified (CRC-32s, ids below ``vocab_size``)."""
    location = shards_dir(dataset_dir, meta)
    try:
        shards = TokenShards(location)
        shards.verify(vocab_size)
    except CacheInvalid as why:
        raise UserError(f"the token shards {location} of --dataset_dir {dataset_dir} are unusable ({why}); create "
                        f"the dataset again") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"the token shards {location} of --dataset_dir {dataset_dir} cannot be read ({error}); "
                        f"create the dataset again") from None
    return shards


def corpus_fingerprint_of(dataset_dir: str | Path, meta: dict) -> list[dict]:
    """The corpus fingerprint the shards record (what a checkpoint compares on --do_continue): the corpus itself
    need not be where the dataset was created."""
    try:
        return TokenShards(shards_dir(dataset_dir, meta)).manifest["components"]["corpus"]
    except (CacheInvalid, OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"the token shards {shards_dir(dataset_dir, meta)} of --dataset_dir {dataset_dir} cannot be "
                        f"read ({error}); create the dataset again") from None
