"""Hugging Face exports and their verification; extraction of a family's parts (ELECTRA's generator and
discriminator) as separate model dirs.

``verify_export`` is the faithfulness check run at the end of training and after extraction: the
exported dir, loaded through transformers' Auto classes, must give the same logits as the model we
hold in memory on a few sequences, and its ``AutoTokenizer`` the same ids as our ``FastEncoder``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .errors import UserError
from .fsutil import atomic_write_text, process_is_running, publish
from .log import get_logger
from .models import family_names, get_family
from .models.registry import ROLE_OUTPUTS
from .run_dir import REPLACING_FILE
from .tokenization import META_FILE, FastEncoder, copy_tokenizer_files

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
            "causal_lm": transformers.AutoModelForCausalLM, "base": transformers.AutoModel}[role]


def _probe_batch(tokenizer_dir: Path, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _logits(model, batch: dict[str, torch.Tensor], outputs: tuple[str, ...]) -> list[torch.Tensor]:
    """The ``outputs`` fields of the model's output (a part's declared heads; a bare encoder's hidden states)."""
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    return [out[name] for name in outputs]


def compare_models(reference, export_dir: Path, role: str, texts: list[str] = PROBE_TEXTS, *,
                   outputs: tuple[str, ...] | None = None) -> float:
    """Max |logit difference| between ``reference`` (a transformers model) and ``export_dir`` loaded by Auto class,
    over the output fields ``outputs`` (a part's ``compared_outputs``; None: its role's)."""
    outputs = outputs or ROLE_OUTPUTS[role]
    device = next(reference.parameters()).device
    # on the reference's device, so that the two run the same kernels (CPU vs GPU logits differ beyond ATOL)
    exported = _auto_class(role).from_pretrained(str(export_dir), dtype=torch.float32).to(device)
    if type(exported).__name__ != type(reference).__name__:
        raise UserError(f"{export_dir} loads as {type(exported).__name__} through {_auto_class(role).__name__}, "
                        f"expected {type(reference).__name__}")
    batch = _probe_batch(export_dir, texts, reference.config.max_position_embeddings)
    if "token_type_ids" in batch and getattr(reference.config, "type_vocab_size", 2) < 2:
        batch.pop("token_type_ids")
    batch = {k: v.to(device) for k, v in batch.items()}
    ref = _logits(reference.float(), batch, outputs)
    got = _logits(exported, batch, outputs)
    if len(ref) != len(got):
        raise UserError(f"{export_dir}: the exported model has different heads from the trained one")
    worst = max(float((a - b).abs().max()) for a, b in zip(ref, got))
    if worst > ATOL:
        raise UserError(f"{export_dir}: exported logits differ from the trained model's by {worst:.3g}")
    return worst


