"""Models for pretraining, built from transformers classes and sized from a parameter.json preset, and the
family registry (:mod:`.registry`) that tells the rest of the toolkit what each family trains and exports.

``build_model(params, ...)`` returns a :class:`PretrainingModel`: ``forward(batch)`` gives a dict with each loss
term its family declares and metrics, by name; ``save_pretrained(dir)`` writes complete HF model dirs (each
part in its declared folder: ELECTRA's discriminator at ``dir``, its generator at ``dir/generator``).

Adding a family: one module declaring a :class:`~.registry.Family` (see ``bert.py``), one line below.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ModelParams
from ..errors import UserError
from ..log import get_logger
from . import albert, bert, deberta, electra, gpt, llama, modernbert
from .base import BuildSpec, PretrainingModel
from .flops import BatchShape
from .presets import load_parameters, parse_preset, resolve_pretrained_shape
from .registry import Family, LossTerm, Part, family_names, family_of, get_family, register, usable_positions
from .vocab_adapt import VocabPlan, plan_adaptation

logger = get_logger(__name__)

# the registry: one line per family
for _family in (bert.BERT, bert.ROBERTA, electra.ELECTRA, gpt.GPT, deberta.DEBERTAV2, deberta.DEBERTAV3,
                modernbert.MODERNBERT, llama.LLAMA, albert.ALBERT):
    register(_family)


def build_model(params: ModelParams, *, vocab_size: int, pad_token_id: int, seed: int,
                pretrained_dir: str | None = None, resize_embeddings: bool = False,
                eos_token_id: int | None = None, cls_token_id: int | None = None,
                vocab_plan: VocabPlan | None = None) -> PretrainingModel:
    """The family's model, from scratch or continued from ``pretrained_dir`` (``vocab_plan``: its embeddings
    adapted to this tokenizer by token; given on a resume too, where it decides the rows frozen layers train)."""
    family = get_family(params.family)
    for path in (pretrained_dir, params.pretrained_generator if pretrained_dir else None):
        # a local path must be a model dir; anything else is a hub name, which transformers resolves (or fails)
        if path is not None and Path(path).exists() and not (Path(path) / "config.json").is_file():
            raise UserError(f"pretrained model {path} is not a model directory (no config.json)")
    torch.manual_seed(seed)
    spec = BuildSpec(vocab_size=vocab_size, pad_token_id=pad_token_id, eos_token_id=eos_token_id,
                     cls_token_id=cls_token_id, seed=seed,
                     pretrained_dir=pretrained_dir, resize_embeddings=resize_embeddings, vocab_plan=vocab_plan)
    model = family.model(params, spec)
    trainable = None if vocab_plan is None or params.freeze_new_rows else vocab_plan.trainable_rows()
    model.freeze(params.frozen_layers, trainable)
    if pretrained_dir:
        logger.info("%s", _continued_summary(model, pretrained_dir, params.frozen_layers, vocab_plan, vocab_size,
                                             resize_embeddings))
    return model


def _continued_summary(model: PretrainingModel, pretrained_dir: str, frozen_layers: int,
                       vocab_plan: VocabPlan | None, vocab_size: int, resized: bool) -> str:
    """One line saying what continued pretraining loaded, froze and did to the vocabulary."""
    parts = ", ".join(f"{type(m).__name__}" + (f" ({name})" if len(model.hf_models()) > 1 else "")
                      for name, m in model.hf_models().items())
    params = list({id(p): p for p in model.parameters()}.values())  # shared weights (ELECTRA's embeddings) once
    total = sum(p.numel() for p in params)
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    row_frozen = [p for p in params if p.requires_grad and getattr(p, "frozen_rows", None) is not None]
    rows = sum(int(p.frozen_rows.sum()) * (p.numel() // p.shape[0]) for p in row_frozen)
    if frozen_layers < 0:
        freezing = "flozen-layers -1: every parameter trains"
    else:
        layers = "no layer" if frozen_layers == 0 else "layer 0" if frozen_layers == 1 else \
            f"layers 0-{frozen_layers - 1}"
        kept_rows = f" and {rows:,} in the kept token-embedding rows" if rows else ""
        freezing = (f"flozen-layers {frozen_layers}: the embeddings and {layers} of the main model frozen "
                    f"({frozen + rows:,} parameters: {frozen:,} in {sum(not p.requires_grad for p in params)} "
                    f"frozen tensors{kept_rows}), {total - frozen - rows:,} train")
    vocabulary = (f"vocabulary adapted by token to the tokenizer: {vocab_plan.summary()}" if vocab_plan is not None
                  else f"vocabulary: {vocab_size} tokens, embedding rows kept by id" if resized
                  else f"vocabulary: the model's own ({vocab_size} tokens)")
    return f"continued pretraining from {pretrained_dir}: {parts}, {total:,} parameters; {freezing}; {vocabulary}"


__all__ = ["BatchShape", "BuildSpec", "Family", "LossTerm", "Part", "PretrainingModel", "VocabPlan", "build_model",
           "family_names", "family_of", "get_family", "load_parameters", "parse_preset", "plan_adaptation", "register",
           "resolve_pretrained_shape", "usable_positions"]
