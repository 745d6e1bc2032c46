"""Atomic ``checkpoint-<step>/`` folders: a complete HF model dir plus the state to resume exactly.

Layout of one checkpoint::

    checkpoint-1000/
      config.json, model.safetensors      # the model (ELECTRA: the discriminator; generator/ beside it)
      vocab.txt, tokenizer_config.json …  # the tokenizer files, copied from the tokenizer dir
      lmpretrain_config.json              # the resolved run configuration
      training_state.pt                   # optimizer, scheduler, scaler, RNG, step, data position
      lmpretrain_checkpoint.json          # written last: step + size and sha256 of every file above

Under ``--fsdp`` (``sharded``) the weights and the optimizer state are instead in ``sharded/``, written by
torch.distributed.checkpoint (each process its own shards, ``.metadata`` by rank 0), which any number of processes
loads back (resharding); the parts' ``config.json`` and the tokenizer files stay, ``training_state.pt`` holds the
rest. The final model is still a plain HF dir: gathered once on rank 0 and saved by ``save_pretrained``.

:class:`Checkpoints` is a run's view of them: it saves the run state (:mod:`lmpretrain.run_state`), chooses the
checkpoint to resume from and loads it back, and exports the final model. The functions below it are the format.

A checkpoint is written into a hidden temporary folder and renamed into place only once the
manifest (the last file) is on disk, so a crash at any moment leaves either the complete folder or
no folder under that name. Loading checks the manifest against the files, so a truncated or
tampered checkpoint is reported by name and skipped for the previous one.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from .distributed import Layout, all_reduce_sum, barrier
from .errors import LOAD_ERRORS, CheckpointError, UserError
from .fsutil import atomic_write_text, publish, replace_dir, sha256_file
from .log import get_logger, strict_dumps
from .models.registry import usable_positions
from .run_state import RunState
from .sharding import all_finite, is_sharded, load_model_shards, load_shards, save_shards
from .tokenization import copy_tokenizer_files

logger = get_logger(__name__)

MANIFEST = "lmpretrain_checkpoint.json"
STATE_FILE = "training_state.pt"
CONFIG_FILE = "lmpretrain_config.json"
SHARDS = "sharded"
_NAME = re.compile(r"^checkpoint-(\d+)$")




class Checkpoints:
    """The ``checkpoint-<step>/`` folders of one run in ``model_dir``.

    ``config`` is the resolved run config written into each checkpoint; ``check(path, saved_config)`` raises
    :class:`UserError` when a checkpoint's saved config does not fit this run (then an older one is tried).
    ``sharded``: write the weights and optimizer with torch.distributed.checkpoint (``--fsdp``).
    """

    def __init__(self, model_dir: str | Path, layout: Layout, *, tokenizer_dir: str | Path, config: dict,
                 check: Callable[[Path, dict], None], total_limit: int | None = None, sharded: bool = False):
        self.model_dir, self.layout, self.tokenizer_dir = Path(model_dir), layout, Path(tokenizer_dir)
        self.config, self.check, self.total_limit = config, check, total_limit
        self.sharded = sharded

    def save(self, state: RunState) -> Path:
        """Write ``checkpoint-<step>`` atomically (rank 0; every process waits for it). NaN weights are refused."""
        step = state.step
        if not all_finite(state.model.parameters()):
            raise UserError(f"step {step}: the weights contain NaN/inf; not saving them "
                            f"(the last checkpoint in {self.model_dir} is intact)")
        shards = self._write_shards(state) if self.sharded else None
        if self.layout.is_main:
            save_checkpoint(self.model_dir, step, lambda tmp: self._write(tmp, state, shards),
                            total_limit=self.total_limit)
        barrier()
        return checkpoint_path(self.model_dir, step)

    def _write_shards(self, state: RunState) -> Path:
        """Every process writes its shards into a hidden folder named by rank 0's process id (removed as a leftover
        if the save is interrupted), which rank 0 then moves into its temporary checkpoint."""
        owner = torch.tensor([float(os.getpid()) if self.layout.is_main else 0.0], dtype=torch.float64)
        staging = self.model_dir / f".checkpoint-{state.step}.shards-{int(all_reduce_sum(owner)[0])}"
        save_shards(state.model, state.optimizer, staging)
        barrier()
        return staging

    def _write(self, directory: Path, state: RunState, shards: Path | None = None) -> None:
        model = state.model
        if shards is None:
            model.save_pretrained(directory)
        else:  # the weights are in the shards; each part's config beside them, so that its folder reads as today's
            os.replace(shards, directory / SHARDS)
            for part, hf_model in zip(model.family.parts, model.hf_models().values()):
                hf_model.config.save_pretrained(directory / part.folder)
        positions = usable_positions(model.hf_models()[model.family.main_part.name].config)
        for part in model.family.parts:  # each part's dir is complete on its own: tokenizer files in every one
            copy_tokenizer_files(self.tokenizer_dir, directory / part.folder, positions,
                                 causal_lm=model.family.collator == "causal", skip=OWN_FILES)
        (directory / CONFIG_FILE).write_text(strict_dumps(self.config, indent=1, default=str), encoding="utf-8")
        saved = state.state_dict()
        if shards is not None:  # in the shards (its states are sharded too)
            saved["optimizer"], saved["model_extra"] = None, {}
        save_training_state(directory, saved)

    def restore(self, state: RunState, *, resume: bool) -> Path | None:
        """Remove leftovers of interrupted writes; with ``resume``, load ``state`` from the newest usable checkpoint
        (all processes from the same one) and return its path."""
        if self.layout.is_main:
            clean_partial_checkpoints(self.model_dir)  # before choosing: it may put back a checkpoint moved aside
        barrier()
        if self.layout.distributed:  # rank 0's decision: a node-local --model_dir has no checkpoint on other nodes
            resume = bool(all_reduce_sum(torch.tensor([float(resume and self.layout.is_main)],
                                                      dtype=torch.float64))[0])
        if not resume:
            return None
        path, saved = self._choose(lambda p: self._load(p, state.model), state.model)
        if (path / SHARDS).is_dir():  # every process, together, once the checkpoint is chosen
            load_shards(state.model, state.optimizer, path / SHARDS)
        state.load_state_dict(saved)
        logger.info("resumed from %s at step %d (sample position %d)", path, state.step, state.train.next_position)
        return path

    def _load(self, path: Path, model) -> dict:
        """Check that a checkpoint fits this run, load its weights into ``model`` and return its training state
        (a sharded checkpoint's weights are loaded by :meth:`restore`, by every process together)."""
        self.check(path, json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")))
        if not (path / SHARDS).is_dir():
            if is_sharded(model):
                raise UserError(f"{path.name} was written without --fsdp (a plain model dir): resume it without "
                                "--fsdp; a later checkpoint of that run is then written sharded if you ask")
            load_weights(model, path)
        return load_training_state(path)

    def _choose(self, load: Callable[[Path], dict], model: torch.nn.Module | None = None) -> tuple[Path, dict]:
        """The newest usable checkpoint and its training state. Rank 0 alone checks the checksums (reading every
        byte of every candidate once, not once per process) and falls back past unusable checkpoints; the other
        processes load the checkpoint it chose, so all of them resume from the same one (from rank 0 through the
        process group, ``model`` given, when some process does not see it: a node-local --model_dir)."""
        layout = self.layout
        if not layout.distributed:
            return latest_checkpoint(self.model_dir, load=load)
        chosen = torch.zeros(1, dtype=torch.float64)  # step + 1 from rank 0; 0: rank 0 found none
        failure = None
        if layout.is_main:
            try:
                path, saved = latest_checkpoint(self.model_dir, load=load)
                chosen[0] = step_of(path) + 1
            except UserError as error:
                failure = error
        all_reduce_sum(chosen)
        if chosen[0] == 0:
            raise failure or UserError(f"--do_continue: rank 0 found no usable checkpoint in {self.model_dir}")
        # a node-local --model_dir: only node 0 holds the checkpoints (global rank 0 writes them); a process that does
        # not see the chosen one gets rank 0's loaded weights and training state through the process group instead
        step = int(chosen[0]) - 1
        seen = torch.tensor([0.0 if layout.is_main or checkpoint_path(self.model_dir, step).is_dir() else 1.0,
                             float(layout.is_main and (path / SHARDS).is_dir())], dtype=torch.float64)
        lacking, sharded = (int(x) for x in all_reduce_sum(seen))
        if lacking:
            return self._receive_from_rank_0(model, path if layout.is_main else checkpoint_path(self.model_dir, step),
                                             saved if layout.is_main else None, lacking, sharded=bool(sharded))
        if layout.is_main:
            return path, saved
        path = checkpoint_path(self.model_dir, step)
        try:
            verify_checkpoint(path, check_hashes=False)
            return path, load(path)
        except LOAD_ERRORS as error:
            raise UserError(f"rank {layout.rank}: cannot load {path}, which rank 0 resumes from: {error}") from None

    def _receive_from_rank_0(self, model, path: Path, saved: dict | None, lacking: int, *,
                             sharded: bool) -> tuple[Path, dict]:
        """Every process: rank 0 sends the weights it loaded and the training state (a collective); the others load
        them. For a --model_dir that is not on every node (the checkpoints are on node 0's disk alone)."""
        if sharded or is_sharded(model):
            raise UserError(f"--do_continue: {lacking} process(es) do not see {path} (a node-local --model_dir): "
                            f"a sharded (--fsdp) checkpoint is read by every process, so --model_dir must be a dir "
                            f"shared by all nodes")
        payload = [({k: v.cpu() for k, v in model.state_dict().items()}, saved) if self.layout.is_main else None]
        if self.layout.is_main:
            logger.info("--do_continue: %d process(es) on other nodes do not see %s (a node-local --model_dir): "
                        "rank 0 sends them its weights and training state", lacking, path)
        torch.distributed.broadcast_object_list(payload, src=0)
        weights, saved = payload[0]
        if not self.layout.is_main:
            model.load_state_dict(weights)
        return path, saved

    def export_final(self, state: RunState, summary: dict, *, verify: Callable[[Path], dict],
                     model: torch.nn.Module | None = None) -> None:
        """Copy the final checkpoint's model and tokenizer files to the top of ``model_dir`` (each file atomically),
        check the copy with ``verify(model_dir)`` (the trainer passes export.verify_export against the trained model:
        logits through transformers' Auto classes, ids through AutoTokenizer), and write ``train_summary.json`` last,
        so that its presence means a finished, verified model. Rank 0 writes; every process waits for it.
        A sharded checkpoint's weights come from ``model``: the whole model, gathered on rank 0."""
        if self.layout.is_main:
            self._export(checkpoint_path(self.model_dir, state.step), summary, verify, model)
        barrier()

    def _export(self, checkpoint_dir: Path, summary: dict, verify: Callable[[Path], dict],
                model: torch.nn.Module | None = None) -> None:
        model_dir = self.model_dir
        (model_dir / "train_summary.json").unlink(missing_ok=True)  # an older run's must not vouch for this one
        write_export(checkpoint_dir, model_dir, model)
        worst = verify(model_dir)
        logger.info("verified the export in %s: logits match the trained model (max difference %s), "
                    "AutoTokenizer ids match the training pipeline's", model_dir,
                    ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
        atomic_write_text(model_dir / "train_summary.json", strict_dumps(summary, indent=1))


def write_export(checkpoint_dir: Path, destination: Path, model: torch.nn.Module | None = None) -> None:
    """A checkpoint as a plain HF model dir in ``destination``: its files but the training state, each copied
    atomically; a sharded checkpoint's weights from ``model`` (the whole model: gathered on rank 0 by the run's
    export, loaded from the shards by convert_checkpoint.py), saved by ``save_pretrained`` beside them first."""
    gathered = None
    if (checkpoint_dir / SHARDS).is_dir():
        gathered = destination / f".{checkpoint_dir.name}.export-{os.getpid()}"
        shutil.rmtree(gathered, ignore_errors=True)
        model.save_pretrained(gathered)
    try:
        _copy_export(checkpoint_dir, destination, gathered)
    finally:
        if gathered is not None:
            shutil.rmtree(gathered, ignore_errors=True)


def _copy_export(checkpoint_dir: Path, destination: Path, gathered: Path | None) -> None:
    sources = [(src, checkpoint_dir) for src in checkpoint_dir.rglob("*")
               if SHARDS not in src.relative_to(checkpoint_dir).parts]
    sources += [(src, gathered) for src in gathered.rglob("*")] if gathered is not None else []
    for src, root in sources:
        if src.is_dir() or src.name in (MANIFEST, STATE_FILE):
            continue
        dest = destination / src.relative_to(root)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp)
            publish(tmp)  # the umask's mode, not the source's (a checkpoint an older version wrote 0600)
            os.replace(tmp, dest)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            reason = describe_write_failure(error, destination)
            raise UserError(f"could not copy the final model to {dest}: {reason}; {checkpoint_dir} is complete "
                            f"and holds the same model") from None


def load_weights(model, path: Path) -> None:
    """Load each part (transformers model) of ``model`` from its HF dir in a checkpoint (the folder its family
    declares)."""
    hf_models = model.hf_models()
    for part in model.family.parts:
        name, hf_model, directory = part.name, hf_models[part.name], path / part.folder
        try:
            loaded = type(hf_model).from_pretrained(directory, dtype=torch.float32)
        except LOAD_ERRORS as error:
            raise CheckpointError(f"{directory}: the {name} weights cannot be loaded "
                                  f"({type(error).__name__}: {error})") from None
        missing, unexpected = hf_model.load_state_dict(loaded.state_dict(), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{directory}: weights do not fit the model (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")
    try:
        model.load_extra(path)  # what the parts do not hold (DeBERTa-v3's RTD head)
    except LOAD_ERRORS as error:
        raise CheckpointError(f"{path}: {type(error).__name__}: {error}") from None


def load_checkpoint_weights(model, checkpoint_dir: str | Path) -> None:
    """A checkpoint's weights into the whole (unsharded) ``model`` in this one process, for the tools that read a
    checkpoint outside a run (``convert_checkpoint.py``, ``evaluate_perplexity.py``): from its ``sharded/`` folder
    when ``--fsdp`` wrote it (any number of processes), else from its safetensors files. Both failures are one
    :class:`UserError` naming the folder."""
    checkpoint_dir = Path(checkpoint_dir)
    if (checkpoint_dir / SHARDS).is_dir():
        try:
            load_model_shards(model, checkpoint_dir / SHARDS)
        except (RuntimeError, ValueError, KeyError) as error:  # DCP: a missing key, a shape that differs
            raise UserError(f"{checkpoint_dir / SHARDS}: the shards do not fit the recorded model "
                            f"({type(error).__name__}: {str(error)[:300]})") from None
    else:
        try:
            load_weights(model, checkpoint_dir)
        except CheckpointError as error:
            raise UserError(str(error)) from None


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for directory in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def checkpoint_path(model_dir: str | Path, step: int) -> Path:
    return Path(model_dir) / f"checkpoint-{step}"


def step_of(path: str | Path) -> int:
    """The step of a ``checkpoint-<step>`` folder."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint-<step> folder")
    return int(match.group(1))


def list_checkpoints(model_dir: str | Path) -> list[tuple[int, Path]]:
    """All ``checkpoint-N`` folders (complete or not), oldest first."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def verify_checkpoint(path: str | Path, *, check_hashes: bool = True) -> dict:
    """Return the manifest of a complete checkpoint, or raise :class:`CheckpointError` saying what is wrong."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path} is incomplete (no {MANIFEST}: the write was interrupted)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (ValueError, KeyError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{manifest_path} is corrupt ({error})") from None
    for rel, meta in files.items():
        file = path / rel
        if not file.is_file():
            raise CheckpointError(f"{file} is missing")
        size = file.stat().st_size
        if size != meta["size"]:
            raise CheckpointError(f"{file} is truncated or changed ({size} bytes, expected {meta['size']})")
        if check_hashes and sha256_file(file) != meta["sha256"]:
            raise CheckpointError(f"{file} is corrupt (checksum mismatch)")
    return manifest


def save_checkpoint(model_dir: str | Path, step: int, write_contents: Callable[[Path], None], *,
                    total_limit: int | None = None) -> Path:
    """Write ``checkpoint-<step>`` atomically; ``write_contents(tmp_dir)`` writes the model, tokenizer and state.

    Removes the oldest complete checkpoints beyond ``total_limit``. A full disk or any other write error removes
    the partial folder and raises :class:`UserError` naming the folder; existing checkpoints are untouched.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(model_dir, step)
    tmp = model_dir / f".checkpoint-{step}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        write_contents(tmp)
        files = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1), encoding="utf-8")
        _fsync_tree(tmp)
        replace_dir(tmp, final)  # re-saving a step (e.g. after a resume) moves the old one aside first
        _fsync_tree_dir(model_dir)
    except Exception as error:
        reason = describe_write_failure(error, model_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        if reason is None:
            raise
        previous = [p.name for _, p in list_checkpoints(model_dir) if (p / MANIFEST).is_file()]
        kept = f"; the previous checkpoint {previous[-1]} is intact" if previous else ""
        raise UserError(f"could not write checkpoint {final}: {reason}{kept}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if total_limit is not None and total_limit > 0:
        rotate_checkpoints(model_dir, total_limit)
    return final


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_LOW_SPACE_BYTES = 1 << 20


def describe_write_failure(error: Exception, directory: Path) -> str | None:
    """Why a write failed, in words, when the disk or filesystem is at fault (None: a bug, to re-raise as it is).

    A full disk does not always surface as ``OSError(ENOSPC)``: safetensors raises ``SafetensorError("... No space
    left on device (os error 28)")`` and ``torch.save`` a bare ``RuntimeError("... unexpected pos ...")``, so the
    free space is looked at too (before the partial folder is removed).
    """
    if isinstance(error, OSError) and error.errno in _NO_SPACE or "No space left" in str(error) \
            or "os error 28" in str(error):
        return "no space left on device"
    try:
        low = shutil.disk_usage(directory).free < _LOW_SPACE_BYTES
    except OSError:
        low = False
    if low:
        return f"no space left on device ({type(error).__name__}: {error})"
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return None


def _fsync_tree_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rotate_checkpoints(model_dir: str | Path, total_limit: int) -> None:
    """Delete the oldest complete checkpoints so that at most ``total_limit`` remain."""
    complete = [p for _, p in list_checkpoints(model_dir) if (p / MANIFEST).is_file()]
    for path in complete[:-total_limit]:
        logger.info("removing old checkpoint %s (save-total-limit %d)", path.name, total_limit)
        # renamed first, so that a crash mid-delete never leaves a half-deleted folder under a checkpoint-N name
        doomed = path.with_name(f".{path.name}.deleting-{os.getpid()}")
        try:
            path.rename(doomed)
        except OSError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)


_LEFTOVER = re.compile(r"^\.(checkpoint-\d+)\.(tmp|old|deleting|shards|export)-\d+$")


def clean_partial_checkpoints(model_dir: str | Path) -> None:
    """Remove leftovers of interrupted writes (hidden temp folders); never touches a checkpoint-N folder.

    A crash while re-saving a step can leave the previous complete copy moved aside (``.checkpoint-N.old-PID``)
    with no ``checkpoint-N``: that copy is put back rather than deleted.
    """
    root = Path(model_dir)
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        match = _LEFTOVER.match(path.name)
        if not match:
            continue
        final = root / match.group(1)
        if match.group(2) == "old" and not final.exists() and (path / MANIFEST).is_file():
            logger.warning("restoring %s from %s (a crash interrupted its replacement)", final.name, path.name)
            path.rename(final)
            continue
        shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(model_dir: str | Path, load: Callable[[Path], object] | None = None):
    """Return ``(path, loaded)`` for the newest checkpoint that verifies (and loads, if ``load`` is given).

    Newer checkpoints that fail are reported by name and skipped with a warning that says which one is used
    instead. Raises :class:`UserError` when there is no usable checkpoint at all.
    """
    candidates = list_checkpoints(model_dir)
    if not candidates:
        raise UserError(f"--do_continue: no checkpoint-<step> folder in {model_dir}")
    problems = []
    for _, path in reversed(candidates):
        try:
            verify_checkpoint(path)
            loaded = load(path) if load is not None else None
        except LOAD_ERRORS as error:
            problems.append(f"{path.name}: {error}")
            logger.warning("cannot resume from %s: %s", path.name, error)
            continue
        if problems:
            logger.warning("falling back to %s because newer checkpoints are unusable (%s)", path.name,
                           "; ".join(problems))
        return path, loaded
    raise UserError(f"--do_continue: no usable checkpoint in {model_dir}: " + "; ".join(problems))


def save_training_state(path: Path, state: dict) -> None:
    torch.save(state, path / STATE_FILE)


def load_training_state(path: Path) -> dict:
    try:
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    except Exception as error:  # a corrupt pickle raises anything from EOFError to UnpicklingError
        raise CheckpointError(f"{path / STATE_FILE} cannot be loaded ({type(error).__name__}: {error})") from None


OWN_FILES = (MANIFEST, STATE_FILE, CONFIG_FILE)
"""A checkpoint's files of training state: never taken for tokenizer files (``copy_tokenizer_files`` skip)."""
