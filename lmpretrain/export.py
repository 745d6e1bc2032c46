"""Hugging Face exports and their verification; ELECTRA generator/discriminator extraction.

``verify_export`` is the faithfulness check run at the end of training and after extraction: the
exported dir, loaded through transformers' Auto classes, must give the same logits as the model we
hold in memory on a few sequences, and its ``AutoTokenizer`` the same ids as our ``FastEncoder``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .errors import UserError
from .log import get_logger

logger = get_logger(__name__)

PROBE_TEXTS = [
    "吾輩は猫である。名前はまだ無い。",
    "東京都の人口は2024年に1,400万人を超えた。",
    "Pythonで GPU を使った学習を試す。",
    "ｶﾀｶﾅとＡＢＣと😀の混じった文。",
]
ATOL = 1e-4


def _auto_class(role: str):
    import transformers

    return {"pretraining": transformers.AutoModelForPreTraining, "masked_lm": transformers.AutoModelForMaskedLM,
            "causal_lm": transformers.AutoModelForCausalLM}[role]


def _probe_batch(tokenizer_dir: Path, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _logits(model, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    return [t for t in (getattr(out, "prediction_logits", None), getattr(out, "logits", None),
                        getattr(out, "seq_relationship_logits", None)) if t is not None]


def compare_models(reference, export_dir: Path, role: str, texts: list[str] = PROBE_TEXTS) -> float:
    """Max |logit difference| between ``reference`` (a transformers model) and ``export_dir`` loaded by Auto class."""
    exported = _auto_class(role).from_pretrained(str(export_dir), dtype=torch.float32)
    if type(exported).__name__ != type(reference).__name__:
        raise UserError(f"{export_dir} loads as {type(exported).__name__} through {_auto_class(role).__name__}, "
                        f"expected {type(reference).__name__}")
    batch = _probe_batch(export_dir, texts, reference.config.max_position_embeddings)
    if "token_type_ids" in batch and getattr(reference.config, "type_vocab_size", 2) < 2:
        batch.pop("token_type_ids")
    device = next(reference.parameters()).device
    ref = _logits(reference.float(), {k: v.to(device) for k, v in batch.items()})
    got = _logits(exported, batch)
    if len(ref) != len(got):
        raise UserError(f"{export_dir}: the exported model has different heads from the trained one")
    worst = max(float((a.cpu() - b).abs().max()) for a, b in zip(ref, got))
    if worst > ATOL:
        raise UserError(f"{export_dir}: exported logits differ from the trained model's by {worst:.3g}")
    return worst


def compare_tokenizer(export_dir: Path, encoder, texts: list[str] = PROBE_TEXTS) -> None:
    """AutoTokenizer(export_dir) must give the same ids as the training pipeline's FastEncoder."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(export_dir))
    ours = encoder.encode_batch(texts, add_special_tokens=True)
    for text, mine in zip(texts, ours):
        theirs = tokenizer(text)["input_ids"]
        if theirs != mine:
            raise UserError(f"{export_dir}: AutoTokenizer ids differ from the training pipeline's on {text!r}")


ROLES = {"bert": [("model", "pretraining")], "roberta": [("model", "masked_lm")], "gpt": [("model", "causal_lm")],
         "electra": [("discriminator", "pretraining"), ("generator", "masked_lm")]}


def verify_export(model, export_dir: str | Path, family: str, encoder=None) -> dict[str, float]:
    """Check every transformers sub-model of our ``model`` against its export under ``export_dir``."""
    export_dir = Path(export_dir)
    hf = model.hf_models()
    result = {}
    for name, role in ROLES[family]:
        directory = export_dir / "generator" if name == "generator" else export_dir
        result[name] = compare_models(hf[name], directory, role)
        if encoder is not None:
            compare_tokenizer(directory, encoder)
    return result


def _require_electra_checkpoint(input_dir: Path) -> None:
    if not input_dir.is_dir():
        raise UserError(f"--input_dir {input_dir} is not a directory")
    config_path = input_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"--input_dir {input_dir} holds no config.json: not a checkpoint-<step> folder")
    model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    if model_type != "electra" or not (input_dir / "generator" / "config.json").is_file():
        raise UserError(f"{input_dir} is not an ELECTRA checkpoint (model_type {model_type!r}, "
                        f"generator/ {'present' if (input_dir / 'generator').is_dir() else 'missing'})")
    if (input_dir / ckpt.MANIFEST).is_file():
        try:
            ckpt.verify_checkpoint(input_dir)
        except ckpt.CheckpointError as error:
            raise UserError(str(error)) from None
    for weights in (input_dir / "model.safetensors", input_dir / "generator" / "model.safetensors"):
        if not weights.is_file():
            raise UserError(f"{weights} is missing")


def extract_electra(input_dir: str | Path, output_dir: str | Path, *, generator: bool, discriminator: bool,
                    expected_sizes: dict | None = None) -> dict[str, Path]:
    """Write ``output_dir/generator`` and/or ``output_dir/discriminator`` from an ELECTRA checkpoint, verified."""
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    if not (generator or discriminator):
        raise UserError("nothing to extract: pass --generator, --discriminator or both")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    _require_electra_checkpoint(input_dir)
    parts = {"discriminator": (ElectraForPreTraining, input_dir, "pretraining")} if discriminator else {}
    if generator:
        parts["generator"] = (ElectraForMaskedLM, input_dir / "generator", "masked_lm")
    for name in parts:
        target = output_dir / name
        if target.exists() and any(target.iterdir()):
            raise UserError(f"{target} already exists and is not empty; choose another --output_dir")
    written = {}
    for name, (cls, source, role) in parts.items():
        try:
            model = cls.from_pretrained(str(source), dtype=torch.float32)
        except (OSError, ValueError, RuntimeError) as error:
            raise UserError(f"cannot load the {name} from {source}: {error}") from None
        if expected_sizes and name == "discriminator":
            for key, value in expected_sizes.items():
                if getattr(model.config, key, value) != value:
                    raise UserError(f"{source}: {key} is {getattr(model.config, key)} but the preset says {value}")
        target = output_dir / name
        tmp = output_dir / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            model.save_pretrained(str(tmp))
            ckpt.copy_tokenizer_files(input_dir, tmp)
            compare_models(model, tmp, role)
            if target.exists():
                target.rmdir()  # empty (checked above)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("wrote %s (%s, %.1fM parameters)", target, cls.__name__, model.num_parameters() / 1e6)
        written[name] = target
    return written
