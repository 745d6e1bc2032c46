"""evaluate_perplexity.py: the masked-LM or causal perplexity of a trained model dir on a corpus file, measured as
run_pretraining.py's evaluation measures it.

The model dir is a final model dir or a ``checkpoint-<step>/`` (an HF model dir with the tokenizer files beside
it). Where it holds the run's record (``lmpretrain_config.json``), the model is rebuilt from the recorded preset and
its weights loaded as a resume loads them, and the instances and masks are the run's eval instances for an
``--eval_file``: the recorded layout, instance version, sequence length, masking settings and seed. Another HF dir
(no record) is loaded as continued pretraining loads a model, with the family its ``config.json`` names and the
default masking and seed. Either way the loss is :func:`lmpretrain.evaluation.evaluate`'s, in one process, fp32.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import torch

from .config import ModelParams
from .errors import UserError
from .log import get_logger

logger = get_logger(__name__)

NO_RECORD_SEED = 42  # run_pretraining.py's default --seed


def _params_from_record(saved: dict) -> ModelParams:
    """``ModelParams.to_dict``'s flat record back into the dataclass (the family's options into ``extra``)."""
    names = {f.name for f in fields(ModelParams)}
    flat = dict(saved)
    extra = {key: flat.pop(key) for key in list(flat) if key not in names}
    flat.pop("extra", None)
    flat["node_batch_sizes"] = {int(node): size for node, size in flat["node_batch_sizes"].items()}
    flat["adam_betas"] = tuple(flat["adam_betas"])
    return ModelParams(**flat, extra=extra)


def _read_record(model_dir: Path) -> dict | None:
    from .checkpoint import CONFIG_FILE
    from .run_description import RECORD_FORMAT

    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a run record ({error})") from None
    if record.get("format") != RECORD_FORMAT:
        logger.warning("%s is an older run record (format %s); evaluating %s as an HF model dir, with the default "
                       "masking and seed", path, record.get("format", 1), model_dir)
        return None
    return record


def _unrecorded_model(model_dir: Path):
    """(family, params) of an HF model dir without a run record: the family training its ``config.model_type``
    (the first whose structure checks pass), its shape from the config, the defaults elsewhere."""
    from transformers import AutoConfig

    from .models import parse_preset, resolve_pretrained_shape
    from .models.registry import _FAMILIES

    try:
        hf_config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise UserError(f"--model_dir {model_dir}: cannot read its config.json ({error})") from None
    preset = {"pretrained_model_name_or_path": str(model_dir), "learning-rate": 1e-4, "batch-size": {"-1": 1},
              "train-steps": 1, "warmup-steps": 0}
    for family in _FAMILIES.values():
        if hf_config.model_type not in family.hf_model_types:
            continue
        if family.check_pretrained is not None:
            params = parse_preset(family.name, {**preset, "model-family": family.name}, str(model_dir))
            if family.check_pretrained(params, str(model_dir), hf_config):
                continue
        params = parse_preset(family.name, {**preset, "model-family": family.name}, str(model_dir))
        return family, resolve_pretrained_shape(params, str(model_dir))
    raise UserError(f"--model_dir {model_dir} holds a {hf_config.model_type!r} model, which no family here trains")


def _data_settings(record: dict | None, params: ModelParams, family, *, model_dir: Path, input_files: list[str],
                   cache_dir: str, num_workers: int, sequence_length: int | None, max_samples: int):
    """The run's data settings with the given corpus as its --eval_file (the recorded ones where there is a record,
    else those a fresh run of this preset would have)."""
    from .run_description import DataSettings

    if record is not None:
        saved = record["data"]
        data = DataSettings(**{f.name: saved[f.name] for f in fields(DataSettings) if f.name in saved})
    else:
        data = DataSettings(
            input_files=(), eval_files=None, tokenizer_dir="", cache_dir="", num_workers=1, check_cache=True,
            layout=family.instance_layout(params), sequence_length=params.sequence_length, seed=NO_RECORD_SEED,
            whole_word_mask=params.whole_word_mask, mlm_probability=params.mlm_probability,
            mask_token_prob=params.mask_token_prob, random_token_prob=params.random_token_prob,
            span_masking=params.span_masking, short_seq_prob=params.short_seq_prob,
            nsp_probability=params.nsp_probability, eval_share=0.0, max_eval_samples=max_samples, peer_timeout=120.0)
    return replace(data, input_files=tuple(input_files), eval_files=tuple(input_files), tokenizer_dir=str(model_dir),
                   cache_dir=cache_dir, num_workers=num_workers, check_cache=True, max_eval_samples=max_samples,
                   sequence_length=sequence_length or data.sequence_length, fixed_shapes=False, gather_masked=False,
                   dataloader_workers=0)


def evaluate_model_dir(model_dir: str | Path, input_files: list[str], *, max_samples: int = 1000,
                       batch_size: int = 16, sequence_length: int | None = None, device: str | None = None,
                       cache_dir: str | None = None, num_workers: int | None = None) -> dict:
    """The eval loss and perplexity of ``model_dir`` on ``input_files``: ``{"model_dir", "family", "term", "loss",
    "perplexity", "instances", "sequence_length", ...}`` plus every ``eval/*`` value the trainer's evaluation
    gives."""
    from .checkpoint import load_checkpoint_weights
    from .data import build_or_load_dataset, make_instances
    from .data.corpus import resolve_corpus_files
    from .data_setup import EVAL_SEED_OFFSET, RunData, instance_options, make_collator
    from .distributed import Layout
    from .evaluation import evaluate
    from .models import build_model, get_family, usable_positions
    from .precision import make_precision
    from .tokenization.encoder import FastEncoder

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"--model_dir {model_dir} holds no config.json: not a model dir or checkpoint-<step>/")
    for name in input_files:
        if not Path(name).exists():
            raise UserError(f"--input_file {name} does not exist")
        resolve_corpus_files(name)
    if max_samples < 1 or batch_size < 1:
        raise UserError("--max_samples and --batch_size must be positive")
    record = _read_record(model_dir)
    if record is not None:
        family = get_family(record["model"]["family"])
        params = _params_from_record(record["model"]["params"])
    else:
        family, params = _unrecorded_model(model_dir)
    if sequence_length is not None:
        from transformers import AutoConfig

        positions = usable_positions(AutoConfig.from_pretrained(model_dir))
        if not 1 < sequence_length <= positions:
            raise UserError(f"--sequence_length {sequence_length}: the model at {model_dir} takes 2 to {positions} "
                            "tokens")
        params = replace(params, sequence_length=sequence_length)
    workers = num_workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="lmp-ppl-cache-") as scratch:
        data = _data_settings(record, params, family, model_dir=model_dir, input_files=list(input_files),
                              cache_dir=cache_dir or scratch, num_workers=workers, sequence_length=sequence_length,
                              max_samples=max_samples)
        encoder = FastEncoder.from_pretrained(model_dir, num_workers=workers)
        try:
            if family.collator == "mlm" and encoder.mask_token_id is None:
                raise UserError(f"the tokenizer in {model_dir} declares no mask token, which the masked LM family "
                                f"{family.display} needs")
            shards = build_or_load_dataset(list(input_files), model_dir, data.cache_dir, num_workers=workers)
            dataset = make_instances(shards, data.layout, seed=data.seed + EVAL_SEED_OFFSET, doc_ids=None,
                                     **instance_options(data, encoder))
            if not len(dataset):
                raise UserError(f"{', '.join(input_files)} yields no {data.layout} instances of sequence length "
                                f"{data.sequence_length}")
            collator = make_collator(family.collator, data, encoder, seed=data.seed + EVAL_SEED_OFFSET)
            spec = dict(vocab_size=encoder.vocab_size, pad_token_id=encoder.pad_token_id, seed=data.seed,
                        eos_token_id=encoder.sep_token_id, cls_token_id=encoder.cls_token_id)
        finally:
            encoder.close()
    if record is not None:  # the recorded preset's model, its weights loaded as a resume loads them
        model = build_model(replace(params, pretrained_model_name_or_path=None, frozen_layers=-1), **spec)
        load_checkpoint_weights(model, model_dir)  # a --fsdp checkpoint's shards, or its safetensors
    else:
        model = build_model(params, pretrained_dir=str(model_dir), **spec)
    where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(where)
    layout = Layout(rank=0, world_size=1, local_rank=0, local_world_size=1, node_rank=0, num_nodes=1,
                    node_batch_size=batch_size, per_device_batch_size=batch_size, rank_offset=0,
                    global_batch_size=batch_size, device=where)
    run_data = RunData(train_dataset=None, eval_dataset=dataset, collator=None, eval_collator=collator)
    with torch.no_grad():
        result = evaluate(model, run_data, layout, make_precision(0, False, where), max_samples)
    term = family.loss_terms[0].name
    if f"eval/{term}" not in result:
        raise UserError(f"{', '.join(input_files)}: no token to predict in {min(len(dataset), max_samples)} "
                        f"instances")
    return {"model_dir": str(model_dir), "family": family.name, "term": term, "loss": result[f"eval/{term}"],
            "perplexity": result["eval/perplexity"], "instances": min(len(dataset), max_samples),
            "layout": data.layout, "sequence_length": data.sequence_length, "seed": data.seed,
            "recorded_run": record is not None, **result}
