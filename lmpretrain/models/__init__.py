"""Models for pretraining, built from transformers classes and sized from a parameter.json preset.

``build_model(params, ...)`` returns a :class:`PretrainingModel`: ``forward(batch)`` gives a dict with
``loss`` and each loss term and metric by name; ``save_pretrained(dir)`` writes complete HF model dirs
(ELECTRA: the discriminator at ``dir`` and the generator at ``dir/generator``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ModelParams
from ..errors import UserError
from .base import PretrainingModel


def build_model(params: ModelParams, *, vocab_size: int, pad_token_id: int, seed: int,
                pretrained_dir: str | None = None, resize_embeddings: bool = False,
                eos_token_id: int | None = None) -> PretrainingModel:
    from .bert import BertPretraining, RobertaPretraining
    from .electra import ElectraPretraining
    from .gpt import GptPretraining

    cls = {"bert": BertPretraining, "roberta": RobertaPretraining, "electra": ElectraPretraining,
           "gpt": GptPretraining}[params.family]
    for path in (pretrained_dir, params.pretrained_generator if pretrained_dir else None):
        # a local path must be a model dir; anything else is a hub name, which transformers resolves (or fails)
        if path is not None and Path(path).exists() and not (Path(path) / "config.json").is_file():
            raise UserError(f"pretrained model {path} is not a model directory (no config.json)")
    torch.manual_seed(seed)
    extra = {"eos_token_id": eos_token_id} if params.family == "gpt" else {}
    model = cls(params, vocab_size=vocab_size, pad_token_id=pad_token_id, seed=seed, pretrained_dir=pretrained_dir,
                resize_embeddings=resize_embeddings, **extra)
    model.freeze(params.frozen_layers)
    return model


__all__ = ["PretrainingModel", "build_model"]
