"""BERT (masked LM + next-sentence prediction) and RoBERTa (masked LM on full sentences)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForPreTraining, RobertaConfig, RobertaForMaskedLM

from ..config import ROBERTA_POSITION_OFFSET, ModelParams
from .base import PretrainingModel, load_pretrained, masked_lm_loss


def _encoder_kwargs(params: ModelParams, vocab_size: int, pad_token_id: int) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=params.hidden_size, num_hidden_layers=params.number_of_layers,
                num_attention_heads=params.attention_heads, intermediate_size=params.ffn_inner_hidden_size,
                hidden_dropout_prob=params.dropout, attention_probs_dropout_prob=params.attention_dropout,
                pad_token_id=pad_token_id, initializer_range=params.initializer_range)


class BertPretraining(PretrainingModel):
    family = "bert"

    def __init__(self, params: ModelParams, *, vocab_size: int, pad_token_id: int, seed: int,
                 pretrained_dir: str | None = None, resize_embeddings: bool = False):
        super().__init__(params)
        if pretrained_dir:
            self.model = load_pretrained(BertForPreTraining, pretrained_dir, vocab_size=vocab_size,
                                         resize=resize_embeddings, sequence_length=params.sequence_length)
        else:
            config = BertConfig(**_encoder_kwargs(params, vocab_size, pad_token_id), type_vocab_size=2,
                                max_position_embeddings=params.max_position_embeddings or params.sequence_length)
            self.model = BertForPreTraining(config)

    def hf_models(self):
        return {"model": self.model}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # The MLM head runs on the masked positions only: the full [B, L, V] logits are never built.
        hidden, pooled = self.model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                         token_type_ids=batch.get("token_type_ids"), return_dict=False)[:2]
        masked = batch["labels"] != -100
        mlm_logits = self.model.cls.predictions(hidden[masked])
        mlm_loss, mlm_accuracy = masked_lm_loss(mlm_logits, batch["labels"][masked])
        out = {"mlm_loss": mlm_loss, "mlm_accuracy": mlm_accuracy}
        if "next_sentence_label" in batch:
            nsp_logits = self.model.cls.seq_relationship(pooled)
            out["nsp_loss"] = F.cross_entropy(nsp_logits.float(), batch["next_sentence_label"])
            out["nsp_accuracy"] = (nsp_logits.detach().argmax(-1) == batch["next_sentence_label"]).float().mean()
        out["loss"] = sum(v for k, v in out.items() if k.endswith("_loss") and torch.isfinite(v))
        return out


class RobertaPretraining(PretrainingModel):
    family = "roberta"

    def __init__(self, params: ModelParams, *, vocab_size: int, pad_token_id: int, seed: int,
                 pretrained_dir: str | None = None, resize_embeddings: bool = False):
        super().__init__(params)
        if pretrained_dir:
            self.model = load_pretrained(RobertaForMaskedLM, pretrained_dir, vocab_size=vocab_size,
                                         resize=resize_embeddings, sequence_length=params.sequence_length)
        else:
            positions = (params.max_position_embeddings or params.sequence_length) + ROBERTA_POSITION_OFFSET
            config = RobertaConfig(**_encoder_kwargs(params, vocab_size, pad_token_id), type_vocab_size=1,
                                   max_position_embeddings=positions)
            self.model = RobertaForMaskedLM(config)

    def hf_models(self):
        return {"model": self.model}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self.model.roberta(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    return_dict=False)[0]
        masked = batch["labels"] != -100
        logits = self.model.lm_head(hidden[masked])
        loss, accuracy = masked_lm_loss(logits, batch["labels"][masked])
        return {"loss": loss, "mlm_loss": loss, "mlm_accuracy": accuracy}
