"""ELECTRA: a small generator (masked LM) and a discriminator (replaced-token detection) trained jointly.

The two share one embedding module (token, position and token-type embeddings with their LayerNorm), as
in the paper; the generator's output layer stays tied to the shared token embeddings. Replacements are
sampled from the generator's softmax at the masked positions without gradient, by inverse-CDF sampling
with counter-based uniforms (``lmpretrain.rng``), so the draw for a sample depends only on (seed, its
position), not on the batch or the process layout. loss = generator MLM loss + 50 × discriminator loss.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

from ..config import ModelParams
from ..rng import uniform
from .base import PretrainingModel, load_pretrained, masked_lm_loss

_SAMPLING_STREAM = 101


def electra_configs(params: ModelParams, vocab_size: int, pad_token_id: int) -> tuple[ElectraConfig, ElectraConfig]:
    common = dict(vocab_size=vocab_size, embedding_size=params.embedding_size or params.hidden_size,
                  num_hidden_layers=params.number_of_layers, hidden_dropout_prob=params.dropout,
                  attention_probs_dropout_prob=params.attention_dropout, pad_token_id=pad_token_id,
                  max_position_embeddings=params.max_position_embeddings or params.sequence_length,
                  initializer_range=params.initializer_range)
    discriminator = ElectraConfig(hidden_size=params.hidden_size, num_attention_heads=params.attention_heads,
                                  intermediate_size=params.ffn_inner_hidden_size, **common)
    scale = params.generator_size
    generator = ElectraConfig(hidden_size=round(params.hidden_size * scale),
                              num_attention_heads=max(1, round(params.attention_heads * scale)),
                              intermediate_size=round(params.ffn_inner_hidden_size * scale), **common)
    return generator, discriminator


class ElectraPretraining(PretrainingModel):
    family = "electra"

    def __init__(self, params: ModelParams, *, vocab_size: int, pad_token_id: int, seed: int,
                 pretrained_dir: str | None = None, resize_embeddings: bool = False):
        super().__init__(params)
        self.seed = seed
        self.discriminator_weight = params.discriminator_weight
        generator_config, discriminator_config = electra_configs(params, vocab_size, pad_token_id)
        if pretrained_dir:
            options = dict(vocab_size=vocab_size, resize=resize_embeddings, sequence_length=params.sequence_length)
            self.discriminator = load_pretrained(ElectraForPreTraining, pretrained_dir, **options)
            generator_dir = params.pretrained_generator or Path(pretrained_dir) / "generator"
            if params.pretrained_generator or (Path(generator_dir) / "config.json").is_file():
                self.generator = load_pretrained(ElectraForMaskedLM, str(generator_dir), **options)
            else:
                generator_config.embedding_size = self.discriminator.config.embedding_size
                generator_config.max_position_embeddings = self.discriminator.config.max_position_embeddings
                self.generator = ElectraForMaskedLM(generator_config)
        else:
            self.discriminator = ElectraForPreTraining(discriminator_config)
            self.generator = ElectraForMaskedLM(generator_config)
        self.tie_embeddings()

    def tie_embeddings(self) -> None:
        """One embedding module for both; the generator's output layer tied to its token embeddings."""
        self.generator.electra.embeddings = self.discriminator.electra.embeddings
        self.generator.generator_lm_head.weight = self.discriminator.electra.embeddings.word_embeddings.weight

    def hf_models(self):
        return {"discriminator": self.discriminator, "generator": self.generator}

    @torch.no_grad()
    def sample(self, logits: torch.Tensor, positions: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """One token per masked position from softmax(logits), by inverse CDF with counter-based uniforms."""
        u = uniform(self.seed, positions.to(logits.device), masked.shape[1], _SAMPLING_STREAM)[masked]
        cdf = torch.softmax(logits.float(), dim=-1).cumsum(dim=-1)
        cdf = cdf / cdf[:, -1:]  # guard against rounding: the last value is exactly 1
        return torch.searchsorted(cdf, u[:, None]).squeeze(1).clamp(max=logits.shape[-1] - 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        token_type_ids = batch.get("token_type_ids")
        masked = labels != -100
        hidden = self.generator.electra(input_ids=input_ids, attention_mask=attention_mask,
                                        token_type_ids=token_type_ids, return_dict=False)[0]
        logits = self.generator.generator_lm_head(self.generator.generator_predictions(hidden[masked]))
        generator_loss, generator_accuracy = masked_lm_loss(logits, labels[masked])

        original = torch.where(masked, labels, input_ids)
        replaced = input_ids.clone()
        replaced[masked] = self.sample(logits.detach(), batch["positions"], masked)
        is_replaced = (replaced != original).float()
        disc_logits = self.discriminator(input_ids=replaced, attention_mask=attention_mask,
                                         token_type_ids=token_type_ids).logits
        real = attention_mask.bool()
        discriminator_loss = F.binary_cross_entropy_with_logits(disc_logits[real].float(), is_replaced[real])
        discriminator_accuracy = ((disc_logits[real] > 0).float() == is_replaced[real]).float().mean()
        loss = discriminator_loss * self.discriminator_weight
        if torch.isfinite(generator_loss):
            loss = loss + generator_loss
        return {"loss": loss, "generator_loss": generator_loss, "discriminator_loss": discriminator_loss,
                "mlm_accuracy": generator_accuracy, "discriminator_accuracy": discriminator_accuracy,
                "replaced_share": is_replaced[real].mean()}
