"""ELECTRA: a small generator (masked LM) and a discriminator (replaced-token detection) trained jointly.

The two share one embedding module (token, position and token-type embeddings with their LayerNorm), as
in the paper; the generator's output layer stays tied to the shared token embeddings. Replacements are
sampled from the generator's softmax at the masked positions without gradient, by inverse-CDF sampling
with counter-based uniforms (``lmpretrain.rng``), so the draw for a sample depends only on (seed, its
position), not on the batch or the process layout. loss = generator MLM loss + λ × discriminator loss, with
λ = ``discriminator-weight`` (50, the paper's), applied once, by the trainer (the family's loss terms).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import transformers  # its lazy module: a model class loads on first use, not when the registry is imported

from ..config import ModelParams
from ..errors import LOAD_ERRORS, UserError
from ..log import get_logger
from ..rng import uniform
from .base import BuildSpec, PretrainingModel, load_pretrained, masked_lm_loss, masked_rows
from .bert import ENCODER_SHAPE
from .flops import BatchShape, linear, stack_flops
from .registry import Family, LossTerm, Option, Part, attr_path

_SAMPLING_STREAM = 101

logger = get_logger(__name__)


def electra_configs(params: ModelParams, vocab_size: int, pad_token_id: int) -> dict[str, transformers.ElectraConfig]:
    """The generator's and the discriminator's configs as training builds them (extraction checks against them)."""
    common = dict(vocab_size=vocab_size, embedding_size=params.option("embedding_size") or params.hidden_size,
                  num_hidden_layers=params.number_of_layers, hidden_dropout_prob=params.dropout,
                  attention_probs_dropout_prob=params.attention_dropout, pad_token_id=pad_token_id,
                  max_position_embeddings=params.max_position_embeddings or params.sequence_length,
                  initializer_range=params.initializer_range)
    discriminator = transformers.ElectraConfig(hidden_size=params.hidden_size,
                                               num_attention_heads=params.attention_heads,
                                               intermediate_size=params.ffn_inner_hidden_size, **common)
    scale = params.option("generator_size")
    generator = transformers.ElectraConfig(hidden_size=round(params.hidden_size * scale),
                                           num_attention_heads=max(1, round(params.attention_heads * scale)),
                                           intermediate_size=round(params.ffn_inner_hidden_size * scale), **common)
    return {"generator": generator, "discriminator": discriminator}


def _inverse_cdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row of ``logits``, the token whose softmax CDF first reaches that row's uniform ``u``."""
    cdf = torch.softmax(logits.float(), dim=-1).cumsum(dim=-1)
    cdf = cdf / cdf[:, -1:]  # guard against rounding: the last value is exactly 1
    return torch.searchsorted(cdf, u[:, None]).squeeze(1).clamp(max=logits.shape[-1] - 1)


