"""BERT (masked LM + next-sentence prediction, or masked LM only with ``next-sentence-prediction: false``) and
RoBERTa (masked LM on full sentences)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import transformers  # its lazy module: a model class loads on first use, not when the registry is imported

from ..config import ModelParams
from ..errors import LOAD_ERRORS
from ..log import get_logger
from .base import BuildSpec, PretrainingModel, load_pretrained, masked_lm_loss, masked_rows
from .flops import BatchShape, linear, mlm_head_flops, stack_flops
from .registry import Family, LossTerm, Option, Part, attr_path

logger = get_logger(__name__)

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
            self.model = load_pretrained(transformers.BertForPreTraining, spec, params.sequence_length)
        else:
            positions = params.max_position_embeddings or params.sequence_length
            config = transformers.BertConfig(**_encoder_kwargs(params, spec), type_vocab_size=2,
                                             max_position_embeddings=positions)
            self.model = transformers.BertForPreTraining(config)

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
            self.model = load_pretrained(transformers.RobertaForMaskedLM, spec, params.sequence_length)
        else:
            positions = (params.max_position_embeddings or params.sequence_length) + ROBERTA_POSITION_OFFSET
            config = transformers.RobertaConfig(**_encoder_kwargs(params, spec), type_vocab_size=1,
                                                max_position_embeddings=positions)
            self.model = transformers.RobertaForMaskedLM(config)

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


def next_sentence_prediction(params: ModelParams) -> bool:
    """``next-sentence-prediction`` (None, the default: on, unless the model continued from has no NSP head)."""
    return params.option("next_sentence_prediction") is not False


def _bert_layout(params: ModelParams) -> str:
    return "sentence_pairs" if next_sentence_prediction(params) else "packed_sentences"


def _has_nsp_head(pretrained: str, hf_config) -> bool:
    """Whether a BERT model dir holds a next-sentence-prediction head (``BertForPreTraining`` /
    ``BertForNextSentencePrediction``; a ``BertForMaskedLM`` dir has none): its weights' names, else its config's
    ``architectures``."""
    from safetensors import safe_open

    weights = Path(pretrained) / "model.safetensors"
    if weights.is_file():
        try:
            with safe_open(str(weights), "pt") as f:
                return any("seq_relationship" in name for name in f.keys())
        except LOAD_ERRORS:  # a broken file: loading the model reports it, naming the dir
            pass
    return any("PreTraining" in a or "NextSentence" in a for a in (hf_config.architectures or []))


def _bert_loaded_options(params: ModelParams, pretrained: str, hf_config) -> dict:
    """Continuing from a model without an NSP head (``BertForMaskedLM``): MLM-only on packed sentences, unless the
    preset asks for NSP (``next-sentence-prediction: true`` trains a new head)."""
    if params.option("next_sentence_prediction") is not None or _has_nsp_head(pretrained, hf_config):
        return {}
    logger.info("the model at %s has no next-sentence-prediction head (%s): training MLM-only on packed sentences "
                "(next-sentence-prediction: true in the preset trains a new head)", pretrained,
                ", ".join(hf_config.architectures or ["no architectures recorded"]))
    return {"next_sentence_prediction": False}


BERT = Family(
    name="bert", display="BERT", model=BertPretraining,
    parts=(Part("model", "BertForPreTraining", role="pretraining",
                outputs=("prediction_logits", "seq_relationship_logits")),),
    loss_terms=(LossTerm("mlm_loss", "masked"), LossTerm("nsp_loss", "samples", label="next_sentence_label")),
    layout="sentence_pairs", collator="mlm", hf_model_types=("bert",), hf_shape=ENCODER_SHAPE,
    # false: masked LM only, on packed sentences as RoBERTa (the NSP head is kept, untrained); None: on, unless
    # the model continued from has no NSP head
    options={"next-sentence-prediction": Option("next_sentence_prediction", "bool", None)},
    layout_of=_bert_layout, loaded_options=_bert_loaded_options, forward_flops=bert_flops,
    embeddings=attr_path("bert.embeddings"), layers=attr_path("bert.encoder.layer"))

ROBERTA = Family(
    name="roberta", display="RoBERTa", model=RobertaPretraining,
    parts=(Part("model", "RobertaForMaskedLM", role="masked_lm"),),
    loss_terms=(LossTerm("mlm_loss", "masked"),),
    layout="packed_sentences", collator="mlm", hf_model_types=("roberta", "xlm-roberta"), hf_shape=ENCODER_SHAPE,
    position_offset=ROBERTA_POSITION_OFFSET, forward_flops=encoder_mlm_flops,
    embeddings=attr_path("roberta.embeddings"), layers=attr_path("roberta.encoder.layer"))
