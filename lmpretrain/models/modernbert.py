"""ModernBERT (ModernBertForMaskedLM): masked LM with rotary positions and alternating local/global attention.

As in the ModernBERT paper (Warner et al., 2024, "Smarter, Better, Faster, Longer"): 30% masking, no NSP, packed
sequences, every ``global-attn-every-n-layers``-th layer attends globally (layer 0 first), the others to a window of
``local-attention`` tokens, each with its own rope theta. The MLM head runs on the masked positions only (what
transformers calls sparse prediction): the backbone runs on the batch, the masked positions are selected, and the
head and decoder run on them, as bert.py does.

Attention: FlashAttention 2 (transformers unpads the batch inside its flash path) where transformers finds it usable
on a CUDA GPU; PyTorch SDPA everywhere else (CPU).
"""

from __future__ import annotations

import torch
import transformers  # its lazy module: a model class loads on first use, not when the registry is imported

from ..config import ModelParams
from .base import BuildSpec, PretrainingModel, load_pretrained, masked_lm_loss, masked_rows
from .bert import ENCODER_SHAPE
from .flops import BatchShape, mlm_head_flops, stack_flops
from .registry import Family, LossTerm, Option, Part, attr_path

MAX_POSITIONS = 8192  # the published models' max_position_embeddings; rotary positions, so a declaration only
LOCAL_ATTENTION = 128  # the published window; a preset without local-attention gets it, capped at its sequence length


def local_window(window: int | None, sequence_length: int) -> int:
    """The local attention window: the preset's ``local-attention``, else 128 capped at the sequence length."""
    return window or min(LOCAL_ATTENTION, sequence_length - sequence_length % 2)


def attention_implementation() -> str:
    """``flash_attention_2`` where transformers can use it (a CUDA GPU with flash-attn installed), else ``sdpa``."""
    from transformers.utils import is_flash_attn_2_available

    return "flash_attention_2" if torch.cuda.is_available() and is_flash_attn_2_available() else "sdpa"


def hf_config(params: ModelParams, spec: BuildSpec) -> transformers.ModernBertConfig:
    every = params.option("global_attn_every_n_layers")
    layer_types = ["sliding_attention" if i % every else "full_attention" for i in range(params.number_of_layers)]
    rope = {"full_attention": {"rope_type": "default", "rope_theta": params.option("global_rope_theta")},
            "sliding_attention": {"rope_type": "default", "rope_theta": params.option("local_rope_theta")}}
    special = spec.cls_token_id if spec.cls_token_id is not None else spec.pad_token_id
    return transformers.ModernBertConfig(
        vocab_size=spec.vocab_size, hidden_size=params.hidden_size, num_hidden_layers=params.number_of_layers,
        num_attention_heads=params.attention_heads, intermediate_size=params.ffn_inner_hidden_size,
        max_position_embeddings=params.max_position_embeddings or MAX_POSITIONS, layer_types=layer_types,
        local_attention=local_window(params.option("local_attention"), params.sequence_length), rope_parameters=rope,
        embedding_dropout=params.dropout, mlp_dropout=params.dropout, attention_dropout=params.attention_dropout,
        initializer_range=params.initializer_range, pad_token_id=spec.pad_token_id,
        cls_token_id=special, bos_token_id=special,
        sep_token_id=spec.eos_token_id, eos_token_id=spec.eos_token_id)


class ModernBertPretraining(PretrainingModel):
    def __init__(self, params: ModelParams, spec: BuildSpec):
        super().__init__(params)
        if spec.pretrained_dir:
            self.model = load_pretrained(transformers.ModernBertForMaskedLM, spec, params.sequence_length)
        else:
            config = hf_config(params, spec)
            config._attn_implementation = attention_implementation()
            self.model = transformers.ModernBertForMaskedLM(config)

    def hf_models(self):
        return {"model": self.model}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self.model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  return_dict=False)[0]
        rows, targets = masked_rows(hidden, batch)
        loss, accuracy = masked_lm_loss(self.model.decoder(self.model.head(rows)), targets)
        return {"mlm_loss": loss, "mlm_accuracy": accuracy}


def modernbert_flops(model: ModernBertPretraining, shape: BatchShape) -> int:
    """Layers with a GeGLU FFN (Wi is h x 2f: 3 matrices' worth); a local layer attends to its window only under
    FlashAttention (SDPA masks the full square); the MLM head on the masked positions."""
    config = model.model.config
    windowed = config._attn_implementation == "flash_attention_2"
    keys = [min(shape.length, config.local_attention + 1) if windowed and kind == "sliding_attention" else shape.length
            for kind in config.layer_types]
    return stack_flops(config, shape, ffn_matrices=3, keys=keys) + mlm_head_flops(config, shape.masked)


def check(model_type: str, values: dict) -> list[str]:
    """The attention settings must fit the shape: one problem per setting."""
    problems = []
    length = values["sequence_length"]
    window = local_window(values["local_attention"], length)
    positions = values.get("max_position_embeddings") or MAX_POSITIONS
    if window % 2:
        problems.append(f"{model_type}.local-attention: {window} does not divide by 2 (the window is split into two "
                        "equal halves around each token); use an even window such as 128")
    if window > length:
        problems.append(f"{model_type}.local-attention: a window of {window} tokens is longer than sequence-length "
                        f"{length}, so the local layers would attend globally; lower local-attention")
    if (values["hidden_size"] // values["attention_heads"]) % 2:
        problems.append(f"{model_type}.attention-heads: the head size hidden-size / attention-heads = "
                        f"{values['hidden_size'] // values['attention_heads']} does not divide by 2, as rotary "
                        "positions need")
    if length > positions:
        problems.append(f"{model_type}.sequence-length: {length} is above the {positions} positions ModernBERT "
                        "is built with")
    return problems


MODERNBERT = Family(
    name="modernbert", display="ModernBERT", model=ModernBertPretraining,
    parts=(Part("model", "ModernBertForMaskedLM", role="masked_lm"),),
    loss_terms=(LossTerm("mlm_loss", "masked"),),
    layout="packed_sentences", collator="mlm", hf_model_types=("modernbert",), hf_shape=ENCODER_SHAPE,
    options={"global-attn-every-n-layers": Option("global_attn_every_n_layers", "pos_int", 3, shape=True),
             "local-attention": Option("local_attention", "pos_int", None, shape=True),
             "global-rope-theta": Option("global_rope_theta", "pos_float", 160_000.0, shape=True),
             "local-rope-theta": Option("local_rope_theta", "pos_float", 10_000.0, shape=True)},
    defaults={"mlm_probability": 0.3, "dropout": 0.0, "attention_dropout": 0.0},
    check=check, forward_flops=modernbert_flops,
    embeddings=attr_path("model.embeddings"), layers=attr_path("model.layers"))
