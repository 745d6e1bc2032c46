"""The model-family registry: what the rest of the toolkit knows about a family, declared in one object.

Each family module (``bert.py``, ``electra.py``, ``gpt.py``, ...) builds one :class:`Family` and
``models/__init__.py`` registers it (one line). Everything outside ``models/`` asks the registry: the trainer
for the loss terms and their units, the data setup for the instance layout and the collator, the preset
parser for the family's own keys and defaults, the exporter for the parts and where they go. Nothing
outside ``models/`` names a family.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..data.layouts import LAYOUTS, get_layout, instance_labels
from ..errors import UserError

# what a loss term averages over; the trainer counts each from the batch (see trainer.count_units)
UNITS = ("masked", "samples", "tokens", "next_tokens")
# the Auto class an exported part must load with ("base": AutoModel, for a part whose pretraining head is not a
# transformers class, such as DeBERTa-v3's discriminator)
ROLES = ("pretraining", "masked_lm", "causal_lm", "base")
# the collators of lmpretrain.masking: masked LM (with whole-word / span masking) or causal LM (labels = inputs)
COLLATORS = ("mlm", "causal")
# the outputs of a part's forward that verifying an export compares, by role, unless the part declares its own
ROLE_OUTPUTS = {"pretraining": ("logits",), "masked_lm": ("logits",), "causal_lm": ("logits",),
                "base": ("last_hidden_state",)}


def attr_path(path: str) -> Callable:
    """A hook that reads a dotted attribute path of a module (``attr_path("bert.encoder.layer")``): where a family
    declares that its layers or embeddings live."""
    names = path.split(".")

    def read(module):
        for name in names:
            module = getattr(module, name)
        return module

    read.__qualname__ = f"attr_path({path!r})"
    return read


@dataclass(frozen=True)
class LossTerm:
    """One term of the training loss: the key of the model's output, the unit it is a mean over, its weight
    (``weight_option``: the preset option that sets it, e.g. ELECTRA's ``discriminator-weight``)."""

    name: str
    unit: str
    weight: float = 1.0
    weight_option: str | None = None
    label: str | None = None
    """The layout label the term is computed from (BERT's NSP: ``next_sentence_label``): the term is trained, and
    must be returned, exactly when the preset's layout declares that label; None: always."""


@dataclass(frozen=True)
class Part:
    """One transformers model a family trains: its key in ``PretrainingModel.hf_models()``, its class, the
    folder it is saved to inside a checkpoint and the final model dir ("" = the dir itself), the Auto class
    role it must load with, and the folder extraction writes it to (None: not extracted separately)."""

    name: str
    hf_class: str
    folder: str = ""
    role: str = "pretraining"
    extract_as: str | None = None
    extra_files: tuple[str, ...] = ()
    """Files the family writes into the part's folder beside the HF weights (a head transformers has no class
    for); extraction copies them with the part."""
    outputs: tuple[str, ...] = ()
    """The fields of the HF model's output that verifying an export compares (BertForPreTraining's
    ``prediction_logits`` and ``seq_relationship_logits``); empty: its role's (:data:`ROLE_OUTPUTS`)."""

    @property
    def compared_outputs(self) -> tuple[str, ...]:
        return self.outputs or ROLE_OUTPUTS[self.role]


@dataclass(frozen=True)
class Option:
    """A preset key only this family reads: stored in ``ModelParams.extra[field]`` (read with
    ``params.option(field)``). ``shape``: a checkpoint must agree on it to be resumed."""

    field: str
    kind: str
    default: object = None
    shape: bool = False


@dataclass(frozen=True)
class Family:
    name: str
    display: str
    """How messages name it (``ELECTRA``)."""
    model: Callable
    """The :class:`~lmpretrain.models.base.PretrainingModel` subclass (params, vocab_size=..., ...)."""
    parts: tuple[Part, ...]
    loss_terms: tuple[LossTerm, ...]
    layout: str
    collator: str
    hf_model_types: tuple[str, ...]
    """``config.model_type`` values of transformers models this family can continue from."""
    hf_shape: dict
    """ModelParams shape field -> the HF config attribute (or a function of the config) holding it."""
    aliases: tuple[str, ...] = ()
    """Further words of a preset name that name this family (``gpt2`` for ``gpt``)."""
    options: dict[str, Option] = field(default_factory=dict)
    """The family's own preset keys: JSON key -> Option."""
    defaults: dict = field(default_factory=dict)
    """Generic ModelParams fields whose default differs for this family (ELECTRA's mask-token-prob)."""
    position_offset: int = 0
    """Positions of the HF model's embedding table that no token uses (RoBERTa's padding offset)."""
    check: Callable[[str, dict], list[str]] | None = None
    """Extra preset checks on the resolved values (model_type, values) -> problems."""
    part_configs: Callable | None = None
    """(params, vocab_size, pad_token_id) -> {part name: HF config}: the sizes training builds each part with."""
    forward_flops: Callable | None = None
    """(model, :class:`~.flops.BatchShape`) -> the FLOPs of one forward pass over that micro-batch, counted from the
    built model's shapes (``flops.py`` has the pieces); None: ``flops.generic_forward_flops`` (the main part's layers
    and a vocabulary head)."""
    layout_of: Callable | None = None
    """params -> the layout a preset's options choose (BERT without next-sentence prediction: packed sentences);
    None: always ``layout``. The loss terms whose ``label`` that layout does not produce are then not trained
    (``loss_terms_for``)."""
    parts_of: Callable | None = None
    """params -> the parts a preset's options build, in place of ``parts`` (BERT continued from a ``BertForMaskedLM``:
    that class, without a next-sentence head); the same names and folders, another class or role. None: ``parts``."""
    loaded_options: Callable | None = None
    """(params, pretrained path, its HF config) -> {option field: value} for the options that models loaded from
    there fix (ELECTRA's ``generator_size`` when its generator is loaded too). Those take the loaded value (a
    preset value that contradicts it is an error; the default is replaced, with a note), and ``check``, which is
    about parts built from scratch, is skipped when the hook returns any."""
    check_pretrained: Callable | None = None
    """(params, pretrained path or name, its HF config) -> problems: structure checks on a model to continue from,
    beyond its ``model_type`` (two families may share one, as DeBERTa-v2 MLM and v3 RTD do)."""
    embeddings: Callable | None = None
    """The main part's HF model -> the module holding its input embeddings, which ``flozen-layers`` >= 0 freezes
    (e.g. ``attr_path("bert.embeddings")``); None: the family cannot freeze, and a preset asking is refused."""
    layers: Callable | None = None
    """The main part's HF model -> its layers in the order they run, the first N of which ``flozen-layers`` N
    freezes (``attr_path("bert.encoder.layer")``; a layer whose weights are shared appears once per use)."""

    @property
    def main_part(self) -> Part:
        return self.parts[0]

    @property
    def extractable(self) -> tuple[Part, ...]:
        return tuple(p for p in self.parts if p.extract_as)

    def instance_layout(self, params) -> str:
        """The layout this preset trains on (``layout``, unless an option of the family chooses another)."""
        return self.layout_of(params) if self.layout_of is not None else self.layout

    def parts_for(self, params) -> tuple[Part, ...]:
        """The parts this preset builds, trains and exports (``parts``, unless an option chooses others)."""
        return self.parts_of(params) if self.parts_of is not None else self.parts

    def loss_terms_for(self, params) -> tuple[LossTerm, ...]:
        """The terms this preset trains: every term without a label, and those whose label its layout produces."""
        labels = get_layout(self.instance_layout(params)).label_names
        return tuple(t for t in self.loss_terms if t.label is None or t.label in labels)

    def loss_weights(self, params) -> dict[str, float]:
        return {t.name: float(params.option(t.weight_option)) if t.weight_option else t.weight
                for t in self.loss_terms}

    def metric_unit(self, name: str) -> str:
        """The unit a model output is a mean over, so that the trainer can weight it into the global batch's value:
        a loss term's own unit; ``<x>_accuracy`` / ``<x>_share`` that of the term ``<x>_loss``; the generator's
        ``mlm_accuracy`` masked tokens; the discriminator's ``replaced_share`` real tokens; else samples."""
        units = {t.name: t.unit for t in self.loss_terms}
        prefix = name.rsplit("_", 1)[0]
        return units.get(name) or units.get(f"{prefix}_loss") or METRIC_UNITS.get(name, "samples")

    def shape_fields(self) -> tuple[str, ...]:
        return tuple(o.field for o in self.options.values() if o.shape)

    @property
    def can_freeze(self) -> bool:
        """Whether the family declares what ``flozen-layers`` freezes (its embeddings and layers)."""
        return self.embeddings is not None and self.layers is not None


# metrics whose name does not lead to their loss term: the unit each is a mean over
METRIC_UNITS = {"mlm_accuracy": "masked", "replaced_share": "tokens"}

_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    problems = [f"unit {t.unit!r}" for t in family.loss_terms if t.unit not in UNITS]
    problems += [f"role {p.role!r}" for p in family.parts if p.role not in ROLES]
    if family.layout not in LAYOUTS:
        problems.append(f"layout {family.layout!r}")
    problems += [f"label {t.label!r} of {t.name}" for t in family.loss_terms
                 if t.label is not None and t.label not in instance_labels()]
    if family.collator not in COLLATORS:
        problems.append(f"collator {family.collator!r}")
    if problems or family.name in _FAMILIES:
        raise AssertionError(f"family {family.name}: bad declaration ({', '.join(problems) or 'registered twice'})")
    _FAMILIES[family.name] = family
    return family


def family_names() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise UserError(f"unknown model family {name!r} (expected one of {', '.join(_FAMILIES)})") from None


def family_of(model_type: str, explicit: str | None = None) -> str | None:
    """The explicit ``model-family``, else the first word of the preset name that names a family, as the original
    tool finds it (``bert-base``, ``my-electra-small``, ``gpt2-small``); None when there is none."""
    if explicit:
        return explicit
    # an alias may span words ("deberta-v3"): at each word, the longest alias starting there wins
    names = {"-".join(_words(alias)): f.name for f in _FAMILIES.values() for alias in (f.name, *f.aliases)}
    words = _words(model_type)
    for start in range(len(words)):
        for end in range(len(words), start, -1):
            name = names.get("-".join(words[start:end]))
            if name:
                return name
    return None


def _words(name: str) -> list[str]:
    return re.split(r"[-_.]", name.lower())


def family_of_hf_model_type(model_type: str | None) -> Family | None:
    """The family that trains transformers models of this ``config.model_type`` (None: none does)."""
    for family in _FAMILIES.values():
        if model_type in family.hf_model_types:
            return family
    return None


def usable_positions(config) -> int:
    """How many tokens a transformers model config takes (RoBERTa's first positions belong to padding)."""
    positions = getattr(config, "n_positions", None) or config.max_position_embeddings
    family = family_of_hf_model_type(config.model_type)
    return positions - (family.position_offset if family else 0)
