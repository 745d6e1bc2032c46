"""GPT-style causal LM (GPT2LMHeadModel)."""

from __future__ import annotations

import torch
import transformers  # its lazy module: a model class loads on first use, not when the registry is imported

from ..config import ModelParams
from .base import BuildSpec, PretrainingModel, load_pretrained, next_token_loss
from .registry import Family, LossTerm, Part, attr_path


class GptPretraining(PretrainingModel):
    def __init__(self, params: ModelParams, spec: BuildSpec):
        super().__init__(params)
        if spec.pretrained_dir:
            self.model = load_pretrained(transformers.GPT2LMHeadModel, spec, params.sequence_length)
        else:
            config = transformers.GPT2Config(vocab_size=spec.vocab_size, n_embd=params.hidden_size,
                                             n_layer=params.number_of_layers, n_head=params.attention_heads,
                                             n_inner=params.ffn_inner_hidden_size,
                                             n_positions=params.max_position_embeddings or params.sequence_length,
                                             resid_pdrop=params.dropout, embd_pdrop=params.dropout,
                                             attn_pdrop=params.attention_dropout, pad_token_id=spec.pad_token_id,
                                             bos_token_id=spec.eos_token_id,
                                             eos_token_id=spec.eos_token_id, initializer_range=params.initializer_range)
            self.model = transformers.GPT2LMHeadModel(config)

    def hf_models(self):
        return {"model": self.model}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self.model.transformer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                        return_dict=False)[0]
        return next_token_loss(self.model.lm_head, hidden, batch)


def _gpt_inner(config) -> int:
    return config.n_inner or 4 * config.n_embd


GPT = Family(
    name="gpt", display="GPT", model=GptPretraining, aliases=("gpt2",),
    parts=(Part("model", "GPT2LMHeadModel", role="causal_lm"),),
    loss_terms=(LossTerm("lm_loss", "next_tokens"),),
    layout="causal_blocks", collator="causal", hf_model_types=("gpt2",),
    hf_shape={"number_of_layers": "n_layer", "hidden_size": "n_embd", "ffn_inner_hidden_size": _gpt_inner,
              "attention_heads": "n_head"},
    # the token embeddings only (the position table wpe trains on), as flozen-layers has always frozen them here
    embeddings=attr_path("transformer.wte"), layers=attr_path("transformer.h"))
