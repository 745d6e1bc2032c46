"""ALBERT (AlbertForPreTraining): masked LM + sentence-order prediction, with factorized embeddings and one layer
shared by every depth, as in Lan et al. 2019 ("ALBERT: A Lite BERT ...") and UER-py's ``--target albert``; or masked
LM only (``sentence-order-prediction: false``, on packed sentences), as an ``AlbertForMaskedLM`` without the SOP head
(``sentence-order-head: false``, or continued from an ``AlbertForMaskedLM``), as BERT's ``next-sentence-*`` keys.

- Factorized embeddings: tokens are embedded in ``embedding-size`` (128, the paper's) and projected to
  ``hidden-size`` by the encoder's ``embedding_hidden_mapping_in``; the MLM head maps back down to
  ``embedding-size`` before the vocabulary (its decoder tied to the token embeddings).
- Shared layers: ``num_hidden_groups`` 1, so the ``number-of-layers`` layers all run one set of weights.
- Sentence-order prediction (SOP): the pooled ``[CLS]`` state classifies whether segment A came before B in the
  text (label 0) or the two were swapped (label 1): AlbertForPreTraining's ``sentence_order_label`` convention,
  which the ``sentence_order`` layout gives. Whole-word masking is the MLM collator's, as for BERT.
  The MLM head runs on the masked positions only, as bert.py does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import transformers  # its lazy module: a model class loads on first use, not when the registry is imported
from torch import nn

from ..config import ModelParams
from ..log import get_logger
from .base import BuildSpec, PretrainingModel, load_pretrained, masked_lm_loss, masked_rows
from .bert import ENCODER_SHAPE, PairHead
from .flops import BatchShape, linear, stack_flops
from .registry import Family, LossTerm, Option, Part

SOP_LABEL = "sentence_order_label"  # 0: segments in order, 1: swapped (AlbertForPreTraining's convention)
EMBEDDING_SIZE = 128  # the paper's, for every model size

logger = get_logger(__name__)


def albert_config(params: ModelParams, spec: BuildSpec) -> transformers.AlbertConfig:
    return transformers.AlbertConfig(
        vocab_size=spec.vocab_size, embedding_size=params.option("embedding_size"), hidden_size=params.hidden_size,
        num_hidden_layers=params.number_of_layers, num_hidden_groups=1, inner_group_num=1,
        num_attention_heads=params.attention_heads, intermediate_size=params.ffn_inner_hidden_size,
        hidden_dropout_prob=params.dropout, attention_probs_dropout_prob=params.attention_dropout,
        classifier_dropout_prob=params.dropout, type_vocab_size=2,
        max_position_embeddings=params.max_position_embeddings or params.sequence_length,
        initializer_range=params.initializer_range, pad_token_id=spec.pad_token_id)


class AlbertPretraining(PretrainingModel):
    def __init__(self, params: ModelParams, spec: BuildSpec):
        super().__init__(params)
        cls = getattr(transformers, self.parts[0].hf_class)  # AlbertForPreTraining, or AlbertForMaskedLM (no SOP)
        if spec.pretrained_dir:
            self.model = load_pretrained(cls, spec, params.sequence_length)
        else:
            self.model = cls(albert_config(params, spec))

    def hf_models(self):
        return {"model": self.model}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # (an AlbertForMaskedLM's encoder has no pooler: its pooler_output is None)
        encoded = self.model.albert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    token_type_ids=batch.get("token_type_ids"), return_dict=True)
        rows, targets = masked_rows(encoded.last_hidden_state, batch)
        mlm_loss, mlm_accuracy = masked_lm_loss(self.model.predictions(rows), targets)
        out = {"mlm_loss": mlm_loss, "mlm_accuracy": mlm_accuracy}
        if SOP_LABEL in batch:  # the layout pairs segments only when the model has an SOP head
            sop_logits = self.model.sop_classifier(encoded.pooler_output)
            out["sop_loss"] = F.cross_entropy(sop_logits.float(), batch[SOP_LABEL])
            out["sop_accuracy"] = (sop_logits.detach().argmax(-1) == batch[SOP_LABEL]).float().mean()
        return out


def albert_flops(model: AlbertPretraining, shape: BatchShape) -> int:
    """The embedding projection on every position, the shared layer run ``num_hidden_layers`` times (its weights are
    counted once, its work at every depth), the MLM head (down to the embedding size, then the vocabulary) on the
    masked positions, the pooler and the SOP classifier on each sequence (an ``AlbertForMaskedLM`` has neither)."""
    config = model.model.config
    embedding, hidden = config.embedding_size, config.hidden_size
    total = (linear(shape.positions, embedding, hidden)
             + stack_flops(config, shape, layers=config.num_hidden_layers * config.inner_group_num)
             + linear(shape.masked, hidden, embedding) + linear(shape.masked, embedding, config.vocab_size))
    if not sentence_order_head(model.params):
        return total
    return total + linear(shape.sequences, hidden, hidden) + linear(shape.sequences, hidden, config.num_labels)


SOP = PairHead("sentence-order-prediction", "sentence-order-head", "SOP", "sentence_order", "sop_classifier",
               ("PreTraining",), "AlbertForPreTraining", "AlbertForMaskedLM")
"""ALBERT's sentence-order prediction: an ``AlbertForPreTraining`` dir has its head, an ``AlbertForMaskedLM`` dir
none (bert.py's :class:`PairHead`, as BERT's next-sentence prediction)."""
sentence_order_prediction, sentence_order_head = SOP.trained, SOP.kept


def _albert_parts(params: ModelParams) -> tuple[Part, ...]:
    return ALBERT.parts if SOP.kept(params) else MASKED_LM_PARTS


def _embeddings(model: transformers.AlbertForPreTraining) -> nn.Module:
    """The factorized embeddings: the tables and their projection to the hidden size (both factors)."""
    return nn.ModuleList([model.albert.embeddings, model.albert.encoder.embedding_hidden_mapping_in])


def _layers(model: transformers.AlbertForPreTraining) -> list[nn.Module]:
    """The layers in the order they run: the group each depth runs (transformers' AlbertTransformer indexing), so
    with one group the same module at every depth."""
    groups = model.albert.encoder.albert_layer_groups
    return [groups[g] for g in _group_of_layer(model.config)]


def _group_of_layer(config) -> list[int]:
    """The layer group each depth runs, as transformers' AlbertTransformer picks it."""
    return [int(i / (config.num_hidden_layers / config.num_hidden_groups)) for i in range(config.num_hidden_layers)]


def _frozen_layers_problems(params: ModelParams, pretrained: str, hf_config) -> list[str]:
    # flozen-layers N freezes "the embeddings and the first N layers". ALBERT's layers are one set of weights run at
    # every depth (num_hidden_groups 1), so the first N cannot be frozen alone: N = 0 freezes the embeddings (both
    # factors), N = number-of-layers the embeddings and the shared layer (the heads train), and anything between
    # would freeze the later depths too (the same weights), so it is refused rather than silently meaning all. A
    # model with several groups can also stop where one group's depths end.
    frozen, layers = params.frozen_layers, hf_config.num_hidden_layers
    groups = _group_of_layer(hf_config)
    allowed = [n for n in range(layers + 1) if n in (0, layers) or groups[n - 1] != groups[n]]
    if frozen < 0 or frozen > layers or frozen in allowed:
        return []
    shared = "one set of weights" if hf_config.num_hidden_groups == 1 else \
        f"{hf_config.num_hidden_groups} sets of weights, each run at several depths"
    return [f"{params.model_type}.flozen-layers: {frozen} would freeze part of ALBERT's layers, but the {layers} "
            f"layers of {pretrained} share {shared}; use {' or '.join(map(str, allowed))} (0: the embeddings; "
            f"{layers}: the embeddings and every layer)"]


ALBERT = Family(
    name="albert", display="ALBERT", model=AlbertPretraining,
    parts=(Part("model", "AlbertForPreTraining", role="pretraining", outputs=("prediction_logits", "sop_logits")),),
    loss_terms=(LossTerm("mlm_loss", "masked"), LossTerm("sop_loss", "samples", label=SOP_LABEL)),
    layout="sentence_order", collator="mlm", hf_model_types=("albert",),
    hf_shape={**ENCODER_SHAPE, "embedding_size": "embedding_size"},
    options={
        # factorized embedding width (the paper's 128 at every size)
        "embedding-size": Option("embedding_size", "pos_int", EMBEDDING_SIZE, shape=True),
        # sentence-order-prediction false: masked LM only, on packed sentences (the SOP head is kept, untrained);
        # sentence-order-head false: no SOP head at all (an AlbertForMaskedLM); None: on, unless the model
        # continued from has no SOP head
        "sentence-order-prediction": Option("sentence_order_prediction", "bool", None),
        "sentence-order-head": Option("sentence_order_head", "bool", None, shape=True),
    },
    # no dropout, as ALBERT v2 and UER-py's albert configs
    defaults={"dropout": 0.0, "attention_dropout": 0.0},
    layout_of=SOP.layout_of, parts_of=_albert_parts, loaded_options=SOP.loaded_options, check=SOP.problems,
    check_pretrained=_frozen_layers_problems, forward_flops=albert_flops, embeddings=_embeddings, layers=_layers)

MASKED_LM_PARTS = (Part("model", "AlbertForMaskedLM", role="masked_lm"),)
"""An ALBERT without a sentence-order head (``sentence-order-head: false``, or continued from an
``AlbertForMaskedLM``)."""
