"""DeBERTa-v2 (masked LM) and DeBERTa-v3 (replaced-token detection with gradient-disentangled embedding sharing).

Both build transformers' DeBERTa-v2 classes with the v2/v3 attention settings (relative position buckets,
p2c|c2p disentangled attention, shared attention keys, no absolute positions), as microsoft/DeBERTa's
``experiments/language_model/rtd_*.json`` configs give them.

DeBERTa-v3 follows He et al. 2021 ("DeBERTaV3 ... Gradient-Disentangled Embedding Sharing") and the official
``DeBERTa/apps/tasks/rtd_task.py`` / ``apps/models/replaced_token_detection_model.py``:

- the generator is a ``DebertaV2ForMaskedLM`` of the discriminator's width and ``generator-depth`` (1/2) of its
  layers (``rtd_base.json``: 12 and 6 layers, both 768 wide), trained with MLM;
- replacements are drawn from the generator's softmax without gradient (ELECTRA's counter-based inverse-CDF
  sampling: a draw depends only on seed and sample position), label 1 = replaced (the official
  ``(lm_labels > 0) & (lm_labels != input_ids)``), and loss = MLM + λ × RTD with λ = ``discriminator-weight``
  (50: the official ``rtd_lambda``), applied once by the trainer;
- GDES: the discriminator's token embedding is ``stop_gradient(E_generator) + E_delta`` with ``E_delta`` starting at
  zero (the official forward pre-hook sets ``g.weight.detach() + d._weight``). Here :class:`GdesEmbedding` replaces
  the discriminator's ``word_embeddings``: the RTD loss reaches only ``E_delta``, the MLM loss only ``E_generator``.
  Its state dict holds the merged ``E_generator + E_delta`` under the plain key, so the discriminator saves as an
  ordinary ``DebertaV2Model`` that ``AutoModel`` (and the task classes) load; loading the merged weight back sets
  ``E_delta = merged - E_generator``;
- the RTD head (the official ``LMMaskPredictionHead``: LayerNorm([CLS] + h) → dense → act → 1 logit) has no
  transformers class: it is saved beside the discriminator as ``rtd_head.safetensors``, keys ``mask_predictions.*``
  (the official names, which transformers' ``DebertaV2ForMaskedLM`` lists as ignorable), and extraction copies it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers  # its lazy module: a model class loads on first use, not when the registry is imported
from torch import nn

from ..config import ModelParams
from ..errors import UserError
from ..log import get_logger
from .base import BuildSpec, PretrainingModel, load_pretrained, masked_lm_loss, masked_rows
from .bert import ENCODER_SHAPE
from .electra import replaced_input_ids, replaced_token_loss
from .flops import BatchShape, linear, mlm_head_flops, stack_flops
from .registry import Family, LossTerm, Option, Part, attr_path

logger = get_logger(__name__)

RTD_HEAD_FILE = "rtd_head.safetensors"
RTD_HEAD_PREFIX = "mask_predictions."
POS_ATT_TYPES = ("c2p", "p2c")
NORM_REL_EBD = ("layer_norm", "none")

# the v2/v3 attention settings, shared by both families (defaults: microsoft/DeBERTa's rtd_*.json)
ATTENTION_OPTIONS = {
    "relative-attention": Option("relative_attention", "bool", True, shape=True),
    "position-buckets": Option("position_buckets", "pos_int", 256, shape=True),
    "pos-att-type": Option("pos_att_type", "str", "p2c|c2p", shape=True),
    "norm-rel-ebd": Option("norm_rel_ebd", "str", "layer_norm", shape=True),
    "share-att-key": Option("share_att_key", "bool", True, shape=True),
    "position-biased-input": Option("position_biased_input", "bool", False, shape=True),
}
ATTENTION_FIELDS = tuple(o.field for o in ATTENTION_OPTIONS.values())


def deberta_config(params: ModelParams, vocab_size: int, pad_token_id: int, layers: int | None = None):
    return transformers.DebertaV2Config(
        vocab_size=vocab_size, hidden_size=params.hidden_size, num_hidden_layers=layers or params.number_of_layers,
        num_attention_heads=params.attention_heads, intermediate_size=params.ffn_inner_hidden_size,
        hidden_dropout_prob=params.dropout, attention_probs_dropout_prob=params.attention_dropout,
        max_position_embeddings=params.max_position_embeddings or params.sequence_length,
        initializer_range=params.initializer_range, pad_token_id=pad_token_id, type_vocab_size=0,
        layer_norm_eps=1e-7, max_relative_positions=-1, legacy=False,  # the official head: lm_predictions.*
        **{name: params.option(name) for name in ATTENTION_FIELDS})


def mlm_logits(model: transformers.DebertaV2ForMaskedLM, hidden: torch.Tensor) -> torch.Tensor:
    """The masked-LM head of ``model`` on the given (selected) hidden states, either head layout transformers has."""
    if model.legacy:
        return model.cls(hidden)
    return model.lm_predictions(hidden, model.deberta.embeddings.word_embeddings)


def _check_continued_attention(model, params: ModelParams, directory) -> None:
    """The preset's attention settings must be the model's: they are part of its architecture."""
    for name in ATTENTION_FIELDS:
        given, actual = params.option(name), getattr(model.config, name, None)
        if name == "pos_att_type" and isinstance(actual, list | tuple):
            actual = "|".join(actual)
        if name == "pos_att_type" and actual is not None:
            given, actual = sorted(given.split("|")), sorted(actual.split("|"))
        if actual is not None and given != actual:
            key = next(k for k, o in ATTENTION_OPTIONS.items() if o.field == name)
            raise UserError(f"{params.model_type}.{key}: {params.option(name)!r} in the preset but "
                            f"{getattr(model.config, name)!r} in {directory}")


class DebertaV2Pretraining(PretrainingModel):
    def __init__(self, params: ModelParams, spec: BuildSpec):
        super().__init__(params)
        if spec.pretrained_dir:
            self.model = load_pretrained(transformers.DebertaV2ForMaskedLM, spec, params.sequence_length)
            _check_continued_attention(self.model, params, spec.pretrained_dir)
        else:
            self.model = transformers.DebertaV2ForMaskedLM(deberta_config(params, spec.vocab_size, spec.pad_token_id))

    def hf_models(self):
        return {"model": self.model}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # The MLM head runs on the masked positions only, as bert.py's: the full [B, L, V] logits are never built.
        hidden = self.model.deberta(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    return_dict=False)[0]
        rows, targets = masked_rows(hidden, batch)
        loss, accuracy = masked_lm_loss(mlm_logits(self.model, rows), targets)
        return {"mlm_loss": loss, "mlm_accuracy": accuracy}


class GdesEmbedding(nn.Module):
    """The discriminator's token embedding under GDES: ``stop_gradient(E_generator) + E_delta``.

    ``E_generator`` stays the generator's parameter (held by reference, not as a submodule, so it is trained and
    saved once, by the generator); ``delta`` is the discriminator's own. The state dict holds the merged table
    under ``weight``, as a plain ``nn.Embedding`` would, and loading one sets ``delta = merged - E_generator`` (again
    when the generator is loaded after the discriminator, as checkpoint loading does)."""

    def __init__(self, shared: nn.Embedding):
        super().__init__()
        self._shared = (shared,)
        self.padding_idx = shared.padding_idx
        self.delta = nn.Parameter(torch.zeros_like(shared.weight))
        self._merged_pending: torch.Tensor | None = None
        shared.register_load_state_dict_post_hook(lambda module, keys: self._rebase())

    @property
    def shared(self) -> nn.Embedding:
        return self._shared[0]

    @property
    def weight(self) -> torch.Tensor:
        """The merged table (no gradient): what an exported discriminator holds."""
        return self.shared.weight.detach() + self.delta.detach()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # two row gathers instead of materialising the [V, H] sum: the same values, far less memory per step
        return F.embedding(input_ids, self.shared.weight.detach(), self.padding_idx) + \
            F.embedding(input_ids, self.delta, self.padding_idx)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.weight

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "weight"
        if key not in state_dict:
            if strict:
                missing_keys.append(key)
            return
        merged = state_dict[key]
        if merged.shape != self.delta.shape:
            error_msgs.append(f"size mismatch for {key}: {tuple(merged.shape)} vs {tuple(self.delta.shape)}")
            return
        self._merged_pending = merged.detach().to(self.delta.device, self.delta.dtype).clone()
        self._rebase()

    @torch.no_grad()
    def _rebase(self) -> None:
        if self._merged_pending is not None:
            self.delta.copy_(self._merged_pending - self.shared.weight)


class RtdHead(nn.Module):
    """The official ``LMMaskPredictionHead``: one replaced/original logit per token, from the last hidden states
    with the [CLS] state added (LayerNorm first, then dense and activation, then the classifier)."""

    def __init__(self, config: transformers.DebertaV2Config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        from transformers.activations import ACT2FN  # here: it loads transformers' model machinery

        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifer = nn.Linear(config.hidden_size, 1)  # the official spelling, so that its keys match
        for layer in (self.dense, self.classifer):
            nn.init.normal_(layer.weight, std=config.initializer_range)
            nn.init.zeros_(layer.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        states = self.LayerNorm(hidden[:, :1] + hidden)
        return self.classifer(self.transform_act_fn(self.dense(states))).squeeze(-1)


def debertav3_configs(params: ModelParams, vocab_size: int,
                      pad_token_id: int) -> dict[str, transformers.DebertaV2Config]:
    layers = round(params.number_of_layers * params.option("generator_depth"))
    return {"discriminator": deberta_config(params, vocab_size, pad_token_id),
            "generator": deberta_config(params, vocab_size, pad_token_id, layers=layers)}


def generator_from_discriminator(discriminator: transformers.DebertaV2Model,
                                 layers: int) -> transformers.DebertaV2ForMaskedLM:
    """A new generator for a discriminator continued alone: its embeddings and lower ``layers`` layers copied (the
    MLM head new). Copying gives E_generator = the discriminator's embedding, so E_delta starts at zero and the
    discriminator sees exactly its pretrained input on step one; a generator from scratch would make near-random
    replacements at first, which the pretrained discriminator detects trivially while its embeddings drift."""
    config = transformers.DebertaV2Config.from_dict({**discriminator.config.to_dict(), "num_hidden_layers": layers,
                                                     "legacy": False, "architectures": ["DebertaV2ForMaskedLM"]})
    generator = transformers.DebertaV2ForMaskedLM(config)
    state = {k: v for k, v in discriminator.state_dict().items()
             if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < layers}
    missing, unexpected = generator.deberta.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AssertionError(f"generator from discriminator: missing {missing}, unexpected {unexpected}")
    return generator


def _load_rtd_head(head: RtdHead, path: Path) -> None:
    from safetensors.torch import load_file

    state = {k[len(RTD_HEAD_PREFIX):]: v for k, v in load_file(str(path)).items() if k.startswith(RTD_HEAD_PREFIX)}
    missing, unexpected = head.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: not a DeBERTa-v3 RTD head (missing {missing[:3]}, unexpected {unexpected[:3]})")


class DebertaV3Pretraining(PretrainingModel):
    def __init__(self, params: ModelParams, spec: BuildSpec):
        super().__init__(params)
        self.seed = spec.seed
        configs = debertav3_configs(params, spec.vocab_size, spec.pad_token_id)
        if spec.pretrained_dir:
            self.discriminator = load_pretrained(transformers.DebertaV2Model, spec, params.sequence_length)
            _check_continued_attention(self.discriminator, params, spec.pretrained_dir)
            generator_dir = params.pretrained_generator or Path(spec.pretrained_dir) / "generator"
            if params.pretrained_generator or (Path(generator_dir) / "config.json").is_file():
                self.generator = load_pretrained(transformers.DebertaV2ForMaskedLM, spec, params.sequence_length,
                                                              str(generator_dir))
            else:
                self.generator = generator_from_discriminator(self.discriminator,
                                                              configs["generator"].num_hidden_layers)
                logger.info("no generator beside %s: a new %d-layer generator from its lower layers",
                            spec.pretrained_dir, self.generator.config.num_hidden_layers)
            self.rtd_head = RtdHead(self.discriminator.config)
            head_file = Path(spec.pretrained_dir) / RTD_HEAD_FILE
            if head_file.is_file():
                _load_rtd_head(self.rtd_head, head_file)
            else:
                logger.info("no %s in %s: the RTD head starts new", RTD_HEAD_FILE, spec.pretrained_dir)
            merged = self.discriminator.embeddings.word_embeddings.weight.detach().clone()
        else:
            self.discriminator = transformers.DebertaV2Model(configs["discriminator"])
            self.generator = transformers.DebertaV2ForMaskedLM(configs["generator"])
            self.rtd_head = RtdHead(configs["discriminator"])
            merged = None
        self.gdes = GdesEmbedding(self.generator.deberta.embeddings.word_embeddings)
        if merged is not None:  # continuing: E_delta = the discriminator's embedding minus the generator's
            with torch.no_grad():
                self.gdes.delta.copy_(merged - self.generator.deberta.embeddings.word_embeddings.weight)
        self.discriminator.embeddings.word_embeddings = self.gdes

    def hf_models(self):
        return {"discriminator": self.discriminator, "generator": self.generator}

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        super().save_pretrained(path)
        state = {RTD_HEAD_PREFIX + k: v.detach().contiguous().cpu() for k, v in self.rtd_head.state_dict().items()}
        save_file(state, str(Path(path) / self.family.main_part.folder / RTD_HEAD_FILE))

    def load_extra(self, path: str | Path) -> None:
        """Restore what the HF parts do not hold (the RTD head) from a dir this model saved."""
        _load_rtd_head(self.rtd_head, Path(path) / self.family.main_part.folder / RTD_HEAD_FILE)

    def resume_state(self) -> dict:
        # the model dirs hold E_generator and the merged E_generator + E_delta; merged - E_generator is E_delta only up
        # to rounding, so a resume restores E_delta itself (exact), from the training state (exports stay plain)
        return {"gdes_delta": self.gdes.delta.detach().cpu().clone()}

    def load_resume_state(self, state: dict) -> None:
        with torch.no_grad():
            self.gdes.delta.copy_(state["gdes_delta"].to(self.gdes.delta.device, self.gdes.delta.dtype))

    def token_embedding_weights(self) -> list[nn.Parameter]:
        """The frozen token embeddings are E_generator + E_delta: both tables freeze (or keep rows) together."""
        return [self.gdes.delta, self.generator.deberta.embeddings.word_embeddings.weight]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        masked = labels != -100
        hidden = self.generator.deberta(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]
        rows, targets = masked_rows(hidden, batch)
        logits = mlm_logits(self.generator, rows)
        generator_loss, generator_accuracy = masked_lm_loss(logits, targets)

        original = torch.where(masked, labels, input_ids)
        replaced = replaced_input_ids(self.seed, batch, logits.detach(), targets)
        is_replaced = (replaced != original).float()  # 1 = replaced: a sampled token equal to the original is not
        disc_hidden = self.discriminator(input_ids=replaced, attention_mask=attention_mask, return_dict=False)[0]
        disc_logits = self.rtd_head(disc_hidden)
        return {"generator_loss": generator_loss, "mlm_accuracy": generator_accuracy,
                **replaced_token_loss(disc_logits, is_replaced, attention_mask)}


def relative_attention_flops(config: transformers.DebertaV2Config, shape: BatchShape) -> int:
    """Disentangled attention beyond the content attention, per layer: the 2 x span relative embeddings projected
    once per kind (c2p by the key projection, p2c by the query projection; batch-independent), and each position's
    scores against all 2 x span relative positions per kind (computed in full, then gathered to the ones used)."""
    if not config.relative_attention:
        return 0
    span = config.position_buckets if config.position_buckets > 0 else config.max_relative_positions
    span = span if span > 0 else config.max_position_embeddings
    kinds = [k for k in config.pos_att_type if k in POS_ATT_TYPES]
    per_kind = linear(2 * span, config.hidden_size, config.hidden_size) + \
        linear(shape.positions, config.hidden_size, 2 * span)
    return config.num_hidden_layers * len(kinds) * per_kind


def debertav2_flops(model: DebertaV2Pretraining, shape: BatchShape) -> int:
    config = model.model.config
    return stack_flops(config, shape) + relative_attention_flops(config, shape) + mlm_head_flops(config, shape.masked)


def debertav3_flops(model: DebertaV3Pretraining, shape: BatchShape) -> int:
    """Generator (MLM head on the masked positions) and discriminator (the RTD head on every position)."""
    generator, discriminator = model.generator.config, model.discriminator.config
    hidden = discriminator.hidden_size
    return (sum(stack_flops(c, shape) + relative_attention_flops(c, shape) for c in (generator, discriminator))
            + mlm_head_flops(generator, shape.masked)
            + linear(shape.positions, hidden, hidden) + linear(shape.positions, hidden, 1))


def _attention_problems(model_type: str, values: dict) -> list[str]:
    problems = []
    kinds = values["pos_att_type"].split("|")
    if not kinds or any(kind not in POS_ATT_TYPES for kind in kinds) or len(set(kinds)) != len(kinds):
        problems.append(f"{model_type}.pos-att-type: expected c2p, p2c or p2c|c2p, got {values['pos_att_type']!r}")
    if values["norm_rel_ebd"] not in NORM_REL_EBD:
        problems.append(f"{model_type}.norm-rel-ebd: expected one of {', '.join(NORM_REL_EBD)}, "
                        f"got {values['norm_rel_ebd']!r}")
    return problems


def _v3_problems(model_type: str, values: dict) -> list[str]:
    layers = values["number_of_layers"] * values["generator_depth"]
    problems = _attention_problems(model_type, values)
    if layers < 1 or abs(layers - round(layers)) > 1e-9:
        problems.append(f"{model_type}.generator-depth: {values['generator_depth']:.3g} of {values['number_of_layers']}"
                        f" layers is {layers:.3g}, not a whole number of generator layers (at least 1)")
    return problems


def _read_config(directory: Path) -> dict:
    try:
        return json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _v2_pretrained_problems(params: ModelParams, pretrained: str, hf_config) -> list[str]:
    path = Path(pretrained)
    architectures = getattr(hf_config, "architectures", None) or []
    if (path / RTD_HEAD_FILE).is_file() or "DebertaV2Model" in architectures:
        return [f"pretrained_model_name_or_path {pretrained} is a DeBERTa-v3 discriminator (an encoder without a "
                f"masked-LM head), but --model_type {params.model_type} trains a DeBERTa-v2 masked LM; continue it "
                f"with a debertav3 preset, or give its generator/ (a masked LM) here"]
    return []


def _v3_pretrained_problems(params: ModelParams, pretrained: str, hf_config) -> list[str]:
    path = Path(pretrained)
    architectures = getattr(hf_config, "architectures", None) or []
    if "DebertaV2ForMaskedLM" in architectures and not (path / RTD_HEAD_FILE).is_file():
        return [f"pretrained_model_name_or_path {pretrained} is a DeBERTa-v2 masked LM, not a DeBERTa-v3 "
                f"discriminator, but --model_type {params.model_type} trains DeBERTa-v3 (RTD); continue it with a "
                f"debertav2 preset, or give a v3 discriminator dir (its generator/ beside it)"]
    generator = Path(params.pretrained_generator) if params.pretrained_generator else path / "generator"
    generator_config = _read_config(generator) if generator.is_dir() else {}
    if generator_config:
        width = generator_config.get("hidden_size")
        if width != hf_config.hidden_size or generator_config.get("vocab_size") != hf_config.vocab_size:
            return [f"the generator at {generator} (hidden size {width}, vocabulary "
                    f"{generator_config.get('vocab_size')}) does not fit the discriminator at {pretrained} (hidden "
                    f"size {hf_config.hidden_size}, vocabulary {hf_config.vocab_size}): GDES shares one embedding "
                    f"table, so both must have the same width and vocabulary"]
        if generator_config.get("num_hidden_layers", 0) > hf_config.num_hidden_layers:
            return [f"the generator at {generator} has more layers than the discriminator at {pretrained}"]
    return []


DEBERTAV2 = Family(
    name="debertav2", display="DeBERTa-v2", model=DebertaV2Pretraining, aliases=("deberta", "deberta-v2"),
    parts=(Part("model", "DebertaV2ForMaskedLM", role="masked_lm"),),
    loss_terms=(LossTerm("mlm_loss", "masked"),),
    layout="packed_sentences", collator="mlm", hf_model_types=("deberta-v2",), hf_shape=ENCODER_SHAPE,
    options=dict(ATTENTION_OPTIONS), check=_attention_problems, check_pretrained=_v2_pretrained_problems,
    forward_flops=debertav2_flops, embeddings=attr_path("deberta.embeddings"),
    layers=attr_path("deberta.encoder.layer"))

DEBERTAV3 = Family(
    name="debertav3", display="DeBERTa-v3", model=DebertaV3Pretraining, aliases=("deberta-v3",),
    parts=(Part("discriminator", "DebertaV2Model", role="base", extract_as="discriminator",
                extra_files=(RTD_HEAD_FILE,)),
           Part("generator", "DebertaV2ForMaskedLM", folder="generator", role="masked_lm", extract_as="generator")),
    loss_terms=(LossTerm("generator_loss", "masked"),
                LossTerm("discriminator_loss", "tokens", weight_option="discriminator_weight")),
    # the official prepare_data.py packs tokenized text into full-length lines; its RTD masking replaces every
    # chosen token with [MASK] (NGramMaskGenerator(keep_prob=0, mask_prob=1))
    layout="packed_sentences", collator="mlm", hf_model_types=("deberta-v2",), hf_shape=ENCODER_SHAPE,
    options={**ATTENTION_OPTIONS,
             # generator depth as a fraction of the discriminator's layers (same width, as GDES needs)
             "generator-depth": Option("generator_depth", "fraction", 0.5, shape=True),
             "discriminator-weight": Option("discriminator_weight", "pos_float", 50.0)},
    defaults={"mask_token_prob": 1.0, "random_token_prob": 0.0},
    check=_v3_problems, part_configs=debertav3_configs, check_pretrained=_v3_pretrained_problems,
    forward_flops=debertav3_flops,
    # the discriminator is a bare DebertaV2Model (its own base); its token table is GDES's (token_embedding_weights)
    embeddings=attr_path("embeddings"), layers=attr_path("encoder.layer"))
