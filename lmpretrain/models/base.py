"""What every pretraining model shares: loading an HF model, vocabulary checks, freezing, saving."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import ModelParams, usable_positions
from ..errors import UserError


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy (in fp32) and accuracy over the given (already selected) positions."""
    if targets.numel() == 0:
        nan = logits.new_tensor(float("nan"), dtype=torch.float32)
        return nan, nan
    loss = F.cross_entropy(logits.float(), targets)
    accuracy = (logits.detach().argmax(-1) == targets).float().mean()
    return loss, accuracy


class PretrainingModel(torch.nn.Module):
    family: str = ""

    def __init__(self, params: ModelParams):
        super().__init__()
        self.params = params

    def hf_models(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        for name, model in self.hf_models().items():
            target = path / "generator" if name == "generator" else path
            target.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(str(target))

    def freeze(self, frozen_layers: int) -> None:
        """The original's ``flozen-layers``: -1 freezes nothing; N >= 0 freezes the embeddings and the first N
        layers of the main model (ELECTRA: the discriminator, whose embeddings the generator shares)."""
        if frozen_layers < 0:
            return
        main = next(iter(self.hf_models().values()))
        base = getattr(main, main.base_model_prefix)
        modules = [base.get_input_embeddings()]
        if hasattr(base, "embeddings"):
            modules = [base.embeddings]
        layers = base.encoder.layer if hasattr(base, "encoder") else base.h
        modules.extend(layers[:frozen_layers])
        for module in modules:
            for param in module.parameters():
                param.requires_grad = False


def load_pretrained(cls, directory: str, *, vocab_size: int, resize: bool, sequence_length: int):
    """Load an HF model dir for continued pretraining, checking vocabulary and positions."""
    from ..checkpoint import LOAD_ERRORS

    try:
        model = cls.from_pretrained(directory, dtype=torch.float32)
    except LOAD_ERRORS as error:  # a missing, truncated or foreign weights file
        raise UserError(f"cannot load a {cls.__name__} from {directory}: {error}") from None
    model_vocab = model.config.vocab_size
    if model_vocab != vocab_size:
        if not resize:
            raise UserError(f"the tokenizer has {vocab_size} tokens but the model at {directory} has {model_vocab}; "
                            "use the model's own tokenizer, or pass --resize_embeddings (resize-embeddings: true) to "
                            "resize its embeddings")
        model.resize_token_embeddings(vocab_size)
    positions = usable_positions(model.config)
    if sequence_length > positions:
        raise UserError(f"sequence-length {sequence_length} is above what the model at {directory} supports "
                        f"({positions} positions)")
    return model
