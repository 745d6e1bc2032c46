"""parameter.json: model presets keyed by ``--model_type``, validated once into :class:`ModelParams`.

Keys are the original tool's (``number-of-layers``, ``hidden-size``, ``batch-size``, ...) plus optional
ones with defaults. Every problem in a preset is collected and reported together, each naming
``<file>: <model_type>.<key>``; an unknown key suggests the closest valid one.

This module knows no model family: the keys every family shares are here; a family's own keys, defaults and
checks come from its declaration in the registry (``lmpretrain.models``), which finds a preset's family and
calls :func:`parse_preset` with them (``lmpretrain.models.presets``).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from .errors import UserError
from .strict_json import DuplicateKey, loads_strict


@dataclass(frozen=True)
class ModelParams:
    """One resolved preset. Field names carry units and scope; the JSON key is in each field's metadata."""

    model_type: str
    family: str
    warmup_steps: int
    """``warmup-steps``; 0 when the preset gives ``warmup-ratio`` instead (then the run description's
    ``OptimSettings.warmup_steps`` decides)."""
    learning_rate: float
    node_batch_sizes: dict[int, int]
    """``batch-size``: node rank -> that node's batch per optimizer step; -1 is the size for unlisted nodes."""
    train_steps: int | None = None
    """``train-steps``; exactly one of train-steps, train-epochs and train-tokens is given (the run resolves the
    other two to steps: ``OptimSettings.train_steps``)."""
    warmup_ratio: float | None = None
    """``warmup-ratio``: warmup over this share of the resolved train steps (rounded up), instead of warmup-steps."""
    train_epochs: float | None = None
    """``train-epochs``: passes over the training instances (a fraction allowed), instead of train-steps."""
    train_tokens: int | None = None
    """``train-tokens`` (Megatron's name): a budget of steps x global batch x sequence-length tokens."""
    lr_schedule: str = "linear"
    """``lr-schedule``: "linear" (warmup, then linear decay) or "cosine" (warmup, then half a cosine)."""
    min_lr_ratio: float = 0.0
    """``min-lr-ratio``: the decay ends at this share of learning-rate (Megatron's min-lr / lr), 0 by default."""
    number_of_layers: int | None = None
    """None only before :func:`resolve_pretrained_shape` fills it from a pretrained model."""
    hidden_size: int | None = None
    sequence_length: int | None = None
    ffn_inner_hidden_size: int | None = None
    attention_heads: int | None = None
    save_steps: int = 50000
    """The original's default when a preset has no ``save-steps``."""
    logging_steps: int = 5000
    """The original's default when a preset has no ``logging-steps``."""
    eval_steps: int | None = None
    mlm_probability: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    whole_word_mask: bool = False
    span_masking: bool = False
    short_seq_prob: float = 0.1
    nsp_probability: float = 0.5
    eval_share: float = 0.02
    """Share of documents held out for evaluation when no --eval_file is given."""
    save_total_limit: int | None = 5
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-6
    adam_betas: tuple[float, float] = (0.9, 0.999)
    dropout: float = 0.1
    attention_dropout: float = 0.1
    max_position_embeddings: int | None = None
    pretrained_model_name_or_path: str | None = None
    """Continue pretraining from this model (a local HF dir, or a hub name where the hub is reachable); for
    family with sub-models (ELECTRA) the main one, with the others in their folders unless given separately."""
    pretrained_generator: str | None = None
    """The generator to continue from (the original's ``pretrained_generator_model_name_or_path``)."""
    frozen_layers: int = -1
    """The original's ``flozen-layers``: -1 trains everything; N >= 0 freezes the embeddings and the first N
    layers of the pretrained model (0: the embeddings only)."""
    resize_embeddings: bool = False
    freeze_new_rows: bool = False
    new_token_init: str = "mean"
    """``new-token-init``: a token new to a continued model starts at the mean embedding ("mean", the best step-0
    eval loss measured, see BENCHMARKS.md) or at the mean of its pieces' rows ("pieces")."""
    """With ``flozen-layers`` and a tokenizer other than the model's: freeze the embedding rows vocabulary
    adaptation composed or initialised too (by default only the rows kept from the model are frozen)."""
    initializer_range: float = 0.02
    fp16_type: int = 0
    """The newest original's ``fp16-type`` in a preset (0-3, as --fp16_type, which overrides it when given)."""
    bf16: bool = False
    """The newest original's ``bf16`` in a preset (--bf16 turns it on too)."""
    fsdp: str | None = None
    """``fsdp``: shard with FSDP2 (no_shard, shard_grad_op, full_shard, hybrid_shard; --fsdp overrides it); None:
    DDP."""
    gradient_checkpointing: bool = False
    """``gradient-checkpointing``: recompute each block's activations in the backward (--gradient_checkpointing)."""
    extra: dict = field(default_factory=dict)
    """The family's own options (its registry declaration names them), with their defaults filled in."""

    def option(self, name: str):
        """A family option (``params.option("generator_size")``); a KeyError names an option the family lacks."""
        try:
            return self.extra[name]
        except KeyError:
            raise KeyError(f"{self.model_type}: the {self.family} family has no option {name!r}") from None

    def to_dict(self) -> dict:
        """Flat, JSON-ready: family options sit beside the shared fields (as checkpoints have always stored them)."""
        data = asdict(self)
        data.update(data.pop("extra"))
        data["node_batch_sizes"] = {str(k): v for k, v in self.node_batch_sizes.items()}
        data["adam_betas"] = list(self.adam_betas)
        return data