@torch.no_grad()
def sample_replacements(seed: int, logits: torch.Tensor, positions: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """One token per masked position from softmax(logits), by inverse CDF with counter-based uniforms: the draw
    depends only on (seed, the sample's position, the token's place in it), never on the batch or process layout."""
    u = uniform(seed, positions.to(logits.device), masked.shape[1], _SAMPLING_STREAM)[masked]
    return _inverse_cdf(logits, u)


@torch.no_grad()
def replaced_input_ids(seed: int, batch: dict[str, torch.Tensor], logits: torch.Tensor,
                       targets: torch.Tensor) -> torch.Tensor:
    """The discriminator's input: ``input_ids`` with a token drawn from the generator at every masked position.
    ``logits`` and ``targets`` are the generator's rows as :func:`masked_rows` gave them.

    With the collator's ``masked_index`` (a GPU or ``--compile``) nothing here has a data-dependent size, so the
    host never waits: a uniform is read per gathered row, every row is drawn, and the padding rows (label -100)
    write into a spare slot past the end that is then dropped. The draws equal the boolean path's, row for row
    (the same uniforms, the same per-row inverse CDF)."""
    input_ids = batch["input_ids"]
    if "masked_index" not in batch:
        masked = batch["labels"] != -100
        replaced = input_ids.clone()
        replaced[masked] = sample_replacements(seed, logits, batch["positions"], masked)
        return replaced
    index = batch["masked_index"]
    u = uniform(seed, batch["positions"].to(logits.device), input_ids.shape[1], _SAMPLING_STREAM)
    drawn = _inverse_cdf(logits, u.flatten().index_select(0, index))
    flat = torch.cat([input_ids.flatten(), input_ids.new_zeros(1)])
    spare = torch.full_like(index, flat.numel() - 1)
    flat.index_copy_(0, torch.where(targets != -100, index, spare), drawn.to(flat.dtype))
    return flat[:-1].view_as(input_ids)


def replaced_token_loss(disc_logits: torch.Tensor, is_replaced: torch.Tensor,
                        attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Replaced-token detection over the real (non-padding) tokens: the discriminator's loss term (labels 1 =
    replaced) and its metrics. ELECTRA and DeBERTa-v3 both train on it. Padding is weighted out rather than
    selected away, so that no size depends on the data (no host sync, one shape under compile)."""
    real = attention_mask.to(torch.float32)
    count = real.sum()
    per_token = F.binary_cross_entropy_with_logits(disc_logits.float(), is_replaced, reduction="none")
    return {"discriminator_loss": (per_token * real).sum() / count,
            "discriminator_accuracy": (((disc_logits > 0).float() == is_replaced).float() * real).sum() / count,
            "replaced_share": (is_replaced * real).sum() / count}


class ElectraPretraining(PretrainingModel):
    def __init__(self, params: ModelParams, spec: BuildSpec):
        super().__init__(params)
        self.seed = spec.seed
        configs = electra_configs(params, spec.vocab_size, spec.pad_token_id)
        generator_config, discriminator_config = configs["generator"], configs["discriminator"]
        if spec.pretrained_dir:
            self.discriminator = load_pretrained(transformers.ElectraForPreTraining, spec, params.sequence_length)
            generator_dir = pretrained_generator_dir(params, spec.pretrained_dir)
            if generator_dir is not None:
                self.generator = load_pretrained(transformers.ElectraForMaskedLM, spec, params.sequence_length,
                                                 generator_dir)
            else:
                generator_config.embedding_size = self.discriminator.config.embedding_size
                generator_config.max_position_embeddings = self.discriminator.config.max_position_embeddings
                self.generator = transformers.ElectraForMaskedLM(generator_config)
                logger.info("the model at %s is a discriminator without a generator (no generator/ beside it, no "
                            "pretrained_generator_model_name_or_path): a new ElectraForMaskedLM generator is added "
                            "(hidden size %d, generator-size %g of the discriminator's, randomly initialised, "
                            "sharing its embeddings); the export holds both", spec.pretrained_dir,
                            generator_config.hidden_size, params.option("generator_size"))
        else:
            self.discriminator = transformers.ElectraForPreTraining(discriminator_config)
            self.generator = transformers.ElectraForMaskedLM(generator_config)
        self.tie_embeddings()

    def tie_embeddings(self) -> None:
        """One embedding module for both; the generator's output layer tied to its token embeddings."""
        self.generator.electra.embeddings = self.discriminator.electra.embeddings
        self.generator.generator_lm_head.weight = self.discriminator.electra.embeddings.word_embeddings.weight

    def hf_models(self):
        return {"discriminator": self.discriminator, "generator": self.generator}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        token_type_ids = batch.get("token_type_ids")
        masked = labels != -100
        hidden = self.generator.electra(input_ids=input_ids, attention_mask=attention_mask,
                                        token_type_ids=token_type_ids, return_dict=False)[0]
        rows, targets = masked_rows(hidden, batch)
        logits = self.generator.generator_lm_head(self.generator.generator_predictions(rows))
        generator_loss, generator_accuracy = masked_lm_loss(logits, targets)

        original = torch.where(masked, labels, input_ids)
        replaced = replaced_input_ids(self.seed, batch, logits.detach(), targets)
        is_replaced = (replaced != original).float()
        disc_logits = self.discriminator(input_ids=replaced, attention_mask=attention_mask,
                                         token_type_ids=token_type_ids).logits
        return {"generator_loss": generator_loss, "mlm_accuracy": generator_accuracy,
                **replaced_token_loss(disc_logits, is_replaced, attention_mask)}


def electra_flops(model: ElectraPretraining, shape: BatchShape) -> int:
    """Generator and discriminator on the whole batch (each with its embedding projection when the embedding is
    narrower), the generator's head on the masked positions, the discriminator's on every position."""
    generator, discriminator = model.generator.config, model.discriminator.config
    embedding, hidden = discriminator.embedding_size, discriminator.hidden_size
    total = 0
    for config in (generator, discriminator):
        if config.embedding_size != config.hidden_size:
            total += linear(shape.positions, config.embedding_size, config.hidden_size)
        total += stack_flops(config, shape)
    total += linear(shape.masked, generator.hidden_size, embedding)
    total += linear(shape.masked, embedding, generator.vocab_size)
    return total + linear(shape.positions, hidden, hidden) + linear(shape.positions, hidden, 1)


def pretrained_generator_dir(params: ModelParams, pretrained: str) -> str | None:
    """The generator continued pretraining loads: ``pretrained_generator_model_name_or_path``, else a
    ``generator/`` folder beside the discriminator (as a checkpoint of this toolkit has); None: built from scratch."""
    if params.pretrained_generator:
        return params.pretrained_generator
    folder = Path(pretrained) / "generator"
    return str(folder) if (folder / "config.json").is_file() else None


def electra_role(directory: str, hf_config) -> str | None:
    """Which ELECTRA model a dir holds: "discriminator" (``ElectraForPreTraining``: replaced-token-detection head),
    "generator" (``ElectraForMaskedLM``: masked-LM head), or None (neither told apart): its weights' names, else
    (no readable ``model.safetensors``) its config's ``architectures``."""
    from safetensors import safe_open

    weights = Path(directory) / "model.safetensors"
    if weights.is_file():
        try:
            with safe_open(str(weights), "pt") as f:
                names = list(f.keys())
        except LOAD_ERRORS:  # a broken file: loading the model reports it, naming the dir
            names = None
        if names is not None:
            if any("discriminator_predictions" in n for n in names):
                return "discriminator"
            return "generator" if any(n.startswith(("generator_predictions", "generator_lm_head"))
                                      for n in names) else None
    architectures = hf_config.architectures or []
    return "discriminator" if "ElectraForPreTraining" in architectures else \
        "generator" if "ElectraForMaskedLM" in architectures else None


def _pretrained_problems(params: ModelParams, pretrained: str, hf_config) -> list[str]:
    """ELECTRA continues a discriminator (with its generator, or a new one): a generator alone
    (``ElectraForMaskedLM``) given as the model to continue, or a discriminator given as the generator, is refused
    rather than trained in the other's place."""
    problems = []
    if electra_role(pretrained, hf_config) == "generator":
        problems.append(f"pretrained_model_name_or_path {pretrained} is an ELECTRA generator (ElectraForMaskedLM, no "
                        f"discriminator head), but --model_type {params.model_type} continues ELECTRA's "
                        "discriminator (ElectraForPreTraining) with a generator; give the discriminator dir here and "
                        "this one as pretrained_generator_model_name_or_path (or as its generator/ folder)")
    generator_dir = pretrained_generator_dir(params, pretrained)
    if generator_dir is not None:
        from transformers import AutoConfig

        try:
            generator = AutoConfig.from_pretrained(generator_dir)
        except (OSError, ValueError):  # _loaded_options says so
            return problems
        if generator.model_type == "electra" and electra_role(generator_dir, generator) == "discriminator":
            problems.append(f"the generator {generator_dir} is an ELECTRA discriminator (ElectraForPreTraining), not "
                            "a generator (ElectraForMaskedLM)")
    return problems


def _loaded_options(params: ModelParams, pretrained: str, hf_config) -> dict:
    """With both models loaded, the generator's size is theirs: hidden size over the discriminator's."""
    generator_dir = pretrained_generator_dir(params, pretrained)
    if generator_dir is None:
        return {}
    from transformers import AutoConfig

    try:
        generator = AutoConfig.from_pretrained(generator_dir)
    except (OSError, ValueError) as error:
        raise UserError(f"pretrained_generator_model_name_or_path {generator_dir}: cannot read its config.json "
                        f"({error})") from None
    if generator.model_type != "electra":
        raise UserError(f"pretrained_generator_model_name_or_path {generator_dir} is a {generator.model_type!r} "
                        "model, not an ELECTRA generator")
    return {"generator_size": generator.hidden_size / hf_config.hidden_size}


def _generator_problems(model_type: str, values: dict) -> list[str]:
    scale = values["generator_size"]
    generator_hidden, generator_heads = values["hidden_size"] * scale, values["attention_heads"] * scale
    if generator_heads < 1 or generator_hidden % max(1, round(generator_heads)):
        return [f"{model_type}.generator-size: gives a generator of hidden size {generator_hidden:g} and "
                f"{generator_heads:g} heads, which do not divide"]
    return []


ELECTRA = Family(
    name="electra", display="ELECTRA", model=ElectraPretraining,
    parts=(Part("discriminator", "ElectraForPreTraining", role="pretraining", extract_as="discriminator"),
           Part("generator", "ElectraForMaskedLM", folder="generator", role="masked_lm", extract_as="generator")),
    loss_terms=(LossTerm("generator_loss", "masked"),
                LossTerm("discriminator_loss", "tokens", weight_option="discriminator_weight")),
    layout="whole_lines", collator="mlm", hf_model_types=("electra",),
    hf_shape={**ENCODER_SHAPE, "embedding_size": "embedding_size"},
    options={
        # embedding width (projected to hidden-size when smaller); None: hidden-size
        "embedding-size": Option("embedding_size", "pos_int", None, shape=True),
        # generator width as a fraction of the discriminator's (hidden, ffn, heads), e.g. "1/4"
        "generator-size": Option("generator_size", "fraction", 0.25, shape=True),
        "discriminator-weight": Option("discriminator_weight", "pos_float", 50.0),
    },
    defaults={"mask_token_prob": 0.85, "random_token_prob": 0.0},
    check=_generator_problems, part_configs=electra_configs, loaded_options=_loaded_options,
    check_pretrained=_pretrained_problems,
    forward_flops=electra_flops,
    # the discriminator's embeddings, which the generator shares
    embeddings=attr_path("electra.embeddings"), layers=attr_path("electra.encoder.layer"))
