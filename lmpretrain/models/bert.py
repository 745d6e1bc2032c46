"""BERT (masked LM + next-sentence prediction, or masked LM only with ``next-sentence-prediction: false``) and
RoBERTa (masked LM on full sentences)."""

from __future__ import annotations

from dataclasses import dataclass
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
        cls = getattr(transformers, self.parts[0].hf_class)  # BertForPreTraining, or BertForMaskedLM (no NSP head)
        if spec.pretrained_dir:
            self.model = load_pretrained(cls, spec, params.sequence_length)
        else:
            positions = params.max_position_embeddings or params.sequence_length
            config = transformers.BertConfig(**_encoder_kwargs(params, spec), type_vocab_size=2,
                                             max_position_embeddings=positions)
            self.model = cls(config)

    def hf_models(self):
        return {"model": self.model}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # The MLM head runs on the masked positions only: the full [B, L, V] logits are never built.
        encoded = self.model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  token_type_ids=batch.get("token_type_ids"), return_dict=True)
        rows, targets = masked_rows(encoded.last_hidden_state, batch)
        mlm_loss, mlm_accuracy = masked_lm_loss(self.model.cls.predictions(rows), targets)
        out = {"mlm_loss": mlm_loss, "mlm_accuracy": mlm_accuracy}
        if "next_sentence_label" in batch:  # the layout pairs sentences only when the model has an NSP head
            nsp_logits = self.model.cls.seq_relationship(encoded.pooler_output)
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
    """Encoder, the MLM head on the masked positions, the pooler and the NSP classifier on each sequence (a
    ``BertForMaskedLM`` has neither)."""
    if not next_sentence_head(model.params):
        return encoder_mlm_flops(model, shape)
    config = model.model.config
    hidden = config.hidden_size
    return (stack_flops(config, shape) + mlm_head_flops(config, shape.masked)
            + linear(shape.sequences, hidden, hidden) + linear(shape.sequences, hidden, 2))


def encoder_mlm_flops(model, shape: BatchShape) -> int:
    """Encoder and the MLM head on the masked positions (RoBERTa, DeBERTa-v2)."""
    config = model.model.config
    return stack_flops(config, shape) + mlm_head_flops(config, shape.masked)


@dataclass(frozen=True)
class PairHead:
    """A sentence-pair objective trained beside the masked LM (BERT's next-sentence prediction, ALBERT's sentence
    order) through a head that a model may lack: two preset keys, ``<name>`` (train the objective, on the pair
    layout; false: MLM-only on packed sentences, the head kept untrained) and ``<head_key>`` (false: no head at all,
    the family's masked-LM class), both None by default: on, unless the model continued from has no such head."""

    name: str  # the objective's preset key, e.g. "next-sentence-prediction"
    head_key: str  # e.g. "next-sentence-head"
    short: str  # e.g. "NSP", in log lines
    layout: str  # the pair layout the objective trains on
    weight: str  # a substring of the head's weight names in model.safetensors
    architectures: tuple[str, ...]  # substrings of config.architectures entries of models with the head
    pretraining_class: str
    masked_lm_class: str

    def trained(self, params: ModelParams) -> bool:
        return params.option(self.name.replace("-", "_")) is not False

    def kept(self, params: ModelParams) -> bool:
        """Whether the model is the pretraining class (a pooler and the head, trained or not) or the masked-LM one."""
        return params.option(self.head_key.replace("-", "_")) is not False

    def layout_of(self, params: ModelParams) -> str:
        return self.layout if self.trained(params) else "packed_sentences"

    def problems(self, model_type: str, values: dict) -> list[str]:
        if values.get(self.name.replace("-", "_")) and values.get(self.head_key.replace("-", "_")) is False:
            return [f"{model_type}.{self.head_key}: false leaves no head for {self.name}: true; "
                    "leave one of them out"]
        return []

    def loaded_options(self, params: ModelParams, pretrained: str, hf_config) -> dict:
        """Continuing from a model without the head (e.g. ``BertForMaskedLM``, the continued-MLM recipes' start)
        follows its objective: MLM-only on packed sentences, trained and exported as the masked-LM class, unless the
        preset asks for more (either key true: a new head is added)."""
        if has_head(pretrained, hf_config, self.weight, self.architectures):
            return {}
        found = ", ".join(hf_config.architectures or ["no architectures recorded"])
        asked = [key for key in (self.name, self.head_key) if params.option(key.replace("-", "_"))]
        if asked:
            trained = "trained from scratch" if self.trained(params) else "left untrained"
            logger.info("the model at %s has no %s head (%s): %s: true in the preset adds a new one (a pooler and the "
                        "%s classifier, randomly initialised, %s); the export is %s", pretrained, self.name, found,
                        " and ".join(asked), self.short, trained, _article(self.pretraining_class))
            return {}
        logger.info("the model at %s has no %s head (%s): training MLM-only on packed sentences and exporting %s, as "
                    "it started (%s: true in the preset adds and trains a new head)", pretrained, self.name, found,
                    _article(self.masked_lm_class), self.name)
        return {self.name.replace("-", "_"): False, self.head_key.replace("-", "_"): False}


