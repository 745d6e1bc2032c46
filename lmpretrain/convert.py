"""convert_checkpoint.py: any ``checkpoint-<step>/`` of run_pretraining.py (sharded by ``--fsdp`` or not) as a plain
Hugging Face model dir, in one process, through the run's own final export.

The model is rebuilt as a resume rebuilds it (the family and preset of the checkpoint's run record, the tokenizer
beside it) and its weights loaded as a resume loads them: from the parts' ``model.safetensors``, or from the DCP shards
(``sharded/``), which one process reads whole, whatever number of processes wrote them. The output is then written
by :func:`lmpretrain.checkpoint.write_export`, the function the run's final export uses (every file of the
checkpoint but its training state, the whole model's weights saved by ``save_pretrained``), checked as the run checks
its export (:func:`lmpretrain.export.verify_export`: logits through the Auto classes, AutoTokenizer ids) in a hidden
folder, and only then renamed to the output dir.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .errors import UserError
from .fsutil import publish
from .log import get_logger

logger = get_logger(__name__)


def _record(checkpoint_dir: Path) -> dict:
    from .run_description import RECORD_FORMAT

    path = checkpoint_dir / ckpt.CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{checkpoint_dir} holds no {ckpt.CONFIG_FILE}: not a checkpoint-<step>/ of run_pretraining.py")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a run record ({error})") from None
    if record.get("format") != RECORD_FORMAT:
        raise UserError(f"{path} is a run record of format {record.get('format', 1)} (an older version): its "
                        f"checkpoint is a plain HF dir already; copy it without training_state.pt")
    return record


def load_checkpoint_model(checkpoint_dir: str | Path, encoder=None) -> torch.nn.Module:
    """The run's whole model with a complete checkpoint's weights, on this process's CPU, in eval mode. ``encoder``:
    the checkpoint's tokenizer, opened already (else opened and closed here)."""
    from .models import build_model
    from .perplexity import _params_from_record
    from .tokenization import FastEncoder

    checkpoint_dir = Path(checkpoint_dir)
    record = _record(checkpoint_dir)
    params = _params_from_record(record["model"]["params"])
    own_encoder = encoder is None
    encoder = encoder or FastEncoder.from_pretrained(checkpoint_dir)
    try:
        spec = dict(vocab_size=encoder.vocab_size, pad_token_id=encoder.pad_token_id, seed=record["data"]["seed"],
                    eos_token_id=encoder.sep_token_id, cls_token_id=encoder.cls_token_id)
    finally:
        if own_encoder:
            encoder.close()
    # the recorded preset's model, built as a resume builds it (its weights then overwritten)
    model = build_model(replace(params, pretrained_model_name_or_path=None, frozen_layers=-1), **spec)
    ckpt.load_checkpoint_weights(model, checkpoint_dir)
    return model.eval()


def convert_checkpoint(checkpoint_dir: str | Path, output_dir: str | Path, *, verified: bool = False) -> Path:
    """Write ``checkpoint_dir``'s model as a plain HF model dir at ``output_dir`` (new, or an empty dir), verified;
    returns ``output_dir``. The checkpoint's manifest is checked first (every file's size and sha256), unless the
    caller has just checked it (``verified``)."""
    from .export import verify_export
    from .tokenization import META_FILE, FastEncoder

    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    if not checkpoint_dir.is_dir():
        raise UserError(f"--checkpoint_dir {checkpoint_dir} is not a directory")
    if not (checkpoint_dir / ckpt.MANIFEST).is_file():
        raise UserError(f"--checkpoint_dir {checkpoint_dir} has no {ckpt.MANIFEST}: not a checkpoint-<step>/ folder, "
                        f"or one whose write was interrupted")
    try:
        if not verified:
            ckpt.verify_checkpoint(checkpoint_dir)
    except ckpt.CheckpointError as error:
        raise UserError(str(error)) from None
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise UserError(f"--output_dir {output_dir} exists and is not an empty directory (nothing was written)")
    encoder = FastEncoder.from_pretrained(checkpoint_dir) if (checkpoint_dir / META_FILE).is_file() else None
    staging = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}"
    try:
        model = load_checkpoint_model(checkpoint_dir, encoder)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with torch.no_grad():
            ckpt.write_export(checkpoint_dir, staging, model)
        worst = verify_export(model, staging, encoder)
        publish(staging)
        if output_dir.is_dir():
            output_dir.rmdir()  # empty (checked above)
        staging.rename(output_dir)
    except OSError as error:
        raise UserError(f"could not write {output_dir}: {ckpt.describe_write_failure(error, staging.parent)}") \
            from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if encoder is not None:
            encoder.close()
    logger.info("converted %s into %s: logits match the checkpoint's model (max difference %s)%s", checkpoint_dir,
                output_dir, ", ".join(f"{k} {v:.2g}" for k, v in worst.items()),
                ", AutoTokenizer ids match the training pipeline's" if encoder is not None else "")
    return output_dir


def extract_parts(input_dir: str | Path, output_dir: str | Path, names: list[str], params=None) -> dict[str, Path]:
    """extract_electra_model.py: :func:`lmpretrain.export.extract_parts`, a sharded checkpoint (``--fsdp``: its
    weights in ``sharded/``) first converted by :func:`convert_checkpoint` into a scratch dir beside ``output_dir``,
    which the parts are then extracted from (what can be checked without the weights is checked first)."""
    from .export import _check_output_dir, _require_extractable_checkpoint
    from .export import extract_parts as extract_plain

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not (input_dir / ckpt.SHARDS).is_dir():
        return extract_plain(input_dir, output_dir, names, params)
    family = _require_extractable_checkpoint(input_dir, weights=False)  # its family, manifest and tokenizer
    _check_output_dir(output_dir, [p.extract_as for p in family.extractable if p.extract_as in names])
    parent = output_dir.resolve().parent
    with tempfile.TemporaryDirectory(prefix=".lmp-unsharded-", dir=parent if parent.is_dir() else None) as scratch:
        # the manifest was checked above: its shards are not hashed a second time
        plain = convert_checkpoint(input_dir, Path(scratch) / input_dir.name, verified=True)
        return extract_plain(plain, output_dir, names, params, complete=True)