# JSON key -> (field name, kind); kinds are checked and converted by _convert
KEYS = {
    "model-family": ("family", "str"),
    "number-of-layers": ("number_of_layers", "pos_int"),
    "hidden-size": ("hidden_size", "pos_int"),
    "sequence-length": ("sequence_length", "pos_int"),
    "ffn-inner-hidden-size": ("ffn_inner_hidden_size", "pos_int"),
    "attention-heads": ("attention_heads", "pos_int"),
    "warmup-steps": ("warmup_steps", "nonneg_int"),
    "warmup-ratio": ("warmup_ratio", "share"),
    "learning-rate": ("learning_rate", "pos_float"),
    "batch-size": ("node_batch_sizes", "batch"),
    "train-steps": ("train_steps", "pos_int"),
    "train-epochs": ("train_epochs", "pos_float"),
    "train-tokens": ("train_tokens", "count"),
    "lr-schedule": ("lr_schedule", "schedule"),
    "min-lr-ratio": ("min_lr_ratio", "probability"),
    "save-steps": ("save_steps", "pos_int"),
    "logging-steps": ("logging_steps", "pos_int"),
    "eval-steps": ("eval_steps", "pos_int"),
    "mask-percent": ("mlm_probability", "percent"),
    "mlm-probability": ("mlm_probability", "probability"),
    "mask-token-prob": ("mask_token_prob", "probability"),
    "random-token-prob": ("random_token_prob", "probability"),
    "whole-word-mask": ("whole_word_mask", "bool"),
    "span-masking": ("span_masking", "bool"),
    "short-seq-prob": ("short_seq_prob", "probability"),
    "nsp-probability": ("nsp_probability", "probability"),
    "eval-share": ("eval_share", "share"),
    "save-total-limit": ("save_total_limit", "pos_int"),
    "gradient-accumulation-steps": ("gradient_accumulation_steps", "pos_int"),
    "accumulation-steps": ("gradient_accumulation_steps", "pos_int"),  # the original's spelling
    "max-grad-norm": ("max_grad_norm", "pos_float"),
    "weight-decay": ("weight_decay", "nonneg_float"),
    "adam-epsilon": ("adam_epsilon", "pos_float"),
    "adam-betas": ("adam_betas", "betas"),
    "dropout": ("dropout", "probability"),
    "attention-dropout": ("attention_dropout", "probability"),
    "max-position-embeddings": ("max_position_embeddings", "pos_int"),
    "pretrained_model_name_or_path": ("pretrained_model_name_or_path", "str"),
    "pretrained_discriminator_model_name_or_path": ("pretrained_model_name_or_path", "str"),
    "pretrained_generator_model_name_or_path": ("pretrained_generator", "str"),
    "flozen-layers": ("frozen_layers", "layers"),
    "frozen-layers": ("frozen_layers", "layers"),
    "resize-embeddings": ("resize_embeddings", "bool"),
    "freeze-new-rows": ("freeze_new_rows", "bool"),
    "new-token-init": ("new_token_init", "token_init"),
    "initializer-range": ("initializer_range", "pos_float"),
    "fp16-type": ("fp16_type", "fp16_level"),  # the newest original puts these in every preset
    "bf16": ("bf16", "bool"),
    "fsdp": ("fsdp", "fsdp_mode"),
    "gradient-checkpointing": ("gradient_checkpointing", "bool"),
}
REQUIRED_KEYS = ("learning-rate", "batch-size")
BUDGET_KEYS = ("train-steps", "train-epochs", "train-tokens")
"""How long a run trains: exactly one of them (the flags --train_steps / --train_epochs / --train_tokens override)."""
LR_SCHEDULES = ("linear", "cosine")
FSDP_MODES = ("no_shard", "shard_grad_op", "full_shard", "hybrid_shard")
"""The preset's ``fsdp`` / --fsdp: transformers' names of the sharding strategies (:mod:`lmpretrain.sharding`)."""
SHAPE_KEYS = ("number-of-layers", "hidden-size", "sequence-length", "ffn-inner-hidden-size", "attention-heads")
"""Required unless the preset continues from a pretrained model, whose config then supplies them."""
FIELD_KEYS = {name: key for key, (name, _) in KEYS.items() if key in SHAPE_KEYS}