def compare_tokenizer(export_dir: Path, encoder, texts: list[str] = PROBE_TEXTS, *, config=None,
                      causal_lm: bool = False) -> None:
    """AutoTokenizer(export_dir) must give the same ids as the training pipeline's FastEncoder (for a causal LM's
    tokenizer, adding what it adds), and the same special ids as the model ``config`` where given."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(export_dir))
    if config is not None:
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            ours, theirs = getattr(config, name, None), getattr(tokenizer, name)
            if ours is not None and ours != theirs:
                raise UserError(f"{export_dir}: the model config's {name} is {ours} but the tokenizer's is {theirs}")
    ours = encoder.encode_batch(texts, add_special_tokens=True, causal_lm=causal_lm)
    for text, mine in zip(texts, ours):
        theirs = tokenizer(text)["input_ids"]
        if theirs != mine:
            raise UserError(f"{export_dir}: AutoTokenizer ids differ from the training pipeline's on {text!r}")


def verify_export(model, export_dir: str | Path, encoder=None) -> dict[str, float]:
    """Check every part (transformers model) of our ``model`` against its export under ``export_dir``, in the
    folder and through the Auto class its family declares."""
    export_dir = Path(export_dir)
    hf = model.hf_models()
    result = {}
    for part in model.parts:
        directory = export_dir / part.folder
        result[part.name] = compare_models(hf[part.name], directory, part.role, outputs=part.compared_outputs)
        if encoder is not None:
            causal_lm = model.family.collator == "causal"
            compare_tokenizer(directory, encoder, config=hf[part.name].config if causal_lm else None,
                              causal_lm=causal_lm)
    return result


TOKENIZER_MARKERS = ("tokenizer_config.json", "vocab.txt", "tokenizer.json", "spiece.model")


FINISHED_MARKER = "train_summary.json"  # written last by a finished run, after its final model was verified


def _require_complete(input_dir: Path) -> None:
    """Only complete inputs are read, as resume reads them: a checkpoint whose manifest verifies (every file's size
    and sha256), or a finished run's final model dir. A checkpoint being written (or left by a killed run) and one
    whose manifest is gone are refused, saying which check failed."""
    if ".tmp-" in input_dir.name or ".old-" in input_dir.name:
        raise UserError(f"--input_dir {input_dir} is the temporary folder of a checkpoint being written or replaced "
                        f"(or left by a killed run), not a complete checkpoint; use a checkpoint-<step>/ folder")
    for where in (input_dir, input_dir.parent):
        if (where / REPLACING_FILE).exists():
            raise UserError(f"--input_dir {input_dir}: {where} was being cleared by --overwrite_output_dir when it was "
                            f"stopped ({REPLACING_FILE} marks it): what is left there is no run's output")
    if (input_dir / ckpt.MANIFEST).is_file():
        try:
            ckpt.verify_checkpoint(input_dir)
        except ckpt.CheckpointError as error:
            raise UserError(str(error)) from None
    elif not (input_dir / FINISHED_MARKER).is_file():
        raise UserError(f"--input_dir {input_dir} has no {ckpt.MANIFEST} (a checkpoint whose write was interrupted "
                        f"or whose manifest was removed) and no {FINISHED_MARKER} (a finished run's model dir): "
                        f"its files cannot be checked, so nothing is extracted from it")


def _extractable_families():
    return [f for f in map(get_family, family_names()) if f.extractable]


def _names(families) -> str:
    return " or ".join(f.display for f in families)


def _require_extractable_checkpoint(input_dir: Path, *, complete: bool = False, weights: bool = True):
    """The family of the checkpoint in ``input_dir``, which must have parts to extract, be complete (its manifest,
    when it has one, checked; ``complete``: checked already), hold each part's weights (unless not ``weights``: a
    sharded checkpoint's are in its shards) and carry its tokenizer."""
    families = _extractable_families()
    if not input_dir.is_dir():
        raise UserError(f"--input_dir {input_dir} is not a directory")
    config_path = input_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"--input_dir {input_dir} holds no config.json: not a checkpoint-<step> folder")
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, UnicodeDecodeError, AttributeError) as error:
        raise UserError(f"{config_path} is not a model config ({error})") from None
    family = next((f for f in families if model_type in f.hf_model_types), None)
    folders = [p.folder for p in (family or families[0]).parts if p.folder]
    missing = [folder for folder in folders if not (input_dir / folder / "config.json").is_file()]
    if family is None or missing:
        found = ", ".join(f"{folder}/ {'present' if (input_dir / folder).is_dir() else 'missing'}"
                          for folder in folders)
        raise UserError(f"{input_dir} is not an {_names(families)} checkpoint (model_type {model_type!r}, {found})")
    if not complete:
        _require_complete(input_dir)
    for part in family.parts if weights else ():
        found = input_dir / part.folder / "model.safetensors"
        if not found.is_file() and not found.with_name("pytorch_model.bin").is_file():
            raise UserError(f"{found} is missing")
    if not any((input_dir / name).is_file() for name in TOKENIZER_MARKERS):
        raise UserError(f"{input_dir} holds no tokenizer files ({', '.join(TOKENIZER_MARKERS)}); the exports would "
                        f"not be usable on their own")
    return family


