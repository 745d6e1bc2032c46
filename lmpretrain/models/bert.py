"""BERT (masked LM + next-sentence prediction) and RoBERTa (masked LM on full sentences)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForPreTraining, RobertaConfig, RobertaForMaskedLM

from ..config import ModelParams
from .base import BuildSpec, PretrainingModel, load_pretrained, masked_lm_loss, masked_rows
from .flops import BatchShape, linear, mlm_head_flops, stack_flops
from .registry import Family, LossTerm, Part

ROBERTA_POSITION_OFFSET = 2  # RoBERTa numbers positions from padding_idx + 1
ENCODER_SHAPE = {"number_of_layers": "num_hidden_layers", "hidden_size": "hidden_size",
                 "ffn_inner_hidden_size": "intermediate_size", "attention_heads": "num_attention_heads"}
"""Where a BERT-style HF config keeps each shape field (ELECTRA's too)."""


def _encoder_kwargs(params: ModelParams, spec: BuildSpec) -> dict:
    return dict(vocab_size=spec.vocab_size, hidden_size=params.hidden_size, num_hidden_layers=params.number_of_layers,
                num_attention_heads=params.attention_heads, intermediate_size=params.ffn_inner_hidden_size,
                hidden_dropout_prob=params.dropout, attention_probs_dropout_prob=params.attention_dropout,
                pad_token_id=spec.pad_token_id, initializer_range=params.initializer_range)


class BertPretraining(PretrainingModel):
    def __init__(self, params: ModelParams, spec: BuildSpec):
        super().__init__(params)
        if spec.pretrained_dir:
            self.model = load_pretrained(BertForPreTraining, spec, params.sequence_length)
        else:
            config = BertConfig(**_encoder_kwargs(params, spec), type_vocab_size=2,
                                max_position_embeddings=params.max_position_embeddings or params.sequence_length)
            self.model = BertForPreTraining(config)

    def hf_models(self):
        return {"model": self.model}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # The MLM head runs on the masked positions only: the full [B, L, V] logits are never built.
        hidden, pooled = self.model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                         token_type_ids=batch.get("token_type_ids"), return_dict=False)[:2]
        rows, targets = masked_rows(hidden, batch)
        mlm_loss, mlm_accuracy = masked_lm_loss(self.model.cls.predictions(rows), targets)
        out = {"mlm_loss": mlm_loss, "mlm_accuracy": mlm_accuracy}
        if "next_sentence_label" in batch:
            nsp_logits = self.model.cls.seq_relationship(pooled)
            out["nsp_loss"] = F.cross_entropy(nsp_logits.float(), batch["next_sentence_label"])
            out["nsp_accuracy"] = (nsp_logits.detach().argmax(-1) == batch["next_sentence_label"]).float().mean()
        return out


class RobertaPretraining(PretrainingModel):
    def __init__(self, params: ModelParams, spec: BuildSpec):
        super().__init__(params)
        if spec.pretrained_dir:
            self.model = load_pretrained(RobertaForMaskedLM, spec, params.sequence_length)
        else:
            positions = (params.max_position_embeddings or params.sequence_length) + ROBERTA_POSITION_OFFSET
            config = RobertaConfig(**_encoder_kwargs(params, spec), type_vocab_size=1,
                                   max_position_embeddings=positions)
            self.model = RobertaForMaskedLM(config)

    def hf_models(self):
        return {"model": self.model}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self.model.roberta(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    return_dict=False)[0]
        rows, targets = masked_rows(hidden, batch)
        loss, accuracy = masked_lm_loss(self.model.lm_head(rows), targets)
        return {"mlm_loss": loss, "mlm_accuracy": accuracy}


def bert_flops(model: BertPretraining, shape: BatchShape) -> int:
    """Encoder, the MLM head on the masked positions, the pooler and the NSP classifier on each sequence."""
    config = model.model.config
    hidden = config.hidden_size
    return (stack_flops(config, shape) + mlm_head_flops(config, shape.masked)
            + linear(shape.sequences, hidden, hidden) + linear(shape.sequences, hidden, 2))


def encoder_mlm_flops(model, shape: BatchShape) -> int:
    """Encoder and the MLM head on the masked positions (RoBERTa, DeBERTa-v2)."""
    config = model.model.config
    return stack_flops(config, shape) + mlm_head_flops(config, shape.masked)


BERT = Family(
    name="bert", display="BERT", model=BertPretraining,
    parts=(Part("model", "BertForPreTraining", role="pretraining"),),
    loss_terms=(LossTerm("mlm_loss", "masked"), LossTerm("nsp_loss", "samples")),
    layout="sentence_pairs", collator="mlm", hf_model_types=("bert",), hf_shape=ENCODER_SHAPE,
    forward_flops=bert_flops)

ROBERTA = Family(
    name="roberta", display="RoBERTa", model=RobertaPretraining,
    parts=(Part("model", "RobertaForMaskedLM", role="masked_lm"),),
    loss_terms=(LossTerm("mlm_loss", "masked"),),
    layout="packed_sentences", collator="mlm", hf_model_types=("roberta", "xlm-roberta"), hf_shape=ENCODER_SHAPE,
    position_offset=ROBERTA_POSITION_OFFSET, forward_flops=encoder_mlm_flops)
