"""``run_pretraining.py --list_presets``: every preset of a parameter file, one line each (name, family, shape,
parameter count, budget), without a corpus, a tokenizer or an output dir.

The parameter count is exact: each preset's model is built on the meta device (shapes only, no memory, no
initialisation), at a stated vocabulary size, since the tokenizer that decides it is not given."""

from __future__ import annotations

import argparse

from .config import preset_file, read_presets
from .errors import UserError

DEFAULT_VOCAB = 32768
"""train_tokenizer.py's default --vocab_size: the count's vocabulary when none is given."""


def listing_requested(parser: argparse.ArgumentParser, argv) -> argparse.Namespace | None:
    """The parsed flags when ``--list_presets`` is given (the flags a run requires are then optional, and any other
    flag is still checked); None otherwise, so that the run's own parse reports a missing flag (or prints --help)
    as argparse always has."""
    gate = argparse.ArgumentParser(add_help=False)
    gate.add_argument("--list_presets", action="store_true")
    if not gate.parse_known_args(argv)[0].list_presets:
        return None
    required = [action for action in parser._actions if action.required]
    saved = [(action.default, action.required) for action in required]
    try:
        for action in required:  # optional here, and with no default for --help to show
            action.required, action.default = False, argparse.SUPPRESS
        return parser.parse_args(argv)
    finally:
        for action, (default, was_required) in zip(required, saved):
            action.default, action.required = default, was_required


def _count(number: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if number >= size:
            return f"{number / size:.1f}{unit}"
    return str(number)


def _budget(params) -> str:
    if params.train_steps is not None:
        return f"{params.train_steps:,} steps"
    if params.train_epochs is not None:
        return f"{params.train_epochs:g} epochs"
    return f"{params.train_tokens:,} tokens"


def parameter_counts(params, vocab_size: int) -> tuple[int, int]:
    """(the main part's parameters, every trained part's), shared weights once, from a model built on the meta
    device."""
    import torch

    from .models import get_family
    from .models.base import BuildSpec

    spec = BuildSpec(vocab_size=vocab_size, pad_token_id=0, eos_token_id=vocab_size - 1, cls_token_id=1)
    with torch.device("meta"):
        model = get_family(params.family).model(params, spec)
    main = model.hf_models()[get_family(params.family).main_part.name]
    return sum(p.numel() for p in main.parameters()), sum(p.numel() for p in model.parameters())


def preset_line(name: str, raw: dict, source: str, vocab_size: int) -> str:
    """One preset's line; a preset with a problem gets its first problem instead of the figures."""
    from .models import parse_preset

    try:
        params = parse_preset(name, raw, source)
    except UserError as error:
        first = str(error).splitlines()[0].removeprefix(f"{source}: ")
        return f"{name:<24} error: {first}"
    budget = _budget(params)
    if params.pretrained_model_name_or_path is not None and params.number_of_layers is None:
        return (f"{name:<24} {params.family:<11} continues {params.pretrained_model_name_or_path} (its shape and "
                f"parameters)  {budget}")
    shape = (f"{params.number_of_layers} x {params.hidden_size}, {params.attention_heads} heads, "
             f"seq {params.sequence_length}")
    try:
        main, total = parameter_counts(params, vocab_size)
    except (UserError, ValueError, TypeError, RuntimeError) as error:  # a shape the family's classes refuse
        return f"{name:<24} error: the {params.family} model cannot be built: {str(error).splitlines()[0]}"
    count = _count(main) + (f" (all parts {_count(total)})" if total != main else "")
    return f"{name:<24} {params.family:<11} {shape:<30} {count:<22} {budget}"


def list_presets(parameter_file: str, vocab_size: int = DEFAULT_VOCAB) -> str:
    """The listing's text: a header, then one line per preset in the file's order."""
    parameter_file = preset_file(parameter_file)
    presets = read_presets(parameter_file)
    lines = [f"{parameter_file}: {len(presets)} presets; parameters counted at a vocabulary of {vocab_size:,} "
             f"tokens (the tokenizer decides it)",
             f"{'preset':<24} {'family':<11} {'layers x hidden, heads, seq':<30} {'parameters':<22} budget"]
    lines += [preset_line(name, raw, parameter_file, vocab_size) for name, raw in presets.items()]
    return "\n".join(lines)