def _article(name: str) -> str:
    return f"{'an' if name[0] in 'AEIOU' else 'a'} {name}"


def has_head(pretrained: str, hf_config, weight: str, architectures: tuple[str, ...]) -> bool:
    """Whether a model dir holds a head: a weight whose name contains ``weight`` in its ``model.safetensors``, else
    (no such file, or an unreadable one) an ``architectures`` entry containing one of ``architectures``."""
    from safetensors import safe_open

    weights = Path(pretrained) / "model.safetensors"
    if weights.is_file():
        try:
            with safe_open(str(weights), "pt") as f:
                return any(weight in name for name in f.keys())
        except LOAD_ERRORS:  # a broken file: loading the model reports it, naming the dir
            pass
    return any(part in a for a in (hf_config.architectures or []) for part in architectures)


NSP = PairHead("next-sentence-prediction", "next-sentence-head", "NSP", "sentence_pairs", "seq_relationship",
               ("PreTraining", "NextSentence"), "BertForPreTraining", "BertForMaskedLM")
"""BERT's next-sentence prediction: a ``BertForPreTraining`` / ``BertForNextSentencePrediction`` dir has its head, a
``BertForMaskedLM`` dir none."""
next_sentence_prediction, next_sentence_head = NSP.trained, NSP.kept


def _bert_parts(params: ModelParams) -> tuple[Part, ...]:
    return BERT.parts if NSP.kept(params) else MASKED_LM_PARTS


BERT = Family(
    name="bert", display="BERT", model=BertPretraining,
    parts=(Part("model", "BertForPreTraining", role="pretraining",
                outputs=("prediction_logits", "seq_relationship_logits")),),
    loss_terms=(LossTerm("mlm_loss", "masked"), LossTerm("nsp_loss", "samples", label="next_sentence_label")),
    layout="sentence_pairs", collator="mlm", hf_model_types=("bert",), hf_shape=ENCODER_SHAPE,
    # next-sentence-prediction false: masked LM only, on packed sentences as RoBERTa (the NSP head is kept,
    # untrained); next-sentence-head false: no NSP head at all (a BertForMaskedLM); None: on, unless the model
    # continued from has no NSP head
    options={"next-sentence-prediction": Option("next_sentence_prediction", "bool", None),
             "next-sentence-head": Option("next_sentence_head", "bool", None, shape=True)},
    layout_of=NSP.layout_of, parts_of=_bert_parts, loaded_options=NSP.loaded_options, check=NSP.problems,
    forward_flops=bert_flops,
    embeddings=attr_path("bert.embeddings"), layers=attr_path("bert.encoder.layer"))

MASKED_LM_PARTS = (Part("model", "BertForMaskedLM", role="masked_lm"),)
"""A BERT without a next-sentence head (``next-sentence-head: false``, or continued from a ``BertForMaskedLM``)."""

ROBERTA = Family(
    name="roberta", display="RoBERTa", model=RobertaPretraining,
    parts=(Part("model", "RobertaForMaskedLM", role="masked_lm"),),
    loss_terms=(LossTerm("mlm_loss", "masked"),),
    layout="packed_sentences", collator="mlm", hf_model_types=("roberta", "xlm-roberta"), hf_shape=ENCODER_SHAPE,
    position_offset=ROBERTA_POSITION_OFFSET, forward_flops=encoder_mlm_flops,
    embeddings=attr_path("roberta.embeddings"), layers=attr_path("roberta.encoder.layer"))
