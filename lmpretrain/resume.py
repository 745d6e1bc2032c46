"""What ``--do_continue`` resumes: the config saved with a checkpoint against this run's, compared before any long
work. Every difference is printed, then judged by its class:

- **continues** (takes effect from the resume step on, and is logged): the schedule (``learning-rate``,
  ``warmup-steps`` / ``warmup-ratio``, ``lr-schedule``, ``min-lr-ratio``, the budget ``train-steps`` /
  ``train-epochs`` / ``train-tokens`` and the train steps it resolves to), optimizer settings, dropout,
  accumulation, precision, logging/eval/save steps, eval data of an ``--eval_file``;
- **breaks** (one error: the checkpoint cannot be this run's): the tokenizer, the model family and shape,
  ``sequence-length``, position embeddings, frozen layers;
- **different run** (refused unless ``--accept_changed_run``, then logged): the seed, the global batch size, the
  corpus content, masking and instance options, the eval split (its share, and how it is drawn: a run resumed from
  a checkpoint keeps the split version it recorded, 1 for records written before there was one).

Machine-dependent values (paths, ``--num_workers``, ``--dataloader_workers``, ``--cache_dir``, ``--device``, ranks,
``--compile``) are not differences: the corpus and tokenizer are compared by content, not by path; a corpus file
renamed or moved with the same bytes is **noted** (printed and recorded, nothing refused).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .config import KEYS
from .data.instances import EVAL_SPLIT_DOCUMENTS
from .errors import UserError
from .log import get_logger

logger = get_logger(__name__)

CONTINUES, BREAKS, DIFFERENT, NOTED = "continues", "breaks", "different run", "noted"
HELD_OUT = "<a held-out share of the corpus>"

_PRESET_KEY = {field: key for key, (field, _) in KEYS.items()}
_BREAKS = {"family", "number_of_layers", "hidden_size", "ffn_inner_hidden_size", "attention_heads",
           "sequence_length", "max_position_embeddings", "frozen_layers"}
_CONTINUES = {"warmup_steps", "warmup_ratio", "learning_rate", "save_steps", "logging_steps",
              "save_total_limit", "gradient_accumulation_steps", "max_grad_norm", "weight_decay", "adam_epsilon",
              "adam_betas", "dropout", "attention_dropout", "fsdp"}
# settled elsewhere (resolved.*, the global batch) or without effect on a resumed run (its weights are the checkpoint's)
_NOT_COMPARED = {"model_type", "pretrained_model_name_or_path", "pretrained_generator", "resize_embeddings",
                 "initializer_range", "train_steps", "train_epochs", "train_tokens",
                 "lr_schedule", "min_lr_ratio", "eval_steps", "whole_word_mask", "node_batch_sizes",
                 "gradient_checkpointing"}  # memory against compute: the same steps
_RESOLVED_NEWER = {"train budget": "budget", "lr schedule": "lr_schedule", "min lr ratio": "min_lr_ratio"}
_DATA_KEYS = {"corpus": "corpus", "eval data": "eval"}  # view name -> key of the saved config's "data"
_ARGS_CONTINUE = ("fp16_type", "bf16", "max_eval_samples", "max_nonfinite_steps")


@dataclass(frozen=True)
class Change:
    name: str
    old: object
    new: object
    kind: str

    def __str__(self) -> str:
        if self.name == "tokenizer":
            return (f"the tokenizer differs (fingerprint {str(self.old)[:12]} -> {str(self.new)[:12]}: another "
                    f"vocabulary or settings)")
        return f"{self.name} {_show(self.old)} -> {_show(self.new)}"


def _show(value) -> str:
    return value if isinstance(value, str) and value.startswith("<") else json.dumps(value, default=str)


def _files(entries) -> str | None:
    """A corpus fingerprint (path, size, sha256 per file) as the content alone: a file renamed or moved with the same
    bytes is the same corpus (its paths are noted apart, see ``_paths``)."""
    if entries is None:
        return None
    return "<" + ", ".join(f"sha256 {e['sha256'][:12]}" for e in entries) + ">"


def _paths(entries) -> str | None:
    return None if entries is None else "<" + ", ".join(str(e["path"]) for e in entries) + ">"


def _named(entries) -> str | None:
    """The files as shown when their content changed: names beside the hashes."""
    return None if entries is None else "<" + ", ".join(f"{Path(e['path']).name} sha256 {e['sha256'][:12]}"
                                                        for e in entries) + ">"


def _flat(config: dict) -> tuple[dict, dict]:
    """(the preset's fields, the run's compared settings by name) of a saved record: a run description's
    (``format`` 2) or the flat ``params``/``args``/``resolved`` record of checkpoints written before it. A setting
    a record lacks (older versions saved fewer) is left out."""
    if "format" in config:
        model, optim, data = config.get("model", {}), config.get("optim", {}), config.get("data", {})
        outputs, system, prints = config.get("outputs", {}), config.get("system", {}), config.get("fingerprints", {})
        sources = {"seed": (data, "seed"), "fp16_type": (optim, "fp16_type"), "bf16": (optim, "bf16"),
                   "max_eval_samples": (data, "max_eval_samples"),
                   "max_nonfinite_steps": (optim, "max_nonfinite_steps"), "eval_file": (data, "eval_files"),
                   "train_steps": (optim, "train_steps"), "budget": (optim, "budget"),
                   "lr_schedule": (optim, "lr_schedule"), "min_lr_ratio": (optim, "min_lr_ratio"),
                   "eval_steps": (outputs, "eval_steps"), "whole_word_mask": (data, "whole_word_mask"),
                   "run_name": (outputs, "run_name"), "global_batch_size": (system, "global_batch_size"),
                   "tokenizer_fingerprint": (prints, "tokenizer")}
        settings = {name: group[key] for name, (group, key) in sources.items() if key in group}
        settings["eval_split"] = data.get("eval_split", EVAL_SPLIT_DOCUMENTS)  # recorded from version 2 on
        settings["instance_version"] = data.get("instance_version", 1)  # recorded from layout version 2 on
        if "corpus" in prints:
            settings["data"] = {"corpus": prints["corpus"], "eval": prints.get("eval")}
        return model.get("params", {}), settings
    args, resolved = config.get("args", {}), config.get("resolved", {})
    settings = {name: args[name] for name in ("seed", "eval_file", "max_eval_samples", "max_nonfinite_steps")
                if name in args}
    for name in ("fp16_type", "bf16"):  # the resolved value where the record has it, else the flag as given
        if name in resolved or name in args:
            settings[name] = resolved.get(name, args.get(name))
    settings.update({name: resolved[name] for name in ("train_steps", "budget", "lr_schedule", "min_lr_ratio",
                                                        "eval_steps", "whole_word_mask", "run_name")
                     if name in resolved})
    for name in ("global_batch_size", "tokenizer_fingerprint", "data"):
        if name in config:
            settings[name] = config[name]
    settings["eval_split"], settings["instance_version"] = EVAL_SPLIT_DOCUMENTS, 1
    return config.get("params", {}), settings


def _view(config: dict, shape_fields: tuple[str, ...]) -> dict[str, tuple[str, object]]:
    """name -> (class, value) of everything compared."""
    params, settings = _flat(config)
    view: dict[str, tuple[str, object]] = {"tokenizer": (BREAKS, settings.get("tokenizer_fingerprint"))}
    for field, value in params.items():
        if field in _NOT_COMPARED:
            continue
        if field == "eval_share" and settings.get("eval_file"):
            continue  # no held-out split when an eval file is given
        kind = BREAKS if field in _BREAKS or field in shape_fields else CONTINUES if field in _CONTINUES else DIFFERENT
        view[_PRESET_KEY.get(field, field)] = (kind, value)
    view["train steps"] = (CONTINUES, settings.get("train_steps"))
    for name, key in _RESOLVED_NEWER.items():  # absent from the checkpoints of older versions
        if key in settings:
            view[name] = (CONTINUES, settings[key])
    view["eval steps"] = (CONTINUES, settings.get("eval_steps"))
    view["whole-word masking"] = (DIFFERENT, settings.get("whole_word_mask"))
    view["--run_name"] = (CONTINUES, settings.get("run_name"))
    view["--seed"] = (DIFFERENT, settings.get("seed"))
    if not settings.get("eval_file"):
        view["eval split"] = (DIFFERENT, settings["eval_split"])
    for name in _ARGS_CONTINUE:
        view[f"--{name}"] = (CONTINUES, settings.get(name))
    if "global_batch_size" in settings:
        view["global batch size"] = (DIFFERENT, settings["global_batch_size"])
    else:  # checkpoints of older versions record the preset's mapping only
        view["batch-size"] = (DIFFERENT, params.get("node_batch_sizes"))
    data = settings.get("data")
    if data is not None:
        view["corpus"] = (DIFFERENT, _files(data.get("corpus")))
        view["eval data"] = (CONTINUES, _files(data.get("eval")) or HELD_OUT)
        view["corpus paths"] = (NOTED, _paths(data.get("corpus")))
        view["eval data paths"] = (NOTED, _paths(data.get("eval")))
    return view


def compare(saved: dict, current: dict, shape_fields: tuple[str, ...] = ()) -> list[Change]:
    """Every difference between a checkpoint's saved config and this run's (``prepare.Run.record()``; either may
    be a record of an older version)."""
    old, new = _view(saved, shape_fields), _view(current, shape_fields)
    if "global batch size" in new and "global batch size" not in old:
        new.pop("global batch size")
        new["batch-size"] = (DIFFERENT, _flat(current)[0].get("node_batch_sizes"))
    for name in _RESOLVED_NEWER:
        if name not in old:
            new.pop(name, None)
    if "corpus" not in old:
        for name in ("corpus", "eval data", "corpus paths", "eval data paths"):
            new.pop(name, None)
    changes = []
    for name, (kind, value) in new.items():
        before = old.get(name, (kind, None))[1]
        if before != value:
            if name == "eval data" and HELD_OUT in (before, value):
                kind = DIFFERENT  # from a held-out share to an eval file or back: the training documents change
            if name in _DATA_KEYS and before is not None and value is not None and value != HELD_OUT != before:
                before, value = (_named((_flat(config)[1].get("data") or {}).get(_DATA_KEYS[name]))
                                 for config in (saved, current))
            changes.append(Change(name, before, value, kind))
    changed = {c.name for c in changes}  # a path is noted only where the content is the same
    return [c for c in changes if not (c.kind == NOTED and c.name.removesuffix(" paths") in changed)]


def judge(changes: list[Change], path: Path, *, accept_changed_run: bool, announce: bool) -> None:
    """Print the differences (``announce``), then raise UserError for a change that breaks the run or makes it a
    different one (unless accepted)."""
    if announce:
        for change in changes:
            note = {CONTINUES: "takes effect from the resume step on", BREAKS: "cannot be continued",
                    NOTED: "the same content: noted only",
                    DIFFERENT: "accepted (--accept_changed_run)" if accept_changed_run else "makes it another run"}
            logger.warning("--do_continue: %s: %s (%s)", path.name, change, note[change.kind])
    breaking = [str(c) for c in changes if c.kind == BREAKS]
    if breaking:
        raise UserError(f"--do_continue: {path} cannot be continued by this run: {'; '.join(breaking)} (the "
                        f"tokenizer, model shape and sequence length must stay as trained); restore them, or start a "
                        f"new run in another --model_dir")
    different = [str(c) for c in changes if c.kind == DIFFERENT]
    if different and not accept_changed_run:
        raise UserError(f"--do_continue: these changes make {path} another run, not a continuation: "
                        f"{'; '.join(different)}; restore them, or pass --accept_changed_run to continue anyway")


def check_checkpoint(description, path: Path, saved: dict, current: dict, *, announce: bool = False) -> None:
    """Raise UserError unless a checkpoint's saved record fits the run of ``description`` (its run description),
    as :func:`judge` judges their differences (``current``: this run's record, ``prepare.Run.record()``)."""
    judge(compare(saved, current, description.model.family.shape_fields()), path,
          accept_changed_run=description.outputs.accept_changed_run, announce=announce)


def trained_data_versions(model_dir: str | Path) -> dict | None:
    """What the run whose newest complete checkpoint is in ``model_dir`` trained on and a resume must keep, read from
    that one record: ``eval_split`` (the ``data.split_eval`` version) and ``instance_version`` (the instance
    builders'); a record written before either was recorded means version 1 of it. None without a checkpoint."""
    found = newest_complete(Path(model_dir))
    if found is None:
        return None
    settings = _flat(found[1])[1]
    return {"eval_split": settings["eval_split"], "instance_version": settings["instance_version"]}


def newest_complete(model_dir: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint with a manifest and a readable config (not hashed: the resume verifies it)."""
    from .checkpoint import CONFIG_FILE, MANIFEST, list_checkpoints

    for _, path in reversed(list_checkpoints(model_dir)):
        try:
            json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            return path, json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None
