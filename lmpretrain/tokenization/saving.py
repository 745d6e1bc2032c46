"""Writing a tokenizer beside a model: the files ``AutoTokenizer`` loads, copied from the tokenizer dir into a
checkpoint or an export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .causal import declare_causal_lm

# files of a model: never taken for tokenizer files when copying a tokenizer
MODEL_FILES = frozenset({"config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
                         "pytorch_model.bin", "training_args.bin"})


def copy_tokenizer_files(source_dir: str | Path, dest: Path, model_max_length: int | None = None, *,
                         causal_lm: bool = False, skip: tuple[str, ...] = ()) -> None:
    """Copy a tokenizer's files (no model weights/config, sub-folders or hidden files) so AutoTokenizer loads dest.

    ``model_max_length`` (the model's usable positions) replaces the tokenizer's own in the copy, so that
    ``truncation=True`` when fine-tuning cuts at what the model can take, not at the tokenizer's generic 512.
    ``causal_lm``: the copy declares a causal LM's special tokens (``tokenization.declare_causal_lm``). ``skip``:
    more file names that are not the tokenizer's (a checkpoint's training state)."""
    for file in Path(source_dir).iterdir():
        if file.is_file() and not file.name.startswith(".") and file.name not in MODEL_FILES and file.name not in skip \
                and not file.name.endswith(".safetensors"):
            shutil.copy2(file, dest / file.name)
    config_path = dest / "tokenizer_config.json"
    if model_max_length is not None and config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("model_max_length") != model_max_length:
            config["model_max_length"] = model_max_length
            config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if causal_lm:
        declare_causal_lm(dest)