def _convert(kind: str, value):
    """Return the converted value, or raise ValueError with what was expected."""
    number = (int, float)
    if kind == "fsdp_mode":
        if value not in FSDP_MODES:
            raise ValueError(f"expected one of {', '.join(map(repr, FSDP_MODES))}, got {value!r}")
        return value
    if kind == "token_init":
        if value not in ("mean", "pieces"):
            raise ValueError(f'expected "mean" or "pieces", got {value!r}')
        return value
    if kind == "schedule":
        if value not in LR_SCHEDULES:
            raise ValueError(f"expected one of {', '.join(map(repr, LR_SCHEDULES))}, got {value!r}")
        return value
    if kind == "count":  # a positive integer; 1e9 (a JSON float) is accepted where it is whole
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return _convert("pos_int", value)
    if kind == "fp16_level":
        if isinstance(value, bool) or value not in (0, 1, 2, 3):
            raise ValueError(f"expected 0 (fp32), 1, 2 or 3 (the Apex levels O1-O3), got {value!r}")
        return value
    if kind == "layers":
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ValueError(f"expected -1 (train every layer) or a number of layers to freeze, got {value!r}")
        return value
    if kind in ("pos_int", "nonneg_int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        if value < (1 if kind == "pos_int" else 0):
            raise ValueError(f"must be {'positive' if kind == 'pos_int' else 'zero or more'}, got {value}")
        return value
    if kind in ("pos_float", "nonneg_float", "probability", "share", "percent"):
        if isinstance(value, bool) or not isinstance(value, number):
            raise ValueError(f"expected a number, got {value!r}")
        value = float(value)
        if kind == "percent":
            if not 0 < value <= 100:
                raise ValueError(f"expected a percentage in (0, 100], got {value}")
            return value / 100
        if kind == "pos_float" and value <= 0 or kind == "nonneg_float" and value < 0:
            raise ValueError(f"must be {'positive' if kind == 'pos_float' else 'zero or more'}, got {value}")
        if kind == "probability" and not 0 <= value <= 1:
            raise ValueError(f"expected a value in [0, 1], got {value}")
        if kind == "share" and not 0 <= value < 1:
            raise ValueError(f"expected a share in [0, 1), got {value:g}: 1 would leave nothing for the rest "
                             f"(eval-share: no documents to train on; warmup-ratio: no steps after warmup)")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a non-empty string, got {value!r}")
        return value
    if kind == "fraction":
        try:
            fraction = float(Fraction(value)) if isinstance(value, str) else float(value)
        except (ValueError, ZeroDivisionError, TypeError):
            raise ValueError(f'expected a fraction like "1/4", got {value!r}') from None
        if not 0 < fraction <= 1:
            raise ValueError(f"expected a fraction in (0, 1], got {value!r}")
        return fraction
    if kind == "betas":
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(b, number) and 0 <= b < 1
                                                                        for b in value)):
            raise ValueError(f"expected two numbers in [0, 1), got {value!r}")
        return (float(value[0]), float(value[1]))
    if kind == "batch":
        if not isinstance(value, dict) or not value:
            raise ValueError(f'expected an object mapping node rank to batch size, like {{"-1": 128}}, got {value!r}')
        sizes = {}
        for node, size in value.items():
            try:
                rank = int(node)
            except ValueError:
                raise ValueError(f"node rank {node!r} is not an integer") from None
            if rank < -1:
                raise ValueError(f"node rank {node!r} must be -1 or a node rank (0, 1, ...)")
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"node {node!r}: batch size must be a positive integer, got {size!r}")
            sizes[rank] = size
        return sizes
    raise AssertionError(kind)


