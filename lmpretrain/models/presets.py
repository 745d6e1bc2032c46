"""From a parameter.json preset to :class:`~lmpretrain.config.ModelParams`: the preset's family is found here
(an explicit ``model-family`` key, or the preset name as the original tool does), and its declaration supplies
the family's own keys, defaults and checks.

A preset that continues pretraining (``pretrained_model_name_or_path``, or for a family with sub-models
``pretrained_discriminator_model_name_or_path`` / ``pretrained_generator_model_name_or_path``) may leave out
the architecture keys, as the original's ``bert-small-further`` does: :func:`resolve_pretrained_shape` takes
them from the model's config, and any that are given must agree with it.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from .. import config
from ..config import ModelParams
from ..errors import UserError
from ..log import get_logger
from .registry import _FAMILIES, family_names, family_of, get_family, usable_positions

logger = get_logger(__name__)


def parse_preset(model_type: str, preset: dict, where: str, *, continued: bool = False) -> ModelParams:
    """Validate one preset (its family found by :func:`family_of`); every problem is one UserError."""
    explicit = preset.get("model-family") if isinstance(preset, dict) else None
    problem = None
    if explicit is not None and explicit not in _FAMILIES:
        problem = f"expected one of {', '.join(family_names())}, got {explicit!r}"
    name = None if problem else family_of(model_type, explicit)
    if name is None and problem is None:
        problem = f"missing, and the preset name does not start with one of {', '.join(family_names())}"
    if name is None:
        return config.parse_preset(model_type, preset, where, family=None, family_problem=problem)
    family = get_family(name)
    params = config.parse_preset(model_type, preset, where, family=name, options=family.options,
                                 defaults=family.defaults, check=family.check, continued=continued)
    if params.frozen_layers >= 0 and not family.can_freeze:
        raise UserError(f"{where}: {model_type}.flozen-layers: the {family.display} family does not declare where "
                        "its embeddings and layers are (Family.embeddings / Family.layers), so it cannot freeze "
                        "them; leave flozen-layers out")
    if family.collator == "causal":  # masking keys mean nothing to a causal LM: say so rather than ignore them
        given = [key for key in ("whole-word-mask", "span-masking") if preset.get(key)]
        if given:
            raise UserError(f"{where}: {model_type}.{given[0]}: applies to masked LMs, not to the {family.display} "
                            f"causal LM family")
    return params


def load_parameters(path: str | Path, model_type: str, *, continued: bool = False) -> ModelParams:
    """Load ``model_type`` from parameter.json; any problem is one UserError naming the file and key. ``continued``:
    the command line gives a model to continue from, so the architecture keys may come from it."""
    return parse_preset(model_type, config.read_preset(path, model_type), str(path), continued=continued)


def resolve_pretrained_shape(params: ModelParams, pretrained: str | None,
                             preset_keys: set[str] | None = None, source: str | None = None) -> ModelParams:
    """Fill the architecture fields a continued-pretraining preset left out from the pretrained model's config,
    and check the ones it gave against it. Without a pretrained model, only checks ``flozen-layers``. ``preset_keys``:
    the preset's keys (None: a family option counts as given where it differs from its default). ``source``: the
    parameter file, named before each problem of a preset key (``<file>: <model_type>.<key>: ...``)."""
    where = f"{source}: {params.model_type}" if source else params.model_type
    if pretrained is None:
        if params.frozen_layers >= 0:
            raise UserError(f"{where}.flozen-layers: freezing layers needs a pretrained model to continue from "
                            "(pretrained_model_name_or_path in the preset, or --pretrained_model_name_or_path)")
        return params
    from transformers import AutoConfig

    family = get_family(params.family)
    try:
        hf_config = AutoConfig.from_pretrained(pretrained)
    except (OSError, ValueError) as error:
        raise UserError(f"pretrained_model_name_or_path {pretrained}: cannot read its config.json ({error})") from None
    if hf_config.model_type not in family.hf_model_types:
        raise UserError(f"pretrained_model_name_or_path {pretrained} is a {hf_config.model_type!r} model, but "
                        f"--model_type {params.model_type} trains the {params.family} family")
    if family.check_pretrained is not None:
        structure = family.check_pretrained(params, pretrained, hf_config)
        if structure:
            raise UserError("; ".join(structure))
    positions = usable_positions(hf_config)
    from_model = {name: attr(hf_config) if callable(attr) else getattr(hf_config, attr)
                  for name, attr in family.hf_shape.items()}
    problems, values, extra = [], {}, dict(params.extra)
    for name, model_value in from_model.items():
        given = getattr(params, name) if hasattr(params, name) else extra.get(name)
        if not hasattr(params, name) and given is not None:  # a family option: its default is for a new model
            key, option = next((k, o) for k, o in family.options.items() if o.field == name)
            if not (key in preset_keys if preset_keys is not None else given != option.default):
                given = None  # ALBERT's embedding-size 128 when the model continued from has another
        if given is None:
            if hasattr(params, name):
                values[name] = model_value
            else:
                extra[name] = model_value
        elif given != model_value:
            key = config.FIELD_KEYS.get(name) or next(k for k, o in family.options.items() if o.field == name)
            problems.append(f"{where}.{key}: {given} in the preset but {model_value} in {pretrained}")
    if params.sequence_length is None:
        values["sequence_length"] = min(positions, 512)
    elif params.sequence_length > positions:
        problems.append(f"{where}.sequence-length: {params.sequence_length} is above the {positions} positions of "
                        f"{pretrained}")
    loaded = family.loaded_options(params, pretrained, hf_config) if family.loaded_options else {}
    for name, model_value in loaded.items():
        key, option = next((k, o) for k, o in family.options.items() if o.field == name)
        preset_value = extra.get(name)
        explicit = key in preset_keys if preset_keys is not None else preset_value != option.default
        if explicit and preset_value is not None and preset_value != model_value and \
                abs(float(preset_value) - float(model_value)) > 1e-6:
            problems.append(f"{where}.{key}: {preset_value:g} in the preset but {model_value:g} in the models "
                            f"loaded from {pretrained} (leave it out: it is taken from them)")
        elif not explicit and preset_value != model_value and option.default is not None:
            logger.info("%s.%s: %g, taken from the models loaded from %s (the preset's default %s is for a part "
                        "built from scratch)", params.model_type, key, model_value, pretrained, option.default)
        extra[name] = model_value
    merged = {**asdict(params), **values, **extra}
    if not problems:
        problems = config.shape_problems(where, merged, None if loaded else family.check)
    if problems:
        raise UserError("; ".join(problems))
    return replace(params, extra=extra, **values)
