"""Llama-style causal LMs (LlamaForCausalLM): rotary positions, SwiGLU, RMSNorm, grouped-query attention.

Trained as the GPT family is (``causal_blocks``, the causal collator, ``[SEP]`` as end of text and bos/eos); the
config's special ids are the tokenizer's. ``num-key-value-heads`` below ``attention-heads`` is grouped-query
attention (each key/value head serves attention-heads / num-key-value-heads query heads).
"""

from __future__ import annotations

import torch
import transformers  # its lazy module: a model class loads on first use, not when the registry is imported

from ..config import ModelParams
from .base import BuildSpec, PretrainingModel, load_pretrained, next_token_loss
from .bert import ENCODER_SHAPE
from .flops import BatchShape, linear, stack_flops
from .registry import Family, LossTerm, Option, Part, attr_path


def hf_config(params: ModelParams, spec: BuildSpec) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=spec.vocab_size, hidden_size=params.hidden_size, num_hidden_layers=params.number_of_layers,
        num_attention_heads=params.attention_heads, intermediate_size=params.ffn_inner_hidden_size,
        num_key_value_heads=params.option("num_key_value_heads") or params.attention_heads,
        max_position_embeddings=params.max_position_embeddings or params.sequence_length,
        rope_parameters={"rope_type": "default", "rope_theta": params.option("rope_theta")},
        rms_norm_eps=params.option("rms_norm_eps"), tie_word_embeddings=params.option("tie_word_embeddings"),
        attention_dropout=params.attention_dropout, initializer_range=params.initializer_range,
        pad_token_id=spec.pad_token_id, bos_token_id=spec.eos_token_id, eos_token_id=spec.eos_token_id)


class LlamaPretraining(PretrainingModel):
    def __init__(self, params: ModelParams, spec: BuildSpec):
        super().__init__(params)
        if spec.pretrained_dir:
            self.model = load_pretrained(transformers.LlamaForCausalLM, spec, params.sequence_length)
        else:
            self.model = transformers.LlamaForCausalLM(hf_config(params, spec))

    def hf_models(self):
        return {"model": self.model}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self.model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  return_dict=False)[0]
        return next_token_loss(self.model.lm_head, hidden, batch)


def llama_flops(model: LlamaPretraining, shape: BatchShape) -> int:
    """Layers with grouped-query projections (k and v num_key_value_heads wide) and a SwiGLU FFN (3 matrices); the
    LM head on the positions with a next token."""
    config = model.model.config
    return stack_flops(config, shape, ffn_matrices=3) + linear(shape.predicted, config.hidden_size, config.vocab_size)


def check(model_type: str, values: dict) -> list[str]:
    problems = []
    heads, kv_heads = values["attention_heads"], values["num_key_value_heads"]
    if kv_heads is not None and heads % kv_heads:
        problems.append(f"{model_type}.num-key-value-heads: attention-heads {heads} does not divide by "
                        f"num-key-value-heads {kv_heads} (each key/value head serves the same number of query heads)")
    if (values["hidden_size"] // heads) % 2:
        problems.append(f"{model_type}.attention-heads: the head size hidden-size / attention-heads = "
                        f"{values['hidden_size'] // heads} does not divide by 2, as rotary positions need")
    return problems


LLAMA = Family(
    name="llama", display="Llama", model=LlamaPretraining,
    parts=(Part("model", "LlamaForCausalLM", role="causal_lm"),),
    loss_terms=(LossTerm("lm_loss", "next_tokens"),),
    layout="causal_blocks", collator="causal", hf_model_types=("llama",), hf_shape=ENCODER_SHAPE,
    options={"num-key-value-heads": Option("num_key_value_heads", "pos_int", None, shape=True),
             "tie-word-embeddings": Option("tie_word_embeddings", "bool", False, shape=True),
             "rope-theta": Option("rope_theta", "pos_float", 10_000.0, shape=True),
             "rms-norm-eps": Option("rms_norm_eps", "pos_float", 1e-5)},
    defaults={"dropout": 0.0, "attention_dropout": 0.0},
    check=check, forward_flops=llama_flops,
    embeddings=attr_path("model.embed_tokens"), layers=attr_path("model.layers"))