EXTRACTING_MARKER = ".lmpretrain_extracting.json"
"""Written (atomically) before the verified parts are renamed into --output_dir and removed after the last rename:
parts found beside it were put there by an extraction that was stopped between its renames."""


def _interrupted_parts(output_dir: Path) -> list[str]:
    """The parts an interrupted extraction left in ``output_dir`` (its marker names them), to be replaced; an
    extraction into the same dir that is still running is an error."""
    marker = output_dir / EXTRACTING_MARKER
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        record = {}
    host, pid = record.get("host"), record.get("pid")
    if host != socket.gethostname() or not isinstance(pid, int):
        raise UserError(f"--output_dir {output_dir} is being written by an extraction on host {host} (pid {pid}), "
                        f"or one that was stopped there: if none runs, delete {marker} and the parts it names")
    if pid != os.getpid() and process_is_running(pid):
        raise UserError(f"--output_dir {output_dir} is being written by another extraction (pid {pid}); wait for it "
                        f"to end or choose another --output_dir")
    return [name for name in record.get("parts", []) if isinstance(name, str) and "/" not in name
            and name not in ("", ".", "..")]


def _check_output_dir(output_dir: Path, names) -> None:
    """The output dir may be new or hold other things, but no model where ours would go (parts that an interrupted
    extraction left are replaced)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} exists and is not a directory")
    for marker in ("config.json", "model.safetensors", "pytorch_model.bin"):
        if (output_dir / marker).exists():
            raise UserError(f"--output_dir {output_dir} already holds a model ({marker}); choose another "
                            f"--output_dir (nothing was written)")
    leftovers = _interrupted_parts(output_dir) if output_dir.is_dir() else []
    for name in names:
        if name in leftovers:
            continue
        target = output_dir / name
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise UserError(f"{target} already exists and is not empty; choose another --output_dir "
                            f"(nothing was written)")


def _make_output_dir(output_dir: Path, names) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--output_dir {output_dir} cannot be created ({error.strerror})") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise UserError(f"--output_dir {output_dir} is not writable")
    for stale in output_dir.glob(".*.tmp-*"):  # left by an extraction that was killed
        pid = stale.name.rsplit("-", 1)[-1]
        if stale.name.split(".tmp-")[0][1:] in names and pid.isdigit() and not process_is_running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    leftovers = [name for name in _interrupted_parts(output_dir) if (output_dir / name).exists()]
    for name in leftovers:
        shutil.rmtree(output_dir / name)
    if leftovers:
        logger.warning("removed %s from %s: written by an extraction that was stopped before it had renamed every "
                       "part into place", " and ".join(leftovers), output_dir)
    (output_dir / EXTRACTING_MARKER).unlink(missing_ok=True)


def _load_part(name: str, cls, source: Path, expected) -> torch.nn.Module:
    """Load one part; ``expected`` (the HF config training builds it with from the preset, or None) is checked."""
    try:
        model = cls.from_pretrained(str(source), dtype=torch.float32)
    except ckpt.LOAD_ERRORS as error:
        raise UserError(f"cannot load the {name} from {source} ({type(error).__name__}: {error})") from None
    if expected is not None:
        for key in ("hidden_size", "num_hidden_layers", "embedding_size"):
            value = getattr(expected, key, None)
            if value is not None and getattr(model.config, key, value) != value:
                raise UserError(f"{source}: {key} is {getattr(model.config, key)} but the preset gives {value}")
    return model


def extract_parts(input_dir: str | Path, output_dir: str | Path, names: list[str], params=None, *,
                  complete: bool = False) -> dict[str, Path]:
    """Write ``output_dir/<name>`` for each extractable part ``names`` (``generator``, ``discriminator``) of a
    checkpoint of a family with sub-models (ELECTRA), each a complete HF model dir, verified.

    Everything is checked before anything is written: the checkpoint (of such a family, complete, loadable), the
    output dir (nothing there is replaced), the preset sizes when ``params`` (a parameter.json preset) is given.
    Each part is written to a hidden folder, checked (logits through the Auto classes; AutoTokenizer ids against
    the training pipeline's encoder) and only then renamed into place. ``complete``: the input was checked already
    (:func:`lmpretrain.convert.extract_parts`, which converts a sharded checkpoint first, calls it so).
    """
    import transformers

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not names:
        raise UserError("nothing to extract: pass --generator, --discriminator or both")
    if params is not None and not get_family(params.family).extractable:
        raise UserError(f"--model_type {params.model_type} is a {params.family} preset, not an "
                        f"{_names(_extractable_families())} one")
    family = _require_extractable_checkpoint(input_dir, complete=complete)
    parts = {p.extract_as: p for p in family.extractable if p.extract_as in names}
    unknown = sorted(set(names) - set(parts))
    if unknown:
        raise UserError(f"{input_dir}: a {family.display} checkpoint has no {', '.join(unknown)} to extract")
    _check_output_dir(output_dir, list(parts))
    models = {}
    for name, part in parts.items():
        hf_config = json.loads((input_dir / part.folder / "config.json").read_text(encoding="utf-8"))
        expected = None
        if params is not None and family.part_configs is not None:  # the sizes training builds this part with
            expected = family.part_configs(params, hf_config["vocab_size"], hf_config.get("pad_token_id"))[part.name]
        models[name] = _load_part(name, getattr(transformers, part.hf_class), input_dir / part.folder, expected)
    _make_output_dir(output_dir, list(parts))
    encoder = None
    if (input_dir / META_FILE).is_file():  # a tokenizer of ours: its FastEncoder checks AutoTokenizer's ids
        encoder = FastEncoder.from_pretrained(input_dir)
    staged: dict[str, Path] = {}
    try:
        for name, model in models.items():
            tmp = output_dir / f".{name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            staged[name] = tmp
            _write_part(model, tmp, input_dir, output_dir, parts[name])
            worst = compare_models(model, tmp, parts[name].role, outputs=parts[name].compared_outputs)
            if encoder is not None:
                compare_tokenizer(tmp, encoder)
            logger.info("checked %s: logits match the checkpoint's (max difference %.2g)%s", name, worst,
                        ", AutoTokenizer ids match the training pipeline's" if encoder is not None else "")
        written = {}
        # the marker says, until the last rename, that the parts in output_dir are not a finished extraction
        atomic_write_text(output_dir / EXTRACTING_MARKER, json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "parts": list(staged), "input_dir": str(input_dir)}))
        for name, tmp in staged.items():
            target = output_dir / name
            if target.exists():
                target.rmdir()  # empty (checked above)
            publish(tmp)
            tmp.rename(target)
            written[name] = target
            logger.info("wrote %s (%s, %.1fM parameters)", target, type(models[name]).__name__,
                        models[name].num_parameters() / 1e6)
        (output_dir / EXTRACTING_MARKER).unlink()
    finally:
        for tmp in staged.values():
            shutil.rmtree(tmp, ignore_errors=True)
        if encoder is not None:
            encoder.close()
    return written


def _write_part(model, tmp: Path, input_dir: Path, output_dir: Path, part) -> None:
    try:
        model.save_pretrained(str(tmp))
        copy_tokenizer_files(input_dir, tmp, skip=ckpt.OWN_FILES)
        for name in part.extra_files:  # a head transformers has no class for (DeBERTa-v3's RTD head)
            if (input_dir / part.folder / name).is_file():
                shutil.copy2(input_dir / part.folder / name, tmp / name)
    except Exception as error:
        reason = ckpt.describe_write_failure(error, output_dir)
        if reason is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not write {tmp.name.split('.tmp-')[0][1:]} into {output_dir}: {reason} "
                        f"(nothing was left there)") from None
