"""GPT-style causal LM (GPT2LMHeadModel)."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ..config import ModelParams
from .base import PretrainingModel, load_pretrained, masked_lm_loss


class GptPretraining(PretrainingModel):
    family = "gpt"

    def __init__(self, params: ModelParams, *, vocab_size: int, pad_token_id: int, seed: int,
                 pretrained_dir: str | None = None, resize_embeddings: bool = False, eos_token_id: int | None = None):
        super().__init__(params)
        if pretrained_dir:
            self.model = load_pretrained(GPT2LMHeadModel, pretrained_dir, vocab_size=vocab_size,
                                         resize=resize_embeddings, sequence_length=params.sequence_length)
        else:
            config = GPT2Config(vocab_size=vocab_size, n_embd=params.hidden_size, n_layer=params.number_of_layers,
                                n_head=params.attention_heads, n_inner=params.ffn_inner_hidden_size,
                                n_positions=params.max_position_embeddings or params.sequence_length,
                                resid_pdrop=params.dropout, embd_pdrop=params.dropout,
                                attn_pdrop=params.attention_dropout, pad_token_id=pad_token_id,
                                bos_token_id=eos_token_id,
                                eos_token_id=eos_token_id, initializer_range=params.initializer_range)
            self.model = GPT2LMHeadModel(config)

    def hf_models(self):
        return {"model": self.model}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self.model.transformer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                        return_dict=False)[0]
        targets = batch["labels"][:, 1:]
        keep = targets != -100
        logits = self.model.lm_head(hidden[:, :-1][keep])
        loss, accuracy = masked_lm_loss(logits, targets[keep])
        return {"loss": loss, "lm_loss": loss, "lm_accuracy": accuracy}
