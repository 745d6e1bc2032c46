"""What every pretraining model shares: what it is built from, loading an HF model, vocabulary checks, freezing,
saving."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import ModelParams
from ..errors import LOAD_ERRORS, UserError
from .flops import BatchShape, train_flops
from .registry import get_family, usable_positions
from .vocab_adapt import VocabPlan, adapt_model, train_rows_only


@dataclass(frozen=True)
class BuildSpec:
    """What a model is built from besides its preset: the tokenizer's ids and the run's choices."""

    vocab_size: int
    pad_token_id: int
    eos_token_id: int | None = None
    """Causal LMs: the end-of-text token (the configs' bos/eos); encoders: the separator."""
    cls_token_id: int | None = None
    """Encoders that record it in their config (ModernBERT's cls/bos)."""
    seed: int = 0
    """Models that draw random numbers in ``forward`` (ELECTRA's sampling) key them on it."""
    pretrained_dir: str | None = None
    """Continue from this HF model dir (the main part; a family's other parts in their folders)."""
    resize_embeddings: bool = False
    vocab_plan: VocabPlan | None = None
    """The tokenizer differs from the pretrained model's: where each embedding row comes from (by token, see
    :mod:`.vocab_adapt`); also given when resuming, for the rows ``flozen-layers`` leaves trainable."""


def masked_rows(hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden states at the masked positions and their labels: gathered by the collator's ``masked_index``
    (a host-known size, padding rows labelled -100) where it gives one, else selected by a boolean mask (whose
    data-dependent size makes the device report the count back: a sync)."""
    if "masked_index" in batch:
        return hidden.flatten(0, 1).index_select(0, batch["masked_index"]), batch["masked_labels"]
    masked = batch["labels"] != -100
    return hidden[masked], batch["labels"][masked]


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy (in fp32) and accuracy over the given (already selected) positions; targets of -100
    (``masked_rows``' padding) count in neither."""
    if targets.numel() == 0:
        nan = logits.new_tensor(float("nan"), dtype=torch.float32)
        return nan, nan
    loss = F.cross_entropy(logits.float(), targets)  # ignore_index -100: the mean over the real rows
    real = targets != -100
    accuracy = ((logits.detach().argmax(-1) == targets) & real).sum() / real.sum()
    return loss, accuracy


def next_token_loss(lm_head, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A causal LM's loss terms: the head runs only on the positions that have a next token to predict (gathered by
    the collator's ``predicted_index`` where it gives one, as :func:`masked_rows` does)."""
    if "predicted_index" in batch:
        rows = hidden[:, :-1].flatten(0, 1).index_select(0, batch["predicted_index"])
        targets = batch["predicted_labels"]
    else:
        next_tokens = batch["labels"][:, 1:]
        keep = next_tokens != -100
        rows, targets = hidden[:, :-1][keep], next_tokens[keep]
    loss, accuracy = masked_lm_loss(lm_head(rows), targets)
    return {"lm_loss": loss, "lm_accuracy": accuracy}


class PretrainingModel(torch.nn.Module):
    """``forward(batch)`` returns each loss term its family declares (by name) and metrics; the trainer weights and
    sums the terms. ``hf_models()`` gives the transformers model of each declared part, by part name."""

    def __init__(self, params: ModelParams):
        super().__init__()
        self.params = params
        self.family = get_family(params.family)

    def hf_models(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    @property
    def parts(self):
        """The parts this model holds (its family's, as its preset's options choose: ``Family.parts_for``)."""
        return self.family.parts_for(self.params)

    def train_flops(self, shape: BatchShape) -> int:
        """FLOPs of a forward and backward pass over a micro-batch of this shape (:mod:`.flops`)."""
        return train_flops(self, shape)

    def save_pretrained(self, path: str | Path) -> None:
        """Each part as a complete HF model dir, in the folder its family declares."""
        models = self.hf_models()
        for part in self.parts:
            target = Path(path) / part.folder
            target.mkdir(parents=True, exist_ok=True)
            models[part.name].save_pretrained(str(target))

    def load_extra(self, path: str | Path) -> None:
        """Restore, from a dir ``save_pretrained`` wrote, what the HF parts do not hold (DeBERTa-v3's RTD head);
        nothing for most families. Resume calls it after loading the parts (checkpoint.load_weights)."""

    def resume_state(self) -> dict:
        """What an exact resume needs beyond the saved model dirs (saved in the checkpoint's training state, not
        in exports): nothing for most families."""
        return {}

    def load_resume_state(self, state: dict) -> None:
        """Restore :meth:`resume_state`'s dict, after the weights were loaded."""

    def token_embedding_weights(self) -> list[torch.nn.Parameter]:
        """The token embedding tables that freezing the embeddings freezes (the main part's; DeBERTa-v3 has two)."""
        main = next(iter(self.hf_models().values()))
        return [main.get_input_embeddings().weight]

    def freeze(self, frozen_layers: int, trainable_rows: torch.Tensor | None = None) -> None:
        """The original's ``flozen-layers``: -1 freezes nothing; N >= 0 freezes the embeddings and the first N
        layers of the main model (ELECTRA: the discriminator, whose embeddings the generator shares), where its
        family declares they live (``Family.embeddings`` / ``Family.layers``).
        ``trainable_rows``: token embedding rows that still train (the rows vocabulary adaptation composed or
        initialised): the others' gradient is zeroed (:func:`.vocab_adapt.train_rows_only`)."""
        if frozen_layers < 0:
            return
        if not self.family.can_freeze:  # presets.parse_preset refuses such a preset first
            raise UserError(f"flozen-layers: the {self.family.display} family does not declare where its layers "
                            "and embeddings are, so it cannot freeze them")
        main = self.hf_models()[self.family.main_part.name]
        layers = list(self.family.layers(main))
        frozen, training = layers[:frozen_layers], layers[frozen_layers:]
        if any(layer is other for layer in frozen for other in training):
            raise UserError(f"flozen-layers: {frozen_layers} would freeze layers whose weights the other layers of "
                            f"this {self.family.display} model share")
        for module in (self.family.embeddings(main), *frozen):
            for param in module.parameters():
                param.requires_grad = False
        for weight in self.token_embedding_weights():
            if trainable_rows is not None and bool(trainable_rows.any()):
                train_rows_only(weight, trainable_rows)
            else:
                weight.requires_grad = False


def load_pretrained(cls, spec: BuildSpec, sequence_length: int, directory: str | None = None):
    """Load an HF model dir (``spec.pretrained_dir`` unless ``directory``) for continued pretraining, checking
    vocabulary and positions."""
    directory = directory or spec.pretrained_dir
    vocab_size = spec.vocab_size
    try:
        if torch.empty(0).device.type == "meta":  # sharding.build_on_rank0's other ranks: the structure only, no
            # weights read (rank 0 loads them and broadcasts them into the shards); from_pretrained refuses meta
            model = cls._from_config(cls.config_class.from_pretrained(directory), dtype=torch.float32)
        else:
            model = cls.from_pretrained(directory, dtype=torch.float32)
    except LOAD_ERRORS as error:  # a missing, truncated or foreign weights file
        raise UserError(f"cannot load a {cls.__name__} from {directory}: {error}") from None
    model_vocab = model.config.vocab_size
    if spec.vocab_plan is not None:
        try:
            adapt_model(model, spec.vocab_plan)
        except ValueError as error:  # a model with fewer rows than its tokenizer has tokens
            raise UserError(f"cannot adapt the embeddings of the model at {directory}: {error}") from None
    elif model_vocab != vocab_size:
        if not spec.resize_embeddings:
            raise UserError(f"the tokenizer has {vocab_size} tokens but the model at {directory} has {model_vocab}; "
                            "use the model's own tokenizer, or pass --resize_embeddings (resize-embeddings: true) to "
                            "resize its embeddings")
        # no tokenizer files beside the model (prepare said so): nothing tells which token a row was, so rows keep
        # their ids (not transformers' resize_token_embeddings, which resizes DeBERTa-v2's hidden-to-hidden head)
        adapt_model(model, VocabPlan.by_id(model_vocab, vocab_size))
    positions = usable_positions(model.config)
    if sequence_length > positions:
        raise UserError(f"sequence-length {sequence_length} is above what the model at {directory} supports "
                        f"({positions} positions)")
    return model