def parse_preset(model_type: str, preset: dict, where: str, *, family: str | None, options: dict | None = None,
                 defaults: dict | None = None, check=None, family_problem: str | None = None,
                 continued: bool = False) -> ModelParams:
    """Validate one preset of ``family``; every problem is collected into one UserError.

    ``options`` (JSON key -> an object with ``field``, ``kind``, ``default``), ``defaults`` (field -> value) and
    ``check`` ((model_type, values) -> problems) are the family's declarations; ``family_problem`` says why no
    family was found (then only the shared keys are checked)."""
    options = options or {}
    problems: list[str] = [f"{model_type}.model-family: {family_problem}"] if family_problem else []
    values: dict = {}
    extra = {option.field: option.default for option in options.values()}
    if not isinstance(preset, dict):
        raise UserError(f"{where}: {model_type}: expected an object of keys, got {type(preset).__name__}")
    for key, raw in preset.items():
        if key in options:
            try:
                extra[options[key].field] = _convert(options[key].kind, raw)
            except ValueError as error:
                problems.append(f"{model_type}.{key}: {error}")
            continue
        if key not in KEYS:
            close = difflib.get_close_matches(key, [*KEYS, *options], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{model_type}.{key}: unknown key{hint}")
            continue
        name, kind = KEYS[key]
        try:
            values[name] = _convert(kind, raw)
        except ValueError as error:
            problems.append(f"{model_type}.{key}: {error}")
    # continuing (the preset's key or the command line's): the shape comes from the model, and what depends on
    # it is checked once it is known (resolve_pretrained_shape)
    continued = continued or "pretrained_model_name_or_path" in values
    for key in REQUIRED_KEYS + (() if continued else SHAPE_KEYS):
        if key not in preset:
            problems.append(f"{model_type}.{key}: missing")
    budget = [key for key in BUDGET_KEYS if key in preset]
    if not budget:
        problems.append(f"{model_type}.train-steps: missing (or give train-epochs or train-tokens instead)")
    elif len(budget) > 1:
        problems.append(f"{model_type}.{budget[0]}: given together with {', '.join(budget[1:])}; exactly one of "
                        f"{', '.join(BUDGET_KEYS)} decides how long the run trains")
    if "warmup-steps" in preset and "warmup-ratio" in preset:
        problems.append(f"{model_type}.warmup-steps: given together with warmup-ratio; give one of them")
    elif "warmup-steps" not in preset and "warmup-ratio" not in preset:
        problems.append(f"{model_type}.warmup-steps: missing (or give warmup-ratio instead)")
    elif "warmup-ratio" in preset:
        values["warmup_steps"] = 0
    spellings: dict[str, list[str]] = {}
    for key in preset:
        if key in KEYS:
            spellings.setdefault(KEYS[key][0], []).append(key)
    for keys in spellings.values():
        if len(keys) > 1:
            problems.append(f"{model_type}.{keys[0]}: given together with another spelling of the same setting "
                            f"({', '.join(keys[1:])})")
    if "pretrained_generator" in values and not continued:
        problems.append(f"{model_type}.pretrained_generator_model_name_or_path: needs "
                        "pretrained_discriminator_model_name_or_path as well")
    for name, value in (defaults or {}).items():
        values.setdefault(name, value)
    if values.get("mask_token_prob", 0.8) + values.get("random_token_prob", 0.1) > 1 + 1e-9:
        problems.append(f"{model_type}.mask-token-prob: mask-token-prob + random-token-prob exceed 1")
    if not problems and not continued and all(KEYS[key][0] in values for key in SHAPE_KEYS):
        problems.extend(shape_problems(model_type, {**values, **extra}, check))
    if problems:
        raise UserError(f"{where}: " + f"\n{where}: ".join(problems))
    values["family"] = family
    return ModelParams(model_type=model_type, extra=extra, **values)


def shape_problems(model_type: str, values: dict, check=None) -> list[str]:
    """Checks that need the architecture keys (from the preset, or resolved from a pretrained model); ``check``
    is the family's own."""
    problems = []
    if values["hidden_size"] % values["attention_heads"]:
        problems.append(f"{model_type}.hidden-size: {values['hidden_size']} is not divisible by "
                        f"attention-heads {values['attention_heads']}")
    if check is not None:
        problems.extend(check(model_type, values))
    if values.get("frozen_layers", -1) > values["number_of_layers"]:
        problems.append(f"{model_type}.flozen-layers: {values['frozen_layers']} is more than number-of-layers "
                        f"{values['number_of_layers']}")
    positions = values.get("max_position_embeddings")
    if positions is not None and values["sequence_length"] > positions:
        problems.append(f"{model_type}.sequence-length: {values['sequence_length']} is above "
                        f"max-position-embeddings {positions}")
    return problems


def read_preset(path: str | Path, model_type: str) -> dict:
    """The raw preset ``model_type`` of parameter.json; any problem with the file is one UserError naming it."""
    data = read_presets(path)
    if model_type not in data:
        close = difflib.get_close_matches(model_type, data, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"--model_type {model_type!r} is not in {path}{hint}; available: {', '.join(sorted(data))}")
    return data[model_type]


DEFAULT_PARAMETER_FILE = "parameter.json"
INSTALLED_PARAMETER_FILE = Path(__file__).parent / "scripts" / DEFAULT_PARAMETER_FILE
"""The presets installed with the scripts by ``pip install .`` (pyproject.toml); absent in a checkout."""


def preset_file(path: str | Path) -> str:
    """``--parameter_file`` as given; the default (``parameter.json``), when the working directory has none, is the
    one installed with lmpretrain, so that an installed command finds its presets from any directory (a checkout
    has no installed copy: the default stays the working directory's file)."""
    if str(path) == DEFAULT_PARAMETER_FILE and not Path(path).exists() and INSTALLED_PARAMETER_FILE.is_file():
        return str(INSTALLED_PARAMETER_FILE)
    return str(path)


def read_presets(path: str | Path) -> dict:
    """Every raw preset of parameter.json, by name, in the file's order; any problem with the file is one
    UserError naming it."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--parameter_file {path} is a directory, not a JSON file")
    if not path.is_file():
        raise UserError(f"--parameter_file {path} does not exist")
    try:
        data = loads_strict(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    except DuplicateKey as error:
        what = f"key {'.'.join((*error.path, error.key))}" if error.path else f"preset {error.key!r}"
        raise UserError(f"{path}:{error.line}: {what} is given twice (JSON would silently keep the last one); "
                        f"remove one") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}:{error.colno}: invalid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of presets")
    return data
